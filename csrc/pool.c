/* Persistent thread pool with dynamic chunks.
 *
 * A call publishes a job of n chunks; the calling thread and up to nth-1 workers take chunks from
 * one atomic counter until none are left, and the call returns when every chunk is done. Nobody
 * waits for a worker that has not woken up yet: on a busy host (more runnable threads than cores)
 * a descheduled worker used to stall every matmul until the scheduler ran it again; now the caller
 * simply runs the chunks that nobody has taken. Idle workers spin briefly on the counter (back-to-
 * back matmuls of one token pay no wake-up), then sleep on a condition variable (an idle process
 * costs no CPU).
 *
 * The counter holds (generation << 32 | next chunk). A worker that saw generation g claims chunk i
 * with a compare-and-swap from (g, i) to (g, i + 1), which can only succeed while job g still has
 * chunks left, hence while its caller is still inside fc_parallel and the job's fn / ctx (written
 * before the counter was published) are valid; a finished job's counter is closed to (g, ~0) before
 * the next job's fields are written. A late worker finds the generation moved on or no
 * chunk left and goes back to waiting. Calls are serialised: kernels never call fc_parallel from
 * inside a task.
 *
 * Workers are pinned, worker i to the i-th CPU of the process's allowed set taken one physical
 * core at a time (first CPU of each core, then the second siblings), so that a worker's share of
 * the weights, prefetched into its core's L2, is read by the same core; the 0-th CPU is left to
 * the calling thread, which is the user's and is not pinned. A worker beyond the allowed CPUs is
 * left unpinned (two pinned to one CPU would take turns). FASTCPU_PIN=0 turns pinning off.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <immintrin.h>

#include "fc_internal.h"

#define FC_MAX_THREADS 256
#define SPIN_ITERS 20000

static struct {
    pthread_mutex_t call_mu; /* one fc_parallel at a time */
    pthread_mutex_t mu;      /* sleeping workers */
    pthread_cond_t cv;
    _Atomic uint64_t next;   /* generation << 32 | next chunk */
    _Atomic int done;        /* chunks finished in the current job */
    _Atomic int sleepers;
    fc_task_fn fn;
    void *ctx;
    int nchunks;
    int nth;                 /* threads wanted by the current job, caller included */
    int nworkers;            /* workers started, ids 1..nworkers */
} P = {.call_mu = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* The allowed CPUs, one per physical core first; n == 0: no pinning. */
static struct {
    int ready; /* computed (again after a fork) */
    int n;
    int cpu[CPU_SETSIZE];
} pin_order;

static uint32_t gen_of(uint64_t v) { return (uint32_t)(v >> 32); }

/* Runs chunks of generation g until none are left. */
static void take_chunks(uint32_t g) {
    uint64_t v = atomic_load_explicit(&P.next, memory_order_acquire);
    for (;;) {
        if (gen_of(v) != g || (uint32_t)v >= (uint32_t)P.nchunks) return;
        /* P.fn / P.ctx / P.nchunks are read before the claim: they belong to g if it succeeds */
        fc_task_fn fn = P.fn;
        void *ctx = P.ctx;
        const int n = P.nchunks;
        if (!atomic_compare_exchange_weak_explicit(&P.next, &v, v + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        fn(ctx, (int)(uint32_t)v, n);
        atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
        v = atomic_load_explicit(&P.next, memory_order_acquire);
    }
}

static void *worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    uint32_t seen = gen_of(atomic_load(&P.next));
    for (;;) {
        int spins = 0;
        uint32_t g;
        while ((g = gen_of(atomic_load_explicit(&P.next, memory_order_acquire))) == seen) {
            if (++spins < SPIN_ITERS) {
                _mm_pause();
                continue;
            }
            pthread_mutex_lock(&P.mu);
            atomic_fetch_add(&P.sleepers, 1);
            while (gen_of(atomic_load(&P.next)) == seen) pthread_cond_wait(&P.cv, &P.mu);
            atomic_fetch_sub(&P.sleepers, 1);
            pthread_mutex_unlock(&P.mu);
            spins = 0;
        }
        seen = g;
        /* P.nth may already be the next job's: harmless, the claim checks the generation */
        if (id < P.nth) take_chunks(g);
    }
    return NULL;
}

/* A forked child has none of the parent's workers: start over. */
static void after_fork_child(void) {
    pthread_mutex_init(&P.call_mu, NULL);
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.cv, NULL);
    atomic_store(&P.sleepers, 0);
    P.nworkers = 0;
    pin_order.ready = 0;
}

static long read_topology(int cpu, const char *what, long fallback) {
    char path[128];
    long v = fallback;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/%s", cpu, what);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &v) != 1) v = fallback;
        fclose(f);
    }
    return v;
}

