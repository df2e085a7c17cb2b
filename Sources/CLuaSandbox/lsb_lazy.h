#ifndef LSB_LAZY_H
#define LSB_LAZY_H
/*
 * Lazy event objects (lsb_lazy.c): a JSON object handed to a script as a table whose members
 * are decoded on first access, so a filter that reads three fields never builds the other
 * hundred, and an object whose fields are unchanged is written back as its input bytes.
 *
 * Invariants:
 * - The script sees an ordinary table: reads decode the member into the table itself (so
 *   identity is stable and later reads are plain table reads); writes are plain writes. A
 *   scalar member (string, number, boolean, null) is handed out without being stored on its
 *   first two reads, and stored on its third: a value has no identity, and a field read once or
 *   twice (a filter, a type check and a use) then costs no table insert and nothing to compare
 *   when the event is written.
 *   pairs/next and setmetatable first materialise every member; the sandbox's rawget and
 *   rawset see unread members too (lsb_lazy_rawget, lsb_lazy_touch), and the output nesting
 *   limit applies to untouched bytes as to tables.
 * - Each object remembers which members were handed out or assigned (`touched`). A touched
 *   member absent from the table was deleted and never comes back from the bytes.
 * - `assigned` is set by every write that can add a key to the table: __newindex (any key; Lua
 *   calls it whenever the key's raw value is nil) and the sandbox's rawset (lsb_lazy_touch).
 *   Every other raw write to a lazy table is a materialisation, which adds a touched member's
 *   key. So while `assigned` is clear the table's keys are touched members' keys; the values of
 *   keys already present can still be replaced (or deleted) by plain assignment, which runs no
 *   metamethod, so only comparing them tells whether they changed.
 * - `marked` is set when json.array was applied to the table (it is in ARRAYS too).
 * - The encoder emits an untouched member, or a touched one whose value is still the one
 *   decoded, as its input bytes; members keep their input order and keys the script added
 *   follow, sorted.
 * - The bytes live in a document every object of the event references (its record's
 *   uservalue 1), so a proxy never outlives them. Except for the one event of a call that is
 *   not batched: its bytes are copied to the state's arena (host memory, reused by the next
 *   call, so they add no garbage for the collector) and the document points there. That is
 *   safe because no lazy table is reachable once its call has ended (a kept environment that
 *   holds one is dropped, lsb_reuse.c; outputs are encoded before the call ends), and a call
 *   that suspends takes the arena along (lsb_invocation.arena) until it finishes. The
 *   document also holds, computed once per event, a bitmap of the quotes that delimit strings
 *   and one of the brackets outside strings,
 *   so skipping a nested value or string costs per bracket or quote, not per byte. An event up
 *   to 8 KiB is one userdata: the top object's record, then the document. Input must already be
 *   valid JSON (the caller validated it); scanning stays in bounds regardless. When the bytes
 *   are an envelope's message that lsb_run_share validated with lsb_json_envelope_indexed, the
 *   index and the top object's members come from that validation (lsb_lazy_offer), equal to
 *   what the scan here would find (Fuzz/fuzz_validator_diff.c checks that).
 * - A call's lazy tables (nested ones, and a batch's events) are not in LAZYMAP while the call
 *   runs: nested tables' records live in host memory (a bump pool per state), a batch event's in
 *   its document's userdata; they are found through the cache or a hash of the call's tables,
 *   and anchor lists (the cache's uservalues 6 and 7) keep each table and its document alive
 *   until the call ends. The reachability argument above makes that safe: once the call ends
 *   without suspending nothing can reach those tables, and lsb_lazy_call_ended forgets every
 *   pointer to the records (hash, anchors, cache entries) before the pool is reused. A call that suspends
 *   moves them into userdata entered in LAZYMAP first (lsb_lazy_keep_top).
 * - LAZYMAP (weak keys) maps each lazy table to its record and keeps the record alive. A
 *   per-state cache keyed by table address answers first; it is consulted only for a table
 *   whose metatable is the lazy one (scripts cannot reach it), i.e. a live lazy table, whose
 *   making overwrote its slot, so entries left by collected tables are never read. The table
 *   of a call's one event (in the arena) skips LAZYMAP while it is the latest: the cache's
 *   uservalues hold it and its record, until a suspension enters it (lsb_lazy_keep_top). That
 *   record has room for any arena event and, unless its call suspended, the next one-event call
 *   rewrites it in place (the same reachability argument as the arena's).
 * - Objects with more than LSB_LAZY_MAX_MEMBERS members, duplicate keys or escaped keys are
 *   decoded eagerly (a plain table), which is always correct.
 *
 * Lazy arrays: a non-empty array member (or element) whose token is at least
 * LSB_LAZY_ARRAY_MIN_BYTES long is handed out as an empty table with the lazy array metatable,
 * its elements' offsets in its record (found when it is made). Its first access of any kind
 * (__index, __newindex, __len, __pairs, and the sandbox's next, rawget, rawset, rawlen and
 * table.* functions) forces it: every element is decoded into raw slots 1..count (objects as
 * lazy objects, arrays as lazy arrays), the table enters ARRAYS as an eager array would, and
 * `forced` is set. From then on it is an ordinary table whose __len is its raw length and whose
 * __index finds nothing, so reads and writes are raw and only comparing tells a change:
 * - `assigned` is set by every write that can add a key (__newindex, rawset);
 * - an unforced array is clean: its input bytes are written;
 * - a forced one is clean while nothing was assigned and element i is still the value element i
 *   decoded to (the same lazy child, itself clean; a plain table holding exactly the element's
 *   scalars; or an equal scalar); otherwise it is written as the plain table it now is, each
 *   element still equal to its input as its input bytes. json.array marks change nothing for a
 *   non-empty array. A plain table of scalars is compared so wherever a member or element is one
 *   (a short array, an object decoded eagerly).
 */
