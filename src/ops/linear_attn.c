/*
 * linear_attn.c -- the diagonal-decay engine behind linear_attn, retention,
 * simple_gla and gla:
 *
 *   h_t = diag(exp(g_t)) h_{t-1} + k_t v_t^T,      o_t = scale * h_t^T q_t
 *
 * q, k [B,T,H,K]; v, o [B,T,H,V]; h0, ht [B,H,K,V]; g per lina_gate_kind.
 *
 * Forms
 *   recurrent: one token at a time, tiled over 32 value columns so the state
 *              tile (K x 32) stays in L1; the decode path.
 *   chunk:     chunks of C rows (default: lina_chunk_len). Per chunk, with b the cumulative
 *              log gate restarted at the chunk start (double precision):
 *                O   = (s Q * exp(b)) S_in + A V,  A_rc = s sum_i q_r k_c exp(b_r - b_c), c <= r
 *                S_out = diag(exp(b_L)) S_in + (K * exp(b_L - b))^T V
 *              Vector gates split the chunk into 16-row sub-chunks: off-diagonal
 *              blocks are GEMMs of q*exp(b_r - b_n) and k*exp(b_n - b_c) against the
 *              first row n of the query sub-chunk (both exponents <= 0). A diagonal
 *              block joins that GEMM when the gate sums over its own rows lie
 *              within +-8 (factors within [e^-8, e^8]); otherwise it is formed
 *              pairwise with running products of exp(g).
 *              The products with a causal (lower-triangular) factor, A V, A^T dO and
 *              the scores' own products, run over its nonzero part only (per-row
 *              ranges of lina_sgemm_smr, kern/gemm.h): about half their work.
 * Backward
 *   Neither form stores per-step states. The recurrent form runs a forward
 *   sweep (the state again, and dq) and a reverse sweep (dL/dh, dk and dv) on
 *   blocks of state rows; the chunk form keeps the state at each chunk start
 *   and recomputes within chunks. The gate gradient uses the identity
 *     dg_t = sum_{u >= t} (q_u * dq_u - k_u * dk_u) + rowsum(h_T * dh_T)
 *   accumulated in double.
 */
#include "ops_internal.h"
#include "../kern/gemm.h"
#include "../kern/isa.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define VB 32     /* value columns per recurrent tile */
#define SUB 16    /* vector-gate sub-chunk */
#define OB 16     /* recurrent forward: output rows buffered per tile */
#define RPF 8     /* recurrent forms: steps ahead to prefetch the strided rows of v, o, do, dv */
#define RPF_PREP 32 /* the same for the light passes over q and k that scale them */

typedef struct dd_ctx {
    int B, T, H, K, V, C;
    float s;
    lina_gate_kind gk;
    int check; /* LINA_GATE_CHECKED: refuse gates that are not finite log decays <= 0 */
    const float *g;
} dd_ctx;

static int dd_setup(dd_ctx *c, const lina_mix_dims *d, const lina_dd_in *in)
{
    if (!d || !in || !in->q || !in->k || !in->v) {
        return lina_set_error(LINA_EINVAL, "dd: missing q, k or v");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "dd: bad dims B=%d T=%d H=%d K=%d V=%d", d->B, d->T,
                              d->H, d->K, d->V);
    }
    const int gk = (int)in->gate & ~LINA_GATE_CHECKED;
    if (gk < LINA_GATE_NONE || gk > LINA_GATE_VECTOR) {
        return lina_set_error(LINA_EINVAL, "dd: unknown gate kind %d", (int)in->gate);
    }
    if (gk != LINA_GATE_NONE && !in->g) {
        return lina_set_error(LINA_EINVAL, "dd: gate kind set but g is NULL");
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->C = lina_chunk_len(d->chunk, d->K);
    c->s = d->scale != 0.0f ? d->scale : 1.0f / sqrtf((float)d->K);
    c->gk = (lina_gate_kind)gk;
    c->check = ((int)in->gate & LINA_GATE_CHECKED) && gk != LINA_GATE_NONE;
    c->g = in->g;
    return LINA_OK;
}

/* The error of a forward whose checked gate held a bad value (rc LINA_ENONFINITE), or of one
 * that ran out of memory. */
static int dd_fwd_error(int rc)
{
    if (rc == LINA_ENONFINITE) {
        return lina_set_error(rc, "dd: g holds a value that is not a finite log decay <= 0 (NaN, Inf or above 0)");
    }
    return lina_set_error(rc, "dd: out of memory");
}

/* LINA_GATE_CHECKED with the chunk form and the head gate: its H values before the call.
 * The other gates are checked chunk by chunk as the chunk form reads them (dd_chunk_gate_bad),
 * the recurrent forms check each row as they read it (dd_lazy_step). */
static int dd_gate_prepass(const dd_ctx *c)
{
    return c->check && c->gk == LINA_GATE_HEAD && lina_check_log_gates(c->g, (size_t)c->H, NULL)
               ? LINA_ENONFINITE : LINA_OK;
}

/* 1 when a gate value is not a log decay: NaN, -Inf, or above 0 (+Inf included) */
static inline int dd_bad_gate(float x)
{
    return !(x <= 0.0f) | !(x >= -FLT_MAX);
}

/* LINA_GATE_CHECKED, chunk form: 1 when a gate value of the chunk [t0, t0+L) of (b,h) is not a
 * log decay, checked right before chunk_prepare reads the same rows (so that g comes from
 * memory once, not in a pass of its own first). A vector gate row: the maximum of its values'
 * bits read as int32 (vectorised; a negative finite float's bits are at most -8388609, those
 * of -FLT_MAX), the exact test only for a row holding a zero or a bad value. */
static int dd_chunk_gate_bad(const dd_ctx *c, int b, int h, int t0, int L)
{
    const int T = c->T, H = c->H, K = c->K;
    if (c->gk == LINA_GATE_VECTOR) {
        for (int r = 0; r < L; r++) {
            const float *restrict gr = LINA_ROW(c->g, b, t0 + r, h, T, H, K);
            int32_t mx = INT32_MIN;
            for (int i = 0; i < K; i++) {
                int32_t bits;
                memcpy(&bits, gr + i, sizeof bits);
                mx = bits > mx ? bits : mx;
            }
            if (mx > -8388609) {
                for (int i = 0; i < K; i++) {
                    if (dd_bad_gate(gr[i])) {
                        return 1;
                    }
                }
            }
        }
        return 0;
    }
    int bad = 0;
    if (c->gk == LINA_GATE_SCALAR) {
        for (int r = 0; r < L; r++) {
            bad |= dd_bad_gate(c->g[((size_t)b * T + (size_t)(t0 + r)) * H + h]);
        }
    }
    return bad;
}

/* decay factors of token t for (b,h): a[K] (vector) or *as (scalar kinds) */
static inline float dd_gate_scalar(const dd_ctx *c, int b, int t, int h)
{
    if (c->gk == LINA_GATE_SCALAR) {
        return c->g[((size_t)b * c->T + (size_t)t) * c->H + h];
    }
    if (c->gk == LINA_GATE_HEAD) {
        return c->g[h];
    }
    return 0.0f;
}

/* Lazy decay of the recurrent forms. Multiplying the state by a decay within a
 * few ulps of 1 at every step loses the decrement to rounding, the same way
 * each time, and the error grows with T (log decays of -3e-8, where exp(g)
 * rounds to 1, drift past 1e-4 by T = 8192). So each row keeps the log decay
 * not yet applied, p in (-DD_LAZY, 0]: step t takes x = p + g_t; when
 * x < -DD_LAZY the state row is multiplied by alpha = exp(x) and p = 0, else
 * alpha = 1 (exact) and p = x. With e_t = exp(p) the kept state H relates to
 * the true one by h_t = diag(e_t) H_t, and
 *   H_t = diag(alpha_t) H_{t-1} + (k_t / e_t) v_t^T,   o_t = s (q_t e_t)^T H_t,
 * the same recurrence on scaled q and k. Decays are applied once they reach
 * 2^-6, so their rounding (at most 2^-25) is relative to at least 2^-6, and
 * always at the last step of every C steps and of the sequence, so that the
 * checkpoints (lina_dd_out.states) and ht are the kept state itself (e = 1).
 * Within an interval a step applies decays only once some row's x falls below
 * -DD_LAZY_STEP (a scalar decay: once x does); that step applies every row
 * past -DD_LAZY. The other steps leave the state unscaled (alpha = 1 in every
 * row), so the recurrent kernels skip the multiply on them (dd_unit_row), and
 * e stays above exp(-4 - g) (k / e at most about 55x k for small gates: floats
 * scale exactly, so only the range matters). With a gate per key channel the
 * fastest-decaying channel sets how often a step applies: at -1 instead of -4
 * (GLA's gates at B 8 T 512 H 4 K = V = 64) a step in 5 or so was a decayed one,
 * which also breaks the two-step passes, and the forward took 1.07x as long. */
#define DD_LAZY 0.015625f
#define DD_LAZY_STEP 4.0f

/* one step of the lazy decay: p[K] (or p[0] for scalar kinds) in/out; alpha[K], e[K] out.
 * Returns 1 when the step's gate is checked (c->check) and holds a bad value, else 0. */
static int dd_lazy_step(const dd_ctx *c, int b, int t, int h, float *restrict p,
                        float *restrict alpha, float *restrict e)
{
    const int K = c->K;
    const int last = (t + 1) % c->C == 0 || t == c->T - 1; /* every row applied */
    int bad = 0;
    if (c->gk == LINA_GATE_VECTOR) {
        const float *restrict g = LINA_ROW(c->g, b, t, h, c->T, c->H, K);
        if (c->check) {
            for (int i = 0; i < K; i++) {
                bad |= dd_bad_gate(g[i]);
            }
        }
        int trig = last;
        for (int i = 0; i < K; i++) {
            trig |= p[i] + g[i] < -DD_LAZY_STEP;
        }
        if (!trig) { /* no row applied: alpha = 1 without an exp */
            for (int i = 0; i < K; i++) {
                p[i] += g[i];
                alpha[i] = 1.0f;
            }
            lina_vexp(e, p, (size_t)K);
            return bad;
        }
        const float lim = last ? 1.0f : -DD_LAZY; /* x < 1: always */
        for (int i = 0; i < K; i++) {
            const float x = p[i] + g[i];
            const int apply = x < lim;
            alpha[i] = apply ? x : 0.0f;
            p[i] = apply ? 0.0f : x;
        }
        lina_vexp(alpha, alpha, (size_t)K);
        lina_vexp(e, p, (size_t)K);
        return bad;
    }
    const float gs = dd_gate_scalar(c, b, t, h);
    bad = c->check && dd_bad_gate(gs);
    float x = p[0] + gs, al = 1.0f;
    if (last || x < -DD_LAZY_STEP) {
        al = expf(x);
        x = 0.0f;
    }
    p[0] = x;
    const float ee = x == 0.0f ? 1.0f : expf(x);
    for (int i = 0; i < K; i++) {
        alpha[i] = al;
        e[i] = ee;
    }
    return bad;
}

/* 1 when every decay of a step's row a[K] is exactly 1 */
static inline int dd_unit_row(const float *restrict a, int K)
{
    int unit = 1;
    for (int i = 0; i < K; i++) {
        unit &= a[i] == 1.0f;
    }
    return unit;
}

/* alpha and e of every step of (b,h): Al[T*K], Ev[T*K], and Un[t] = 1 where step t's
 * alphas are all 1 (the recurrent forms then skip the multiply and the row: found once
 * per step here rather than by every tile); p[K] scratch. Returns 1 when a checked gate
 * held a bad value. */
static int dd_lazy_gates(const dd_ctx *c, int b, int h, float *p, float *Al, float *Ev, unsigned char *Un)
{
    for (int i = 0; i < c->K; i++) {
        p[i] = 0.0f;
    }
    int bad = 0;
    for (int t = 0; t < c->T; t++) {
        if (c->gk == LINA_GATE_VECTOR && t + RPF < c->T) {
            lina_prefetch_floats(LINA_ROW(c->g, b, t + RPF, h, c->T, c->H, c->K), c->K);
        }
        bad |= dd_lazy_step(c, b, t, h, p, Al + (size_t)t * c->K, Ev + (size_t)t * c->K);
        Un[t] = (unsigned char)dd_unit_row(Al + (size_t)t * c->K, c->K);
    }
    return bad;
}

/* the scaled inputs of one step: qs = s (q e) (s: the attention scale), ks = k / e */
static inline void dd_lazy_qk(int K, float s, const float *restrict q, const float *restrict k,
                              const float *restrict e, float *restrict qs, float *restrict ks)
{
    for (int i = 0; i < K; i++) {
        qs[i] = s * (q[i] * e[i]);
        ks[i] = k[i] / e[i];
    }
}

/* ===================================================== recurrent forward */

/* one token on a K x W state tile: S = a*S + k v^T, o = sum_i q_i S_i (q scaled by the
 * caller: its rows are broadcast from memory as they are) */
#if defined(__GNUC__)
#define DD_INLINE static inline __attribute__((always_inline))
#else
#define DD_INLINE static inline
#endif
DD_INLINE void rec_step_plain(int K, int W, float *restrict S, const float *restrict a,
                              const float *restrict k, const float *restrict v,
                              const float *restrict q, float *restrict o)
{
    _Alignas(64) float acc[VB];
    for (int j = 0; j < W; j++) {
        acc[j] = 0.0f;
    }
    for (int i = 0; i < K; i++) {
        float *restrict Si = S + (size_t)i * W;
        const float ai = a[i], ki = k[i], qi = q[i];
#pragma omp simd
        for (int j = 0; j < W; j++) {
            float x = ai * Si[j] + ki * v[j];
            Si[j] = x;
            acc[j] += qi * x;
        }
    }
    for (int j = 0; j < W; j++) {
        o[j] = acc[j];
    }
}

/* the same step, on the AVX paths with registers for full tiles. unit: every
 * a_i is 1 (most steps under the lazy decay below, and every step without a
 * gate), so the state is not multiplied: two operations per vector, not three */
