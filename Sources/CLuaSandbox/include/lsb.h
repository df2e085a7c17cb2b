#ifndef LSB_H
#define LSB_H
/*
 * luaform's C sandbox: the only code that touches a lua_State.
 *
 * Every entry point below runs its Lua work inside lua_pcall and returns a status plus
 * host-owned buffers, so a Lua error never longjmps across Swift frames. A state is
 * single-threaded: the caller serialises access.
 */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lsb_state lsb_state;

/* Outcome of a load or call. */
typedef enum {
    LSB_OK = 0,
    LSB_ERR_RUNTIME = 1,   /* error() or a runtime error in user code */
    LSB_ERR_TIMEOUT = 2,   /* the host's time limit fired */
    LSB_ERR_MEMORY = 3,    /* the allocator refused to exceed the memory limit */
    LSB_ERR_OUTPUT = 4,    /* the returned value cannot be represented as JSON */
    LSB_ERR_INPUT = 5,     /* an argument was not valid JSON / UTF-8 */
    LSB_ERR_SYNTAX = 6,    /* the chunk did not compile */
    LSB_ERR_INTERNAL = 7,  /* host misuse or an unexpected state */
    LSB_ERR_ENRICHMENT = 8,/* a required enrich() lookup failed */
    LSB_PENDING = 9        /* suspended on a host request: see request_args, then lsb_continue */
} lsb_status;

/* Shape of the value an entry point returned. */
typedef enum {
    LSB_SHAPE_NONE = 0,      /* nothing was returned (error) */
    LSB_SHAPE_NIL = 1,       /* nil */
    LSB_SHAPE_OBJECT = 2,    /* one table that is not a sequence of tables */
    LSB_SHAPE_SEQUENCE = 3,  /* a non-empty sequence (array) */
    LSB_SHAPE_OTHER = 4      /* a boolean, number, string, ...: type name in message */
} lsb_shape;

/*
 * Loads library source for `require(name)`. Called from a C trampoline; it must not raise.
 * Fill *src and *len with malloc'd bytes (freed by the sandbox) and *chunkname with a malloc'd
 * "@path" string, and return 0; return 1 if the library does not exist; -1 on other errors
 * (put a malloc'd message in *src, *len).
 */
typedef int (*lsb_library_loader)(void *ctx, const char *name, char **src, size_t *len, char **chunkname);

/*
 * Answers a synchronous host function (today: `secret(name)`). Called from a C trampoline;
 * it must not raise. Returns 0 with a malloc'd value in *out and *outlen, or non-zero with a
 * malloc'd error message there (raised as a Lua error by the trampoline).
 */
typedef int (*lsb_host_sync)(void *ctx, const char *op, const char *arg, char **out, size_t *outlen);

typedef struct {
    size_t memory_limit;        /* bytes, whole state; 0 = unlimited */
    uint64_t time_limit_ns;     /* per load/call; 0 = unlimited */
    size_t max_log_lines;       /* per call */
    size_t max_log_bytes;       /* per call */
    size_t max_output_bytes;    /* per encoded output value */
    lsb_library_loader loader;  /* may be NULL: require then always fails */
    void *loader_ctx;
    lsb_host_sync host;         /* may be NULL: secret() then always fails */
    void *host_ctx;
    int max_host_calls;         /* host requests (enrich) per call; 0 = unlimited */
} lsb_config;

#define LSB_MAX_REQUEST_ARGS 6

/* One input value for a call: JSON bytes, plus optional context JSON (returned by the
 * `metadata(value)` host function for that value). When `validated` is set the caller has
 * already checked `json` (lsb_json_validate / lsb_json_envelope, or it came from this bridge's
 * encoder): an object is then handed to the script lazily, decoded as it is read and written
 * back from its input bytes where unchanged. Otherwise it is validated and decoded eagerly. */
typedef struct {
    const char *json;
    size_t json_len;
    const char *context;       /* may be NULL */
    size_t context_len;
    int validated;
} lsb_input;

/* One returned element. `json` is NULL when `error` is set. */
typedef struct {
    char *json;
    size_t json_len;
    char *error;               /* slot-level encoding error, or NULL */
    long origin;               /* index of the input it came from, or -1 */
} lsb_output;