#include "lsb_internal.h"
#include "lsb_json.h"

#define LSB_LAZY_MAX_MEMBERS 64
#define LSB_LAZY_ARRAY_MIN_BYTES 32   /* shorter arrays are decoded eagerly */

typedef struct {
    uint32_t koff, klen;   /* key bytes (between the quotes), offsets into base */
    uint32_t voff, vlen;   /* value token */
} lsb_lazy_member;

/* The event's bytes and their index (lsb_lazy.c): a userdata every object of the event references. */
typedef struct lsb_lazy_doc lsb_lazy_doc;

typedef struct {
    const char *base;      /* the event's bytes (in doc, which uservalue 1 keeps alive) */
    const lsb_lazy_doc *doc;
    uint32_t off, len;     /* this object's token */
    uint64_t touched;      /* bit i: member i was materialised or assigned */
    uint64_t peeked;       /* bit i: scalar member i was read once, without being stored */
    uint64_t peeked2;      /* bit i: ... and twice (the third read stores it) */
    unsigned char compact; /* no whitespace outside strings in base */
    unsigned char escapes; /* some backslash occurs in base */
    unsigned char assigned;/* some key was written by __newindex or rawset (see above) */
    unsigned char marked;  /* json.array(t) was applied */
    unsigned char array;   /* a lazy array (see below): m[] are its elements, keys unused */
    unsigned char forced;  /* an array: every element is in the table (raw 1..count) */
    unsigned short anchor; /* call-scoped (lsb_lazy_scoped.c) with its document in the documents
                            * list: its position there (1-based); else 0 */
    uint32_t height;       /* nesting of this token: 1 when no member is a container */
    int count;
    lsb_lazy_member m[];
} lsb_lazy;

extern const char LSB_KEY_LAZYMAP;   /* registry: weak-keyed proxy table -> lsb_lazy userdata */

/* Builds the lazy tables' shared metatable and the record cache (called while the state is
 * built; LAZYMAP is one of the weak registry tables lsb_build_env makes). */
void lsb_lazy_init(lua_State *L);

/* Pushes the value of the JSON text json[0..len) (already validated): a lazy table for an
 * object, the eager decoding otherwise. Returns 0, or -1 with a message in err. */
int lsb_lazy_push(lua_State *L, const char *json, size_t len, char *err, size_t errlen);