DD_INLINE void rec_step_tile_u(int K, int W, float *restrict S, const float *restrict a,
                               const float *restrict k, const float *restrict v,
                               const float *restrict q, float *restrict o, const int unit)
{
#ifdef LINA_VL
#define DD_DECAYED(av, p) (unit ? LINA_VLD(p) : LINA_VMUL(av, LINA_VLD(p)))
    if (W == VB) {
        /* the tile's row of v and the output sums stay in registers; AVX-512
         * takes two rows at a time into two sums (four independent chains of
         * additions, as AVX2 has with one row of four vectors) */
        enum { NV = VB / LINA_VL };
        lina_vf Vr[NV], O[NV], O2[NV];
        LINA_NV_UNROLL
        for (int m = 0; m < NV; m++) {
            Vr[m] = LINA_VLD(v + LINA_VL * m);
            O[m] = LINA_VZERO();
            O2[m] = LINA_VZERO();
        }
        int i = 0;
#if defined(__AVX512F__)
        for (; i + 2 <= K; i += 2) {
            float *S0 = S + (size_t)i * VB, *S1 = S0 + VB;
            const lina_vf a0 = LINA_VSET1(a[i]), k0 = LINA_VSET1(k[i]), q0 = LINA_VSET1(q[i]);
            const lina_vf a1 = LINA_VSET1(a[i + 1]), k1 = LINA_VSET1(k[i + 1]), q1 = LINA_VSET1(q[i + 1]);
            LINA_NV_UNROLL
            for (int m = 0; m < NV; m++) {
                const lina_vf x0 = LINA_VFMA(k0, Vr[m], DD_DECAYED(a0, S0 + LINA_VL * m));
                const lina_vf x1 = LINA_VFMA(k1, Vr[m], DD_DECAYED(a1, S1 + LINA_VL * m));
                LINA_VST(S0 + LINA_VL * m, x0);
                LINA_VST(S1 + LINA_VL * m, x1);
                O[m] = LINA_VFMA(q0, x0, O[m]);
                O2[m] = LINA_VFMA(q1, x1, O2[m]);
            }
        }
#endif
        for (; i < K; i++) {
            float *Si = S + (size_t)i * VB;
            const lina_vf ai = LINA_VSET1(a[i]), ki = LINA_VSET1(k[i]), qi = LINA_VSET1(q[i]);
            LINA_NV_UNROLL
            for (int m = 0; m < NV; m++) {
                const lina_vf x = LINA_VFMA(ki, Vr[m], DD_DECAYED(ai, Si + LINA_VL * m));
                LINA_VST(Si + LINA_VL * m, x);
                O[m] = LINA_VFMA(qi, x, O[m]);
            }
        }
        LINA_NV_UNROLL
        for (int m = 0; m < NV; m++) {
            LINA_VST(o + LINA_VL * m, LINA_VADD(O[m], O2[m]));
        }
        return;
    }
#undef DD_DECAYED
#endif
    (void)unit; /* the plain loops multiply by a_i = 1 exactly */
    if (W == VB) {
        rec_step_plain(K, VB, S, a, k, v, q, o); /* the loops over a constant width */
    } else {
        rec_step_plain(K, W, S, a, k, v, q, o);
    }
}

static inline void rec_step_tile(int K, int W, float *restrict S, const float *restrict a,
                                 const float *restrict k, const float *restrict v,
                                 const float *restrict q, float *restrict o, int unit)
{
    if (unit) {
        rec_step_tile_u(K, W, S, a, k, v, q, o, 1);
    } else {
        rec_step_tile_u(K, W, S, a, k, v, q, o, 0);
    }
}

#if defined(LINA_VL) && defined(__AVX512F__)
/* two steps whose decays are all 1 on a full K x VB tile, each row of the
 * state loaded and stored once for both: S += k0 v0^T, o0 = sum_i q0_i S_i,
 * S += k1 v1^T, o1 = sum_i q1_i S_i (q0, q1 scaled; AVX-512) */
static void rec_pair_tile(int K, float *restrict S, const float *restrict k0, const float *restrict v0,
                          const float *restrict q0, const float *restrict k1, const float *restrict v1,
                          const float *restrict q1, float *restrict o0, float *restrict o1)
{
    enum { NV = VB / LINA_VL };
    lina_vf V0[NV], V1[NV], O0[NV], O0b[NV], O1[NV], O1b[NV];
    LINA_NV_UNROLL
    for (int m = 0; m < NV; m++) {
        V0[m] = LINA_VLD(v0 + LINA_VL * m);
        V1[m] = LINA_VLD(v1 + LINA_VL * m);
        O0[m] = O0b[m] = O1[m] = O1b[m] = LINA_VZERO();
    }
    int i = 0;
    for (; i + 2 <= K; i += 2) {
        float *Sa = S + (size_t)i * VB, *Sb = Sa + VB;
        const lina_vf ka0 = LINA_VSET1(k0[i]), kb0 = LINA_VSET1(k0[i + 1]);
        const lina_vf ka1 = LINA_VSET1(k1[i]), kb1 = LINA_VSET1(k1[i + 1]);
        const lina_vf qa0 = LINA_VSET1(q0[i]), qb0 = LINA_VSET1(q0[i + 1]);
        const lina_vf qa1 = LINA_VSET1(q1[i]), qb1 = LINA_VSET1(q1[i + 1]);
        LINA_NV_UNROLL
        for (int m = 0; m < NV; m++) {
            const lina_vf xa = LINA_VFMA(ka0, V0[m], LINA_VLD(Sa + LINA_VL * m));
            const lina_vf xb = LINA_VFMA(kb0, V0[m], LINA_VLD(Sb + LINA_VL * m));
            O0[m] = LINA_VFMA(qa0, xa, O0[m]);
            O0b[m] = LINA_VFMA(qb0, xb, O0b[m]);
            const lina_vf ya = LINA_VFMA(ka1, V1[m], xa), yb = LINA_VFMA(kb1, V1[m], xb);
            O1[m] = LINA_VFMA(qa1, ya, O1[m]);
            O1b[m] = LINA_VFMA(qb1, yb, O1b[m]);
            LINA_VST(Sa + LINA_VL * m, ya);
            LINA_VST(Sb + LINA_VL * m, yb);
        }
    }
    for (; i < K; i++) {
        float *Si = S + (size_t)i * VB;
        const lina_vf ka0 = LINA_VSET1(k0[i]), ka1 = LINA_VSET1(k1[i]);
        const lina_vf qa0 = LINA_VSET1(q0[i]), qa1 = LINA_VSET1(q1[i]);
        LINA_NV_UNROLL
        for (int m = 0; m < NV; m++) {
            const lina_vf xa = LINA_VFMA(ka0, V0[m], LINA_VLD(Si + LINA_VL * m));
            O0[m] = LINA_VFMA(qa0, xa, O0[m]);
            const lina_vf ya = LINA_VFMA(ka1, V1[m], xa);
            O1[m] = LINA_VFMA(qa1, ya, O1[m]);
            LINA_VST(Si + LINA_VL * m, ya);
        }
    }
    LINA_NV_UNROLL
    for (int m = 0; m < NV; m++) {
        LINA_VST(o0 + LINA_VL * m, LINA_VADD(O0[m], O0b[m]));
        LINA_VST(o1 + LINA_VL * m, LINA_VADD(O1[m], O1b[m]));
    }
}
#endif

static void tile_load(float *S, const float *h0, int K, int V, int j0, int W)
{
    for (int i = 0; i < K; i++) {
        if (h0) {
            memcpy(S + (size_t)i * W, h0 + (size_t)i * V + j0, (size_t)W * sizeof(float));
        } else {
            memset(S + (size_t)i * W, 0, (size_t)W * sizeof(float));
        }
    }
}

static void tile_store(float *dst, const float *S, int K, int V, int j0, int W)
{
    for (int i = 0; i < K; i++) {
        memcpy(dst + (size_t)i * V + j0, S + (size_t)i * W, (size_t)W * sizeof(float));
    }
}

/* dst rows = S rows * e[i] (the true state from the kept one; e NULL: copy) */
static void tile_store_scaled(float *dst, const float *S, const float *e, int K, int V, int j0, int W)
{
    if (!e) {
        tile_store(dst, S, K, V, j0, W);
        return;
    }
    for (int i = 0; i < K; i++) {
        float *restrict d = dst + (size_t)i * V + j0;
        const float *restrict x = S + (size_t)i * W;
        for (int j = 0; j < W; j++) {
            d[j] = x[j] * e[i];
        }
    }
}

static int dd_fwd_recurrent(const dd_ctx *c, const lina_dd_in *in, lina_dd_out *out, lina_ws *ws)
{
    const int B = c->B, T = c->T, H = c->H, K = c->K, V = c->V;
    const int nvb = (V + VB - 1) / VB;
    /* enough (b,h) pairs for the threads, or one column tile (V <= VB: as many
     * tasks either way): one task per (b,h), so that the decays and the scaled
     * inputs are computed once for all of its column tiles, ahead of the steps
     * (which then may take two steps per pass, rec_pair_tile) */
    const int per_bh = B * H >= lina_get_threads() || nvb == 1;
    const int ntask = per_bh ? B * H : B * H * nvb;
    int rc = LINA_OK, gate_bad = 0, probe_bad = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        int bh = per_bh ? task : task / nvb, b = bh / H, h = bh % H;
        int pbad = 0; /* the output probe (out->finite) of the rows this task writes */
        int vb0 = per_bh ? 0 : task % nvb, vb1 = per_bh ? nvb : vb0 + 1;
        int bad = 0;
        const int C = c->C, nC = (T + C - 1) / C;
        size_t extra = per_bh ? 3 * (size_t)T * K + (size_t)nC * K + (size_t)T / 4 + 1 : 0;
        float *S = lina_ws_get(ws, lina_thread_id(),
                               ((size_t)K * VB + 5 * (size_t)K + extra + OB * VB + 16) * sizeof(float));
        if (!S) {
            rc = LINA_ENOMEM;
            continue;
        }
        float *p = S + (size_t)K * VB, *al = p + K, *ev = al + K, *qs = ev + K, *ks = qs + K;
        /* outputs go through an aligned buffer of OB rows: storing each step's
         * row straight into o, which may sit at any 4-byte offset, made the
         * whole step up to 1.6x slower (unaligned stores among the loads) */
        float *ob = (float *)(((uintptr_t)(S + (size_t)K * VB + 5 * (size_t)K + extra) + 63) & ~(uintptr_t)63);
        /* per_bh: the decays Al, the scaled inputs Qs = s (q e), Ks = k / e of every
         * step [T*K] each, once for all column tiles, and Ec[nC*K]: e after the
         * last step of each checkpoint interval. (Scaling each step's rows into
         * a small buffer as the step runs made the forward 1.4x slower: the
         * tile's broadcasts then wait on the stores just made.) */
        float *Al = ks + K, *Qs = Al + (per_bh ? (size_t)T * K : 0);
        float *Ks = Qs + (per_bh ? (size_t)T * K : 0), *Ec = Ks + (per_bh ? (size_t)T * K : 0);
        unsigned char *Un = (unsigned char *)(Ec + (per_bh ? (size_t)nC * K : 0)); /* per_bh: [T] */
        if (per_bh) {
            bad |= dd_lazy_gates(c, b, h, p, Al, Qs, Un); /* Qs holds e until scaled below */
            for (int t = 0; t < T; t++) {
                const float *restrict q = LINA_ROW(in->q, b, t, h, T, H, K);
                const float *restrict k = LINA_ROW(in->k, b, t, h, T, H, K);
                float *restrict qt = Qs + (size_t)t * K, *restrict kt = Ks + (size_t)t * K;
                if (t + RPF_PREP < T) {
                    lina_prefetch_floats_l2(LINA_ROW(in->q, b, t + RPF_PREP, h, T, H, K), K);
                    lina_prefetch_floats_l2(LINA_ROW(in->k, b, t + RPF_PREP, h, T, H, K), K);
                }
                if ((t + 1) % C == 0 || t == T - 1) {
                    memcpy(Ec + (size_t)(t / C) * K, qt, (size_t)K * sizeof(float));
                }
                for (int i = 0; i < K; i++) {
                    const float e = qt[i];
                    qt[i] = c->s * (q[i] * e);
                    kt[i] = k[i] / e;
                }
            }
        }
        float *saved = out->states ? out->states + (size_t)bh * (nC + 1) * K * V : NULL;
        for (int vb = vb0; vb < vb1; vb++) {
            int j0 = vb * VB, W = V - j0 < VB ? V - j0 : VB;
            tile_load(S, in->h0 ? LINA_STATE(in->h0, b, h, H, (size_t)K * V) : NULL, K, V, j0, W);
            for (int i = 0; !per_bh && i < K; i++) {
                p[i] = 0.0f;
            }
            const float *e_prev = NULL; /* e of the step before (none at t = 0) */
            for (int t = 0; t < T; t++) {
                if (saved && t % C == 0) {
                    tile_store_scaled(saved + (size_t)(t / C) * K * V, S, e_prev, K, V, j0, W);
                }
                const float *at = al, *qt = qs, *kt = ks;
                if (per_bh) {
                    at = Al + (size_t)t * K;
                    qt = Qs + (size_t)t * K;
                    kt = Ks + (size_t)t * K;
                } else {
                    bad |= dd_lazy_step(c, b, t, h, p, al, ev);
                    dd_lazy_qk(K, c->s, LINA_ROW(in->q, b, t, h, T, H, K), LINA_ROW(in->k, b, t, h, T, H, K), ev,
                               qs, ks);
                }
                if (t + RPF < T) {
                    lina_prefetch_floats(LINA_ROW(in->v, b, t + RPF, h, T, H, V) + j0, W);
                    lina_prefetch_floats(LINA_ROW(out->o, b, t + RPF, h, T, H, V) + j0, W);
                }
                const int unit = per_bh ? Un[t] : dd_unit_row(at, K);
#if defined(LINA_VL) && defined(__AVX512F__)
                /* two steps in one pass over the tile: both of unit decay, the
                 * first not the last of a checkpoint interval or output block */
                if (unit && per_bh && W == VB && t + 1 < T && (t + 1) % C != 0 && (t + 1) % OB != 0 && Un[t + 1]) {
                    if (t + 1 + RPF < T) {
                        lina_prefetch_floats(LINA_ROW(in->v, b, t + 1 + RPF, h, T, H, V) + j0, W);
                        lina_prefetch_floats(LINA_ROW(out->o, b, t + 1 + RPF, h, T, H, V) + j0, W);
                    }
                    rec_pair_tile(K, S, kt, LINA_ROW(in->v, b, t, h, T, H, V) + j0, qt, kt + K,
                                  LINA_ROW(in->v, b, t + 1, h, T, H, V) + j0, qt + K,
                                  ob + (size_t)(t % OB) * VB, ob + (size_t)((t + 1) % OB) * VB);
                    t++; /* the bookkeeping below is that of the second step */
                } else
#endif
                rec_step_tile(K, W, S, at, kt, LINA_ROW(in->v, b, t, h, T, H, V) + j0, qt,
                              ob + (size_t)(t % OB) * VB, unit);
                if ((t + 1) % OB == 0 || t == T - 1) {
                    const int u0 = t - t % OB;
                    if (out->finite) {
                        pbad |= (j0 == 0 && !lina_probe_finite(ob, (size_t)(t - u0 + 1), VB)) ||
                                (t == T - 1 && !lina_probe_finite(ob + (size_t)(t % OB) * VB, (size_t)W, 1));
                    }
                    for (int u = u0; u <= t; u++) {
                        memcpy(LINA_ROW(out->o, b, u, h, T, H, V) + j0, ob + (size_t)(u % OB) * VB,
                               (size_t)W * sizeof(float));
                    }
                }
                if ((t + 1) % C == 0 || t == T - 1) {
                    e_prev = per_bh ? Ec + (size_t)(t / C) * K : ev;
                }
            }
            if (saved) {
                tile_store_scaled(saved + (size_t)nC * K * V, S, e_prev, K, V, j0, W);
            }
            if (out->ht) {
                tile_store_scaled(LINA_STATE(out->ht, b, h, H, (size_t)K * V), S, e_prev, K, V, j0, W);
            }
        }
        if (bad) {
#pragma omp atomic write
            gate_bad = 1;
        }
        if (pbad) {
#pragma omp atomic write
            probe_bad = 1;
        }
    }
    if (probe_bad && out->finite) {
        *out->finite = 0;
    }
    return rc ? rc : gate_bad ? LINA_ENONFINITE : LINA_OK;
}