typedef struct {
    lsb_status status;
    lsb_shape shape;
    char *message;             /* error message (status != OK) or type name (SHAPE_OTHER) */
    char *traceback;           /* user frames only, "file:line: in function" lines; may be NULL */
    lsb_output *outputs;
    size_t output_count;
    char **logs;
    size_t log_count;
    size_t logs_dropped;       /* lines not kept because of the log limits */
    unsigned entry_mask;       /* lsb_load: bit i set when entries[i] is a global function */
    size_t peak_memory;        /* state's peak heap bytes during this call */
    /* LSB_PENDING: the request, as strings: op ("enrich"), then its arguments */
    char *request_args[LSB_MAX_REQUEST_ARGS];
    size_t request_lens[LSB_MAX_REQUEST_ARGS];
    int request_argc;
} lsb_report;

/* A call suspended on a host request. Owned by the caller until it is passed back to
 * lsb_continue or lsb_abandon; only valid with the state that made it. */
typedef struct lsb_invocation lsb_invocation;

/* Creates a hardened state. Returns NULL and fills err when the state cannot be built. */
lsb_state *lsb_new(const lsb_config *cfg, char *err, size_t errlen);
void lsb_free(lsb_state *S);

/* Compiles `src` (text only) as the state's main chunk under `chunkname` ("@path"), runs it
 * once in a fresh environment, and reports which of `entries` it defined as functions. */
void lsb_load(lsb_state *S, const char *src, size_t len, const char *chunkname,
              const char *const *entries, int entry_count, lsb_report *out);

/* Runs the main chunk in a fresh environment, then calls global `entry` in a coroutine:
 * batched == 0: entry(value_of(inputs[0]), metadata)   (exactly one input)
 * batched != 0: entry({values...}, metadata)
 * `metadata(v)` returns a read-only view of v's context. When the script makes a host request
 * (enrich), out->status is LSB_PENDING, the request is in out->request_*, and the returned
 * invocation must be passed to lsb_continue (or lsb_abandon). Otherwise returns NULL and
 * `out` is the final report. The time limit runs from lsb_begin, waiting included. Several
 * invocations of one state may be suspended at once; each has its own globals. */
lsb_invocation *lsb_begin(lsb_state *S, const char *entry, const lsb_input *inputs, size_t count,
                          int batched, lsb_report *out);

/* Continues a suspended invocation with the reply: JSON of the value (reply, len), or NULL
 * and an error message (the script sees nil, message). Same contract as lsb_begin. */
lsb_invocation *lsb_continue(lsb_state *S, lsb_invocation *inv, const char *reply, size_t len,
                             const char *error, lsb_report *out);

/* Drops a suspended invocation without finishing it. */
void lsb_abandon(lsb_state *S, lsb_invocation *inv);

/* lsb_begin, answering every host request with an error. */
void lsb_call(lsb_state *S, const char *entry, const lsb_input *inputs, size_t count,
              int batched, lsb_report *out);

/* Frees the buffers in a report and zeroes it. */
void lsb_report_clear(lsb_report *out);

/* Non-zero once a limit or internal error made the state unusable; discard it. */
int lsb_is_poisoned(const lsb_state *S);

/* Bytes currently held by the state's heap. */
size_t lsb_memory_used(const lsb_state *S);

/* How many times the main chunk's top level has run in this state (the load included). A call
 * runs it only when the last call changed what it made, or when that cannot be checked. */
size_t lsb_top_level_runs(const lsb_state *S);

/* Whether the kept environment's check compares the top level's tables as images of Lua's own
 * storage (the default where this process's Lua has the layout they read) or member by member
 * through the API. For tests of both: `on` 0 turns images off, 1 back on where they are
 * available, -1 leaves the setting; it applies from the next recording. Returns the setting. */
int lsb_table_images(lsb_state *S, int on);
/* Whether the kept environment's tables are write-protected now (lsb_table_arena.c): a call's
 * check then reads one flag for them instead of comparing them. */
int lsb_kept_tables_protected(const lsb_state *S);

/* The watchdog (see lsb_watchdog.c). Signals sent to threads past their deadline so far. */
unsigned long lsb_watchdog_signals(void);
/* Last resort for a long-running server: when a thread is still running user code this long
 * past its deadline (0, the default, = never), the process writes a line to stderr and exits
 * with status 70 so its supervisor replaces it. */
