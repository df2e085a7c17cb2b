/*
 * libFuzzer target for the JSON bridge: the byte scanners (validate, split, envelope),
 * canonicalisation, and a full call (JSON -> Lua table -> identity transformation -> JSON)
 * in one long-lived sandbox state, as the runtime uses them. Checks invariants, not just
 * crashes: valid input round-trips to canonical JSON that is valid and stable.
 *
 * Lazy events: a valid object (also: the first object elements of a valid array, an envelope's
 * message with its metadata as context, any other valid value wrapped as {"a":VALUE,"b":1}) is
 * run through small scripts twice, once with `validated = 1` (a lazy table, written back from
 * its input bytes where unchanged) and once with `validated = 0` (decoded eagerly). The
 * outcomes must agree (status, message up to the error path, shape) and the lazy output's
 * canonical form must equal the eager output, which the encoder already writes canonically.
 * An invalid object is also run lazily, breaking the "validated" promise: it must stay memory
 * safe. A run prints its counts on exit ("lazy/eager differential: ...").
 *
 *   scripts/fuzz-json [SECONDS]
 */
#include "lsb.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lsb_state *S;
static lsb_state *LZ, *EG;   /* the lazy-vs-eager check: one state per mode */

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "invariant broken: %s\n", what);
        abort();
    }
}

/* ---- lazy vs eager ---- */