/* ========================================================= chunk machinery */

/* per-thread chunk buffers */
typedef struct chunk_buf {
    double *bd;      /* [C*K] cumulative gates (or [C]) */
    double *xd;      /* [C*K + 2C] scratch exponents */
    float *Qd;       /* [C*K] s*q*exp(b) */
    float *Kd;       /* [C*K] k*exp(bL-b) */
    float *E;        /* [C*K] exp(g) per row (vector gate) */
    float *T1, *T2, *T3, *F1, *F2; /* [C*K + 2C] scratch */
    float *dQ, *dK;  /* [C*K] */
    float *eQ, *eK;  /* [C*K] (vector gate) or [C]: exp(b_r), exp(b_L - b_r) */
    float *w;        /* [K] */
    float *dec;      /* [K] exp(b_L) */
    float *A, *dA;   /* [C*C] */
    float *Gm;       /* [C*C] scalar gates: exp(b_r - b_c), c <= r (set by chunk_intra) */
    int *rlo, *rhi;  /* [C] 0 and r + 1: row r of a causal score matrix, columns [0, r] */
    int *clo, *chi;  /* [C] c and L: column c, rows [c, L) (chi set for the chunk's L) */
} chunk_buf;

#define CB_NCK 12
static size_t chunk_buf_bytes(int C, int K)
{
    size_t CK = (size_t)C * K + 2 * (size_t)C, CC = (size_t)C * C;
    return CB_NCK * (CK * sizeof(double) + 64) + 3 * (CC * sizeof(float) + 64) +
           2 * ((size_t)K * sizeof(float) + 64) + 4 * ((size_t)C * sizeof(int) + 64);
}

static void chunk_buf_carve(chunk_buf *cb, void *mem, int C, int K)
{
    size_t CK = (size_t)C * K + 2 * (size_t)C, CC = (size_t)C * C;
    char *p = mem;
#define CARVE(ptr, type, n)                                   \
    do {                                                      \
        cb->ptr = (type *)p;                                  \
        p += (((n) * sizeof(type)) + 63) & ~(size_t)63;       \
    } while (0)
    CARVE(bd, double, CK);
    CARVE(xd, double, CK);
    CARVE(Qd, float, CK);
    CARVE(Kd, float, CK);
    CARVE(E, float, CK);
    CARVE(T1, float, CK);
    CARVE(T2, float, CK);
    CARVE(T3, float, CK);
    CARVE(F1, float, CK);
    CARVE(F2, float, CK);
    CARVE(dQ, float, CK);
    CARVE(dK, float, CK);
    CARVE(eQ, float, CK);
    CARVE(eK, float, CK);
    CARVE(A, float, CC);
    CARVE(dA, float, CC);
    CARVE(Gm, float, CC);
    CARVE(w, float, (size_t)K);
    CARVE(dec, float, (size_t)K);
    CARVE(rlo, int, (size_t)C);
    CARVE(rhi, int, (size_t)C);
    CARVE(clo, int, (size_t)C);
    CARVE(chi, int, (size_t)C);
#undef CARVE
    for (int r = 0; r < C; r++) {
        cb->rlo[r] = 0;
        cb->rhi[r] = r + 1;
        cb->clo[r] = r;
        cb->chi[r] = C;
    }
}

/* the column ranges of a chunk of L rows: column c of a causal score matrix has rows [c, L) */
static void chunk_cols(chunk_buf *cb, int L)
{
    for (int r = 0; r < L; r++) {
        cb->chi[r] = L;
    }
}

/* Prepare one chunk [t0, t0+L) of (b,h): eQ = exp(b_r), eK = exp(b_L - b_r),
 * dec = exp(b_L), Qd = s q eQ, Kd = k eK.
 * Vector gates: every exponent is a float sum accumulated outward from its own
 * reference row (prefix sums from the chunk start, suffix sums to its end), so
 * its rounding error is relative to its own size and the factor it feeds is
 * accurate; no difference of two long cumulative sums is ever taken.
 * Scalar gates: cumulative sums in double (L values). */
static void chunk_prepare(const dd_ctx *c, const lina_dd_in *in, int b, int h, int t0, int L,
                          chunk_buf *cb, int full)
{
    const int T = c->T, H = c->H, K = c->K;
    if (c->gk == LINA_GATE_VECTOR) {
        float *restrict w = cb->w;
        for (int i = 0; i < K; i++) {
            w[i] = 0.0f;
        }
        for (int r = L - 1; r >= 0; r--) { /* suffix sums b_L - b_r */
            const float *restrict gr = LINA_ROW(c->g, b, t0 + r, h, T, H, K);
            float *restrict x = cb->eK + (size_t)r * K;
            for (int i = 0; i < K; i++) {
                x[i] = w[i];
                w[i] += gr[i];
            }
        }
        lina_vexp(cb->dec, w, (size_t)K);
        lina_vexp(cb->eK, cb->eK, (size_t)L * K);
        if (full) {
            for (int i = 0; i < K; i++) {
                w[i] = 0.0f;
            }
            for (int r = 0; r < L; r++) { /* prefix sums b_r */
                const float *restrict gr = LINA_ROW(c->g, b, t0 + r, h, T, H, K);
                float *restrict x = cb->eQ + (size_t)r * K;
                for (int i = 0; i < K; i++) {
                    w[i] += gr[i];
                    x[i] = w[i];
                }
            }
            lina_vexp(cb->eQ, cb->eQ, (size_t)L * K);
        }
        for (int r = 0; r < L; r++) {
            const float *restrict q = LINA_ROW(in->q, b, t0 + r, h, T, H, K);
            const float *restrict k = LINA_ROW(in->k, b, t0 + r, h, T, H, K);
            const float *restrict eq = cb->eQ + (size_t)r * K, *restrict ek = cb->eK + (size_t)r * K;
            float *restrict Qr = cb->Qd + (size_t)r * K, *restrict Kr = cb->Kd + (size_t)r * K;
            for (int i = 0; i < K; i++) {
                Kr[i] = k[i] * ek[i];
            }
            if (full) {
                for (int i = 0; i < K; i++) {
                    Qr[i] = c->s * q[i] * eq[i];
                }
            }
        }
        return;
    }
    lina_chunk_cumgate(c->gk, c->g, b, h, t0, L, T, H, K, cb->bd);
    const double bL = cb->bd[L - 1];
    for (int r = 0; r < L; r++) {
        cb->xd[r] = cb->bd[r];
        cb->xd[L + r] = bL - cb->bd[r];
    }
    lina_vexp_d(cb->eQ, cb->xd, (size_t)L);
    lina_vexp_d(cb->eK, cb->xd + L, (size_t)L);
    for (int r = 0; r < L; r++) {
        const float *restrict q = LINA_ROW(in->q, b, t0 + r, h, T, H, K);
        const float *restrict k = LINA_ROW(in->k, b, t0 + r, h, T, H, K);
        float *restrict Qr = cb->Qd + (size_t)r * K, *restrict Kr = cb->Kd + (size_t)r * K;
        const float fq = c->s * cb->eQ[r], fk = cb->eK[r];
        for (int i = 0; i < K; i++) {
            Qr[i] = fq * q[i];
            Kr[i] = fk * k[i];
        }
    }
    float e = c->gk == LINA_GATE_NONE ? 1.0f : (float)exp(bL);
    for (int i = 0; i < K; i++) {
        cb->dec[i] = e;
    }
}

/* Largest |sum of g| over a sub-chunk for which its diagonal block is a GEMM:
 * the factors exp(+-x) stay within [e^-8, e^8] and the rounding of x (at most
 * SUB float additions of numbers below 8) moves a product by under 1e-5. */
#define DIAG_GEMM_LIM 8.0f

/* Vector gate, sub-chunk [r0, r1) against the rows [0, r0) before it, n = r0:
 * F1 = exp(b_r - b_n) (rows r0..r1, sums of g over (n, r]), F2 = exp(b_n - b_c)
 * (rows 0..r0, sums of g over (c, n]), both accumulated outward from n;
 * T1 = q * F1, T2 = k * F2 (F2, T2 indexed by chunk row). When every sum over
 * the sub-chunk's own rows lies within +-DIAG_GEMM_LIM, F2 and T2 also get
 * rows r0..r1 (F2 = 1 / F1 = exp(b_n - b_c) with c >= n): the diagonal block
 * is then part of the same product, T1 T2^T restricted to c <= r. Returns the
 * number of T2 rows set: r1 in that case, else r0. */
static int vec_offdiag_factors(const dd_ctx *c, const lina_dd_in *in, int b, int h, int t0,
                               int r0, int r1, chunk_buf *cb)
{
    const int T = c->T, H = c->H, K = c->K;
    const size_t nr = (size_t)(r1 - r0) * K;
    float *w = cb->w;
    for (int i = 0; i < K; i++) {
        w[i] = 0.0f;
    }
    int fits = 1;
    for (int r = r0; r < r1; r++) {
        float *x = cb->F1 + (size_t)(r - r0) * K;
        if (r > r0) {
            const float *gr = LINA_ROW(c->g, b, t0 + r, h, T, H, K);
            for (int i = 0; i < K; i++) {
                w[i] += gr[i];
            }
        }
        int in_range = 1;
        for (int i = 0; i < K; i++) {
            in_range &= fabsf(w[i]) <= DIAG_GEMM_LIM; /* NaN: not in range */
        }
        fits &= in_range;
        memcpy(x, w, (size_t)K * sizeof(float));
    }
    if (fits) {
        float *x = cb->F2 + (size_t)r0 * K;
        for (size_t i = 0; i < nr; i++) {
            x[i] = -cb->F1[i];
        }
        lina_vexp(x, x, nr);
    }
    for (int i = 0; i < K; i++) {
        w[i] = 0.0f;
    }
    for (int r = r0 - 1; r >= 0; r--) {
        const float *gr = LINA_ROW(c->g, b, t0 + r + 1, h, T, H, K);
        float *x = cb->F2 + (size_t)r * K;
        for (int i = 0; i < K; i++) {
            w[i] += gr[i];
            x[i] = w[i];
        }
    }
    lina_vexp(cb->F1, cb->F1, nr);
    lina_vexp(cb->F2, cb->F2, (size_t)r0 * K);
    for (int r = r0; r < r1; r++) {
        const float *q = LINA_ROW(in->q, b, t0 + r, h, T, H, K);
        const float *f = cb->F1 + (size_t)(r - r0) * K;
        float *o = cb->T1 + (size_t)(r - r0) * K;
        for (int i = 0; i < K; i++) {
            o[i] = q[i] * f[i];
        }
    }
    const int n2 = fits ? r1 : r0;
    for (int r = 0; r < n2; r++) {
        const float *k = LINA_ROW(in->k, b, t0 + r, h, T, H, K);
        const float *f = cb->F2 + (size_t)r * K;
        float *o = cb->T2 + (size_t)r * K;
        for (int i = 0; i < K; i++) {
            o[i] = k[i] * f[i];
        }
    }
    return n2;
}

/* E = exp(g) of the rows [r0, r1) of the chunk (the pairwise diagonal blocks) */
static void vec_row_gates(const dd_ctx *c, int b, int h, int t0, int r0, int r1, chunk_buf *cb)
{
    for (int r = r0; r < r1; r++) {
        lina_vexp(cb->E + (size_t)r * c->K, LINA_ROW(c->g, b, t0 + r, h, c->T, c->H, c->K),
                  (size_t)c->K);
    }
}

/* w = flush(w * e) (values below 1e-30 in magnitude become 0, avoiding
 * denormals); returns sum_i q_i w_i. With first != 0 the multiply is skipped. */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline float decay_dot(float *restrict w, const float *restrict e,
                              const float *restrict q, int K, int first)
{
    __m512 acc = _mm512_setzero_ps();
    const __m512 tiny = _mm512_set1_ps(1e-30f);
    int i = 0;
    for (; i < K; i += 16) {
        __mmask16 m = K - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - i)) - 1u);
        __m512 x = _mm512_maskz_loadu_ps(m, w + i);
        if (!first) {
            x = _mm512_mul_ps(x, _mm512_maskz_loadu_ps(m, e + i));
            __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(x), tiny, _CMP_GE_OQ);
            x = _mm512_maskz_mov_ps(big, x);
            _mm512_mask_storeu_ps(w + i, m, x);
        }
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + i), x, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* w = flush(w * e) unless first; dq += da * k * w; dk += da * q * w */
static inline void decay_axpy2(float *restrict w, const float *restrict e, const float *restrict k,
                               const float *restrict q, float *restrict dq, float *restrict dk,
                               float da, int K, int first)
{
    const __m512 tiny = _mm512_set1_ps(1e-30f), vda = _mm512_set1_ps(da);
    for (int i = 0; i < K; i += 16) {
        __mmask16 m = K - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - i)) - 1u);
        __m512 x = _mm512_maskz_loadu_ps(m, w + i);
        if (!first) {
            x = _mm512_mul_ps(x, _mm512_maskz_loadu_ps(m, e + i));
            __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(x), tiny, _CMP_GE_OQ);
            x = _mm512_maskz_mov_ps(big, x);
            _mm512_mask_storeu_ps(w + i, m, x);
        }
        __m512 dx = _mm512_mul_ps(vda, x);
        _mm512_mask_storeu_ps(dq + i, m, _mm512_fmadd_ps(dx, _mm512_maskz_loadu_ps(m, k + i),
                                                         _mm512_maskz_loadu_ps(m, dq + i)));
        _mm512_mask_storeu_ps(dk + i, m, _mm512_fmadd_ps(dx, _mm512_maskz_loadu_ps(m, q + i),
                                                         _mm512_maskz_loadu_ps(m, dk + i)));
    }
}
#else
static inline float decay_dot(float *restrict w, const float *restrict e,
                              const float *restrict q, int K, int first)
{
    float acc = 0.0f;
    for (int i = 0; i < K; i++) {
        float x = w[i];
        if (!first) {
            x *= e[i];
            x = fabsf(x) < 1e-30f ? 0.0f : x;
            w[i] = x;
        }
        acc += q[i] * x;
    }
    return acc;
}