void lsb_watchdog_set_fatal_overdue(uint64_t ns);
/* Calls left mid-operation (their states abandoned, not closed), and the heap bytes those
 * abandoned states held. */
unsigned long lsb_watchdog_escapes(void);
size_t lsb_watchdog_abandoned_bytes(void);
/* When abandoned states hold more than this (0, the default, = no limit), the process writes a
 * line to stderr and exits with status 70 for its supervisor to replace it. */
void lsb_watchdog_set_max_abandoned(size_t bytes);

/* ---- a share of a batch in one call (lsb_share.c) ---- */

/* One item of a share: a whole input line ({"message", "metadata"} envelope or a bare event
 * object), or an event with its context (metadata, may be NULL). `validated`: an event (not a
 * line) the caller already checked with the validator; otherwise it is checked here. */
typedef struct {
    const char *json;
    size_t json_len;
    const char *context;
    size_t context_len;
    int validated;
    /* The event's index, found while the request was split (a record of lsb_split_index for
     * exactly these json bytes), or NULL: the event is indexed when it runs. */
    const void *index;
} lsb_item;

/* How common answers are written (the caller's wire format; every string NUL-terminated):
 * kept:    kept_open EVENT kept_mid METADATA kept_close, per output event, joined by separator;
 * dropped: dropped_open METADATA-with-dropped_member-added dropped_close.
 * METADATA is the item's metadata bytes as given, or no_metadata. */
typedef struct {
    const char *kept_open, *kept_mid, *kept_close;
    const char *dropped_open, *dropped_member, *dropped_close;
    const char *no_metadata;
    const char *separator;
} lsb_answer_format;

typedef enum {
    LSB_ANSWER_KEPT = 0,     /* bytes[start, start+len) holds `outputs` answers */
    LSB_ANSWER_DROPPED = 1,  /* bytes[start, start+len) holds the dropped answer */
    LSB_ANSWER_INVALID = 2,  /* not valid input: never reached Lua; the caller says why */
    LSB_ANSWER_REPORT = 3,   /* anything else: `report` is the call's full report */
    LSB_ANSWER_PENDING = 4   /* suspended on a host request: `report` holds the request and
                              * `invocation` goes to lsb_continue or lsb_abandon */
} lsb_answer_kind;

typedef struct {
    lsb_answer_kind kind;
    size_t start, len;         /* KEPT, DROPPED: the answer(s) in the share's bytes */
    size_t outputs;            /* KEPT: output events */
    uint64_t started_ns;       /* when the call began (the clock of the time limits) */
    uint64_t duration_ns;      /* the call, up to its answer or its first host request */
    size_t peak_memory;
    lsb_report report;         /* REPORT, PENDING: owned by the caller (lsb_report_clear) */
    lsb_invocation *invocation;/* PENDING */
} lsb_answer;

/* A growable malloc'd buffer the caller frees. Or, when `borrowed`, cap bytes of the caller's
 * memory: written in place while they suffice, else moved (with what was written) to a fresh
 * malloc'd block, which clears `borrowed` and is then the caller's to free. */
typedef struct {
    char *data;
    size_t len, cap;
    int borrowed;
} lsb_bytes;

/* Now, on the clock of the time limits (and of lsb_answer.started_ns). */
uint64_t lsb_clock_ns(void);

/* Runs items[0..count) one by one through global `entry` (one event per call, not batched), as
 * lsb_begin would, filling answers[i] and appending each kept or dropped item's answers,
 * followed by fmt->separator, to *bytes (a dropped item's to *dropped instead, when dropped is
 * not NULL: then each answer's start is in the buffer its kind says). `lines`: items are whole
 * lines (split with lsb_json_envelope) rather than events. Stops after a call that leaves the
 * state poisoned (a limit fired): returns how many items were answered; rebuild the state for
 * the rest. */
size_t lsb_run_share(lsb_state *S, const char *entry, const lsb_item *items, size_t count, int lines,
                     const lsb_answer_format *fmt, lsb_answer *answers, lsb_bytes *bytes, lsb_bytes *dropped);

