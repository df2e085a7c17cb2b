/*
 * The watchdog: what enforces the time limit, without a count hook.
 *
 * A count hook makes Lua trap on every instruction (design/lua-sandboxing.md F4: VM-bound code
 * runs about twice as slowly), and it bounds the overshoot only while each instruction is
 * cheap. Some single instructions are not: comparing two 20 MB strings, or a call to a C
 * function that walks a long string (utf8.len, tonumber on a page of spaces). So no hook is
 * set while a call runs (lsb_install_hook); the watchdog sets it at the deadline. Only when
 * this thread cannot be started does a count hook check the clock instead.
 *
 * Every thread that runs user code owns a slot holding the deadline of its current call and
 * the lua_State (main thread or coroutine) that is executing it. One process-wide watchdog
 * thread sleeps until the earliest armed deadline; when a slot is past its deadline it sends
 * that thread SIGRTMIN+4, every LSB_WATCH_REPEAT_NS until the slot is disarmed. The
 * handler runs on the worker thread itself and, if the slot is still past its deadline, sets
 * the hook of the running state to fire on the very next instruction and call (lua_sethook is
 * documented as safe to call from a signal handler; lua.c does the same for Ctrl-C). The
 * overshoot is then one instruction or one C call, each bounded by the memory limit and the
 * guards in lsb_guards.c.
 *
 * Escape: a thread still inside one liblua operation a grace period after its deadline (a
 * rehash of colliding keys, an ephemeron collection: no hook fires inside those) is
 * siglongjmp'd back to where its call started, but only when the interrupted instruction is
 * in liblua's own code, which holds no locks. The state is then abandoned (lsb_watch_landed).
 *
 * Arming and disarming are two atomic stores on the hot path; the watchdog is only woken by
 * a condition variable when it was idle.
 *
 * Last resort (servers only, lsb_watchdog_set_fatal_overdue): a thread still in user code
 * that long after its deadline means a path none of the above bounds; the process exits so
 * its supervisor (Kubernetes, systemd, the load balancer's retry) replaces it, rather than
 * keep a worker stalled forever.
 */
#define _GNU_SOURCE
#include "lsb_internal.h"
#include <errno.h>
#include <link.h>
#include <setjmp.h>
#include <ucontext.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LSB_WATCH_MAX_SLEEP_NS 5000000ull   /* re-reads the slots at least this often */
#define LSB_WATCH_REPEAT_NS 2000000ull      /* re-signals a late thread this often */
#define LSB_WATCH_IDLE_NS 100000000ull      /* idle: looks again at least this often anyway */

typedef struct lsb_slot {
    pthread_t tid;
    _Atomic uint64_t deadline;             /* 0: not running user code */
    _Atomic(lua_State *) running;
    sigjmp_buf *escape;                    /* the armed region's way out, or NULL (own thread only) */
    uint64_t grace_ns;                     /* past the deadline, how long before escaping */
    uint64_t last_signal;                  /* watchdog thread only */
    int live;                              /* under mu */
    struct lsb_slot *next;                 /* under mu; slots are reused, never freed */
} lsb_slot;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake;
static lsb_slot *slots;
static _Atomic int watchdog_idle;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t slot_key;
static int watch_signal;
static int started;
static _Thread_local lsb_slot *my_slot;
static _Atomic unsigned long signals_sent;
static _Atomic uint64_t fatal_overdue_ns;
static _Atomic unsigned long escapes;
static _Atomic size_t escaped_bytes;
static _Atomic size_t max_escaped_bytes;
static uintptr_t lua_text_lo, lua_text_hi;   /* liblua's code: an escape may interrupt only that */

static uintptr_t interrupted_pc(void *uctx) {
    ucontext_t *uc = uctx;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0;
#endif
}

static void on_signal(int sig, siginfo_t *info, void *uctx) {
    (void)sig;
    (void)info;
    int saved = errno;
    lsb_slot *s = my_slot;
    if (s) {
        lua_State *L = atomic_load(&s->running);
        uint64_t d = atomic_load(&s->deadline);
        uint64_t now = lsb_now_ns();
        if (L && d && now > d) {
            uintptr_t pc = interrupted_pc(uctx);
            if (s->escape && now - d > s->grace_ns && pc >= lua_text_lo && pc < lua_text_hi) {
                /* Still inside one Lua operation long after the forced hook: leave it. Only
                 * liblua's own code is interrupted this way (it holds no locks; our host code
                 * and libc never are), and the state is never touched again (lsb_watch_landed). */
                sigjmp_buf *jb = s->escape;
                s->escape = NULL;
                atomic_store(&s->deadline, 0);
                atomic_store(&s->running, NULL);
                atomic_fetch_add(&escapes, 1);
                errno = saved;
                siglongjmp(*jb, 1);
            }
            lsb_force_hook(L);
        }
    }
    errno = saved;
}

