/*
 * Write-protected storage for a kept environment's tables (lsb_reuse.c).
 *
 * Comparing images (lsb_table_image.c) is a pass over every recorded table at the end of every
 * call: for a top level with thousands of tables (a tracking plan of 2,000 entries, each a small
 * table) that pass is most of an event's time. So a state whose top level builds that much
 * table storage (LSB_TARENA_MIN_BYTES of Lua's non-object blocks in its last fresh run) runs the
 * top level afresh with those blocks (tables' hash and array parts, mostly) coming from an
 * arena: pages of its own, handed out in order. When the record then finds that every live
 * block in the arena is the hash or array part of a recorded table without a metatable
 * (lsb_tarena_protect), it makes the arena read-only, and those tables leave the per-call
 * comparison. A script's first write into any of them faults; the handler (on_fault) makes the
 * arena writable again and marks it written, and the write proceeds. A call's check reads that
 * mark instead of the tables. The changes that write no block are marked where they happen: a
 * rehash or array resize frees or moves a block (lsb_tarena_free), setmetatable
 * (lsb_tarena_note_table). A table's length and metatable field live in its header, outside the
 * arena; the length follows from its members, and the metatable from setmetatable.
 *
 * Invariants: a block is in the arena only if it was allocated there while the top level ran;
 * the arena is read-only only while every block in it belongs to a table the kept record holds
 * (so Lua frees none of them without the record being dropped first, and nothing else writes
 * there); only faults inside a read-only arena are handled, and any other SIGSEGV goes to the
 * handler that was installed before (the process fails as it would have). At most
 * LSB_TARENA_SLOTS states have an arena at once; the others compare images.
 */
#include "lsb_internal.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define LSB_TARENA_BYTES ((size_t)64 << 20)   /* reserved address space per arena (no memory until used) */
#define LSB_TARENA_SLOTS 1024

struct lsb_tarena {
    char *base;
    size_t bump;                 /* bytes handed out (16-byte aligned) */
    size_t live_blocks, live_bytes;
    int filling;                 /* the top level runs afresh: Lua's non-object blocks come from here */
    atomic_int read_only;
    atomic_int written;          /* something a record compares changed while it was read-only */
    int slot;
};

static _Atomic(lsb_tarena *) registry[LSB_TARENA_SLOTS];
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous;
static size_t page_size;

static size_t used_pages(const lsb_tarena *a) { return (a->bump + page_size - 1) & ~(page_size - 1); }

/* Makes a read-only arena writable again and marks it written. Async-signal-safe. */
static void open_up(lsb_tarena *a) {
    if (atomic_exchange(&a->read_only, 0)) {
        atomic_store(&a->written, 1);
        mprotect(a->base, used_pages(a), PROT_READ | PROT_WRITE);
    }
}

static void on_fault(int sig, siginfo_t *info, void *context) {
    const char *at = info->si_addr;
    for (int i = 0; i < LSB_TARENA_SLOTS; i++) {
        lsb_tarena *a = atomic_load_explicit(&registry[i], memory_order_acquire);
        if (a && at >= a->base && at < a->base + LSB_TARENA_BYTES && atomic_load(&a->read_only)) {
            open_up(a);   /* the faulting write runs again, and succeeds */
            return;
        }
    }
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, context);
    } else if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
        signal(sig, SIG_DFL);   /* the fault repeats and ends the process, as without us */
    } else {
        previous.sa_handler(sig);
    }
}

static int handler_ok;

static void install(void) {
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigfillset(&sa.sa_mask);   /* no other handler (the watchdog's) may interrupt it halfway */
    handler_ok = sigaction(SIGSEGV, &sa, &previous) == 0;
}

lsb_tarena *lsb_tarena_new(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install);
    if (!handler_ok) return NULL;
    lsb_tarena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->base = mmap(NULL, LSB_TARENA_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (a->base == MAP_FAILED) {
        free(a);
        return NULL;
    }
    a->slot = -1;
    pthread_mutex_lock(&registry_lock);
    for (int i = 0; i < LSB_TARENA_SLOTS && a->slot < 0; i++) {
        if (!atomic_load(&registry[i])) {
            a->slot = i;
            atomic_store_explicit(&registry[i], a, memory_order_release);
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (a->slot < 0) {
        munmap(a->base, LSB_TARENA_BYTES);
        free(a);
        return NULL;
    }
    return a;
}

void lsb_tarena_free_all(lsb_tarena *a) {
    if (!a) return;
    pthread_mutex_lock(&registry_lock);
    atomic_store(&registry[a->slot], NULL);
    pthread_mutex_unlock(&registry_lock);
    munmap(a->base, LSB_TARENA_BYTES);
    free(a);
}

int lsb_tarena_owns(const lsb_tarena *a, const void *p) {
    return a && (const char *)p >= a->base && (const char *)p < a->base + LSB_TARENA_BYTES;
}

int lsb_tarena_begin(lsb_tarena *a) {
    if (a->live_blocks) return 0;   /* an earlier run's tables are still there */
    open_up(a);
    a->bump = 0;
    a->filling = 1;
    atomic_store(&a->written, 0);
    return 1;
}

void lsb_tarena_end(lsb_tarena *a) {
    if (a) a->filling = 0;
}

void *lsb_tarena_alloc(lsb_tarena *a, size_t n) {
    if (!a->filling) return NULL;
    size_t at = a->bump, size = (n + 15) & ~(size_t)15;
    if (size > LSB_TARENA_BYTES - at) return NULL;
    a->bump = at + size;
    a->live_blocks++;
    a->live_bytes += n;
    return a->base + at;
}

void lsb_tarena_free(lsb_tarena *a, size_t n) {
    open_up(a);   /* a block a record may compare goes away: the table was resized or is gone */
    a->live_blocks--;
    a->live_bytes -= n;
}

void lsb_tarena_note_table(lsb_tarena *a, const void *table) {
    if (!a || !atomic_load_explicit(&a->read_only, memory_order_relaxed)) return;
    const void *blocks[2];
    lsb_timage_blocks(table, blocks, NULL);
    if (lsb_tarena_owns(a, blocks[0]) || lsb_tarena_owns(a, blocks[1])) open_up(a);
}

int lsb_tarena_protect(lsb_tarena *a, size_t blocks, size_t bytes) {
    if (a->filling || blocks != a->live_blocks || bytes != a->live_bytes || !a->bump) return 0;
    atomic_store(&a->written, 0);
    if (mprotect(a->base, used_pages(a), PROT_READ)) return 0;
    atomic_store(&a->read_only, 1);
    return 1;
}

void lsb_tarena_unprotect(lsb_tarena *a) {
    if (a && atomic_load(&a->read_only)) {
        atomic_store(&a->read_only, 0);
        mprotect(a->base, used_pages(a), PROT_READ | PROT_WRITE);
    }
}

int lsb_tarena_written(const lsb_tarena *a) { return atomic_load_explicit(&a->written, memory_order_relaxed); }

int lsb_tarena_read_only(const lsb_tarena *a) { return a && atomic_load_explicit(&a->read_only, memory_order_relaxed); }