/* Runs items[0..count) (as lsb_run_share takes them) as one batched call of global `entry`
 * (transformBatch), and answers each item in fmt: answers[i] is INVALID for an item that is not
 * valid input (not passed to the call), and for the others KEPT or DROPPED when the call
 * returned nil, a table or a sequence of tables (each returned event attributed to the input it
 * came from, else to the input at its own position), written in item order as lsb_run_share
 * writes them. Otherwise every valid item's answer is REPORT and *report is the call's full
 * report (outputs' origins are positions among the valid items, in item order), or PENDING when
 * the call suspended on a host request: the invocation is returned (lsb_continue or
 * lsb_abandon) and *report holds the request. The caller clears *report either way. */
lsb_invocation *lsb_run_batch(lsb_state *S, const char *entry, const lsb_item *items, size_t count, int lines,
                              const lsb_answer_format *fmt, lsb_answer *answers, lsb_bytes *bytes, lsb_bytes *dropped,
                              lsb_report *report);

/* Process-wide: tunes the C allocator for a long-running stage (large buffers from the heap
 * rather than fresh mappings). Call once at start-up, before threads start. */
void lsb_tune_process_allocator(void);

/* Re-encodes JSON canonically (sorted keys, shortest round-trip floats) using the same
 * bridge the sandbox uses. Returns NULL and sets *err (malloc'd) on invalid input. */
char *lsb_json_canonical(const char *json, size_t len, size_t *out_len, char **err);

/* Splits a JSON array into its element byte ranges (structure only, any depth: validate each
 * element separately for UTF-8 and depth). Returns element count, or -1 with a
 * malloc'd message in *err. *starts and *lens are malloc'd arrays owned by the caller. */
long lsb_json_split_array(const char *json, size_t len, size_t **starts, size_t **lens, char **err);

/* lsb_json_split_array that also finds, in the same pass, the top-level fields keys[0..nkeys)
 * (at most 8) of every element that is an object: (*fields)[(e * nkeys + i) * 2] and [.. + 1] are
 * the start (relative to the element) and length of element e's keys[i] value, length 0 when
 * absent. *fields is malloc'd like *starts. */
long lsb_json_split_array_fields(const char *json, size_t len, const char *const *keys, int nkeys,
                                 size_t **starts, size_t **lens, size_t **fields, char **err);

/* lsb_json_split_array_fields for a request body, trying first the common case of a body that
 * is valid JSON throughout: then *validated is 1 and every element, and every member value of
 * every object element, passes lsb_json_validate on its own. Otherwise *validated is 0 and the
 * result is the structure-only split's. */
long lsb_json_split_request(const char *json, size_t len, const char *const *keys, int nkeys,
                            size_t **starts, size_t **lens, size_t **fields, int *validated, char **err);

/* Where lsb_json_split_request_indexed leaves each element's index of its keys[0] member (the
 * event, when an object of at most 8 KiB): records in `blob`, element i's at blob + at[i], or
 * at[i] == LSB_NO_INDEX for none. Both malloc'd and owned by the caller (NULL when the split
 * took the structure-only path). A record is for lsb_item.index. */
typedef struct {
    char *blob;
    size_t *at;
} lsb_split_index;
#define LSB_NO_INDEX ((size_t)-1)

/* lsb_json_split_request that also indexes each element's keys[0] member while validating it,
 * so the worker that runs the event need not index it again. `index` may be NULL. */
long lsb_json_split_request_indexed(const char *json, size_t len, const char *const *keys, int nkeys,
                                    size_t **starts, size_t **lens, size_t **fields, int *validated,
                                    lsb_split_index *index, char **err);

/* Validates one JSON value (grammar, UTF-8, depth). Returns NULL, or a malloc'd message. */
char *lsb_json_validate(const char *json, size_t len);

/* One pass over one event: validates it (grammar, UTF-8, depth) and, for an object with a
 * "message" object member (a {message, metadata} envelope), gives the byte ranges of
 * "message" and "metadata" (md_len 0 when absent). *shape: 0 not an object, 1 an object,
 * 2 an envelope. Returns NULL, or a malloc'd message when the JSON is invalid. */
char *lsb_json_envelope(const char *json, size_t len, int *shape, size_t *msg_start, size_t *msg_len,
                        size_t *md_start, size_t *md_len);

/* Finds the value of `key` in a JSON object (structure only, any depth: values are not
 * checked for UTF-8): returns 1 and the byte range when present, 0 when absent, -1 when
 * `json` is not an object. */
int lsb_json_object_field(const char *json, size_t len, const char *key, size_t *start, size_t *vlen);

#ifdef __cplusplus
}
#endif
#endif
