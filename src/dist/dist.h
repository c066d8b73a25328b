/* dist.h -- the one place lina talks to MPI (internal; not public API).
 *
 * A lina_dist is the process's place in a distributed run: the world of
 * `mpirun -np N` split once into data-parallel groups of sequence-parallel
 * ranks (world rank w: sp rank w % S, dp rank w / S). Every collective names
 * its scope: the whole world, the sp group (the S ranks that share the same
 * sequences) or the dp group (the ranks holding the same piece position).
 *
 * Without MPI (a build where mpicc was absent, or one process started without
 * mpirun) a lina_dist of size 1 works the same: collectives are copies, and a
 * request for more than one rank is one clear error. Nothing else in lina
 * includes <mpi.h>. */
#ifndef LINA_DIST_H
#define LINA_DIST_H

#include "lina.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lina_dist lina_dist;

typedef enum lina_dist_scope { LINA_DIST_WORLD = 0, LINA_DIST_SP = 1, LINA_DIST_DP = 2 } lina_dist_scope;

/* 1 when this build has the MPI path (LINA_MPI). */
int lina_dist_built(void);
/* Processes of the job this process was started in by mpirun (from the
 * launcher's environment; 1 when not started by a launcher). */
int lina_dist_launched_size(void);

/* Join the job: MPI_Init when started by mpirun (or sp / dp ask for more than
 * one rank), then split the world into dp groups of sp ranks. sp >= 1; dp: 0
 * takes every rank not used for sequence parallelism, else it must equal
 * world / sp. Errors (one message): built without MPI but more than one rank
 * asked for or launched; world size not a multiple of sp; dp that does not
 * match. */
int lina_dist_init(int sp, int dp, lina_dist **out);
/* MPI_Finalize when lina_dist_init initialised MPI. */
void lina_dist_free(lina_dist *d);

int lina_dist_rank(const lina_dist *d);      /* world rank */
int lina_dist_size(const lina_dist *d);      /* world size */
int lina_dist_sp_rank(const lina_dist *d);
int lina_dist_sp_size(const lina_dist *d);
int lina_dist_dp_rank(const lina_dist *d);
int lina_dist_dp_size(const lina_dist *d);

/* In-place sums over the scope: floats in buckets of lina_dist_bucket floats
 * (started together, then completed), doubles in one call. */
int lina_dist_sum_f(lina_dist *d, lina_dist_scope s, float *buf, size_t n);
int lina_dist_sum_d(lina_dist *d, lina_dist_scope s, double *buf, int n);
/* The same sum for a buffer that becomes final from its end towards its start
 * (a gradient during the backward): begin records it; ready(from) starts the
 * all-reduce of every bucket (lina_dist_bucket floats, counted from the end)
 * that lies inside [from, n) and is not started yet, then lets MPI progress
 * the started ones (MPI_Testall); end starts the rest and waits for all. Every
 * rank starts the same buckets in the same order whatever its timing. One
 * such sum at a time. */
int lina_dist_sum_begin(lina_dist *d, lina_dist_scope s, float *buf, size_t n);
int lina_dist_sum_ready(lina_dist *d, size_t from);
int lina_dist_sum_end(lina_dist *d);
/* 1 while a sum is begun and not ended. */
int lina_dist_sum_open(const lina_dist *d);
/* recv [size(scope) * n] = every rank's send [n], in rank order. */
int lina_dist_allgather_f(lina_dist *d, lina_dist_scope s, const float *send, size_t n, float *recv);
/* recv [n] = the sum over the scope's ranks of their send [rank * n .. (rank + 1) * n)
 * (send [size(scope) * n]): MPI_Reduce_scatter_block. */
int lina_dist_reduce_scatter_f(lina_dist *d, lina_dist_scope s, const float *send, size_t n, float *recv);
int lina_dist_allgather_u64(lina_dist *d, lina_dist_scope s, const uint64_t *send, int n, uint64_t *recv);
/* buf [n] of the scope's rank 0 to every rank of the scope. */
int lina_dist_bcast_f(lina_dist *d, lina_dist_scope s, float *buf, size_t n);
/* End the whole job (mpirun stops every rank): for a rank that cannot go on. */
void lina_dist_abort(lina_dist *d, int code);

/* Floats per bucket of lina_dist_sum_f (default 1 << 20). */
extern size_t lina_dist_bucket;

/* Traffic and time in MPI calls since the start (or the last reset): bytes
 * this rank sent into collectives, seconds spent inside them, calls. */
typedef struct lina_dist_stats {
    double bytes, seconds;   /* all collectives */
    double gather_bytes, gather_seconds; /* of which all-gathers */
    /* bucketed sums: bytes whose all-reduce started before the sum's end (during the
     * backward), all their bytes, and the seconds spent waiting in the end */
    double early_bytes, sum_bytes, wait_seconds;
    int64_t calls;
} lina_dist_stats;
void lina_dist_get_stats(const lina_dist *d, lina_dist_stats *s);
void lina_dist_reset_stats(lina_dist *d);

#endif