static inline void decay_axpy2(float *restrict w, const float *restrict e, const float *restrict k,
                               const float *restrict q, float *restrict dq, float *restrict dk,
                               float da, int K, int first)
{
    for (int i = 0; i < K; i++) {
        float x = w[i];
        if (!first) {
            x *= e[i];
            x = fabsf(x) < 1e-30f ? 0.0f : x;
            w[i] = x;
        }
        dq[i] += da * k[i] * x;
        dk[i] += da * q[i] * x;
    }
}
#endif

/* Intra-chunk scores A[L x L] (lower triangle incl. diagonal, scaled by s). */
static void chunk_intra(const dd_ctx *c, const lina_dd_in *in, int b, int h, int t0, int L,
                        chunk_buf *cb)
{
    const int T = c->T, H = c->H, K = c->K;
    const size_t ld = (size_t)H * K;
    float *A = cb->A;
    if (c->gk != LINA_GATE_VECTOR) {
        /* row r needs the columns c <= r only (the rest is set to 0 below) */
        LINA_KFN(lina_sgemm_smr)(0, 1, L, L, K, c->s, LINA_ROW(in->q, b, t0, h, T, H, K), (int)ld,
                                 LINA_ROW(in->k, b, t0, h, T, H, K), (int)ld, 0.0f, A, L, cb->rlo, cb->rhi, 0);
        for (int r = 0; r < L; r++) {
            float *Ar = A + (size_t)r * L;
            if (c->gk != LINA_GATE_NONE) {
                float *Gr = cb->Gm + (size_t)r * L;
                for (int cc = 0; cc <= r; cc++) {
                    cb->xd[cc] = cb->bd[r] - cb->bd[cc];
                }
                lina_vexp_d(Gr, cb->xd, (size_t)r + 1);
                for (int cc = 0; cc <= r; cc++) {
                    Ar[cc] *= Gr[cc];
                }
            }
            for (int cc = r + 1; cc < L; cc++) {
                Ar[cc] = 0.0f;
            }
        }
        return;
    }
    memset(A, 0, (size_t)L * L * sizeof(float));
    for (int r0 = 0; r0 < L; r0 += SUB) {
        int r1 = r0 + SUB < L ? r0 + SUB : L;
        const int n2 = vec_offdiag_factors(c, in, b, h, t0, r0, r1, cb);
        if (n2 > 0) {
            lina_sgemm_sm(0, 1, r1 - r0, n2, K, c->s, cb->T1, K, cb->T2, K, 0.0f,
                       A + (size_t)r0 * L, L);
        }
        if (n2 == r1) { /* the diagonal block came with the product: keep c <= r */
            for (int r = r0; r < r1; r++) {
                for (int cc = r + 1; cc < r1; cc++) {
                    A[(size_t)r * L + cc] = 0.0f;
                }
            }
            continue;
        }
        /* diagonal block, pairwise with running products of exp(g) */
        vec_row_gates(c, b, h, t0, r0, r1, cb);
        for (int cc = r0; cc < r1; cc++) {
            const float *restrict kc = LINA_ROW(in->k, b, t0 + cc, h, T, H, K);
            float *restrict w = cb->w;
            for (int i = 0; i < K; i++) {
                w[i] = kc[i];
            }
            for (int r = cc; r < r1; r++) {
                const float *restrict qr = LINA_ROW(in->q, b, t0 + r, h, T, H, K);
                float acc = decay_dot(w, cb->E + (size_t)r * K, qr, K, r == cc);
                A[(size_t)r * L + cc] = c->s * acc;
            }
        }
    }
}

/* Backward of chunk_intra: given dA (masked), accumulate dq into cb->dQ and
 * dk into cb->dK (rows of the chunk, ld K). */
static void chunk_intra_bwd(const dd_ctx *c, const lina_dd_in *in, int b, int h, int t0, int L,
                            chunk_buf *cb)
{
    const int T = c->T, H = c->H, K = c->K;
    const size_t ld = (size_t)H * K;
    float *dA = cb->dA;
    if (c->gk != LINA_GATE_VECTOR) {
        if (c->gk != LINA_GATE_NONE) {
            /* the decay factors chunk_intra left in Gm for this chunk */
            for (int r = 0; r < L; r++) {
                const float *Gr = cb->Gm + (size_t)r * L;
                float *dr = dA + (size_t)r * L;
                for (int cc = 0; cc <= r; cc++) {
                    dr[cc] *= Gr[cc];
                }
            }
        }
        /* dA is 0 above the diagonal: row r of dQ sums over c <= r, row c of dK over r >= c */
        chunk_cols(cb, L);
        LINA_KFN(lina_sgemm_smr)(0, 0, L, K, L, c->s, dA, L, LINA_ROW(in->k, b, t0, h, T, H, K), (int)ld, 1.0f,
                                 cb->dQ, K, cb->rlo, cb->rhi, 1);
        LINA_KFN(lina_sgemm_smr)(1, 0, L, K, L, c->s, dA, L, LINA_ROW(in->q, b, t0, h, T, H, K), (int)ld, 1.0f,
                                 cb->dK, K, cb->clo, cb->chi, 1);
        return;
    }
    for (int r0 = 0; r0 < L; r0 += SUB) {
        int r1 = r0 + SUB < L ? r0 + SUB : L;
        const int n2 = vec_offdiag_factors(c, in, b, h, t0, r0, r1, cb);
        if (n2 > 0) {
            /* dQ rows r0..r1 += s * (dA_blk T2) * F1 (dA is 0 above the diagonal) */
            lina_sgemm_sm(0, 0, r1 - r0, K, n2, 1.0f, dA + (size_t)r0 * L, L, cb->T2, K, 0.0f,
                       cb->T3, K);
            for (int r = r0; r < r1; r++) {
                float *dq = cb->dQ + (size_t)r * K;
                const float *x = cb->T3 + (size_t)(r - r0) * K, *f = cb->F1 + (size_t)(r - r0) * K;
                for (int i = 0; i < K; i++) {
                    dq[i] += c->s * x[i] * f[i];
                }
            }
            /* dK rows 0..n2 += s * (dA_blk^T T1) * F2 */
            lina_sgemm_sm(1, 0, n2, K, r1 - r0, 1.0f, dA + (size_t)r0 * L, L, cb->T1, K, 0.0f,
                       cb->T3, K);
            for (int r = 0; r < n2; r++) {
                float *dk = cb->dK + (size_t)r * K;
                const float *x = cb->T3 + (size_t)r * K, *f = cb->F2 + (size_t)r * K;
                for (int i = 0; i < K; i++) {
                    dk[i] += c->s * x[i] * f[i];
                }
            }
        }
        if (n2 == r1) {
            continue;
        }
        vec_row_gates(c, b, h, t0, r0, r1, cb);
        for (int cc = r0; cc < r1; cc++) {
            const float *restrict kc = LINA_ROW(in->k, b, t0 + cc, h, T, H, K);
            float *restrict dkc = cb->dK + (size_t)cc * K;
            float *restrict w = cb->w;
            for (int i = 0; i < K; i++) {
                w[i] = 1.0f;
            }
            for (int r = cc; r < r1; r++) {
                const float *restrict qr = LINA_ROW(in->q, b, t0 + r, h, T, H, K);
                float *restrict dqr = cb->dQ + (size_t)r * K;
                decay_axpy2(w, cb->E + (size_t)r * K, kc, qr, dqr, dkc, c->s * dA[(size_t)r * L + cc],
                            K, r == cc);
            }
        }
    }
}

/* ======================================================= packed documents */

/* cu_seqlens (B = 1): document j is rows [cu[j], cu[j+1]), the B = 1 sequence of
 * its own rows with its own initial and final state (h0, ht, dh0, dht [n,H,K,V])
 * and its own chunk-start states (at soff[j]: [H][nC_j+1][K,V]). Its chunks start
 * at its first row, so a boundary never falls inside a chunk. The chunk forms
 * take (document, head) pairs from one parallel loop, longest document first. */
typedef struct dd_docs {
    const int64_t *cu;
    int n;              /* documents */
    const int *ord;     /* [n] documents, longest first */
    const size_t *soff; /* [n] start of each document's chunk-start states */
} dd_docs;

/* pair `it` = (ord[it / H], it % H): the document's context and inputs; returns h */
static int dd_doc_view(const dd_docs *docs, int it, const dd_ctx *c0, const lina_dd_in *in0, dd_ctx *c,
                       lina_dd_in *in, int *j)
{
    const int H = c0->H, K = c0->K;
    const int d = docs->ord[it / H];
    const size_t r = (size_t)docs->cu[d] * H;
    *c = *c0;
    c->B = 1;
    c->T = (int)(docs->cu[d + 1] - docs->cu[d]);
    *in = *in0;
    in->q = in0->q + r * K;
    in->k = in0->k + r * K;
    in->v = in0->v + r * c0->V;
    if (c0->gk == LINA_GATE_SCALAR) {
        in->g = in0->g + r;
    } else if (c0->gk == LINA_GATE_VECTOR) {
        in->g = in0->g + r * K;
    }
    c->g = in->g;
    if (in0->h0) {
        in->h0 = in0->h0 + (size_t)d * H * K * c0->V;
    }
    *j = d;
    return it % H;
}

static int dd_doc_fwd(const dd_docs *docs, int it, const dd_ctx *c0, const lina_dd_in *in0, const lina_dd_out *out0,
                      dd_ctx *c, lina_dd_in *in, lina_dd_out *out)
{
    int d;
    const int h = dd_doc_view(docs, it, c0, in0, c, in, &d);
    const size_t r = (size_t)docs->cu[d] * c0->H, st = (size_t)d * c0->H * c0->K * c0->V;
    *out = *out0;
    out->o = out0->o + r * c0->V;
    out->ht = out0->ht ? out0->ht + st : NULL;
    out->states = out0->states ? out0->states + docs->soff[d] : NULL;
    return h;
}

static int dd_doc_bwd(const dd_docs *docs, int it, const dd_ctx *c0, const lina_dd_in *in0,
                      const lina_dd_grad_in *gi0, const lina_dd_grad_out *go0, double **hacc, dd_ctx *c,
                      lina_dd_in *in, lina_dd_grad_in *gi, lina_dd_grad_out *go)
{
    int d;
    const int h = dd_doc_view(docs, it, c0, in0, c, in, &d);
    const int K = c0->K, V = c0->V;
    const size_t r = (size_t)docs->cu[d] * c0->H, st = (size_t)d * c0->H * K * V;
    *gi = *gi0;
    gi->do_ = gi0->do_ ? gi0->do_ + r * V : NULL;
    gi->dht = gi0->dht ? gi0->dht + st : NULL;
    gi->states = gi0->states ? gi0->states + docs->soff[d] : NULL;
    *go = *go0;
    go->dq = go0->dq + r * K;
    go->dk = go0->dk + r * K;
    go->dv = go0->dv + r * V;
    if (go0->dg && c0->gk == LINA_GATE_SCALAR) {
        go->dg = go0->dg + r;
    } else if (go0->dg && c0->gk == LINA_GATE_VECTOR) {
        go->dg = go0->dg + r * K;
    }
    go->dh0 = go0->dh0 ? go0->dh0 + st : NULL;
    if (*hacc) {
        *hacc += (size_t)d * c0->H;
    }
    return h;
}

/* ============================================================ chunk forward */

static int dd_fwd_chunk(const dd_ctx *c0, const lina_dd_in *in0, lina_dd_out *out0, const dd_docs *docs,
                        lina_ws *ws)
{
    const int H = c0->H, K = c0->K, V = c0->V, C = c0->C;
    const size_t KV = (size_t)K * V;
    const int nit = docs ? docs->n * H : c0->B * H;
    int rc = LINA_OK, probe_bad = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < nit; it++) {
        dd_ctx cd;
        lina_dd_in id;
        lina_dd_out od;
        int pbad = 0; /* the output probe (out->finite) of this task's rows */
        const dd_ctx *c = c0;
        const lina_dd_in *in = in0;
        lina_dd_out *out = out0;
        const int bh = docs ? dd_doc_fwd(docs, it, c0, in0, out0, &cd, &id, &od) : it;
        if (docs) {
            c = &cd, in = &id, out = &od;
        }
        const int T = c->T, b = bh / H, h = bh % H;
        char *mem = lina_ws_get(ws, lina_thread_id(), chunk_buf_bytes(C, K) + KV * sizeof(float) + 64);
        if (!mem) {
            rc = LINA_ENOMEM;
            continue;
        }
        chunk_buf cb;
        chunk_buf_carve(&cb, mem, C, K);
        float *S = (float *)(mem + ((chunk_buf_bytes(C, K) + 63) & ~(size_t)63));
        if (in->h0) {
            memcpy(S, LINA_STATE(in->h0, b, h, H, KV), KV * sizeof(float));
        } else {
            memset(S, 0, KV * sizeof(float));
        }
        float *saved = out->states ? out->states + (size_t)bh * ((size_t)(T + C - 1) / C + 1) * KV : NULL;
        for (int t0 = 0; t0 < T; t0 += C) {
            int L = T - t0 < C ? T - t0 : C;
            if (saved) {
                memcpy(saved + (size_t)(t0 / C) * KV, S, KV * sizeof(float));
            }
            if (c->check && dd_chunk_gate_bad(c, b, h, t0, L)) {
                rc = LINA_ENONFINITE; /* the outputs are unspecified then */
                break;
            }
            chunk_prepare(c, in, b, h, t0, L, &cb, 1);
            chunk_intra(c, in, b, h, t0, L, &cb);
            float *o = LINA_ROW(out->o, b, t0, h, T, H, V);
            const float *v = LINA_ROW(in->v, b, t0, h, T, H, V);
            lina_sgemm_sm(0, 0, L, V, K, 1.0f, cb.Qd, K, S, V, 0.0f, o, H * V);
            /* A V: row r of A is 0 past column r */
            LINA_KFN(lina_sgemm_smr)(0, 0, L, V, L, 1.0f, cb.A, L, v, H * V, 1.0f, o, H * V, cb.rlo, cb.rhi, 1);
            if (out->finite) {
                pbad |= !lina_probe_finite(o, (size_t)L, (size_t)H * V) ||
                        (t0 + L == T && !lina_probe_finite(o + (size_t)(L - 1) * H * V, (size_t)V, 1));
            }
            if (c->gk != LINA_GATE_NONE) {
                for (int i = 0; i < K; i++) {
                    float *Si = S + (size_t)i * V;
                    const float e = cb.dec[i];
                    for (int j = 0; j < V; j++) {
                        Si[j] *= e;
                    }
                }
            }
            lina_sgemm_sm(1, 0, K, V, L, 1.0f, cb.Kd, K, v, H * V, 1.0f, S, V);
        }
        if (saved) {
            memcpy(saved + (size_t)((T + C - 1) / C) * KV, S, KV * sizeof(float));
        }
        if (out->ht) {
            memcpy(LINA_STATE(out->ht, b, h, H, KV), S, KV * sizeof(float));
        }
        if (pbad) {
#pragma omp atomic write
            probe_bad = 1;
        }
    }
    if (probe_bad && out0->finite) {
        *out0->finite = 0;
    }
    return rc;
}

