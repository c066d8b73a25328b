/* dist.c -- lina_dist over Open MPI (dist.h); a one-process fallback when the
 * build has no MPI (LINA_MPI undefined) or the process was not started by
 * mpirun. */
#include "dist.h"

#include "../kern/kern.h"

#include <stdlib.h>
#include <string.h>

#ifdef LINA_MPI
#include <mpi.h>
#endif

size_t lina_dist_bucket = (size_t)1 << 20;

/* a bucketed sum in flight (lina_dist_sum_begin .. end) */
typedef struct dist_sum {
    int open;
    lina_dist_scope scope;
    float *buf;
    size_t n, bk, nb, started; /* floats, per bucket, buckets, buckets started (from the end) */
#ifdef LINA_MPI
    MPI_Request *req;
#endif
} dist_sum;

struct lina_dist {
    int rank, size, sp_rank, sp_size, dp_rank, dp_size;
    dist_sum sum;
    int initialised; /* this lina_dist called MPI_Init */
    int split;       /* the sp and dp communicators exist */
    lina_dist_stats stats;
#ifdef LINA_MPI
    MPI_Comm comm[3]; /* world, sp, dp */
#endif
};

int lina_dist_built(void)
{
#ifdef LINA_MPI
    return 1;
#else
    return 0;
#endif
}

int lina_dist_launched_size(void)
{
    /* Open MPI's mpirun, then the generic PMI / PMIx variables */
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *s = getenv(vars[i]);
        if (s && atoi(s) > 0) {
            return atoi(s);
        }
    }
    return 1;
}

static int layout(lina_dist *d, int sp, int dp)
{
    if (sp < 1 || dp < 0) {
        return lina_set_error(LINA_EINVAL, "--sp must be >= 1 and --dp >= 0");
    }
    if (d->size % sp != 0) {
        return lina_set_error(LINA_EINVAL, "--sp %d needs a multiple of %d ranks, the job has %d%s", sp, sp, d->size,
                              d->size == 1 ? " (start it with mpirun -np N lina train ...)" : "");
    }
    if (dp > 0 && dp * sp != d->size) {
        return lina_set_error(LINA_EINVAL, "--dp %d x --sp %d = %d ranks, but the job has %d (mpirun -np %d)", dp,
                              sp, dp * sp, d->size, dp * sp);
    }
    d->sp_size = sp;
    d->dp_size = d->size / sp;
    d->sp_rank = d->rank % sp;
    d->dp_rank = d->rank / sp;
    return LINA_OK;
}

int lina_dist_init(int sp, int dp, lina_dist **out)
{
    *out = NULL;
    lina_dist *d = calloc(1, sizeof *d);
    if (!d) {
        return lina_set_error(LINA_ENOMEM, "dist: out of memory");
    }
    d->size = 1;
    int launched = lina_dist_launched_size();
#ifdef LINA_MPI
    int want = launched > 1;
    int already = 0;
    MPI_Initialized(&already);
    if (want && !already) {
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            free(d);
            return lina_set_error(LINA_EIO, "MPI_Init failed");
        }
        d->initialised = 1;
    }
    if (want || already) {
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    }
    int rc = layout(d, sp, dp);
    if (rc != LINA_OK) {
        lina_dist_free(d);
        return rc;
    }
    if (d->size > 1) {
        d->comm[LINA_DIST_WORLD] = MPI_COMM_WORLD;
        MPI_Comm_split(MPI_COMM_WORLD, d->dp_rank, d->sp_rank, &d->comm[LINA_DIST_SP]);
        MPI_Comm_split(MPI_COMM_WORLD, d->sp_rank, d->dp_rank, &d->comm[LINA_DIST_DP]);
        d->split = 1;
    }
#else
    if (launched > 1 || sp > 1 || dp > 1) {
        free(d);
        return lina_set_error(LINA_EINVAL, "this lina was built without MPI, so it runs as one process (%s): "
                                           "install Open MPI (apt-get install openmpi-bin libopenmpi-dev) and "
                                           "rebuild (make clean && make)",
                              launched > 1 ? "started by mpirun with more than one" : "--dp / --sp > 1 asked for");
    }
    int rc = layout(d, sp, dp);
    if (rc != LINA_OK) {
        free(d);
        return rc;
    }
#endif
    *out = d;
    return LINA_OK;
}

void lina_dist_free(lina_dist *d)
{
    if (!d) {
        return;
    }
#ifdef LINA_MPI
    if (d->split) {
        MPI_Comm_free(&d->comm[LINA_DIST_SP]);
        MPI_Comm_free(&d->comm[LINA_DIST_DP]);
    }
    if (d->initialised) {
        MPI_Finalize();
    }
#endif
    free(d);
}