static int find_lua_text(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    uintptr_t probe = (uintptr_t)arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        uintptr_t lo = (uintptr_t)info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (probe >= lo && probe < hi) {
            lua_text_lo = lo;
            lua_text_hi = hi;
            return 1;
        }
    }
    return 0;
}

static void release_slot(void *p) {
    lsb_slot *s = p;
    pthread_mutex_lock(&mu);
    atomic_store(&s->deadline, 0);
    atomic_store(&s->running, NULL);
    s->live = 0;
    pthread_mutex_unlock(&mu);
}

/* Earliest time the watchdog must look again, signalling threads already past their deadline.
 * Called with mu held. */
static uint64_t scan(uint64_t now) {
    uint64_t wake_at = UINT64_MAX;
    for (lsb_slot *s = slots; s; s = s->next) {
        if (!s->live) continue;
        uint64_t d = atomic_load(&s->deadline);
        if (!d) continue;
        if (now > d) {
            uint64_t fatal = atomic_load(&fatal_overdue_ns);
            if (fatal && now - d > fatal) {
                static const char msg[] = "luaform: a worker is still running a transformation long past its time limit; "
                                          "exiting (status 70) so the supervisor replaces this process\n";
                (void)!write(2, msg, sizeof msg - 1);
                _exit(70);
            }
            if (now - s->last_signal >= LSB_WATCH_REPEAT_NS) {
                s->last_signal = now;
                pthread_kill(s->tid, watch_signal);   /* live under mu: the thread exists */
                atomic_fetch_add(&signals_sent, 1);
            }
            if (now + LSB_WATCH_REPEAT_NS < wake_at) wake_at = now + LSB_WATCH_REPEAT_NS;
        } else if (d < wake_at) {
            wake_at = d;
        }
    }
    return wake_at;
}

static void *watchdog_main(void *arg) {
    (void)arg;
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, watch_signal);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    pthread_mutex_lock(&mu);
    for (;;) {
        uint64_t now = lsb_now_ns();
        uint64_t wake_at = scan(now);
        if (wake_at == UINT64_MAX) {
            /* Announce idleness, then look once more: a thread that armed its slot either
             * is seen by this scan or sees idle (both sequentially consistent) and signals. */
            atomic_store(&watchdog_idle, 1);
            wake_at = scan(lsb_now_ns());
            if (wake_at == UINT64_MAX) wake_at = lsb_now_ns() + LSB_WATCH_IDLE_NS;
            else atomic_store(&watchdog_idle, 0);
        }
        if (!atomic_load(&watchdog_idle) && wake_at > now + LSB_WATCH_MAX_SLEEP_NS) wake_at = now + LSB_WATCH_MAX_SLEEP_NS;
        wake_at += 100000;   /* a little after the deadline, so it has passed */
        struct timespec ts = {(time_t)(wake_at / 1000000000ull), (long)(wake_at % 1000000000ull)};
        pthread_cond_timedwait(&wake, &mu, &ts);
        atomic_store(&watchdog_idle, 0);
    }
    return NULL;
}

static void start_watchdog(void) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_key_create(&slot_key, release_slot);
    watch_signal = SIGRTMIN + 4;
    dl_iterate_phdr(find_lua_text, (void *)(uintptr_t)&lua_newstate);
    struct sigaction sa = {0};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_RESTART | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(watch_signal, &sa, NULL) != 0) return;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    started = pthread_create(&t, &attr, watchdog_main, NULL) == 0;
    pthread_attr_destroy(&attr);
}