#if LINA_ISA_PRIMARY
size_t lina_dd_states_size(const lina_mix_dims *d)
{
    int C = lina_chunk_len(d->chunk, d->K);
    return (size_t)d->B * d->H * ((size_t)(d->T + C - 1) / C + 1) * d->K * d->V;
}
#endif

/* ======================================================= gate gradient */

/* dg from the identity dg_t = sum_{u>=t}(q_u dq_u - k_u dk_u) + fin, fin[i] =
 * rowsum(h_T * dh_T). Vector: dg[B,T,H,K]; scalar: [B,T,H]; head: adds into
 * hacc (double, one value for this (b,h)). */
static void dd_dgate(const dd_ctx *c, const lina_dd_in *in, const lina_dd_grad_out *go, int b,
                     int h, const double *fin, double *restrict run, double *hacc)
{
    const int T = c->T, H = c->H, K = c->K;
    double tot = 0.0, rs = 0.0;
    for (int i = 0; i < K; i++) {
        run[i] = fin ? fin[i] : 0.0;
        rs += run[i];
    }
    for (int t = T - 1; t >= 0; t--) {
        const float *restrict q = LINA_ROW(in->q, b, t, h, T, H, K);
        const float *restrict k = LINA_ROW(in->k, b, t, h, T, H, K);
        const float *restrict dq = LINA_ROW(go->dq, b, t, h, T, H, K);
        const float *restrict dk = LINA_ROW(go->dk, b, t, h, T, H, K);
        if (c->gk == LINA_GATE_VECTOR) {
            float *restrict dg = LINA_ROW(go->dg, b, t, h, T, H, K);
            for (int i = 0; i < K; i++) {
                run[i] += (double)q[i] * dq[i] - (double)k[i] * dk[i];
                dg[i] = (float)run[i];
            }
            continue;
        }
        double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int i = 0;
        for (; i + 8 <= K; i += 8) {
            for (int j = 0; j < 8; j++) {
                part[j] += (double)q[i + j] * dq[i + j] - (double)k[i + j] * dk[i + j];
            }
        }
        for (; i < K; i++) {
            part[0] += (double)q[i] * dq[i] - (double)k[i] * dk[i];
        }
        rs += ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        if (c->gk == LINA_GATE_SCALAR) {
            go->dg[((size_t)b * T + t) * H + h] = (float)rs;
        } else {
            tot += rs;
        }
    }
    if (hacc) {
        *hacc = tot;
    }
}

/* ============================================================ chunk backward */

static int dd_bwd_chunk(const dd_ctx *c0, const lina_dd_in *in0, const lina_dd_grad_in *gi0,
                        lina_dd_grad_out *go0, double *hacc0, const dd_docs *docs, lina_ws *ws)
{
    const int H = c0->H, K = c0->K, V = c0->V, C = c0->C;
    const size_t KV = (size_t)K * V;
    const int nit = docs ? docs->n * H : c0->B * H;
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < nit; it++) {
        dd_ctx cd;
        lina_dd_in id;
        lina_dd_grad_in gd;
        lina_dd_grad_out od;
        const dd_ctx *c = c0;
        const lina_dd_in *in = in0;
        const lina_dd_grad_in *gi = gi0;
        lina_dd_grad_out *go = go0;
        double *hacc = hacc0;
        const int bh = docs ? dd_doc_bwd(docs, it, c0, in0, gi0, go0, &hacc, &cd, &id, &gd, &od) : it;
        if (docs) {
            c = &cd, in = &id, gi = &gd, go = &od;
        }
        const int T = c->T, nC = (T + C - 1) / C, b = bh / H, h = bh % H;
        size_t cbb = (chunk_buf_bytes(C, K) + 63) & ~(size_t)63;
        size_t need = cbb + ((size_t)nC + 2) * KV * sizeof(float) + (size_t)3 * K * sizeof(double) + 256;
        char *mem = lina_ws_get(ws, lina_thread_id(), need);
        if (!mem) {
            rc = LINA_ENOMEM;
            continue;
        }
        chunk_buf cb;
        chunk_buf_carve(&cb, mem, C, K);
        float *St = (float *)(mem + cbb);          /* [nC+1][K*V] chunk-start states, then h_T */
        float *dS = St + ((size_t)nC + 1) * KV;    /* [K*V] */
        if (gi->states) {
            St = (float *)gi->states + (size_t)bh * ((size_t)nC + 1) * KV;
        }
        double *fin = (double *)(((uintptr_t)(dS + KV) + 63) & ~(uintptr_t)63); /* [K] */
        double *run = fin + K;                     /* [K] */
        /* 1. states at chunk starts (unless saved by the forward) */
        if (gi->states) {
            /* nothing to do */
        } else if (in->h0) {
            memcpy(St, LINA_STATE(in->h0, b, h, H, KV), KV * sizeof(float));
        } else {
            memset(St, 0, KV * sizeof(float));
        }
        for (int ci = 0; !gi->states && ci < nC; ci++) {
            int t0 = ci * C, L = T - t0 < C ? T - t0 : C;
            float *S0 = St + (size_t)ci * KV, *S1 = S0 + KV;
            chunk_prepare(c, in, b, h, t0, L, &cb, 0);
            for (int i = 0; i < K; i++) {
                const float e = cb.dec[i];
                for (int j = 0; j < V; j++) {
                    S1[(size_t)i * V + j] = e * S0[(size_t)i * V + j];
                }
            }
            lina_sgemm_sm(1, 0, K, V, L, 1.0f, cb.Kd, K, LINA_ROW(in->v, b, t0, h, T, H, V), H * V,
                       1.0f, S1, V);
        }
        /* 2. backward over chunks */
        const float *dht = gi->dht ? LINA_STATE(gi->dht, b, h, H, KV) : NULL;
        if (dht) {
            memcpy(dS, dht, KV * sizeof(float));
        } else {
            memset(dS, 0, KV * sizeof(float));
        }
        for (int i = 0; i < K; i++) {
            double a = 0.0;
            if (dht) {
                const float *Si = St + (size_t)nC * KV + (size_t)i * V;
                for (int j = 0; j < V; j++) {
                    a += (double)Si[j] * dht[(size_t)i * V + j];
                }
            }
            fin[i] = a;
        }
        for (int ci = nC - 1; ci >= 0; ci--) {
            int t0 = ci * C, L = T - t0 < C ? T - t0 : C;
            const float *Sin = St + (size_t)ci * KV;
            const float *v = LINA_ROW(in->v, b, t0, h, T, H, V);
            float *dv = LINA_ROW(go->dv, b, t0, h, T, H, V);
            chunk_prepare(c, in, b, h, t0, L, &cb, 1);
            chunk_intra(c, in, b, h, t0, L, &cb);
            const float *dO = gi->do_ ? LINA_ROW(gi->do_, b, t0, h, T, H, V) : NULL;
            /* dv = A^T dO + Kd dS_out */
            lina_sgemm_sm(0, 0, L, V, K, 1.0f, cb.Kd, K, dS, V, 0.0f, dv, H * V);
            memset(cb.dQ, 0, (size_t)L * K * sizeof(float));
            if (dO) {
                /* A^T dO: column c of A is 0 above row c; dA = dO V^T masked, row r needs
                 * the columns c <= r only */
                chunk_cols(&cb, L);
                LINA_KFN(lina_sgemm_smr)(1, 0, L, V, L, 1.0f, cb.A, L, dO, H * V, 1.0f, dv, H * V, cb.clo, cb.chi,
                                         1);
                LINA_KFN(lina_sgemm_smr)(0, 1, L, L, V, 1.0f, dO, H * V, v, H * V, 0.0f, cb.dA, L, cb.rlo, cb.rhi,
                                         0);
                for (int r = 0; r < L; r++) {
                    for (int cc = r + 1; cc < L; cc++) {
                        cb.dA[(size_t)r * L + cc] = 0.0f;
                    }
                }
                /* dQd = dO S_in^T */
                lina_sgemm_sm(0, 1, L, K, V, 1.0f, dO, H * V, Sin, V, 0.0f, cb.dQ, K);
            } else {
                memset(cb.dA, 0, (size_t)L * L * sizeof(float));
            }
            /* dKd = V dS^T */
            lina_sgemm_sm(0, 1, L, K, V, 1.0f, v, H * V, dS, V, 0.0f, cb.dK, K);
            /* scale by the gate factors: dq = s exp(b) dQd ; dk = exp(bL - b) dKd */
            for (int r = 0; r < L; r++) {
                float *dq = cb.dQ + (size_t)r * K, *dk = cb.dK + (size_t)r * K;
                if (c->gk == LINA_GATE_VECTOR) {
                    const float *eq = cb.eQ + (size_t)r * K, *ek = cb.eK + (size_t)r * K;
                    for (int i = 0; i < K; i++) {
                        dq[i] *= c->s * eq[i];
                        dk[i] *= ek[i];
                    }
                } else {
                    const float fq = c->s * cb.eQ[r], fk = cb.eK[r];
                    for (int i = 0; i < K; i++) {
                        dq[i] *= fq;
                        dk[i] *= fk;
                    }
                }
            }
            if (dO) {
                chunk_intra_bwd(c, in, b, h, t0, L, &cb);
            }
            for (int r = 0; r < L; r++) {
                memcpy(LINA_ROW(go->dq, b, t0 + r, h, T, H, K), cb.dQ + (size_t)r * K, (size_t)K * sizeof(float));
                memcpy(LINA_ROW(go->dk, b, t0 + r, h, T, H, K), cb.dK + (size_t)r * K, (size_t)K * sizeof(float));
            }
            /* dS_in = diag(exp(b_L)) dS_out + Qd^T dO */
            if (c->gk != LINA_GATE_NONE) {
                for (int i = 0; i < K; i++) {
                    const float e = cb.dec[i];
                    float *Di = dS + (size_t)i * V;
                    for (int j = 0; j < V; j++) {
                        Di[j] *= e;
                    }
                }
            }
            if (dO) {
                lina_sgemm_sm(1, 0, K, V, L, 1.0f, cb.Qd, K, dO, H * V, 1.0f, dS, V);
            }
        }
        if (go->dh0) {
            memcpy(LINA_STATE(go->dh0, b, h, H, KV), dS, KV * sizeof(float));
        }
        if (c->gk != LINA_GATE_NONE && go->dg) {
            dd_dgate(c, in, go, b, h, fin, run, hacc ? hacc + bh : NULL);
        }
    }
    return rc;
}

/* ======================================================== recurrent backward */

/* The recurrent backward works on a block of rb state rows at a time (RB, four
 * vectors on the AVX paths, or two when K fits in two: rb_rows; under a
 * diagonal decay the rows of the state are independent) and up to RVC value
 * columns, stored transposed: column j of a block is rb contiguous floats, so
 * each step is vector work across the rows with the column's values
 * broadcast; each block runs both sweeps over every step on its own (several blocks of
 * a (b,h) pair go through the steps together, RTB at a time). With the
 * lazy decay's kept state H and scaled inputs qs, ks:
 *   forward sweep:  H_t = diag(alpha_t) H_{t-1} + ks_t v_t^T,  dqs_t = s H_t dO_t
 *   reverse sweep:  R_t = diag(alpha_{t+1}) R_{t+1} + s qs_t dO_t^T  (R = dL/dH_t,
 *                   from dH_T = e_T dh_T),  dks_t = R_t v_t,  dv_t = R_t^T ks_t
 * The sweeps keep nothing per step: dq needs only the forward states and dk,
 * dv only the reverse ones. dv_t sums over the rows: on the AVX paths each
 * column's lanes are left as one vector and 8 columns are summed across their
 * lanes together. */
#ifdef LINA_VL
#define RB (4 * LINA_VL)
#else
#define RB 32
#endif
#define RVC 64 /* value columns per backward tile: a block of RB x RVC floats stays in L1 */

/* rows per block for K rows of state: RB, or half of it (two vectors) when K fits
 * there, so that a narrow head (K = 32 on AVX-512) does not sweep zero rows */
static inline int rb_rows(int K)
{
#ifdef LINA_VL
    return K <= RB / 2 ? RB / 2 : RB;
#else
    (void)K;
    return RB;
#endif
}

/* X[j*rb + r] = src[(i0 + r) * V + j0 + j] * f[i0 + r] for r < nb, else 0
 * (src NULL: zeros; f NULL: 1) */
static void rb_load(float *X, int rb, const float *src, const float *f, int V, int i0, int nb, int j0, int W)
{
    for (int j = 0; j < W; j++) {
        float *restrict d = X + (size_t)j * rb;
        for (int r = 0; r < rb; r++) {
            d[r] = src && r < nb ? src[(size_t)(i0 + r) * V + j0 + j] * (f ? f[i0 + r] : 1.0f) : 0.0f;
        }
    }
}

/* the block's rows [i0, i0+nb) of a K-vector: the vector itself when the block
 * (of rb rows) is full, else a copy padded with zeros (src NULL: ones) */
static inline const float *rb_row(const float *src, int i0, int nb, int rb, float *restrict buf)
{
    if (src && nb == rb) {
        return src + i0;
    }
    for (int r = 0; r < rb; r++) {
        buf[r] = r < nb ? (src ? src[i0 + r] : 1.0f) : 0.0f;
    }
    return buf;
}

/* one sweep's view of a (b,h) pair: the per-step rows of the lazy decay's
 * alpha and the scaled inputs [T*K], the block [i0, i0+nb) of state rows and
 * the value columns [j0, j0+W) */
typedef struct rb_sweep {
    const dd_ctx *c;
    const float *v, *dO;  /* v and do at (b, t = 0, h), column j0; dO NULL: zeros */
    const float *q, *k;   /* q and k at (b, t = 0, h) */
    float *dq, *dk, *dv;  /* dq, dk at (b, 0, h) row i0; dv at column j0 */
    const float *Al;
    const float *zero;    /* [RVC] zeros */
    float *pad;           /* [3*RB] a partial block's decays, the step's scaled q and k rows */
    const float *Ev;      /* [T*K] the lazy decay's e: dq = dqs e, dk = dks / e */
    const unsigned char *U; /* [T+1] 1 where a step's decays are all 1 (U[T] = 1) */
    int i0, nb, j0, W;
    int rb;               /* rows per block (rb_rows): the stride of a column of X */
    int first, last;      /* the first / last tile of value columns: dq, dk rows set / finished */
} rb_sweep;

