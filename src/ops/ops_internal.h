/* ops_internal.h -- helpers shared by the op files (not part of the public API). */
#ifndef LINA_OPS_INTERNAL_H
#define LINA_OPS_INTERNAL_H

#include "../kern/kern.h"
#include "lina.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Row t of head h in a [B,T,H,D] tensor. */
#define LINA_ROW(p, b, t, h, T, H, D) \
    ((p) + ((((size_t)(b) * (size_t)(T) + (size_t)(t)) * (size_t)(H) + (size_t)(h)) * (size_t)(D)))
/* Head (b,h) block of a [B,H,X,Y] state with XY = X*Y elements. */
#define LINA_STATE(p, b, h, H, XY) ((p) + (((size_t)(b) * (size_t)(H) + (size_t)(h)) * (size_t)(XY)))

/* ---- chunk machinery (chunk.c) ---- */

/* Inclusive cumulative log gate of rows [t0, t0+L) for one (b,h), in double,
 * restarted at t0. Vector gates: bd[L*K]; scalar or head gates: bd[L];
 * LINA_GATE_NONE: zeros (bd[L]). `g` is the gate tensor as in lina_dd_in. */
void lina_chunk_cumgate(lina_gate_kind gk, const float *g, int b, int h, int t0, int L,
                        int T, int H, int K, double *bd);
/* exp(x) for x <= 0 given in double, to float (vectorised). */
void lina_vexp_d(float *y, const double *x, size_t n);
/* chunk length of the diagonal-decay and delta-rule engines for lina_mix_dims.chunk
 * = `chunk` (<= 0: the default): 32 rows for keys of up to 64 channels, where the
 * intra-chunk products (which grow with the chunk) cost more than the state
 * passing they save (measured per CPU second at K = V = 64), else 64 */
static inline int lina_chunk_len(int chunk, int K)
{
    return chunk > 0 ? chunk : K <= 64 ? 32 : 64;
}

/* ---- packed documents (varlen.c) ---- */

/* The documents of a kernel's cu_seqlens call (B = 1, T packed rows, ncu offsets):
 * checked (lina_cu_seqlens_check, B = 1, offsets within int), then *ord = the
 * ncu - 1 documents longest first (malloc'd). One error line naming `who`. */
int lina_docs_order(const char *who, int B, int64_t T, const int64_t *cu, int64_t ncu, int **ord);

/* A state handed through an empty call (T = 0): dst [n] = src, or zeros when src is NULL;
 * dst may be src. */
static inline void lina_state_pass(float *dst, const float *src, size_t n)
{
    if (!dst) {
        return;
    }
    if (src) {
        memmove(dst, src, n * sizeof(float));
    } else {
        memset(dst, 0, n * sizeof(float));
    }
}

/* The output probe of lina_dd_out.finite / lina_delta_out.finite (lina_mix_out_finite's
 * elements, checked by the task that wrote them while they are in cache): 1 when the n
 * values x[0], x[stride], ... are all finite. A float is not finite when its exponent
 * bits are all ones. */
static inline int lina_probe_finite(const float *x, size_t n, size_t stride)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i * stride, sizeof u);
        bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return !bad;
}

/* ---- op helpers (registry.c) ---- */

/* Dimension bindings: one slot per capital letter. */
typedef struct lina_binds {
    int64_t v[26];
    const char *from[26];
} lina_binds;
void lina_binds_init(lina_binds *bd);
/* Fetch input `name` and check that its shape matches `spec` (letters
 * 'A'..'Z', one per dim, e.g. "BTHK"); unbound letters are bound now. With
 * `optional`, a missing input returns NULL without error; *err is set
 * non-zero on any error (message via lina_set_error). Checks finiteness. */
const lina_tensor *lina_op_input(const lina_tset *in, const char *name, const char *spec,
                                 lina_binds *bd, int optional, int *err);
/* Non-zero while lina_op_run runs with opts->trusted: skip value scans. */
int lina_op_trusted(void);
/* Initialise bd and fetch q, k [B,T,H,K] and v [B,T,H,V], the inputs every
 * mixer op starts with; returns the first error (0 if none). */
int lina_op_qkv(const lina_tset *in, lina_binds *bd, const lina_tensor **q,
                const lina_tensor **k, const lina_tensor **v);
/* Every value of input `name` is <= 0 (skipped while trusted); else an error
 * naming the file, the value and its index, followed by `why`. */
int lina_op_check_nonpos(const lina_tensor *t, const char *name, const char *why);
/* Output with shape from spec letters (all bound). */
float *lina_op_output(lina_tset *out, const char *name, const char *spec, const lina_binds *bd);
/* Grouped heads: x [BT,H,K] -> y [BT,H*G,K], head j of y reading head j / G
 * of x; back: dx [BT,H,K] (written) = the sum of dy over each group. */
void lina_op_heads_repeat(size_t BT, int H, int G, int K, const float *x, float *y);
void lina_op_heads_reduce(size_t BT, int H, int G, int K, const float *dy, float *dx);
/* Random numbers for benchmark inputs. */
float lina_rng_uniform(uint64_t *s, float lo, float hi);
float lina_rng_normal(uint64_t *s);
/* Add a random tensor with the given shape, values U(lo, hi) or N(0,1)*hi when normal. */
int lina_bench_tensor(lina_tset *in, const char *name, int ndim, const int64_t *shape,
                      uint64_t *rng, float lo, float hi, int normal);

#endif