int lina_dist_rank(const lina_dist *d) { return d ? d->rank : 0; }
int lina_dist_size(const lina_dist *d) { return d ? d->size : 1; }
int lina_dist_sp_rank(const lina_dist *d) { return d ? d->sp_rank : 0; }
int lina_dist_sp_size(const lina_dist *d) { return d ? d->sp_size : 1; }
int lina_dist_dp_rank(const lina_dist *d) { return d ? d->dp_rank : 0; }
int lina_dist_dp_size(const lina_dist *d) { return d ? d->dp_size : 1; }

static int scope_size(const lina_dist *d, lina_dist_scope s)
{
    return !d ? 1 : s == LINA_DIST_SP ? d->sp_size : s == LINA_DIST_DP ? d->dp_size : d->size;
}

#ifdef LINA_MPI
/* time and bytes of one collective */
#define DIST_CALL(d, nbytes, call)                                                                                 \
    do {                                                                                                           \
        double t0_ = lina_now();                                                                                   \
        int e_ = (call);                                                                                           \
        (d)->stats.seconds += lina_now() - t0_;                                                                    \
        (d)->stats.bytes += (double)(nbytes);                                                                      \
        (d)->stats.calls++;                                                                                        \
        if (e_ != MPI_SUCCESS) {                                                                                   \
            return lina_set_error(LINA_EIO, "MPI call failed (%s:%d)", __FILE__, __LINE__);                       \
        }                                                                                                          \
    } while (0)
#endif

int lina_dist_sum_f(lina_dist *d, lina_dist_scope s, float *buf, size_t n)
{
    int rc = lina_dist_sum_begin(d, s, buf, n);
    return rc ? rc : lina_dist_sum_end(d);
}

int lina_dist_sum_open(const lina_dist *d)
{
    return d && d->sum.open;
}

int lina_dist_sum_begin(lina_dist *d, lina_dist_scope s, float *buf, size_t n)
{
    if (!d) {
        return LINA_OK;
    }
    if (d->sum.open) {
        return lina_set_error(LINA_EINVAL, "dist: a bucketed sum is already in flight");
    }
    dist_sum *u = &d->sum;
    memset(u, 0, sizeof *u);
    u->open = 1;
    u->scope = s;
    u->buf = buf;
    u->n = scope_size(d, s) == 1 ? 0 : n;
    u->bk = lina_dist_bucket > 0 ? lina_dist_bucket : (n > 0 ? n : 1);
    u->nb = (u->n + u->bk - 1) / u->bk;
#ifdef LINA_MPI
    if (u->nb > 0 && !(u->req = malloc(u->nb * sizeof *u->req))) {
        u->open = 0;
        return lina_set_error(LINA_ENOMEM, "dist: out of memory");
    }
#endif
    return LINA_OK;
}

#ifdef LINA_MPI
/* start buckets started .. upto-1 (bucket i: the i-th bk floats from the end) */
static int sum_start(lina_dist *d, size_t upto)
{
    dist_sum *u = &d->sum;
    for (; u->started < upto; u->started++) {
        size_t i = u->started, hi = u->n - i * u->bk, lo = hi > u->bk ? hi - u->bk : 0;
        if (MPI_Iallreduce(MPI_IN_PLACE, u->buf + lo, (int)(hi - lo), MPI_FLOAT, MPI_SUM, d->comm[u->scope],
                           &u->req[i]) != MPI_SUCCESS) {
            return lina_set_error(LINA_EIO, "MPI_Iallreduce of the gradient failed");
        }
        d->stats.calls++;
    }
    return LINA_OK;
}
#endif

int lina_dist_sum_ready(lina_dist *d, size_t from)
{
    if (!d || !d->sum.open || d->sum.n == 0) {
        return LINA_OK;
    }
#ifdef LINA_MPI
    dist_sum *u = &d->sum;
    double t0 = lina_now();
    /* buckets wholly inside [from, n): bucket i starts at n - (i + 1) bk (the last one at 0) */
    size_t full = from == 0 ? u->nb : from >= u->n ? 0 : (u->n - from) / u->bk;
    size_t before = u->started;
    int rc = sum_start(d, full < u->nb ? full : u->nb);
    for (size_t i = before; i < u->started; i++) {
        size_t hi = u->n - i * u->bk, lo = hi > u->bk ? hi - u->bk : 0;
        d->stats.early_bytes += (double)(hi - lo) * sizeof(float);
    }
    int flag = 0;
    if (rc == LINA_OK && u->started > 0) {
        MPI_Testall((int)u->started, u->req, &flag, MPI_STATUSES_IGNORE);
    }
    d->stats.seconds += lina_now() - t0;
    return rc;
#else
    (void)from;
    return LINA_OK;
#endif
}