static const char diff_src[] =
    "function identity(e) return e end\n"
    /* reads a few fields (and into nested objects), deletes one, writes one */
    "function touch(e)\n"
    "  local t, c = e.type, e.context\n"
    "  if type(c) == 'table' then local _ = c.traits; c.ip = nil end\n"
    "  for _, k in ipairs({'event', 'properties', 'message', 'a', 'b', '', '1'}) do\n"
    "    local v = e[k]\n"
    "    if type(v) == 'table' then local _ = v[1], v.name, v.a end\n"
    "  end\n"
    "  e.userId = e.userId\n"
    "  e.fuzzTouched = t == nil\n"
    "  return e\n"
    "end\n"
    /* reads members (nested too), then changes some of them in place: a plain write to a member
     * already read runs no metamethod, so only comparing values tells the table changed */
    "function modify(e)\n"
    "  local c = e.context\n"
    "  if type(c) == 'table' then\n"
    "    local tr = c.traits\n"
    "    if type(tr) == 'table' then\n"
    "      local em = tr.email\n"
    "      if type(em) == 'string' then tr.email = em .. 'x' elseif em ~= nil then tr.email = em end\n"
    "    end\n"
    "  end\n"
    "  local t = e.type\n"
    "  if type(t) == 'string' then e.type = t:upper() end\n"
    "  local a, b = e.a, e.b\n"
    "  if type(a) == 'table' and type(b) == 'table' then e.a, e.b = b, a end\n"
    "  for _, k in ipairs({'a', 'b', 'properties', 'message', 'event', '1'}) do\n"
    "    local v = e[k]\n"
    "    if type(v) == 'table' then\n"
    "      local n, x = v.name, v.a\n"
    "      if n ~= nil then v.name = nil end\n"
    "      if x == nil then json.array(v) elseif type(x) ~= 'table' then v.a = x end\n"
    "    elseif math.type(v) == 'integer' then e[k] = v + 0\n"
    "    elseif type(v) == 'string' then rawset(e, k, v) end\n"
    "  end\n"
    "  return e\n"
    "end\n"
    /* every array it finds (lazy ones among them): reads, then changes some of them */
    "local function sorted(t)\n"   /* in key order: lazy and eager tables iterate differently */
    "  local ks = {}\n"
    "  for k in pairs(t) do ks[#ks + 1] = k end\n"
    "  table.sort(ks, function(x, y) return type(x) .. tostring(x) < type(y) .. tostring(y) end)\n"
    "  return ks\n"
    "end\n"
    "local function arrays(t, depth, f)\n"
    "  if depth > 3 then return end\n"
    "  for _, k in ipairs(sorted(t)) do local v = t[k]; if type(v) == 'table' then\n"
    "    if #v > 0 then f(v) end\n"
    "    arrays(v, depth + 1, f)\n"
    "  end end\n"
    "end\n"
    "function arrayOps(e)\n"
    "  local n = 0\n"
    "  arrays(e, 0, function(a)\n"
    "    n = n + 1\n"
    "    local m = n % 7\n"
    "    local first = a[1]\n"
    "    if m == 0 then a[#a + 1] = first\n"
    "    elseif m == 1 then a[1], a[#a] = a[#a], a[1]\n"
    "    elseif m == 2 then table.remove(a, 1)\n"
    "    elseif m == 3 then a[1] = first\n"
    "    elseif m == 4 then table.insert(a, 1, n)\n"
    "    elseif m == 5 then a[#a] = nil\n"
    "    else local c = 0 for _ in ipairs(a) do c = c + 1 end a[1] = c end\n"
    "  end)\n"
    "  e.arrays = n\n"
    "  return e\n"
    "end\n"
    /* the runtime's envelope: message as the event, metadata as its context */
    "function withMetadata(e, md)\n"
    "  local m = md(e)\n"
    "  if type(m) == 'table' and type(m.sourceId) ~= 'table' then e.fuzzSource = m.sourceId end\n"
    "  return e\n"
    "end\n"
    /* metadata read every way: a lazy view (validated) against the eager proxy; both read-only */
    "function metadataOps(e, md)\n"
    "  local m = md(e)\n"
    "  local keys, n = sorted(m), 0\n"
    "  for _, k in ipairs(keys) do\n"
    "    local v = m[k]\n"
    "    if type(v) == 'table' then\n"
    "      n = n + #v + rawlen(v) + (pcall(function() v.fz = 1 end) and 1000 or 1)\n"
    "      for _, k2 in ipairs(sorted(v)) do if type(v[k2]) == 'table' then n = n + 10 + #v[k2] end end\n"
    "      local first = next(v)\n"
    "      if first ~= nil and rawget(v, first) ~= v[first] and type(v[first]) ~= 'table' then n = n + 100000 end\n"
    "    end\n"
    "  end\n"
    "  e.fuzzKeys, e.fuzzN, e.fuzzMeta = #keys, n, m\n"
    "  e.fuzzWrites = (pcall(function() m.fz = 1 end) and 1 or 0) + (pcall(rawset, m, 'fz', 1) and 10 or 0)\n"
    "  return e\n"
    "end\n"
    /* nested tables read before the call waits on a lookup (lsb_call answers it with an error),
     * changed after: a lazy call's records move when it suspends (lsb_lazy_scoped.c) */
    "function waitOps(e)\n"
    "  local held = {}\n"
    "  arrays(e, 0, function(a) held[#held + 1] = a end)\n"
    "  local c = e.context\n"
    "  local tr = type(c) == 'table' and c.traits or nil\n"
    "  local _, err = enrich('fuzz', 'k')\n"
    "  for i, a in ipairs(held) do local first = a[1]; if i % 2 == 0 then a[#a + 1] = first end end\n"
    "  if type(tr) == 'table' then tr.fuzzAfter = err ~= nil end\n"
    "  e.fuzzHeld = #held\n"
    "  return e\n"
    "end\n";
static const char *const diff_entries[] = {"identity", "touch", "withMetadata", "modify", "arrayOps", "metadataOps", "waitOps"};

/* The limits every state of this target runs under. */
static lsb_config fuzz_config(void) {
    lsb_config cfg = {0};
    cfg.memory_limit = 32 << 20;
    cfg.time_limit_ns = 500000000ull;
    cfg.max_log_lines = 10;
    cfg.max_log_bytes = 1024;
    cfg.max_output_bytes = 1 << 20;
    return cfg;
}