/* the block's rows of step t's scaled inputs: qb = s q e (qb NULL: none), kb = k / e,
 * zero past the block's nb rows */
static inline void rb_scaled_qk(const rb_sweep *w, int t, float *restrict qb, float *restrict kb)
{
    const dd_ctx *c = w->c;
    const size_t at = (size_t)t * c->H * c->K + w->i0;
    const float *restrict q = w->q + at, *restrict k = w->k + at;
    const float *restrict e = w->Ev + (size_t)t * c->K + w->i0;
    const int none = c->gk == LINA_GATE_NONE; /* e = 1: the same values without the division */
    for (int r = 0; r < w->nb; r++) {
        kb[r] = none ? k[r] : k[r] / e[r];
    }
    for (int r = w->nb; r < w->rb; r++) {
        kb[r] = 0.0f;
    }
    if (qb) {
        for (int r = 0; r < w->nb; r++) {
            qb[r] = none ? c->s * q[r] : c->s * q[r] * e[r];
        }
        for (int r = w->nb; r < w->rb; r++) {
            qb[r] = 0.0f;
        }
    }
}

/* dq rows of step t from the block's sums acc[RB] (s H_t dO_t) */
static inline void rb_dq_write(const rb_sweep *w, int t, const float *restrict acc)
{
    const dd_ctx *c = w->c;
    float *restrict dq = w->dq + (size_t)t * c->H * c->K;
    const float *restrict e = w->Ev + (size_t)t * c->K + w->i0;
    for (int r = 0; r < w->nb; r++) {
        float x = w->first ? c->s * acc[r] : dq[r] + c->s * acc[r];
        dq[r] = w->last ? x * e[r] : x;
    }
}

/* one step t of the forward sweep (unit: the step's decays are all 1, so the
 * state is not multiplied by them; NV vectors per column of the block, rb =
 * NV * LINA_VL on the AVX paths) */
DD_INLINE void rb_fwd_step(const rb_sweep *w, float *restrict X, int t, const float *restrict a,
                           const float *restrict kb, const int unit, const int NV)
{
    const dd_ctx *c = w->c;
    const int W = w->W, nb = w->nb;
    const size_t rs = (size_t)c->H * c->V, qs = (size_t)c->H * c->K; /* row strides of v/do and q/k */
    const float *restrict v = w->v + (size_t)t * rs, *restrict dO = w->dO ? w->dO + (size_t)t * rs : w->zero;
    float *restrict dq = w->dq + (size_t)t * qs;
    if (t + RPF < c->T) {
        lina_prefetch_floats_l2(v + RPF * rs, W);
        lina_prefetch_floats_l2(dq + RPF * qs, nb);
        lina_prefetch_floats_l2(w->k + (size_t)(t + RPF) * qs + w->i0, nb);
        if (w->dO) {
            lina_prefetch_floats_l2(dO + RPF * rs, W);
        }
    }
    _Alignas(64) float acc[RB];
#ifdef LINA_VL
    const int rb = NV * LINA_VL;
    lina_vf A[4], Kb[4], D[4];
    LINA_NV_UNROLL
    for (int u = 0; u < NV; u++) {
        A[u] = unit ? LINA_VZERO() : LINA_VLD(a + LINA_VL * u);
        Kb[u] = LINA_VLD(kb + LINA_VL * u);
        D[u] = LINA_VZERO();
    }
    for (int j = 0; j < W; j++) {
        float *Sj = X + (size_t)j * rb;
        const lina_vf vj = LINA_VSET1(v[j]), dj = LINA_VSET1(dO[j]);
        LINA_NV_UNROLL
        for (int u = 0; u < NV; u++) {
            const lina_vf s0 = LINA_VLD(Sj + LINA_VL * u);
            const lina_vf x = LINA_VFMA(Kb[u], vj, unit ? s0 : LINA_VMUL(A[u], s0));
            LINA_VST(Sj + LINA_VL * u, x);
            D[u] = LINA_VFMA(x, dj, D[u]);
        }
    }
    LINA_NV_UNROLL
    for (int u = 0; u < NV; u++) {
        LINA_VST(acc + LINA_VL * u, D[u]);
    }
#else
    (void)unit, (void)NV;
    for (int r = 0; r < RB; r++) {
        acc[r] = 0.0f;
    }
    for (int j = 0; j < W; j++) {
        float *restrict Sj = X + (size_t)j * RB;
        const float vj = v[j], dj = dO[j];
#pragma omp simd
        for (int r = 0; r < RB; r++) {
            const float x = a[r] * Sj[r] + kb[r] * vj;
            Sj[r] = x;
            acc[r] += x * dj;
        }
    }
#endif
    rb_dq_write(w, t, acc);
}

#if defined(LINA_VL) && defined(__AVX512F__)
/* two steps t, t + 1 whose decays are all 1 in one pass over the block: each
 * column of the state is loaded and stored once for both (AVX-512: 0.95x the
 * time of the linear-attention backward at K = V = 64; with AVX2's 16
 * registers it spills and takes 1.05x) */
DD_INLINE void rb_fwd_pair(const rb_sweep *w, float *restrict X, int t, const float *restrict kb0,
                           const float *restrict kb1, const int NV)
{
    const dd_ctx *c = w->c;
    const int W = w->W, nb = w->nb;
    const size_t rs = (size_t)c->H * c->V, qs = (size_t)c->H * c->K;
    const float *restrict v0 = w->v + (size_t)t * rs, *restrict v1 = v0 + rs;
    const float *restrict d0 = w->dO ? w->dO + (size_t)t * rs : w->zero, *restrict d1 = w->dO ? d0 + rs : w->zero;
    float *restrict dq = w->dq + (size_t)t * qs;
    for (int u = 1; u <= 2 && t + RPF + u < c->T; u++) {
        lina_prefetch_floats_l2(v0 + (RPF + u) * rs, W);
        lina_prefetch_floats_l2(dq + (RPF + u) * qs, nb);
        lina_prefetch_floats_l2(w->k + (size_t)(t + RPF + u) * qs + w->i0, nb);
        if (w->dO) {
            lina_prefetch_floats_l2(d0 + (RPF + u) * rs, W);
        }
    }
    const int rb = NV * LINA_VL;
    lina_vf K0[4], K1[4], D0[4], D1[4];
    LINA_NV_UNROLL
    for (int u = 0; u < NV; u++) {
        K0[u] = LINA_VLD(kb0 + LINA_VL * u);
        K1[u] = LINA_VLD(kb1 + LINA_VL * u);
        D0[u] = LINA_VZERO();
        D1[u] = LINA_VZERO();
    }
    for (int j = 0; j < W; j++) {
        float *Sj = X + (size_t)j * rb;
        const lina_vf a0 = LINA_VSET1(v0[j]), b0 = LINA_VSET1(d0[j]);
        const lina_vf a1 = LINA_VSET1(v1[j]), b1 = LINA_VSET1(d1[j]);
        LINA_NV_UNROLL
        for (int u = 0; u < NV; u++) {
            const lina_vf x0 = LINA_VFMA(K0[u], a0, LINA_VLD(Sj + LINA_VL * u));
            D0[u] = LINA_VFMA(x0, b0, D0[u]);
            const lina_vf x1 = LINA_VFMA(K1[u], a1, x0);
            D1[u] = LINA_VFMA(x1, b1, D1[u]);
            LINA_VST(Sj + LINA_VL * u, x1);
        }
    }
    _Alignas(64) float acc[RB];
    LINA_NV_UNROLL
    for (int u = 0; u < NV; u++) {
        LINA_VST(acc + LINA_VL * u, D0[u]);
    }
    rb_dq_write(w, t, acc);
    LINA_NV_UNROLL
    for (int u = 0; u < NV; u++) {
        LINA_VST(acc + LINA_VL * u, D1[u]);
    }
    rb_dq_write(w, t + 1, acc);
}
#endif

/* forward sweep of one row block over the steps [t0, t1): X (H_{t0-1} of the block,
 * [W][rb] transposed) becomes H_{t1-1}; dq rows += s H_t dO_t (NV vectors per column) */
DD_INLINE void rb_fwd_sweep_nv(const rb_sweep *w, float *restrict X, int t0, int t1, const int NV)
{
    const int K = w->c->K, nb = w->nb;
    for (int t = t0; t < t1; t++) {
        const int u = w->U[t];
        const float *restrict a = rb_row(w->Al + (size_t)t * K, w->i0, nb, w->rb, w->pad);
        float *kb = w->pad + RB;
        rb_scaled_qk(w, t, NULL, kb);
#if defined(LINA_VL) && defined(__AVX512F__)
        if (t + 1 < t1 && u && w->U[t + 1]) {
            float *kb1 = w->pad + 2 * RB;
            rb_scaled_qk(w, t + 1, NULL, kb1);
            rb_fwd_pair(w, X, t, kb, kb1, NV);
            t++;
            continue;
        }
#endif
        if (u) {
            rb_fwd_step(w, X, t, a, kb, 1, NV);
        } else {
            rb_fwd_step(w, X, t, a, kb, 0, NV);
        }
    }
}

static void rb_fwd_sweep(const rb_sweep *w, float *restrict X, int t0, int t1)
{
    if (w->rb == RB) {
        rb_fwd_sweep_nv(w, X, t0, t1, 4);
    } else {
        rb_fwd_sweep_nv(w, X, t0, t1, 2);
    }
}

/* one step t of the reverse sweep (a: the decays of step t + 1; unit: all 1) */
DD_INLINE void rb_rev_step(const rb_sweep *w, float *restrict X, int add, int t, const float *restrict a,
                           const float *restrict qb, const float *restrict kb, const int unit, const int NV)
{
    const dd_ctx *c = w->c;
    const int W = w->W, nb = w->nb;
    const size_t rs = (size_t)c->H * c->V, qs = (size_t)c->H * c->K;
    const float *restrict v = w->v + (size_t)t * rs, *restrict dO = w->dO ? w->dO + (size_t)t * rs : w->zero;
    float *restrict dk = w->dk + (size_t)t * qs, *restrict dv = w->dv + (size_t)t * rs;
    if (t >= RPF) {
        lina_prefetch_floats_l2(v - RPF * rs, W);
        lina_prefetch_floats_l2(dv - RPF * rs, W);
        lina_prefetch_floats_l2(dk - RPF * qs, nb);
        lina_prefetch_floats_l2(w->q + (size_t)(t - RPF) * qs + w->i0, nb);
        lina_prefetch_floats_l2(w->k + (size_t)(t - RPF) * qs + w->i0, nb);
        if (w->dO) {
            lina_prefetch_floats_l2(dO - RPF * rs, W);
        }
    }
    _Alignas(64) float acc[RB];
#ifdef LINA_VL
    const int rb = NV * LINA_VL;
    lina_vf A[4], Q[4], Kb[4], D[4];
    LINA_NV_UNROLL
    for (int u = 0; u < NV; u++) {
        A[u] = unit ? LINA_VZERO() : LINA_VLD(a + LINA_VL * u);
        Q[u] = LINA_VLD(qb + LINA_VL * u);
        Kb[u] = LINA_VLD(kb + LINA_VL * u);
        D[u] = LINA_VZERO();
    }
    for (int g = 0; g < W; g += 8) {
        const int n = W - g < 8 ? W - g : 8;
        lina_v8 P[8];
        for (int m = 0; m < n; m++) {
            float *Rj = X + (size_t)(g + m) * rb;
            const lina_vf d = LINA_VSET1(dO[g + m]), vv = LINA_VSET1(v[g + m]);
            lina_vf x[4];
            LINA_NV_UNROLL
            for (int u = 0; u < NV; u++) {
                const lina_vf r0 = LINA_VLD(Rj + LINA_VL * u);
                x[u] = LINA_VFMA(Q[u], d, unit ? r0 : LINA_VMUL(A[u], r0));
                LINA_VST(Rj + LINA_VL * u, x[u]);
                D[u] = LINA_VFMA(x[u], vv, D[u]);
            }
            lina_vf pk = LINA_VMUL(x[0], Kb[0]);
            LINA_NV_UNROLL
            for (int u = 1; u < NV; u++) {
                pk = LINA_VFMA(x[u], Kb[u], pk);
            }
            P[m] = LINA_VFOLD(pk);
        }
        for (int m = n; m < 8; m++) {
            P[m] = LINA_V8_ZERO();
        }
        _Alignas(32) float sums[8];
        LINA_V8_ST(sums, lina_hsum8(P));
        if (add) {
            for (int m = 0; m < n; m++) {
                dv[g + m] += sums[m];
            }
        } else {
            memcpy(dv + g, sums, (size_t)n * sizeof(float));
        }
    }
    LINA_NV_UNROLL
    for (int u = 0; u < NV; u++) {
        LINA_VST(acc + LINA_VL * u, D[u]);
    }
#else
    (void)unit, (void)NV;
    for (int r = 0; r < RB; r++) {
        acc[r] = 0.0f;
    }
    for (int j = 0; j < W; j++) {
        float *restrict Rj = X + (size_t)j * RB;
        const float dj = dO[j], vj = v[j];
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int r = 0; r < RB; r++) {
            const float x = a[r] * Rj[r] + qb[r] * dj;
            Rj[r] = x;
            acc[r] += x * vj;
            sum += x * kb[r];
        }
        dv[j] = add ? dv[j] + sum : sum;
    }
#endif
    const float *restrict e = w->Ev + (size_t)t * c->K + w->i0;
    for (int r = 0; r < nb; r++) {
        float x = w->first ? acc[r] : dk[r] + acc[r];
        dk[r] = w->last ? x / e[r] : x;
    }
}

/* reverse sweep of one row block over the steps [t0, t1), last first: X (R_{t1} of
 * the block, before step t1's decay; R_T at t1 = T) becomes R_{t0} (before step t0's
 * decay); dk rows += R_t v_t; dv_t (+)= R_t^T ks_t (add: the block is not the first
 * of its columns) */
DD_INLINE void rb_rev_sweep_nv(const rb_sweep *w, float *restrict X, int add, int t0, int t1, const int NV)
{
    const int T = w->c->T, K = w->c->K, nb = w->nb;
    for (int t = t1 - 1; t >= t0; t--) {
        const float *restrict a = rb_row(t + 1 < T ? w->Al + (size_t)(t + 1) * K : NULL, w->i0, nb, w->rb, w->pad);
        float *qb = w->pad + RB, *kb = w->pad + 2 * RB;
        rb_scaled_qk(w, t, qb, kb);
        if (w->U[t + 1]) {
            rb_rev_step(w, X, add, t, a, qb, kb, 1, NV);
        } else {
            rb_rev_step(w, X, add, t, a, qb, kb, 0, NV);
        }
    }
}