int lina_dist_sum_end(lina_dist *d)
{
    if (!d || !d->sum.open) {
        return LINA_OK;
    }
    dist_sum *u = &d->sum;
    int rc = LINA_OK;
#ifdef LINA_MPI
    if (u->nb > 0) {
        double t0 = lina_now();
        rc = sum_start(d, u->nb);
        if (MPI_Waitall((int)u->started, u->req, MPI_STATUSES_IGNORE) != MPI_SUCCESS && rc == LINA_OK) {
            rc = lina_set_error(LINA_EIO, "MPI_Iallreduce of the gradient failed");
        }
        double dt = lina_now() - t0;
        d->stats.seconds += dt;
        d->stats.wait_seconds += dt;
        d->stats.bytes += (double)u->n * sizeof(float);
        d->stats.sum_bytes += (double)u->n * sizeof(float);
    }
    free(u->req);
#endif
    u->open = 0;
    return rc;
}

int lina_dist_sum_d(lina_dist *d, lina_dist_scope s, double *buf, int n)
{
    if (scope_size(d, s) == 1 || n == 0) {
        return LINA_OK;
    }
#ifdef LINA_MPI
    DIST_CALL(d, (size_t)n * sizeof(double), MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, d->comm[s]));
#else
    (void)buf;
#endif
    return LINA_OK;
}

int lina_dist_allgather_f(lina_dist *d, lina_dist_scope s, const float *send, size_t n, float *recv)
{
    if (scope_size(d, s) == 1) {
        if (recv != send) {
            memcpy(recv, send, n * sizeof(float));
        }
        return LINA_OK;
    }
#ifdef LINA_MPI
    if (n > (size_t)INT32_MAX) {
        return lina_set_error(LINA_EINVAL, "dist: all-gather of %zu floats is too large", n);
    }
    double t0 = lina_now();
    DIST_CALL(d, n * sizeof(float),
              MPI_Allgather(send, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT, d->comm[s]));
    d->stats.gather_seconds += lina_now() - t0;
    d->stats.gather_bytes += (double)n * sizeof(float);
#endif
    return LINA_OK;
}

int lina_dist_reduce_scatter_f(lina_dist *d, lina_dist_scope s, const float *send, size_t n, float *recv)
{
    if (scope_size(d, s) == 1) {
        if (recv != send) {
            memmove(recv, send, n * sizeof(float));
        }
        return LINA_OK;
    }
#ifdef LINA_MPI
    if (n > (size_t)INT32_MAX) {
        return lina_set_error(LINA_EINVAL, "dist: reduce-scatter of %zu floats is too large", n);
    }
    DIST_CALL(d, n * (size_t)scope_size(d, s) * sizeof(float),
              MPI_Reduce_scatter_block(send, recv, (int)n, MPI_FLOAT, MPI_SUM, d->comm[s]));
#endif
    return LINA_OK;
}

int lina_dist_allgather_u64(lina_dist *d, lina_dist_scope s, const uint64_t *send, int n, uint64_t *recv)
{
    if (scope_size(d, s) == 1) {
        memmove(recv, send, (size_t)n * sizeof *send);
        return LINA_OK;
    }
#ifdef LINA_MPI
    DIST_CALL(d, (size_t)n * 8,
              MPI_Allgather(send, n, MPI_UINT64_T, recv, n, MPI_UINT64_T, d->comm[s]));
#endif
    return LINA_OK;
}

int lina_dist_bcast_f(lina_dist *d, lina_dist_scope s, float *buf, size_t n)
{
    if (scope_size(d, s) == 1 || n == 0) {
        return LINA_OK;
    }
#ifdef LINA_MPI
    for (size_t o = 0; o < n; o += (size_t)1 << 30) {
        size_t m = n - o < ((size_t)1 << 30) ? n - o : (size_t)1 << 30;
        DIST_CALL(d, m * sizeof(float), MPI_Bcast(buf + o, (int)m, MPI_FLOAT, 0, d->comm[s]));
    }
#else
    (void)buf;
#endif
    return LINA_OK;
}

void lina_dist_abort(lina_dist *d, int code)
{
#ifdef LINA_MPI
    if (d && d->size > 1) {
        MPI_Abort(MPI_COMM_WORLD, code);
    }
#endif
    (void)d;
    exit(code);
}

void lina_dist_get_stats(const lina_dist *d, lina_dist_stats *s)
{
    if (d) {
        *s = d->stats;
    } else {
        memset(s, 0, sizeof *s);
    }
}

void lina_dist_reset_stats(lina_dist *d)
{
    if (d) {
        memset(&d->stats, 0, sizeof d->stats);
    }
}