static lsb_state *diff_state(void) {
    lsb_config cfg = fuzz_config();
    char err[200];
    lsb_state *st = lsb_new(&cfg, err, sizeof err);
    check(st != NULL, "lsb_new (differential state)");
    lsb_report r;
    lsb_load(st, diff_src, sizeof diff_src - 1, "@fuzz_diff.lua", diff_entries,
             (int)(sizeof diff_entries / sizeof diff_entries[0]), &r);
    check(r.status == LSB_OK && r.entry_mask == (1u << (sizeof diff_entries / sizeof diff_entries[0])) - 1,
          "load (differential state)");
    lsb_report_clear(&r);
    return st;
}

/* Message without the " at $path" of an output error (where the encoder first meets a bad
 * value depends on key order, which lazy output keeps from the input). */
static size_t msg_len(const char *m) {
    if (!m) return 0;
    const char *at = strstr(m, " at $");
    return at ? (size_t)(at - m) : strlen(m);
}

static int same_msg(const char *a, const char *b) {
    if (!a || !b) return a == b;
    size_t n = msg_len(a);
    return n == msg_len(b) && memcmp(a, b, n) == 0;
}

static void mismatch(const char *what, const char *entry, const char *json, size_t size, const lsb_report *lz,
                     const lsb_report *eg) {
    fprintf(stderr, "lazy/eager mismatch in %s (entry %s)\n", what, entry);
    fprintf(stderr, "input (%zu bytes): %.*s\n", size, (int)(size > 2000 ? 2000 : size), json);
    fprintf(stderr, "lazy:  status %d shape %d msg %s outputs %zu first %.*s\n", lz->status, lz->shape,
            lz->message ? lz->message : "-", lz->output_count,
            lz->output_count && lz->outputs[0].json ? (int)(lz->outputs[0].json_len > 2000 ? 2000 : lz->outputs[0].json_len) : 1,
            lz->output_count && lz->outputs[0].json ? lz->outputs[0].json : "-");
    fprintf(stderr, "eager: status %d shape %d msg %s outputs %zu first %.*s\n", eg->status, eg->shape,
            eg->message ? eg->message : "-", eg->output_count,
            eg->output_count && eg->outputs[0].json ? (int)(eg->outputs[0].json_len > 2000 ? 2000 : eg->outputs[0].json_len) : 1,
            eg->output_count && eg->outputs[0].json ? eg->outputs[0].json : "-");
    check(0, what);
}

static unsigned long diff_runs, diff_agreed_ok, diff_agreed_error, diff_limits, diff_unvalidated;

/* One entry over `json` (an object, already validated) with optional context, lazily and
 * eagerly; aborts when they disagree. */