static void rb_rev_sweep(const rb_sweep *w, float *restrict X, int add, int t0, int t1)
{
    if (w->rb == RB) {
        rb_rev_sweep_nv(w, X, add, t0, t1, 4);
    } else {
        rb_rev_sweep_nv(w, X, add, t0, t1, 2);
    }
}

/* steps per time block of the backward's sweeps when a (b,h) pair has several tiles
 * (K > rb or V > RVC): every tile runs a block before the next block starts, so the
 * block's rows of q, k, v, do, the decays and the gradients (about 4.5 KiB per step at
 * K = V = 128) come from memory for the first tile and from L2 for the others, where
 * sweeping each tile over all T steps read them from L3 or memory once per tile (at
 * B=1 T=4096 K=V=128 that took 1.25x the time per step of T = 512) */
#define RTB 32

/* point the sweep at tile ti of a (b,h) pair, of ni row blocks per column tile: value
 * columns [j0, j0 + RVC) and state rows [i0, i0 + rb), j0 = (ti / ni) RVC, i0 = (ti % ni) rb
 * (column tiles in order, so dq's rows are set by the first and finished by the last and
 * dv's by the first row block); returns the tile's state in Xs */
static float *rb_tile(rb_sweep *w, float *Xs, int ni, int ti, const lina_dd_in *in, const lina_dd_grad_in *gi,
                      lina_dd_grad_out *go, int b, int h)
{
    const dd_ctx *c = w->c;
    const int T = c->T, H = c->H, K = c->K, V = c->V, j0 = ti / ni * RVC, i0 = ti % ni * w->rb;
    w->j0 = j0;
    w->W = V - j0 < RVC ? V - j0 : RVC;
    w->first = j0 == 0;
    w->last = j0 + w->W == V;
    w->v = LINA_ROW(in->v, b, 0, h, T, H, V) + j0;
    w->dO = gi->do_ ? LINA_ROW(gi->do_, b, 0, h, T, H, V) + j0 : NULL;
    w->dv = LINA_ROW(go->dv, b, 0, h, T, H, V) + j0;
    w->i0 = i0;
    w->nb = K - i0 < w->rb ? K - i0 : w->rb;
    w->dq = LINA_ROW(go->dq, b, 0, h, T, H, K) + i0;
    w->dk = LINA_ROW(go->dk, b, 0, h, T, H, K) + i0;
    return Xs + (size_t)ti * RB * RVC;
}

static int dd_bwd_recurrent(const dd_ctx *c, const lina_dd_in *in, const lina_dd_grad_in *gi,
                            lina_dd_grad_out *go, double *hacc, lina_ws *ws)
{
    const int B = c->B, T = c->T, H = c->H, K = c->K, V = c->V;
    const size_t KV = (size_t)K * V;
    const int rb = rb_rows(K), ni = (K + rb - 1) / rb, nj = (V + RVC - 1) / RVC, ntile = ni * nj;
    const int tb = ntile > 1 ? RTB : T; /* one tile: one block of every step */
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        const size_t xs = (size_t)RB * RVC;
        size_t need = ((size_t)ntile * xs + 3 * (size_t)RB + RVC + (size_t)K + 2 * (size_t)T * K) * sizeof(float) +
                      2 * (size_t)K * sizeof(double) + (size_t)T + 1 + 256;
        float *mem = lina_ws_get(ws, lina_thread_id(), need);
        if (!mem) {
            rc = LINA_ENOMEM;
            continue;
        }
        float *Xs = mem; /* the tiles [ntile][RVC][RB], transposed (rb_tile) */
        float *pad = Xs + ntile * xs, *zero = pad + 3 * RB, *p = zero + RVC; /* partial rows, [RVC] zeros, [K] lazy scratch */
        double *fin = (double *)(((uintptr_t)(p + K) + 63) & ~(uintptr_t)63);
        double *run = fin + K;
        /* [T*K] each: the lazy decay's alpha and e (the sweeps scale q and k by them) */
        float *Al = (float *)(run + K), *Ev = Al + (size_t)T * K;
        unsigned char *Un = (unsigned char *)(Ev + (size_t)T * K); /* [T+1] */
        dd_lazy_gates(c, b, h, p, Al, Ev, Un);
        Un[T] = 1; /* the reverse sweep's first step reads the decays of step T: none */
        for (int j = 0; j < RVC; j++) {
            zero[j] = 0.0f;
        }
        for (int i = 0; i < K; i++) {
            fin[i] = 0.0;
        }
        const float *h0 = in->h0 ? LINA_STATE(in->h0, b, h, H, KV) : NULL;
        const float *dht = gi->dht ? LINA_STATE(gi->dht, b, h, H, KV) : NULL;
        const float *eT = Ev + (size_t)(T - 1) * K; /* e after the last step */
        rb_sweep sw = {.c = c, .q = LINA_ROW(in->q, b, 0, h, T, H, K), .k = LINA_ROW(in->k, b, 0, h, T, H, K),
                       .Al = Al, .zero = zero, .pad = pad, .Ev = Ev, .U = Un, .rb = rb};
        /* under the diagonal decay each tile (a block of state rows on a tile of value
         * columns) runs both sweeps over every step on its own; the tiles go in time
         * blocks of tb steps, in order within a block (rb_tile) */
        for (int ti = 0; ti < ntile; ti++) {
            float *X = rb_tile(&sw, Xs, ni, ti, in, gi, go, b, h);
            rb_load(X, rb, h0, NULL, V, sw.i0, sw.nb, sw.j0, sw.W);
        }
        for (int t0 = 0; t0 < T; t0 += tb) {
            const int t1 = T - t0 < tb ? T : t0 + tb;
            for (int ti = 0; ti < ntile; ti++) {
                rb_fwd_sweep(&sw, rb_tile(&sw, Xs, ni, ti, in, gi, go, b, h), t0, t1);
            }
        }
        for (int ti = 0; ti < ntile; ti++) {
            float *X = rb_tile(&sw, Xs, ni, ti, in, gi, go, b, h);
            /* rowsum(h_T * dh_T) for the gate gradient (h_T = e_T H_T), then R = e_T dh_T */
            for (int r = 0; dht && r < sw.nb; r++) {
                const int i = sw.i0 + r;
                double acc = 0.0;
                for (int j = 0; j < sw.W; j++) {
                    acc += (double)X[(size_t)j * rb + r] * dht[(size_t)i * V + sw.j0 + j];
                }
                fin[i] += acc * eT[i];
            }
            rb_load(X, rb, dht, eT, V, sw.i0, sw.nb, sw.j0, sw.W);
        }
        for (int t1 = T; t1 > 0; t1 -= tb) {
            const int t0 = t1 > tb ? t1 - tb : 0;
            for (int ti = 0; ti < ntile; ti++) {
                float *X = rb_tile(&sw, Xs, ni, ti, in, gi, go, b, h);
                rb_rev_sweep(&sw, X, sw.i0 > 0, t0, t1);
            }
        }
        /* dh0 = diag(alpha_0) R */
        for (int ti = 0; go->dh0 && ti < ntile; ti++) {
            const float *X = rb_tile(&sw, Xs, ni, ti, in, gi, go, b, h);
            for (int r = 0; r < sw.nb; r++) {
                const int i = sw.i0 + r;
                float *d = LINA_STATE(go->dh0, b, h, H, KV) + (size_t)i * V + sw.j0;
                for (int j = 0; j < sw.W; j++) {
                    d[j] = Al[i] * X[(size_t)j * rb + r];
                }
            }
        }
        if (c->gk != LINA_GATE_NONE && go->dg) {
            dd_dgate(c, in, go, b, h, fin, run, hacc ? hacc + bh : NULL);
        }
    }
    return rc;
}

/* ================================================================ public */

int LINA_KFN(lina_dd_fwd)(const lina_mix_dims *d, const lina_dd_in *in, lina_dd_out *out,
                          lina_form form, lina_ws *ws)
{
    dd_ctx c;
    int rc = dd_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "dd: output o is NULL");
    }
    if (out->finite) {
        *out->finite = 1;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    if (c.T == 0) {
        if (out->ht) {
            size_t n = (size_t)c.B * c.H * c.K * c.V;
            if (in->h0) {
                memmove(out->ht, in->h0, n * sizeof(float)); /* ht may be h0 */
            } else {
                memset(out->ht, 0, n * sizeof(float));
            }
        }
    } else if (form == LINA_FORM_RECURRENT) {
        rc = dd_fwd_recurrent(&c, in, out, sc.ws);
    } else if (!(rc = dd_gate_prepass(&c))) {
        rc = dd_fwd_chunk(&c, in, out, NULL, sc.ws);
    }
    lina_ws_scope_close(&sc);
    return rc ? dd_fwd_error(rc) : LINA_OK;
}

int LINA_KFN(lina_dd_bwd)(const lina_mix_dims *d, const lina_dd_in *in, const lina_dd_grad_in *gin,
                          lina_dd_grad_out *gout, lina_form form, lina_ws *ws)
{
    dd_ctx c;
    int rc = dd_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gout || !gout->dq || !gout->dk || !gout->dv) {
        return lina_set_error(LINA_EINVAL, "dd: gradient outputs dq, dk, dv are required");
    }
    if (c.T == 0) {
        size_t n = (size_t)c.B * c.H * c.K * c.V;
        if (gout->dh0) {
            if (gin->dht) {
                memcpy(gout->dh0, gin->dht, n * sizeof(float));
            } else {
                memset(gout->dh0, 0, n * sizeof(float));
            }
        }
        if (gout->dg && c.gk == LINA_GATE_HEAD) {
            memset(gout->dg, 0, (size_t)c.H * sizeof(float));
        }
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    double *hacc = NULL;
    if (c.gk == LINA_GATE_HEAD && gout->dg) {
        hacc = calloc((size_t)c.B * c.H, sizeof(double));
        if (!hacc) {
            lina_ws_scope_close(&sc);
            return lina_set_error(LINA_ENOMEM, "dd: out of memory");
        }
    }
    if (form == LINA_FORM_RECURRENT) {
        rc = dd_bwd_recurrent(&c, in, gin, gout, hacc, sc.ws);
    } else {
        rc = dd_bwd_chunk(&c, in, gin, gout, hacc, NULL, sc.ws);
    }
    if (hacc) {
        for (int h = 0; h < c.H; h++) {
            double s = 0.0;
            for (int b = 0; b < c.B; b++) {
                s += hacc[b * c.H + h];
            }
            gout->dg[h] = (float)s;
        }
        free(hacc);
    }
    lina_ws_scope_close(&sc);
    if (rc) {
        return lina_set_error(rc, "dd: out of memory");
    }
    return LINA_OK;
}

/* ------------------------------------------------- packed documents (public) */

static int dd_docs_open(const dd_ctx *c, const int64_t *cu, int64_t ncu, dd_docs *docs)
{
    int *ord = NULL;
    int rc = lina_docs_order("dd", c->B, c->T, cu, ncu, &ord);
    if (rc) {
        return rc;
    }
    const int n = (int)(ncu - 1);
    size_t *soff = malloc((size_t)n * sizeof(size_t));
    if (!soff) {
        free(ord);
        return lina_set_error(LINA_ENOMEM, "dd: out of memory (%d documents)", n);
    }
    size_t at = 0;
    for (int j = 0; j < n; j++) {
        soff[j] = at;
        at += (size_t)c->H * ((size_t)(cu[j + 1] - cu[j] + c->C - 1) / c->C + 1) * c->K * c->V;
    }
    docs->cu = cu;
    docs->n = n;
    docs->ord = ord;
    docs->soff = soff;
    return LINA_OK;
}

static void dd_docs_close(dd_docs *docs)
{
    free((void *)docs->ord);
    free((void *)docs->soff);
}

/* a varlen call's context, documents and workspace (dd_docs_end releases them);
 * `bad`: the message for missing outputs, or NULL */
static int dd_docs_begin(dd_ctx *c, dd_docs *docs, lina_ws_scope *sc, const lina_mix_dims *d, const lina_dd_in *in,
                         const char *bad, const int64_t *cu, int64_t ncu, lina_ws *ws)
{
    int rc = dd_setup(c, d, in);
    if (rc || bad) {
        return rc ? rc : lina_set_error(LINA_EINVAL, "dd: %s", bad);
    }
    if ((rc = dd_docs_open(c, cu, ncu, docs)) == 0 && (rc = lina_ws_scope_open(sc, ws, lina_get_threads())) != 0) {
        dd_docs_close(docs);
    }
    return rc;
}

static int dd_docs_end(dd_docs *docs, lina_ws_scope *sc, int rc)
{
    lina_ws_scope_close(sc);
    dd_docs_close(docs);
    return rc ? dd_fwd_error(rc) : LINA_OK;
}

int LINA_KFN(lina_dd_fwd_varlen)(const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_dd_in *in,
                                 lina_dd_out *out, lina_form form, lina_ws *ws)
{
    dd_ctx c;
    dd_docs docs;
    lina_ws_scope sc;
    int rc = dd_docs_begin(&c, &docs, &sc, d, in, !out || !out->o ? "output o is NULL" : NULL, cu, ncu, ws);
    if (rc) {
        return rc;
    }
    if (out->finite) {
        *out->finite = 1;
    }
    if (form == LINA_FORM_RECURRENT) { /* one document after another, each parallel over its heads */
        for (int j = 0; j < docs.n && !rc; j++) {
            dd_ctx cd;
            lina_dd_in id;
            lina_dd_out od;
            dd_doc_fwd(&docs, j * c.H, &c, in, out, &cd, &id, &od);
            rc = dd_fwd_recurrent(&cd, &id, &od, sc.ws);
        }
    } else if (!(rc = dd_gate_prepass(&c))) {
        rc = dd_fwd_chunk(&c, in, out, &docs, sc.ws);
    }
    return dd_docs_end(&docs, &sc, rc);
}

