/* Persistent thread pool: workers spin briefly on a generation counter, then sleep on a condition
 * variable, so back-to-back kernel calls (one token's matmuls) pay no thread wake-up while an idle
 * process costs no CPU. Calls are serialised: kernels never call fc_parallel from inside a task. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <immintrin.h>

#include "fc_internal.h"

#define FC_MAX_THREADS 256
#define SPIN_ITERS 20000

static struct {
    pthread_mutex_t call_mu; /* one fc_parallel at a time */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t gen;
    _Atomic int pending;
    fc_task_fn fn;
    void *ctx;
    int nth;
    int nworkers; /* workers started, ids 1..nworkers */
} P = {.call_mu = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static uint64_t start_gen[FC_MAX_THREADS + 1];

static void *worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    /* the generation at creation, not at start-up: a late start must still see the first call */
    uint64_t seen = start_gen[id];
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&P.gen, memory_order_acquire) == seen) {
            if (++spins < SPIN_ITERS) {
                _mm_pause();
                continue;
            }
            pthread_mutex_lock(&P.mu);
            while (atomic_load(&P.gen) == seen) pthread_cond_wait(&P.cv, &P.mu);
            pthread_mutex_unlock(&P.mu);
        }
        seen = atomic_load(&P.gen);
        /* every worker acknowledges every call, so none can lag into the next one and read its
         * arguments half-written; ids beyond nth-1 just sit this one out */
        if (id < P.nth) P.fn(P.ctx, id, P.nth);
        atomic_fetch_sub_explicit(&P.pending, 1, memory_order_release);
    }
    return NULL;
}

/* A forked child has none of the parent's workers: start over. */
static void after_fork_child(void) {
    pthread_mutex_init(&P.call_mu, NULL);
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.cv, NULL);
    P.nworkers = 0;
}

static void ensure_workers(int nth) {
    static int atfork_done;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, after_fork_child);
        atfork_done = 1;
    }
    while (P.nworkers < nth - 1) {
        pthread_t t;
        start_gen[P.nworkers + 1] = atomic_load(&P.gen);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, worker, (void *)(intptr_t)(P.nworkers + 1)) != 0) {
            pthread_attr_destroy(&attr);
            break;
        }
        pthread_attr_destroy(&attr);
        P.nworkers++;
    }
}

void fc_parallel(int nth, fc_task_fn fn, void *ctx) {
    if (nth > FC_MAX_THREADS) nth = FC_MAX_THREADS;
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&P.call_mu);
    ensure_workers(nth);
    /* if some workers could not be started, the caller runs their shares too */
    const int helpers = nth - 1 < P.nworkers ? nth - 1 : P.nworkers;
    P.fn = fn;
    P.ctx = ctx;
    P.nth = nth;
    atomic_store(&P.pending, P.nworkers);
    pthread_mutex_lock(&P.mu);
    atomic_fetch_add_explicit(&P.gen, 1, memory_order_release);
    pthread_cond_broadcast(&P.cv);
    pthread_mutex_unlock(&P.mu);
    fn(ctx, 0, nth);
    for (int i = helpers + 1; i < nth; i++) fn(ctx, i, nth);
    int spins = 0;
    while (atomic_load_explicit(&P.pending, memory_order_acquire) > 0) {
        if (++spins < SPIN_ITERS) _mm_pause();
        else sched_yield();
    }
    pthread_mutex_unlock(&P.call_mu);
}