static void differential(const char *entry, const char *json, size_t size, const char *ctx, size_t ctxlen) {
    if (!LZ) LZ = diff_state();
    if (!EG) EG = diff_state();
    lsb_input lin = {json, size, ctx, ctxlen, 1}, ein = {json, size, ctx, ctxlen, 0};
    lsb_report lz, eg;
    lsb_call(LZ, entry, &lin, 1, 0, &lz);
    lsb_call(EG, entry, &ein, 1, 0, &eg);
    diff_runs++;
    int limits = lz.status == LSB_ERR_MEMORY || lz.status == LSB_ERR_TIMEOUT || eg.status == LSB_ERR_MEMORY ||
                 eg.status == LSB_ERR_TIMEOUT;
    if (lsb_is_poisoned(LZ)) { lsb_free(LZ); LZ = NULL; }
    if (lsb_is_poisoned(EG)) { lsb_free(EG); EG = NULL; }
    if (limits) {   /* a resource limit, not a semantic difference: each mode uses its own memory */
        diff_limits++;
        goto done;
    }
    if (lz.status == LSB_ERR_INTERNAL || eg.status == LSB_ERR_INTERNAL) mismatch("internal error", entry, json, size, &lz, &eg);
    if (lz.status != eg.status) mismatch("status", entry, json, size, &lz, &eg);
    if (!same_msg(lz.message, eg.message)) mismatch("message", entry, json, size, &lz, &eg);
    if (lz.status != LSB_OK) {
        diff_agreed_error++;
        goto done;
    }
    if (lz.shape != eg.shape || lz.output_count != eg.output_count) mismatch("shape", entry, json, size, &lz, &eg);
    for (size_t i = 0; i < lz.output_count; i++) {
        const lsb_output *a = &lz.outputs[i], *b = &eg.outputs[i];
        if ((a->json == NULL) != (b->json == NULL) || !same_msg(a->error, b->error))
            mismatch("output slot", entry, json, size, &lz, &eg);
        if (!a->json) continue;
        char *v = lsb_json_validate(a->json, a->json_len);
        if (v) {
            fprintf(stderr, "lazy output invalid: %s\n", v);
            mismatch("lazy output is valid JSON", entry, json, size, &lz, &eg);
        }
        size_t clen = 0;
        char *cerr = NULL;
        char *canon = lsb_json_canonical(a->json, a->json_len, &clen, &cerr);
        if (!canon) {
            fprintf(stderr, "canonical: %s\n", cerr ? cerr : "?");
            mismatch("lazy output canonicalises", entry, json, size, &lz, &eg);
        }
        if (clen != b->json_len || memcmp(canon, b->json, clen) != 0) {
            /* the eager output is the encoder's canonical form; make sure before reporting */
            size_t elen = 0;
            char *eerr = NULL;
            char *ecanon = lsb_json_canonical(b->json, b->json_len, &elen, &eerr);
            int same = ecanon && elen == clen && memcmp(ecanon, canon, clen) == 0;
            if (!same) fprintf(stderr, "lazy canonical: %.*s\n", (int)(clen > 2000 ? 2000 : clen), canon);
            free(ecanon);
            free(eerr);
            if (!same) mismatch("canonical output", entry, json, size, &lz, &eg);
        }
        free(canon);
        free(cerr);
    }
    diff_agreed_ok++;
done:
    lsb_report_clear(&lz);
    lsb_report_clear(&eg);
}