static void make_pin_order(void) {
    pin_order.n = 0;
    const char *env = getenv("FASTCPU_PIN");
    if (env && strcmp(env, "0") == 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return;
    static long key[CPU_SETSIZE];
    int cpus[CPU_SETSIZE], m = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            key[m] = read_topology(c, "physical_package_id", 0) * 1000000 + read_topology(c, "core_id", c);
            cpus[m++] = c;
        }
    /* pass 0 takes each core's first CPU, pass 1 the rest */
    static unsigned char taken[CPU_SETSIZE];
    memset(taken, 0, sizeof taken);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < m; i++) {
            if (taken[i]) continue;
            int first = 1;
            for (int j = 0; j < i; j++)
                if (key[j] == key[i]) first = 0;
            if (pass == 0 && !first) continue;
            taken[i] = 1;
            pin_order.cpu[pin_order.n++] = cpus[i];
        }
}

static void ensure_workers(int nth) {
    static int atfork_done;
    if (!atfork_done) {
        pthread_atfork(NULL, NULL, after_fork_child);
        atfork_done = 1;
    }
    if (!pin_order.ready) { /* once, and again in a forked child (its allowed set may differ) */
        make_pin_order();
        pin_order.ready = 1;
    }
    while (P.nworkers < nth - 1) {
        const int id = P.nworkers + 1;
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = -1;
        if (id < pin_order.n) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(pin_order.cpu[id], &one);
            if (pthread_attr_setaffinity_np(&attr, sizeof one, &one) == 0)
                rc = pthread_create(&t, &attr, worker, (void *)(intptr_t)id);
            if (rc != 0) { /* refused (a CPU set that changed under us): start it unpinned */
                pthread_attr_destroy(&attr);
                pthread_attr_init(&attr);
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            }
        }
        if (rc != 0) rc = pthread_create(&t, &attr, worker, (void *)(intptr_t)id);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        char name[16]; /* named here, not by the worker: it is visible as soon as it exists */
        snprintf(name, sizeof name, "fastcpu-w%d", id & 0xff); /* ids < FC_MAX_THREADS */
        pthread_setname_np(t, name);
        P.nworkers++;
    }
}

void fc_parallel_chunks(int nth, int nchunks, fc_task_fn fn, void *ctx) {
    if (nth > FC_MAX_THREADS) nth = FC_MAX_THREADS;
    if (nth > nchunks) nth = nchunks;
    if (nth <= 1) {
        for (int i = 0; i < nchunks; i++) fn(ctx, i, nchunks);
        return;
    }
    pthread_mutex_lock(&P.call_mu);
    ensure_workers(nth);
    P.fn = fn;
    P.ctx = ctx;
    P.nchunks = nchunks;
    P.nth = nth;
    atomic_store_explicit(&P.done, 0, memory_order_relaxed);
    const uint32_t g = gen_of(atomic_load(&P.next)) + 1;
    atomic_store(&P.next, (uint64_t)g << 32); /* seq_cst: ordered before the sleepers check */
    if (atomic_load(&P.sleepers) > 0) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.cv);
        pthread_mutex_unlock(&P.mu);
    }
    take_chunks(g);
    int spins = 0;
    while (atomic_load_explicit(&P.done, memory_order_acquire) < nchunks) {
        if (++spins < SPIN_ITERS) _mm_pause();
        else sched_yield();
    }
    /* closed: a worker that read (g, nchunks) before P.nchunks changes for the next job must not
     * be able to claim (g, nchunks) against the next job's larger count */
    atomic_store(&P.next, (uint64_t)g << 32 | 0xFFFFFFFFu);
    pthread_mutex_unlock(&P.call_mu);
}

void fc_parallel(int nth, fc_task_fn fn, void *ctx) { fc_parallel_chunks(nth, nth, fn, ctx); }
