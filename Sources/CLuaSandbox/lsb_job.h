#ifndef LSB_JOB_H
#define LSB_JOB_H
/* Shared by lsb_call.c (protected bodies, errors, reports, load) and lsb_invoke.c (entry-point
 * calls that can suspend). Not part of the public API. */
#include "lsb_internal.h"
#include "lsb_json.h"

#define MAX_TRACE_FRAMES 12

/* A suspended entry-point call: its coroutine, and the per-call state that is swapped into
 * lsb_state while it runs. */
struct lsb_invocation {
    int thread_ref;
    int env_ref, loaded_ref, ctx_ref, host_calls, enrich_failed;
    uint64_t deadline_ns;
    char **logs;
    size_t log_count, log_cap, log_bytes, logs_dropped;
    int batched;
    size_t count;
    char **message_ids;    /* per input, for attributing outputs */
    size_t output_total;   /* bytes of all encoded outputs of this call */
    lsb_buf arena;         /* its event's bytes, taken from the state's arena when it suspended */
    lsb_buf ctx_text;      /* its context's text, not yet asked for (lsb_state.ctx_text), and */
    int ctx_pending;       /* whether ctx_text holds it */
    unsigned reuse_held;   /* it runs in the state's kept environment: its generation, else 0 (lsb_reuse.c) */
};


typedef struct {
    lsb_state *S;
    /* load */
    const char *src;
    size_t len;
    const char *chunkname;
    const char *const *entries;
    int entry_count;
    /* call */
    const char *entry;
    const lsb_input *inputs;
    const lsb_json_index *const *indexes;   /* per input, or NULL: each one's index found while
                                             * it was validated (lsb_lazy_offer), or NULL */
    size_t count;
    size_t out_cap;        /* room in out->outputs */
    int batched;
    lsb_invocation *inv;
    const char *reply;     /* continue: reply JSON, or NULL with reply_error */
    size_t reply_len;
    const char *reply_error;
    int nargs;             /* values pushed onto the coroutine for the next resume */
    int resumed;           /* how the first resume ended (lsb_begin's one protected region) */
    /* outcome */
    lsb_report *out;
    lsb_status kind;       /* set by the body for non-runtime failures */
    char detail[700];
} job;

/* Records the error at the top of T's stack (message with the innermost user file:line, and a
 * user-frame traceback from `level`) in host memory; no Lua allocation. */
void lsb_describe_error(lua_State *T, int level, int with_message);
void lsb_set_errmsg(lsb_state *S, const char *m, size_t n);
/* Resets the state's per-call fields and the report, and arms the deadline. */
void lsb_begin_call(lsb_state *S, lsb_report *out);
/* Builds the report from the flags and `status`, releases the call's references. */
void lsb_finish(job *j, int status);
/* Runs body(j) under lua_pcall with the message handler; returns the status. */
int lsb_protect(lsb_state *S, lua_CFunction body, job *j);
/* Fills the report and returns 1 when the state was discarded. */
int lsb_refuse_poisoned(lsb_state *S, job *j);
int lsb_msgh(lua_State *L);
/* lsb_begin with, per input, the index found while it was validated (`indexes` may be NULL, and
 * so may each entry): its lazy table starts from that index instead of indexing the bytes again. */
lsb_invocation *lsb_begin_indexed(lsb_state *S, const char *entry, const lsb_input *inputs,
                                  const lsb_json_index *const *indexes, size_t count, int batched, lsb_report *out);

#endif