int LINA_KFN(lina_dd_bwd_varlen)(const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_dd_in *in,
                                 const lina_dd_grad_in *gin, lina_dd_grad_out *gout, lina_form form, lina_ws *ws)
{
    dd_ctx c;
    dd_docs docs;
    lina_ws_scope sc;
    int rc = dd_docs_begin(&c, &docs, &sc, d, in,
                           !gin || !gout || !gout->dq || !gout->dk || !gout->dv ? "gradient outputs dq, dk, dv are required"
                                                                                 : NULL,
                           cu, ncu, ws);
    if (rc) {
        return rc;
    }
    double *hacc = NULL;
    if (c.gk == LINA_GATE_HEAD && gout->dg && !(hacc = calloc((size_t)docs.n * c.H, sizeof(double)))) {
        return dd_docs_end(&docs, &sc, LINA_ENOMEM);
    }
    if (form == LINA_FORM_RECURRENT) {
        for (int j = 0; j < docs.n && !rc; j++) {
            dd_ctx cd;
            lina_dd_in id;
            lina_dd_grad_in gd;
            lina_dd_grad_out od;
            double *hj = hacc;
            dd_doc_bwd(&docs, j * c.H, &c, in, gin, gout, &hj, &cd, &id, &gd, &od);
            rc = dd_bwd_recurrent(&cd, &id, &gd, &od, hj, sc.ws);
        }
    } else {
        rc = dd_bwd_chunk(&c, in, gin, gout, hacc, &docs, sc.ws);
    }
    if (hacc) {
        for (int h = 0; h < c.H; h++) {
            double s = 0.0;
            for (int j = 0; j < docs.n; j++) {
                s += hacc[(size_t)j * c.H + h];
            }
            gout->dg[h] = (float)s;
        }
        free(hacc);
    }
    return dd_docs_end(&docs, &sc, rc);
}

#if LINA_ISA_PRIMARY
size_t lina_dd_states_size_varlen(const lina_mix_dims *d, const int64_t *cu, int64_t ncu)
{
    const size_t C = (size_t)lina_chunk_len(d->chunk, d->K);
    size_t n = 0;
    for (int64_t j = 0; j + 1 < ncu; j++) {
        n += (size_t)d->H * (((size_t)(cu[j + 1] - cu[j]) + C - 1) / C + 1) * d->K * d->V;
    }
    return n;
}

LINA_ISA_DISPATCH(int, lina_dd_fwd_varlen,
                  (const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_dd_in *in, lina_dd_out *out,
                   lina_form form, lina_ws *ws),
                  (d, cu, ncu, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_dd_bwd_varlen,
                  (const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_dd_in *in,
                   const lina_dd_grad_in *gin, lina_dd_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, cu, ncu, in, gin, gout, form, ws))
#endif

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_dd_fwd,
                  (const lina_mix_dims *d, const lina_dd_in *in, lina_dd_out *out, lina_form form,
                   lina_ws *ws),
                  (d, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_dd_bwd,
                  (const lina_mix_dims *d, const lina_dd_in *in, const lina_dd_grad_in *gin,
                   lina_dd_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, in, gin, gout, form, ws))

void lina_retention_gates(int H, float *g_head)
{
    for (int h = 0; h < H; h++) {
        g_head[h] = (float)log(1.0 - pow(2.0, -5.0 - h));
    }
}

/* ================================================ ops for `lina op` / bench */

enum { DD_LINEAR = 0, DD_RETENTION, DD_SIMPLE_GLA, DD_GLA };

static int dd_op_run(int variant, const lina_tset *in, lina_tset *out, const lina_op_opts *o,
                     lina_ws *ws)
{
    lina_binds bd;
    const lina_tensor *q, *k, *v;
    int err = lina_op_qkv(in, &bd, &q, &k, &v);
    const lina_tensor *g = NULL, *z0 = NULL, *dz = NULL, *dO = NULL, *dht = NULL;
    if (!err && variant == DD_SIMPLE_GLA) {
        g = lina_op_input(in, "g", "BTH", &bd, 0, &err);
    } else if (!err && variant == DD_GLA) {
        g = lina_op_input(in, "g", "BTHK", &bd, 0, &err);
    }
    const lina_tensor *h0 = err ? NULL : lina_op_input(in, "h0", "BHKV", &bd, 1, &err);
    const int norm = variant == DD_LINEAR && o->normalize;
    if (!err && norm) {
        z0 = lina_op_input(in, "z0", "BHK", &bd, 1, &err);
    } else if (!err && lina_tset_cfind(in, "z0")) {
        return lina_set_error(LINA_EINVAL, "z0.npy is only used by linear_attn --normalize");
    }
    if (!err && g) {
        int64_t n = lina_op_trusted() ? 0 : lina_tensor_numel(g);
        for (int64_t i = 0; i < n; i++) {
            if (g->data[i] > 0.0f) {
                return lina_set_error(LINA_EINVAL, "g.npy must hold log decays <= 0 (found %g at index %lld)",
                                      (double)g->data[i], (long long)i);
            }
        }
    }
    if (!err && o->backward) {
        dO = lina_op_input(in, "do", "BTHV", &bd, 0, &err);
        dht = err ? NULL : lina_op_input(in, "dht", "BHKV", &bd, 1, &err);
        if (!err && norm) {
            dz = lina_op_input(in, "dzt", "BHK", &bd, 1, &err);
        }
    }
    if (err) {
        return err;
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['H' - 'A'],
                       (int)bd.v['K' - 'A'], (int)bd.v['V' - 'A'], o->chunk, 0.0f};
    float ghead[1024];
    lina_dd_in din = {q->data, k->data, v->data, LINA_GATE_NONE, NULL, h0 ? h0->data : NULL};
    if (variant == DD_RETENTION) {
        if (d.H > 1024) {
            return lina_set_error(LINA_EINVAL, "retention: at most 1024 heads");
        }
        lina_retention_gates(d.H, ghead);
        din.gate = LINA_GATE_HEAD;
        din.g = ghead;
    } else if (g) {
        din.gate = variant == DD_GLA ? LINA_GATE_VECTOR : LINA_GATE_SCALAR;
        din.g = g->data;
    }
    float *po = lina_op_output(out, "o", "BTHV", &bd);
    float *pht = lina_op_output(out, "ht", "BHKV", &bd);
    if (!po || !pht) {
        return LINA_ENOMEM;
    }
    lina_dd_out dout = {.o = po, .ht = pht, .states = NULL};
    int rc;
    /* the chunk backward reuses the chunk-start states of the forward (the
     * recurrent one runs its states again) */
    float *states = NULL;
    if (o->backward && o->form != LINA_FORM_RECURRENT) {
        int64_t nst = (int64_t)lina_dd_states_size(&d);
        states = lina_tset_out(out, "_states", 1, &nst);
        if (!states) {
            return LINA_ENOMEM;
        }
        dout.states = states;
    }
    /* normaliser: the same engine on v = 1 (V = 1), state z */
    lina_tensor ones = {0}, num = {0}, den = {0};
    lina_dd_in zin = din;
    lina_mix_dims zd = d;
    zd.V = 1;
    if (norm) {
        int64_t sh1[4] = {d.B, d.T, d.H, 1};
        int64_t shv[4] = {d.B, d.T, d.H, d.V};
        if ((rc = lina_tensor_alloc(&ones, 4, sh1)) || (rc = lina_tensor_alloc(&den, 4, sh1)) ||
            (rc = lina_tensor_alloc(&num, 4, shv))) {
            goto done;
        }
        for (int64_t i = 0; i < lina_tensor_numel(&ones); i++) {
            ones.data[i] = 1.0f;
        }
        zin.v = ones.data;
        zin.h0 = z0 ? z0->data : NULL;
        float *pzt = lina_op_output(out, "zt", "BHK", &bd);
        if (!pzt) {
            rc = LINA_ENOMEM;
            goto done;
        }
        lina_dd_out zout = {.o = den.data, .ht = pzt, .states = NULL};
        dout.o = num.data;
        if ((rc = lina_dd_fwd(&d, &din, &dout, o->form, ws)) ||
            (rc = lina_dd_fwd(&zd, &zin, &zout, o->form, ws))) {
            goto done;
        }
        for (int64_t r = 0; r < (int64_t)d.B * d.T * d.H; r++) {
            float dn = den.data[r] + 1e-10f;
            for (int j = 0; j < d.V; j++) {
                po[r * d.V + j] = num.data[r * d.V + j] / dn;
            }
        }
    } else if ((rc = lina_dd_fwd(&d, &din, &dout, o->form, ws))) {
        goto done;
    }
    if (o->backward) {
        float *pdq = lina_op_output(out, "dq", "BTHK", &bd);
        float *pdk = lina_op_output(out, "dk", "BTHK", &bd);
        float *pdv = lina_op_output(out, "dv", "BTHV", &bd);
        float *pdg = NULL, *pdh0 = NULL;
        if (g) {
            pdg = lina_op_output(out, "dg", variant == DD_GLA ? "BTHK" : "BTH", &bd);
        }
        if (h0) {
            pdh0 = lina_op_output(out, "dh0", "BHKV", &bd);
        }
        if (!pdq || !pdk || !pdv || (g && !pdg) || (h0 && !pdh0)) {
            rc = LINA_ENOMEM;
            goto done;
        }
        lina_dd_grad_in gin = {dO->data, dht ? dht->data : NULL, states};
        lina_dd_grad_out gout = {pdq, pdk, pdv, pdg, pdh0};
        if (!norm) {
            rc = lina_dd_bwd(&d, &din, &gin, &gout, o->form, ws);
            goto done;
        }
        /* o = num / (den + eps): dnum = do / (den + eps), dden = -sum(do * o) / (den + eps) */
        lina_tensor dnum = {0}, dden = {0}, zdq = {0}, zdk = {0}, zdv = {0};
        int64_t shk[4] = {d.B, d.T, d.H, d.K}, sh1[4] = {d.B, d.T, d.H, 1}, shv[4] = {d.B, d.T, d.H, d.V};
        if ((rc = lina_tensor_alloc(&dnum, 4, shv)) || (rc = lina_tensor_alloc(&dden, 4, sh1)) ||
            (rc = lina_tensor_alloc(&zdq, 4, shk)) || (rc = lina_tensor_alloc(&zdk, 4, shk)) ||
            (rc = lina_tensor_alloc(&zdv, 4, sh1))) {
            goto nfree;
        }
        for (int64_t r = 0; r < (int64_t)d.B * d.T * d.H; r++) {
            double dn = (double)den.data[r] + 1e-10, acc = 0.0;
            for (int j = 0; j < d.V; j++) {
                dnum.data[r * d.V + j] = (float)(dO->data[r * d.V + j] / dn);
                acc += (double)dO->data[r * d.V + j] * po[r * d.V + j];
            }
            dden.data[r] = (float)(-acc / dn);
        }
        gin.do_ = dnum.data;
        if ((rc = lina_dd_bwd(&d, &din, &gin, &gout, o->form, ws))) {
            goto nfree;
        }
        float *pdz0 = z0 ? lina_op_output(out, "dz0", "BHK", &bd) : NULL;
        if (z0 && !pdz0) {
            rc = LINA_ENOMEM;
            goto nfree;
        }
        lina_dd_grad_in zgin = {dden.data, dz ? dz->data : NULL, NULL};
        lina_dd_grad_out zgout = {zdq.data, zdk.data, zdv.data, NULL, pdz0};
        if ((rc = lina_dd_bwd(&zd, &zin, &zgin, &zgout, o->form, ws))) {
            goto nfree;
        }
        for (int64_t i = 0; i < lina_tensor_numel(&zdq); i++) {
            pdq[i] += zdq.data[i];
            pdk[i] += zdk.data[i];
        }
    nfree:
        lina_tensor_free(&dnum);
        lina_tensor_free(&dden);
        lina_tensor_free(&zdq);
        lina_tensor_free(&zdk);
        lina_tensor_free(&zdv);
    }
done:
    lina_tensor_free(&ones);
    lina_tensor_free(&num);
    lina_tensor_free(&den);
    return rc;
}

static int run_linear_attn(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    return dd_op_run(DD_LINEAR, in, out, o, ws);
}
static int run_retention(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    return dd_op_run(DD_RETENTION, in, out, o, ws);
}
static int run_simple_gla(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    return dd_op_run(DD_SIMPLE_GLA, in, out, o, ws);
}
static int run_gla(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    return dd_op_run(DD_GLA, in, out, o, ws);
}

static int dd_make_inputs(int variant, const lina_mix_dims *d, int backward, uint64_t seed,
                          lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V};
    int rc = lina_bench_tensor(in, "q", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    if (!rc && variant == DD_SIMPLE_GLA) {
        rc = lina_bench_tensor(in, "g", 3, sk, &rng, -0.5f, -0.01f, 0);
    } else if (!rc && variant == DD_GLA) {
        rc = lina_bench_tensor(in, "g", 4, sk, &rng, -0.5f, -0.01f, 0);
    }
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, sv, &rng, 0, 1, 1);
    }
    return rc;
}

static int mk_linear_attn(const lina_mix_dims *d, int bw, uint64_t s, lina_tset *in)
{
    return dd_make_inputs(DD_LINEAR, d, bw, s, in);
}
static int mk_retention(const lina_mix_dims *d, int bw, uint64_t s, lina_tset *in)
{
    return dd_make_inputs(DD_RETENTION, d, bw, s, in);
}
static int mk_simple_gla(const lina_mix_dims *d, int bw, uint64_t s, lina_tset *in)
{
    return dd_make_inputs(DD_SIMPLE_GLA, d, bw, s, in);
}
static int mk_gla(const lina_mix_dims *d, int bw, uint64_t s, lina_tset *in)
{
    return dd_make_inputs(DD_GLA, d, bw, s, in);
}

/* FLOPs of one forward call: chunk form B*H*T*(2CK + 2CV + 4KV), recurrent
 * form 4*B*H*T*K*V (decay, update and readout of the state per token). The
 * normaliser of linear_attn --normalize is not counted. Without --chunk the
 * count is that of C = 64 whatever chunk the engine picks: a fixed measure of
 * the work, so that rates stay comparable across chunk lengths. */
static double dd_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    double C = o->chunk > 0 ? o->chunk : 64;
    if (o->form == LINA_FORM_RECURRENT) {
        return 4.0 * d->B * d->H * d->T * d->K * d->V;
    }
    return (double)d->B * d->H * d->T * (2 * C * d->K + 2 * C * d->V + 4.0 * d->K * d->V);
}

const lina_op_info lina_op_linear_attn = {
    "linear_attn", "linear attention h_t = h_{t-1} + k v^T", {"--normalize", NULL},
    run_linear_attn, mk_linear_attn, dd_flops};
const lina_op_info lina_op_retention = {
    "retention", "RetNet retention, fixed decay 1 - 2^(-5-h) per head", {NULL},
    run_retention, mk_retention, dd_flops};
const lina_op_info lina_op_simple_gla = {
    "simple_gla", "linear attention with a scalar log gate per head and step", {NULL},
    run_simple_gla, mk_simple_gla, dd_flops};
const lina_op_info lina_op_gla = {
    "gla", "gated linear attention with a per-key-channel log gate", {NULL},
    run_gla, mk_gla, dd_flops};
#endif /* LINA_ISA_PRIMARY */
