/*
 * A state's small-block heap: Lua's allocations of up to LSB_HEAP_SMALL bytes come from
 * per-size free lists carved out of one LSB_HEAP_REGION region per state, the rest (and small
 * blocks once the region is used up) from malloc, through per-thread spare lists for blocks up
 * to LSB_SPARE_MAX bytes (below). Most of what a state
 * allocates (strings, tables, closures, table parts) is small and short-lived, and a free-list
 * pop or push costs a few instructions where malloc/free cost ~100.
 *
 * Invariants:
 * - Only the thread running the state touches its heap (a state is single-threaded).
 * - A block's class comes from the size Lua gives back when it frees or resizes it (Lua always
 *   passes the exact size it asked for), so no header is stored.
 * - Built with AddressSanitizer (the fuzzers), every block is a plain malloc instead.
 * - A block is the heap's exactly when its address is inside the region, so a state holds at
 *   most LSB_HEAP_REGION bytes beyond what it uses (free blocks are not returned), whatever
 *   its peak was (and each thread at most LSB_SPARE_BYTES of spare malloc blocks, for all
 *   its states). The region is released only by lsb_heap_release, after lua_close (or never,
 *   for a state the watchdog abandoned: nothing of it is touched again). A state's memory accounting (used,
 *   peak, limit) stays in lsb_alloc and counts requested bytes, as before.
 */
#include "lsb_internal.h"
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/* A block of class c from its free list or the region's uncarved part; NULL when the region
 * is used up (the caller then takes it from malloc). */
static void *small_alloc(lsb_heap *h, int c) {
    void **b = h->free[c];
    if (b) {
        h->free[c] = *b;
        return b;
    }
    if (!h->region) {
        h->region = malloc(LSB_HEAP_REGION);
        if (!h->region) return NULL;
        h->next = h->region;
    }
    size_t bytes = (size_t)c * LSB_HEAP_GRAIN;
    if ((size_t)(h->region + LSB_HEAP_REGION - h->next) < bytes) return NULL;
    void *p = h->next;
    h->next += bytes;
    return p;
}

static inline void small_free(lsb_heap *h, void *p, int c) {
    void **b = p;
    *b = h->free[c];
    h->free[c] = b;
}

/* Blocks from malloc of up to LSB_SPARE_MAX bytes: small ones when the state's region is used
 * up, medium ones (more than LSB_HEAP_SMALL bytes). Each is malloc'd at its class's size (16-byte
 * classes up to LSB_HEAP_SMALL, 256-byte ones above), so a block of a class fits every size of
 * it, and a freed one goes to the freeing thread's spare lists instead of back to malloc, up to
 * LSB_SPARE_BYTES per thread. A batch's events make and free such blocks by the thousand per
 * call (its tables outgrow the 64 KiB region; its documents are ~1.5 KB each), and glibc serves
 * most of them through its bins (its per-thread cache keeps 7 blocks a size), ~150-300
 * instructions a block. Every block of these sizes outside the region is made here (a resize
 * into the range moves the block), so its class follows from the size Lua gives back, as for
 * the region's blocks. The lists hold malloc blocks: any thread may free or reuse them. */
#define LSB_SPARE_GRAIN 256
#define LSB_SPARE_MAX 4096
#define LSB_SPARE_BYTES (1 << 20)
static _Thread_local struct {
    void *small[LSB_HEAP_SMALL / LSB_HEAP_GRAIN + 1];    /* class c: c * LSB_HEAP_GRAIN bytes */
    void *medium[LSB_SPARE_MAX / LSB_SPARE_GRAIN + 1];   /* class m: m * LSB_SPARE_GRAIN bytes */
    size_t bytes;                                        /* kept on the lists */
} spare;

/* The spare class of a malloc block of n bytes (1 to 16 small, 19 to 33 medium), or 0 (larger). */
static inline int spare_class(size_t n) {
    if (n <= LSB_HEAP_SMALL) return lsb_heap_class(n);
    if (n <= LSB_SPARE_MAX) return LSB_HEAP_SMALL / LSB_HEAP_GRAIN + 1 + (int)((n + LSB_SPARE_GRAIN - 1) / LSB_SPARE_GRAIN);
    return 0;
}

static inline void **spare_list(int k, size_t *bytes) {
    const int s = LSB_HEAP_SMALL / LSB_HEAP_GRAIN + 1;
    if (k < s) {
        *bytes = (size_t)k * LSB_HEAP_GRAIN;
        return &spare.small[k];
    }
    *bytes = (size_t)(k - s) * LSB_SPARE_GRAIN;
    return &spare.medium[k - s];
}

static void *spare_alloc(int k) {
    size_t bytes;
    void **list = spare_list(k, &bytes);
    void **b = *list;
    if (!b) return malloc(bytes);
    *list = *b;
    spare.bytes -= bytes;
    return b;
}

static void spare_free(void *p, int k) {
    size_t bytes;
    void **list = spare_list(k, &bytes);
    if (spare.bytes + bytes > LSB_SPARE_BYTES) {
        free(p);
        return;
    }
    void **b = p;
    *b = *list;
    *list = b;
    spare.bytes += bytes;
}

void *lsb_heap_realloc(lsb_heap *h, void *ptr, size_t osize, size_t nsize) {
#ifdef LSB_HEAP_PLAIN   /* under AddressSanitizer every block is its own malloc, so misuse is caught */
    (void)h;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
#endif
    int oc = ptr && lsb_heap_owns(h, ptr) ? lsb_heap_class(osize) : 0;   /* a block of the region */
    int ok = ptr && !oc ? spare_class(osize) : 0;                         /* a spare-sized malloc block */
    int nc = nsize && nsize <= LSB_HEAP_SMALL ? lsb_heap_class(nsize) : 0;
    int nk = nsize ? spare_class(nsize) : 0;
    if (nsize == 0) {
        if (oc) small_free(h, ptr, oc);
        else if (ok) spare_free(ptr, ok);
        else free(ptr);
        return NULL;
    }
    if ((oc && oc == nc) || (ok && ok == nk)) return ptr;   /* same class: the block already fits */
    if (ptr && !oc && !ok && !nk) return realloc(ptr, nsize);   /* large to large */
    void *p = nc ? small_alloc(h, nc) : NULL;
    if (!p) p = nk ? spare_alloc(nk) : malloc(nsize);
    if (!p) return NULL;              /* Lua keeps the old block on failure */
    if (ptr) {
        memcpy(p, ptr, osize < nsize ? osize : nsize);
        if (oc) small_free(h, ptr, oc);
        else if (ok) spare_free(ptr, ok);
        else free(ptr);
    }
    return p;
}

void lsb_heap_release(lsb_heap *h) {
    free(h->region);
    memset(h, 0, sizeof *h);
}

void lsb_tune_process_allocator(void) {
#if defined(__GLIBC__)
    /* Batches and answer buffers are a few hundred KiB, past glibc's default mmap threshold:
     * each would be mapped, faulted in and unmapped again (tens of thousands of page faults a
     * second, ~7 % of the CPU of `transform run`). Up to 16 MiB they come from the heap and
     * are reused; the heap's top is returned past 64 MiB free. */
    mallopt(M_MMAP_THRESHOLD, 16 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}