/* Pushes the object json[0..len) (already validated) as a lazy table of its own document, found
 * through LAZYMAP like a nested table, leaving the call's event as it is (lsb_view.c: metadata).
 * Returns -1, pushing nothing, when the text is not an object (the caller decodes it eagerly). */
int lsb_lazy_push_detached(lua_State *L, const char *json, size_t len);

/* Offers ix (lsb_json_envelope_indexed) to state S's lsb_lazy_push: a push of exactly the bytes
 * ix->json[0, ix->len) then uses ix's index instead of computing it. The caller keeps *ix as it
 * is until it withdraws the offer (ix NULL), at the latest before those bytes change. */
void lsb_lazy_offer(lsb_state *S, const lsb_json_index *ix);
/* The running call suspends: its one event's table, if it has one, is entered in LAZYMAP (a
 * one-event call's table is found without it only while it is the latest; see lsb_lazy.c), and
 * so are its nested tables, whose records move from host memory into userdata. */
void lsb_lazy_keep_top(lua_State *L);
/* The running call has ended (lsb_finish): its call-scoped records are released (the pool is
 * reused, the anchors let go) and nothing refers to them any more. Touches no Lua value when
 * `escaped`. */
void lsb_lazy_call_ended(lsb_state *S, int escaped);
/* Frees the host memory of the call-scoped records (lsb_free). */
void lsb_lazy_free_scoped(lsb_state *S);
/* For tests: the member scan lsb_lazy_push makes of the object json[0, len) (index and members
 * found from the bytes alone): 0 with the members (4 words each, as in lsb_json_index), their
 * count and the object's height; 1 when it would be decoded eagerly; -1 when malformed. */
int lsb_lazy_scan_members(const char *json, size_t len, uint32_t *members, int *count, uint32_t *height);

/* The lazy record of the table at idx, or NULL. Pushes nothing. */
lsb_lazy *lsb_lazy_of(lua_State *L, int idx);
/* Member `key` of the lazy object at idx as its input has it, without a Lua read: 1 with a
 * string without escapes (*s, *n: its bytes in the event), 0 when the object has no such
 * member, -1 when the caller must read it through Lua (not a lazy object, a member already read
 * or assigned, or another value). Pushes nothing. */
int lsb_lazy_string_member(lua_State *L, int idx, const char *key, size_t klen, const char **s, size_t *n);
/* The same for a table at absolute index idx, given the state's cache (lsb_state.lazy). */
lsb_lazy *lsb_lazy_of_table(lua_State *L, void *cache, int idx);

/* Materialises every member of the lazy table at idx into it (no-op for other values). */
void lsb_lazy_force(lua_State *L, int idx);
/* Forces the table at idx if it is a lazy array (see above); returns whether it is one. */
int lsb_lazy_force_array(lua_State *L, int idx);
/* lsb_lazy_force, then makes it a plain table (no metatable, no record). */
void lsb_lazy_strip(lua_State *L, int idx);
/* Marks member `key` of the lazy table at idx as assigned, and the table as written to (before
 * a raw write of key, whatever its type). */
void lsb_lazy_touch(lua_State *L, int idx, int keyidx);
/* rawget for a lazy table: materialises member key first. Pushes the value. */
void lsb_lazy_rawget(lua_State *L, int idx, int keyidx);

/* The members (or elements, keys empty) of z's member m, a container token: 0 with at most
 * LSB_LAZY_MAX_MEMBERS of them in out, their count and the token's nesting; 1 when there are more,
 * a duplicate or escaped key, or m is a scalar; -1 when malformed. */
int lsb_lazy_scan_token(const lsb_lazy *z, const lsb_lazy_member *m, lsb_lazy_member *out, int *count,
                        uint32_t *height);
/* Member i's index in z for key k, or -1. */
int lsb_lazy_find(const lsb_lazy *z, const char *k, size_t n);
/* Nesting of the JSON value json[0..len) (0 for a scalar). */
uint32_t lsb_lazy_height(const char *json, size_t len);
/* Copies JSON bytes, dropping whitespace outside strings when the source is not compact. */
size_t lsb_lazy_compact_copy(char *dst, const char *src, size_t n);

#endif
