#ifndef LSB_LAZY_CACHE_H
#define LSB_LAZY_CACHE_H
/* Private to the lazy objects (lsb_lazy.c, lsb_lazy_scoped.c): the per-state record cache, and
 * the call-scoped records of a call's lazy tables. Not part of the public API. */
#include "lsb_lazy.h"

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

#define CACHE_SLOTS 256   /* an array's elements are live lazy tables at once */

typedef struct {
    const void *meta;          /* LAZYMETA, the lazy objects' metatable */
    const void *ameta;         /* the lazy arrays' metatable */
    const lsb_lazy_doc *cur;   /* the document in uservalue 3: the latest event's */
    const lsb_json_index *offer;   /* lsb_lazy_offer's index, or NULL */
    const void *top_t;         /* the table in uservalue 4, or NULL (see lsb_lazy.c) */
    lsb_lazy *top_z;           /* its record: the userdata in uservalue 3 */
    int top_fixed;             /* uservalue 3 is a one-event call's record of TOP_SIZE bytes */
    unsigned top_marks;        /* lsb_state.array_marks when the table in uservalue 4 was last made lazy */
    int scoped;                /* the running call's nested tables get call-scoped records (lsb_lazy_scoped.c) */
    struct {
        const void *t;
        lsb_lazy *z;
    } e[CACHE_SLOTS];
} lazy_cache;   /* a userdata: uservalue 1 LAZYMETA, 2 LAZYMAP (filled on first use), 3 the latest document,
                   4 the latest one-event call's table, 5 the lazy arrays' metatable, 6 the anchor list of
                   the call-scoped tables, 7 their documents (lsb_lazy_scoped.c) */

static inline unsigned cache_slot(const void *t) {
    uintptr_t p = (uintptr_t)t;
    return (unsigned)((p >> 4) ^ (p >> 11)) & (CACHE_SLOTS - 1);
}

/* Fills record z for the token d->bytes[off, off+len) with its count members m and nesting. */
void lsb_lazy_fill_record(lsb_lazy *z, const lsb_lazy_doc *d, size_t off, size_t len, const lsb_lazy_member *m,
                          int count, uint32_t height);

/* Pushes the lazy table of a record made from members m[0..count) of document d (the userdata
 * at docidx; an array's elements when `array`), with a call-scoped record; returns it, or NULL
 * (pushing nothing) when the caller must make a userdata record instead (no call is running, or
 * past the call's bounds). c is the cache, at cidx. */
lsb_lazy *lsb_scoped_push(lua_State *L, lazy_cache *c, int cidx, const lsb_lazy_doc *d, int docidx, size_t off,
                          size_t len, const lsb_lazy_member *m, int count, uint32_t height, int array);
/* Makes the lazy table of record z, which lives in the userdata at the top of the stack (a batch
 * event's record with its document), call-scoped: replaces the userdata with the table and
 * returns 1; or returns 0, the stack as it was, when the caller must enter it in LAZYMAP. */
int lsb_scoped_adopt(lua_State *L, lazy_cache *c, int cidx, lsb_lazy *z);
/* The call-scoped record of live lazy table t, or NULL. */
lsb_lazy *lsb_scoped_find(const lsb_state *S, const void *t);
/* The call suspends: its call-scoped tables' records move into userdata entered in LAZYMAP (at
 * stack index map); the cache is at cidx. */
void lsb_scoped_keep(lua_State *L, lazy_cache *c, int cidx, int map);

#endif
