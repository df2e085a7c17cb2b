/*
 * The watchdog: a backstop for the time limit that does not depend on how often the count
 * hook fires.
 *
 * The count hook checks the clock every LSB_HOOK_COUNT instructions, which bounds the
 * overshoot only while each instruction is cheap. Some single instructions are not: comparing
 * two 20 MB strings, or a call to a C function that walks a long string (utf8.len, tonumber
 * on a page of spaces). A thousand of those run for seconds between two checks.
 *
 * Every thread that runs user code owns a slot holding the deadline of its current call and
 * the lua_State (main thread or coroutine) that is executing it. One process-wide watchdog
 * thread sleeps until the earliest armed deadline; when a slot is past its deadline it sends
 * that thread LSB_WATCH_SIGNAL, every LSB_WATCH_REPEAT_NS until the slot is disarmed. The
 * handler runs on the worker thread itself and, if the slot is still past its deadline, sets
 * the hook of the running state to fire on the very next instruction and call (lua_sethook is
 * documented as safe to call from a signal handler; lua.c does the same for Ctrl-C). The
 * overshoot is then one instruction or one C call, each bounded by the memory limit and the
 * guards in lsb_guards.c.
 *
 * Arming and disarming are two atomic stores on the hot path; the watchdog is only woken by
 * a condition variable when it was idle.
 *
 * Last resort (servers only, lsb_watchdog_set_fatal_overdue): a thread still in user code
 * that long after its deadline means a path none of the above bounds; the process exits so
 * its supervisor (Kubernetes, systemd, the load balancer's retry) replaces it, rather than
 * keep a worker stalled forever.
 */
#include "lsb_internal.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define LSB_WATCH_MAX_SLEEP_NS 5000000ull   /* re-reads the slots at least this often */
#define LSB_WATCH_REPEAT_NS 2000000ull      /* re-signals a late thread this often */

typedef struct lsb_slot {
    pthread_t tid;
    _Atomic uint64_t deadline;             /* 0: not running user code */
    _Atomic(lua_State *) running;
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

static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    lsb_slot *s = my_slot;
    if (s) {
        lua_State *L = atomic_load(&s->running);
        uint64_t d = atomic_load(&s->deadline);
        if (L && d && lsb_now_ns() > d) lsb_force_hook(L);
    }
    errno = saved;
}

static void release_slot(void *p) {
    lsb_slot *s = p;
    pthread_mutex_lock(&mu);
    atomic_store(&s->deadline, 0);
    atomic_store(&s->running, NULL);
    s->live = 0;
    pthread_mutex_unlock(&mu);
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
        if (wake_at == UINT64_MAX) {
            atomic_store(&watchdog_idle, 1);
            pthread_cond_wait(&wake, &mu);
            atomic_store(&watchdog_idle, 0);
            continue;
        }
        if (wake_at > now + LSB_WATCH_MAX_SLEEP_NS) wake_at = now + LSB_WATCH_MAX_SLEEP_NS;
        wake_at += 100000;   /* a little after the deadline, so it has passed */
        struct timespec ts = {(time_t)(wake_at / 1000000000ull), (long)(wake_at % 1000000000ull)};
        pthread_cond_timedwait(&wake, &mu, &ts);
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
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
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
        s = calloc(1, sizeof *s);
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
    return s;
}

lsb_watch lsb_watch_enter(lua_State *running, uint64_t deadline_ns) {
    lsb_watch prev = {NULL, 0};
    lsb_slot *s = slot();
    if (!s) return prev;
    prev.running = atomic_load_explicit(&s->running, memory_order_relaxed);
    prev.deadline_ns = atomic_load_explicit(&s->deadline, memory_order_relaxed);
    if (!deadline_ns) deadline_ns = prev.deadline_ns;
    atomic_store(&s->running, running);
    atomic_store(&s->deadline, deadline_ns);
    if (deadline_ns && atomic_load_explicit(&watchdog_idle, memory_order_relaxed)) {
        pthread_mutex_lock(&mu);
        pthread_cond_signal(&wake);
        pthread_mutex_unlock(&mu);
    }
    return prev;
}

void lsb_watch_leave(lsb_watch prev) {
    lsb_slot *s = my_slot;
    if (!s) return;
    atomic_store(&s->deadline, prev.deadline_ns);
    atomic_store(&s->running, prev.running);
}

unsigned long lsb_watchdog_signals(void) { return atomic_load(&signals_sent); }

void lsb_watchdog_set_fatal_overdue(uint64_t ns) { atomic_store(&fatal_overdue_ns, ns); }