static void report_counts(void) {
    fprintf(stderr,
            "lazy/eager differential: %lu call pairs: %lu equal outputs, %lu same error, %lu skipped at a resource "
            "limit; %lu invalid objects run lazily\n",
            diff_runs, diff_agreed_ok, diff_agreed_error, diff_limits, diff_unvalidated);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    const char *json = (const char *)data;
    if (!S) {
        lsb_config cfg = fuzz_config();
        char err[200];
        S = lsb_new(&cfg, err, sizeof err);
        check(S != NULL, "lsb_new");
        static const char src[] = "function transformEvent(e) return e end";
        lsb_report r;
        lsb_load(S, src, sizeof src - 1, "@fuzz.lua", (const char *const[]){"transformEvent"}, 1, &r);
        check(r.status == LSB_OK && r.entry_mask == 1, "load");
        lsb_report_clear(&r);
    }
    char *verr = lsb_json_validate(json, size);
    int valid = verr == NULL;
    free(verr);

    size_t *st = NULL, *ln = NULL;
    char *serr = NULL;
    long n = lsb_json_split_array(json, size, &st, &ln, &serr);
    for (long i = 0; i < n; i++) check(st[i] + ln[i] <= size, "split range");
    if (valid) {   /* a valid array's object elements are events too (the seeds are event arrays) */
        for (long i = 0, objects = 0; i < n && objects < 4; i++) {
            if (json[st[i]] != '{') continue;
            objects++;
            differential("identity", json + st[i], ln[i], NULL, 0);
            differential("touch", json + st[i], ln[i], NULL, 0);
        }
    }
    free(st);
    free(ln);
    free(serr);

    int shape;
    size_t ms, ml, ds, dl;
    char *eerr = lsb_json_envelope(json, size, &shape, &ms, &ml, &ds, &dl);
    check((eerr == NULL) == valid, "envelope and validate agree");
    if (!eerr && shape == 2) check(ms + ml <= size && (dl == 0 || ds + dl <= size), "envelope ranges");
    free(eerr);

    size_t clen = 0;
    char *cerr = NULL;
    char *canon = lsb_json_canonical(json, size, &clen, &cerr);
    if (valid && canon) {
        char *v2 = lsb_json_validate(canon, clen);
        check(v2 == NULL, "canonical output is valid JSON");
        free(v2);
        size_t c2len = 0;
        char *c2err = NULL;
        char *canon2 = lsb_json_canonical(canon, clen, &c2len, &c2err);
        check(canon2 && c2len == clen && memcmp(canon, canon2, clen) == 0, "canonical form is stable");
        free(canon2);
        free(c2err);
    }
    free(canon);
    free(cerr);

    if (valid && shape >= 1) {
        lsb_input in = {json, size, NULL, 0, 0};
        lsb_report r;
        lsb_call(S, "transformEvent", &in, 1, 0, &r);
        check(r.status == LSB_OK || r.status == LSB_ERR_OUTPUT || r.status == LSB_ERR_INPUT || r.status == LSB_ERR_MEMORY,
              "identity call: ok, or a clean output/input/memory error");
        if (r.status == LSB_OK && r.output_count == 1 && r.outputs[0].json) {
            char *v3 = lsb_json_validate(r.outputs[0].json, r.outputs[0].json_len);
            check(v3 == NULL, "encoded output is valid JSON");
            free(v3);
        }
        int poisoned = lsb_is_poisoned(S);
        lsb_report_clear(&r);
        if (poisoned) {   /* memory limit: start over with a fresh state */
            lsb_free(S);
            S = NULL;
        }
        differential("identity", json, size, NULL, 0);
        differential("touch", json, size, NULL, 0);
        differential("modify", json, size, NULL, 0);
        differential("arrayOps", json, size, NULL, 0);
        differential("waitOps", json, size, NULL, 0);
        if (shape == 2) {   /* as the runtime calls an envelope: the message, its metadata as context */
            differential("withMetadata", json + ms, ml, dl ? json + ds : NULL, dl);
            differential("metadataOps", json + ms, ml, dl ? json + ds : NULL, dl);
            differential("touch", json + ms, ml, NULL, 0);
            differential("modify", json + ms, ml, NULL, 0);
            differential("arrayOps", json + ms, ml, NULL, 0);
        }
    } else if (valid && size < 65536) {
        /* any other valid value, as a member of an object: {"a":VALUE,"b":1} */
        char *w = malloc(size + 16);
        check(w != NULL, "malloc");
        memcpy(w, "{\"a\":", 5);
        memcpy(w + 5, json, size);
        memcpy(w + 5 + size, ",\"b\":1}", 7);
        char *werr = lsb_json_validate(w, size + 12);   /* one level deeper: may pass the depth limit */
        if (!werr) {
            differential("identity", w, size + 12, NULL, 0);
            differential("touch", w, size + 12, NULL, 0);
            differential("modify", w, size + 12, NULL, 0);
        }
        free(werr);
        free(w);
    } else if (!valid) {
        /* "validated" is the caller's promise; when it is broken the lazy scanner must still stay
         * in bounds (ASan/UBSan watch), whatever the outcome */
        size_t a = 0;
        while (a < size && (json[a] == ' ' || json[a] == '\n' || json[a] == '\r' || json[a] == '\t')) a++;
        if (a < size && json[a] == '{') {
            /* a state of its own, freed before returning: a failed call leaves garbage in the
             * Lua heap, and libFuzzer runs a (slow) leak check after every input that ends with
             * more mallocs than frees */
            lsb_state *st = diff_state();
            lsb_input in = {json, size, NULL, 0, 1};
            const char *entries[] = {"identity", "touch", "modify"};
            for (int k = 0; k < 3 && !lsb_is_poisoned(st); k++) {
                lsb_report r;
                lsb_call(st, entries[k], &in, 1, 0, &r);
                check(r.status != LSB_ERR_INTERNAL, "lazy call on unvalidated input: no internal error");
                lsb_report_clear(&r);
            }
            lsb_free(st);
            diff_unvalidated++;
        }
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    atexit(report_counts);
    return 0;
}