static lsb_slot *slot(void) {
    if (my_slot) return my_slot;
    pthread_once(&once, start_watchdog);
    if (!started) return NULL;
    pthread_mutex_lock(&mu);
    lsb_slot *s = slots;
    while (s && s->live) s = s->next;
    if (!s) {
        /* a cache line (or more) of its own: each worker stores to its slot twice per call, and
         * slots sharing a line would bounce it between the cores on every event */
        size_t size = (sizeof *s + 63) & ~(size_t)63;
        s = aligned_alloc(64, size);
        if (s) memset(s, 0, size);
        if (!s) {
            pthread_mutex_unlock(&mu);
            return NULL;
        }
        s->next = slots;
        slots = s;
    }
    s->tid = pthread_self();
    s->last_signal = 0;
    atomic_store(&s->deadline, 0);
    atomic_store(&s->running, NULL);
    s->live = 1;
    pthread_mutex_unlock(&mu);
    pthread_setspecific(slot_key, s);
    my_slot = s;
    /* Dispatch's and Swift concurrency's threads block nearly every signal: the watchdog's
     * must reach this one (it is only ever sent to a slot's own thread). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, watch_signal);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    return s;
}

lsb_watch lsb_watch_enter(lua_State *running, uint64_t deadline_ns) {
    lsb_watch prev = {NULL, 0, NULL, 0};
    lsb_slot *s = slot();
    if (!s) return prev;
    prev.running = atomic_load_explicit(&s->running, memory_order_relaxed);
    prev.deadline_ns = atomic_load_explicit(&s->deadline, memory_order_relaxed);
    prev.escape = s->escape;
    prev.grace_ns = s->grace_ns;
    if (!deadline_ns) deadline_ns = prev.deadline_ns;
    /* Only this thread's handler reads `running`, and a release store keeps program order
     * for it. Arming a new deadline is sequentially consistent: it pairs with the watchdog's
     * idle announcement (watchdog_main). A nested region (a coroutine resumed under the same
     * deadline) stores no deadline at all. */
    atomic_store_explicit(&s->running, running, memory_order_release);
    if (deadline_ns != prev.deadline_ns) {
        atomic_store(&s->deadline, deadline_ns);
        if (deadline_ns && atomic_load(&watchdog_idle)) {
            pthread_mutex_lock(&mu);
            pthread_cond_signal(&wake);
            pthread_mutex_unlock(&mu);
        }
    }
    return prev;
}

void lsb_watch_leave(lsb_watch prev) {
    lsb_slot *s = my_slot;
    if (!s) return;
    /* Disarming needs no ordering with the watchdog: a late look at the old deadline only
     * sends a signal the handler ignores (its own thread reads 0). */
    int rearm = atomic_load_explicit(&s->deadline, memory_order_relaxed) != prev.deadline_ns;
    if (rearm) atomic_store_explicit(&s->deadline, 0, memory_order_release);   /* no escape to a region being left */
    s->escape = prev.escape;
    s->grace_ns = prev.grace_ns;
    atomic_store_explicit(&s->running, prev.running, memory_order_release);
    if (rearm && prev.deadline_ns) atomic_store(&s->deadline, prev.deadline_ns);
}

void lsb_watch_allow_escape(sigjmp_buf *jb, uint64_t grace_ns) {
    lsb_slot *s = my_slot;
    if (!s) return;
    s->grace_ns = grace_ns;
    s->escape = jb;
}

void lsb_watch_landed(lsb_watch prev, lsb_state *S) {
    /* The jump left the handler with the watchdog's signal still blocked (regions use
     * sigsetjmp without saving the mask, which would cost a system call per call). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, watch_signal);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    lsb_watch_leave(prev);
    S->escaped = 1;
    S->poisoned = 1;
    S->timed_out = 1;
    size_t total = atomic_fetch_add(&escaped_bytes, S->used) + S->used;
    size_t cap = atomic_load(&max_escaped_bytes);
    if (cap && total > cap) {
        static const char msg[] = "luaform: memory of abandoned Lua states passed its limit; "
                                  "exiting (status 70) so the supervisor replaces this process\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(70);
    }
}

void lsb_watchdog_set_max_abandoned(size_t bytes) { atomic_store(&max_escaped_bytes, bytes); }

unsigned long lsb_watchdog_escapes(void) { return atomic_load(&escapes); }

size_t lsb_watchdog_abandoned_bytes(void) { return atomic_load(&escaped_bytes); }

unsigned long lsb_watchdog_signals(void) { return atomic_load(&signals_sent); }

int lsb_watchdog_ready(void) { return slot() != NULL; }

void lsb_watchdog_set_fatal_overdue(uint64_t ns) { atomic_store(&fatal_overdue_ns, ns); }
