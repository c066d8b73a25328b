/*
 * delta.c -- the delta-rule engine behind delta_rule, gated_delta_rule and
 * delta_product (docs/mixers.md section 4).
 *
 * The engine runs over N = T*n "rows" (n Householder sub-steps per token;
 * row r = t*n + j). Row r carries k_r, v_r, beta_r and a log gate gamma_r
 * (g_t on the first sub-step of token t, 0 elsewhere or without g):
 *
 *   S' = exp(gamma_r) S,   u_r = v_r - S'^T k_r,   S = S' + beta_r k_r u_r^T
 *   o_t = s S^T q_t        read after the last sub-step of token t
 *
 * Recurrent form: row by row on K x 32 tiles of the state (value columns are
 * independent: u_j only needs column j), with the next row's S^T k fused into
 * the update so every row touches the tile once.
 *
 * Chunk form (WY / UT transform): per chunk of L <= C rows, b the cumulative
 * log gate restarted at the chunk start (double), Gam_rc = exp(b_r - b_c) for
 * c <= r (masked before exp), e = exp(b), ed = exp(b_{L-1} - b):
 *   A   = strictly-lower(diag(beta) (K K^T * Gam)),    Tm = (I + A)^{-1}
 *   Kb  = diag(beta e) K,   Y = diag(beta) V - Kb S_in,   U = Tm Y  (= beta * u)
 *   O   = s diag(e) Q S_in + P U,   P_oc = s q_o.k_c Gam_{rho(o),c}, c <= rho(o)
 *   S_out = exp(b_{L-1}) S_in + (diag(ed) K)^T U
 * where rho(o) is the row of output o (the last sub-step of its token).
 *
 * Backward: the chunk form takes the chunk-start states, U and Tm from the
 * forward's cache when the caller kept one, else recomputes them in one pass
 * over the chunks, then walks the chunks backwards (see dl_bwd_chunk, and
 * ck_bwd_gated with the per-channel gate, for the
 * formulas); the recurrent form runs the forward once keeping the state every
 * SEG rows and u of every row, then per segment, last first, rebuilds the
 * segment's states from its checkpoint and the kept u (one multiply-add per
 * element) and walks back one pass per row (bk_row: each row's gradient fused
 * with the output term of the row before and the next R^T k, dk and dq added
 * in place from sums taken 8 rows at a time on the AVX paths, the decay's
 * variant chosen per row: none, scalar, per channel).
 * With a scalar gate the recurrent forms decay lazily: the state tile and the
 * backward's dL/dS tile are kept divided by the product of the decays not yet
 * applied, so most rows multiply nothing (see DL_LAZY_MIN); the gate's
 * gradient stays the direct sum(dL/dS' . S') of each gated row, taken on the
 * scaled tiles. (The identity dL/db_r = q.dq - v.dv summed from the row on,
 * b the cumulative log gate, avoids that sum but cancels: for a strong gate
 * the small dg_t is the difference of sums of O(1) terms, and MoM's gate
 * weights lost 3 digits against finite differences.)
 * Both parallelise over B*H (the recurrent forward over B*H*ceil(V/32) tiles).
 */
#include "ops_internal.h"
#include "../kern/gemm.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define VB 32  /* value columns per recurrent tile */
#define SEG 16 /* recurrent backward: checkpoint interval (rows) */
#define DOB 4 /* recurrent forward: output rows buffered per tile */
#define DL_PF 4 /* recurrent forms: rows between a strided row's prefetch and its use
                 * (a head's rows lie H*K or H*V floats apart, beyond the hardware
                 * prefetchers' reach) */

/* a*b + c, fused by the compiler where the target has FMA (-ffp-contract=fast)
 * and a multiply and an add elsewhere: fmaf() on a target without FMA (the
 * portable x86-64 path) is a libm call that computes the exact fused result
 * in software, per element, and stops the loops from vectorising. */
#define DL_FMA(a, b, c) ((a) * (b) + (c))

#if defined(__GNUC__)
#define DL_INLINE static inline __attribute__((always_inline))
#else
#define DL_INLINE static inline
#endif

typedef struct dl_ctx {
    int B, T, H, K, V;
    int n;          /* sub-steps per token */
    int N;          /* rows = T * n */
    int C;          /* chunk size (rows) */
    float s;        /* query scale */
    const float *q, *k, *v, *beta, *g, *h0;
    const float *gk; /* [B,T,H,K] per-channel log decay (n = 1) or NULL */
} dl_ctx;

static int dl_setup(dl_ctx *c, const lina_mix_dims *d, const lina_delta_in *in)
{
    if (!d || !in || !in->q || !in->k || !in->v || !in->beta) {
        return lina_set_error(LINA_EINVAL, "delta: missing q, k, v or beta");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "delta: bad dims B=%d T=%d H=%d K=%d V=%d", d->B, d->T,
                              d->H, d->K, d->V);
    }
    int n = in->n > 0 ? in->n : 1;
    if (in->gk && (in->g || n != 1)) {
        return lina_set_error(LINA_EINVAL, "delta: a per-channel gate gk takes n = 1 and no scalar gate g");
    }
    if ((long long)d->T * n > 0x7fffffffLL) {
        return lina_set_error(LINA_EINVAL, "delta: T*n = %lld rows is too many",
                              (long long)d->T * n);
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->n = n;
    c->N = d->T * n;
    c->C = lina_chunk_len(d->chunk, d->K);
    c->s = d->scale != 0.0f ? d->scale : 1.0f / sqrtf((float)d->K);
    c->q = in->q;
    c->k = in->k;
    c->v = in->v;
    c->beta = in->beta;
    c->g = in->g;
    c->h0 = in->h0;
    c->gk = in->gk;
    return LINA_OK;
}

/* row accessors: k, v, beta by row r of N; q, o by token t of T */
static inline const float *dl_k(const dl_ctx *c, int b, int r, int h)
{
    return LINA_ROW(c->k, b, r, h, c->N, c->H, c->K);
}
static inline const float *dl_v(const dl_ctx *c, int b, int r, int h)
{
    return LINA_ROW(c->v, b, r, h, c->N, c->H, c->V);
}
static inline const float *dl_q(const dl_ctx *c, int b, int t, int h)
{
    return LINA_ROW(c->q, b, t, h, c->T, c->H, c->K);
}
static inline size_t dl_bix(const dl_ctx *c, int b, int r, int h)
{
    return ((size_t)b * c->N + (size_t)r) * c->H + h;
}
static inline size_t dl_gix(const dl_ctx *c, int b, int t, int h)
{
    return ((size_t)b * c->T + (size_t)t) * c->H + h;
}
/* log gate of row r (0 unless r is the first sub-step of a token and g is set) */
static inline float dl_gate(const dl_ctx *c, int b, int r, int h)
{
    if (!c->g || r % c->n != 0) {
        return 0.0f;
    }
    return c->g[dl_gix(c, b, r / c->n, h)];
}

/* Key of row r as the row's update reads it: k itself, or with a per-channel
 * gate a = exp(gk_r) (written to a[K]) the decayed key a * k (in ka[K]), so
 * that S^T ka is the S'^T k of the delta correction. */
static inline const float *dl_kdec(const dl_ctx *c, int b, int r, int h, float *a, float *ka)
{
    const float *kr = dl_k(c, b, r, h);
    if (!c->gk) {
        return kr;
    }
    const float *gr = LINA_ROW(c->gk, b, r, h, c->T, c->H, c->K);
    lina_vexp(a, gr, (size_t)c->K);
    for (int i = 0; i < c->K; i++) {
        ka[i] = a[i] * kr[i];
    }
    return ka;
}

/* Load columns [j0, j0+W) of a [K,V] state into a K x VB tile (zero padded;
 * src NULL: zeros). */
static void tile_load(float *S, const float *src, int K, int V, int j0, int W)
{
    for (int i = 0; i < K; i++) {
        float *Si = S + (size_t)i * VB;
        if (src) {
            memcpy(Si, src + (size_t)i * V + j0, (size_t)W * sizeof(float));
        } else {
            memset(Si, 0, (size_t)W * sizeof(float));
        }
        memset(Si + W, 0, (size_t)(VB - W) * sizeof(float));
    }
}

static void tile_store(float *dst, const float *S, int K, int V, int j0, int W)
{
    for (int i = 0; i < K; i++) {
        memcpy(dst + (size_t)i * V + j0, S + (size_t)i * VB, (size_t)W * sizeof(float));
    }
}

/* w[VB] = S^T k over a K x VB tile */
static void tile_dot(int K, const float *restrict S, const float *restrict k, float *restrict w)
{
    float acc[VB];
    for (int j = 0; j < VB; j++) {
        acc[j] = 0.0f;
    }
    for (int i = 0; i < K; i++) {
        const float *restrict Si = S + (size_t)i * VB;
        const float ki = k[i];
#pragma omp simd
        for (int j = 0; j < VB; j++) {
            acc[j] = DL_FMA(ki, Si[j], acc[j]);
        }
    }
    for (int j = 0; j < VB; j++) {
        w[j] = acc[j];
    }
}

/* =================================================== recurrent forward */

/* One row on a K x VB tile: S <- a S + kb u^T (the callers pass k and beta u;
 * decay only when dec; dec == 2:
 * row i of S decays by av[i]), then o = S^T qs (when out) and w = S^T kn (the
 * next row's key, when nxt). The flags are literals at every call so each
 * variant is its own loop. */
DL_INLINE void rec_row(int K, float *restrict S, float a, const float *restrict av,
                       const float *restrict kb, const float *restrict u, const float *restrict qs,
                       float *restrict o, const float *restrict kn, float *restrict w, const int dec,
                       const int out, const int nxt)
{
    float oa[VB], wa[VB], uu[VB];
    for (int j = 0; j < VB; j++) {
        oa[j] = 0.0f;
        wa[j] = 0.0f;
        uu[j] = u[j];
    }
    for (int i = 0; i < K; i++) {
        float *restrict Si = S + (size_t)i * VB;
        const float kbi = kb[i];
        const float qi = out ? qs[i] : 0.0f;
        const float ki = nxt ? kn[i] : 0.0f;
        const float ai = dec == 2 ? av[i] : a;
#pragma omp simd
        for (int j = 0; j < VB; j++) {
            float x = dec ? ai * Si[j] : Si[j];
            x = DL_FMA(kbi, uu[j], x);
            Si[j] = x;
            if (out) {
                oa[j] = DL_FMA(qi, x, oa[j]);
            }
            if (nxt) {
                wa[j] = DL_FMA(ki, x, wa[j]);
            }
        }
    }
    for (int j = 0; j < VB; j++) {
        if (out) {
            o[j] = oa[j];
        }
        if (nxt) {
            w[j] = wa[j];
        }
    }
}

/* mode: bit 0 decay, bit 1 output, bit 2 next key; av non-NULL with bit 0: per-row decays */
static void rec_row_dispatch(int K, float *S, float a, const float *av, const float *kb,
                             const float *u, const float *qs, float *o, const float *kn, float *w,
                             int mode)
{
    if (av && (mode & 1)) {
        switch (mode) {
        case 1: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 2, 0, 0); break;
        case 3: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 2, 1, 0); break;
        case 5: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 2, 0, 1); break;
        default: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 2, 1, 1); break;
        }
        return;
    }
    switch (mode) {
    case 0: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 0, 0, 0); break;
    case 1: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 1, 0, 0); break;
    case 2: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 0, 1, 0); break;
    case 3: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 1, 1, 0); break;
    case 4: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 0, 0, 1); break;
    case 5: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 1, 0, 1); break;
    case 6: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 0, 1, 1); break;
    default: rec_row(K, S, a, av, kb, u, qs, o, kn, w, 1, 1, 1); break;
    }
}

/* Lazy scalar decay of the recurrent forms (a scalar gate g and no gk): the
 * tile keeps S~ = S / G, G the product of the decays not yet applied, so that
 * a row with decay a and G' = G a is
 *   u = v - G' S~^T k,   S~ += k (beta u / G')^T,   o = s G' S~^T q
 * with no multiply on the state. A row applies G' to the tile (the decayed
 * row of rec_row / bk_fill with a = G', then G = 1) when G' leaves
 * [DL_LAZY_MIN, DL_LAZY_MAX] (also a zero or NaN decay), at the last row and
 * (the recurrent backward) at the last row of every checkpoint segment, so
 * that ht and the checkpoints are the state itself. Floats scale exactly, so
 * S~ carries the same relative rounding as S; the bounds keep S~ and beta u / G'
 * far from overflow. */
#define DL_LAZY_MIN 0x1p-16f
#define DL_LAZY_MAX 0x1p16f

static inline int dl_lazy_keep(float Gn)
{
    return Gn >= DL_LAZY_MIN && Gn <= DL_LAZY_MAX;
}

/* Ag[t] = exp(g_t) of every token of (b, h) */
static void dl_gates(const dl_ctx *c, int b, int h, float *Ag)
{
    for (int t = 0; t < c->T; t++) {
        Ag[t] = c->g[dl_gix(c, b, t, h)];
    }
    lina_vexp(Ag, Ag, (size_t)c->T);
}

static int dl_fwd_recurrent(const dl_ctx *c, float *o, float *ht, int *finite, lina_ws *ws)
{
    const int B = c->B, H = c->H, K = c->K, V = c->V, N = c->N, n = c->n;
    const size_t KV = (size_t)K * V;
    const int nvb = (V + VB - 1) / VB;
    const int ntask = B * H * nvb;
    int rc = LINA_OK, probe_bad = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        const int vb = task % nvb, bh = task / nvb, b = bh / H, h = bh % H;
        int pbad = 0; /* the output probe (finite) of the rows this task writes */
        const int j0 = vb * VB, W = V - j0 < VB ? V - j0 : VB;
        float *S = lina_ws_get(ws, lina_thread_id(),
                               ((size_t)K * VB + 3 * (size_t)K + (2 + DOB) * VB + DOB + (c->g ? (size_t)c->T : 0)) *
                                   sizeof(float) + 4096);
        if (!S) {
#pragma omp atomic write
            rc = LINA_ENOMEM;
            continue;
        }
        float *u = S + (size_t)K * VB;  /* [VB] beta u */
        float *w = u + VB;              /* [VB] S^T k of the current row */
        float *av = w + VB, *an = av + K, *kd = an + K; /* [K] each: gk decays (row, next row), next decayed key */
        float *Ag = kd + K;             /* [T] exp(g) */
        /* [DOB][VB] the output rows before their scale, [DOB] the scales: the rows go to
         * o DOB at a time, from a buffer 2 KiB past the tile's start modulo 4 KiB. A
         * step's output row stored straight into o made the forward's time depend on
         * where o lay: a store and the next step's loads of the tile that are a multiple
         * of 4 KiB apart wait on each other (B=8 T=512 H=4 K=V=64: 4.6 to 8.1 ms by o's
         * offset; K=V=128, B=1 T=4096: 18.0 to 24.3 ms; through this buffer 4.6-5.5 and
         * 18.6-20.4 ms at every offset). */
        float *obuf = Ag + (c->g ? (size_t)c->T : 0), *osc;
        obuf += (((uintptr_t)S + 2048 - (uintptr_t)obuf) & 4095) / sizeof(float);
        osc = obuf + (size_t)DOB * VB;
        if (c->g) {
            dl_gates(c, b, h, Ag);
        }
        tile_load(S, c->h0 ? LINA_STATE(c->h0, b, h, H, KV) : NULL, K, V, j0, W);
        if (N > 0) {
            tile_dot(K, S, dl_kdec(c, b, 0, h, an, kd), w);
        }
        const int lazy = c->g && !c->gk;
        float G = 1.0f; /* lazy: S = G S~ (the tile holds S~) */
        for (int r = 0; r < N; r++) {
            const int t = r / n, jn = r % n;
            if (r + DL_PF < N) {
                const int rp = r + DL_PF;
                lina_prefetch_floats(dl_k(c, b, rp, h), K);
                lina_prefetch_floats(dl_v(c, b, rp, h) + j0, W);
                if (rp % n == n - 1) {
                    lina_prefetch_floats(dl_q(c, b, rp / n, h), K);
                }
            }
            const int dec = (c->g || c->gk) && jn == 0;
            /* with gk, w already holds S'^T k (decayed key): u = v - w */
            const float a = c->g && dec ? Ag[t] : 1.0f;
            float *tmp = av;
            av = an;
            an = tmp;
            const float be = c->beta[dl_bix(c, b, r, h)];
            const float *vr = dl_v(c, b, r, h) + j0;
            /* lazy: w = S~^T k, the decay of the row and the kept scale in Gn */
            const float Gn = lazy ? G * a : a;
            const int apply = lazy ? !dl_lazy_keep(Gn) || (r == N - 1 && Gn != 1.0f) : dec;
            const float us = lazy && !apply ? be / Gn : be;
            /* beta (over G' when kept) folded into u, s into the output */
            for (int j = 0; j < W; j++) {
                u[j] = us * (vr[j] - Gn * w[j]);
            }
            for (int j = W; j < VB; j++) {
                u[j] = 0.0f;
            }
            const int out = jn == n - 1, nxt = r + 1 < N;
            rec_row_dispatch(K, S, Gn, c->gk ? av : NULL, dl_k(c, b, r, h), u, out ? dl_q(c, b, t, h) : NULL,
                             obuf + (size_t)(t % DOB) * VB, nxt ? dl_kdec(c, b, r + 1, h, an, kd) : NULL, w,
                             apply | (out << 1) | (nxt << 2));
            G = lazy && !apply ? Gn : 1.0f;
            if (out) {
                osc[t % DOB] = c->s * G;
                if ((t + 1) % DOB == 0 || t == c->T - 1) {
                    const int t0 = t - t % DOB;
                    for (int x = t0; x <= t; x++) {
                        float *restrict ot = LINA_ROW(o, b, x, h, c->T, H, V) + j0;
                        const float *restrict ob = obuf + (size_t)(x % DOB) * VB;
                        const float so = osc[x % DOB];
                        for (int j = 0; j < W; j++) {
                            ot[j] = so * ob[j];
                        }
                    }
                    if (finite) {
                        float *o0 = LINA_ROW(o, b, t0, h, c->T, H, V) + j0;
                        pbad |= (j0 == 0 && !lina_probe_finite(o0, (size_t)(t - t0 + 1), (size_t)H * V)) ||
                                (t == c->T - 1 && !lina_probe_finite(LINA_ROW(o, b, t, h, c->T, H, V) + j0, (size_t)W, 1));
                    }
                }
            }
        }
        if (ht) {
            tile_store(LINA_STATE(ht, b, h, H, KV), S, K, V, j0, W);
        }
        if (pbad) {
#pragma omp atomic write
            probe_bad = 1;
        }
    }
    if (probe_bad && finite) {
        *finite = 0;
    }
    return rc;
}

/* ================================================== recurrent backward */

/* the AVX paths of the recurrent backward: BK_NV vectors per VB columns */
#ifdef LINA_VL
#define BK_NV (VB / LINA_VL)
#endif

/* the decay of a row in the backward: none (a = 1), the scalar a, or row i of
 * the state by av[i] (per-channel gate) */
enum { BG_NONE = 0, BG_SCALAR = 1, BG_CHANNEL = 2 };

/* Sn = a Sp + k ub^T on a K x VB tile (ub = beta u, zero padded), the decay
 * as `gate` says: the forward's update of one row, without its reads. */
DL_INLINE void bk_fill_t(int K, const float *restrict Sp, float *restrict Sn, float a,
                         const float *restrict av, const float *restrict k,
                         const float *restrict ub, const int gate)
{
#ifdef BK_NV
    const int L = VB / BK_NV;
    lina_vf U[BK_NV];
    LINA_NV_UNROLL
    for (int m = 0; m < BK_NV; m++) {
        U[m] = LINA_VLD(ub + L * m);
    }
    const lina_vf va = LINA_VSET1(a);
    for (int i = 0; i < K; i++) {
        const lina_vf ki = LINA_VSET1(k[i]), ai = gate == BG_CHANNEL ? LINA_VSET1(av[i]) : va;
        LINA_NV_UNROLL
        for (int m = 0; m < BK_NV; m++) {
            const lina_vf p = LINA_VLD(Sp + (size_t)i * VB + L * m);
            LINA_VST(Sn + (size_t)i * VB + L * m, LINA_VFMA(ki, U[m], gate ? LINA_VMUL(ai, p) : p));
        }
    }
#else
    for (int i = 0; i < K; i++) {
        const float *restrict Pi = Sp + (size_t)i * VB;
        float *restrict Ni = Sn + (size_t)i * VB;
        const float ki = k[i], ai = gate == BG_CHANNEL ? av[i] : a;
#pragma omp simd
        for (int j = 0; j < VB; j++) {
            Ni[j] = DL_FMA(ki, ub[j], gate ? ai * Pi[j] : Pi[j]);
        }
    }
#endif
}

static void bk_fill(int K, const float *Sp, float *Sn, float a, const float *av, const float *k,
                    const float *ub, int gate)
{
    switch (gate) {
    case BG_NONE: bk_fill_t(K, Sp, Sn, a, av, k, ub, BG_NONE); break;
    case BG_SCALAR: bk_fill_t(K, Sp, Sn, a, av, k, ub, BG_SCALAR); break;
    default: bk_fill_t(K, Sp, Sn, a, av, k, ub, BG_CHANNEL); break;
    }
}

#ifdef BK_NV

/* The step back sums BK_RB = 8 key rows across their lanes together.
 * bk_acc: dst[0..BK_RB) += (sc, when set, times) the row sums of P[0..BK_RB). */
#define BK_RB 8
static inline void bk_acc(float *dst, const float *sc, const lina_v8 *P)
{
    const lina_v8 s = lina_hsum8(P), d = LINA_V8_LD(dst);
    LINA_V8_ST(dst, sc ? LINA_V8_FMA(LINA_V8_LD(sc), s, d) : LINA_V8_ADD(d, s));
}

/* the sums of BK_RB key rows from i0 (Pd, Pg, Pq) into dk (times gr), dgk (times av) and
 * dq (times gq) */
static inline void bk_acc_rows(int i0, const lina_v8 *Pd, const lina_v8 *Pg, const lina_v8 *Pq, float *dk,
                               float *dgk, float *dq, const float *av, float gr, float gq,
                               const int gate, const int out)
{
    const lina_v8 sd = lina_hsum8(Pd), d = LINA_V8_LD(dk + i0);
    LINA_V8_ST(dk + i0, LINA_V8_FMA(LINA_V8_SET1(gr), sd, d));
    if (gate == BG_CHANNEL) {
        bk_acc(dgk + i0, av + i0, Pg);
    }
    if (out) {
        const lina_v8 sq = lina_hsum8(Pq), e = LINA_V8_LD(dq + i0);
        LINA_V8_ST(dq + i0, LINA_V8_FMA(LINA_V8_SET1(gq), sq, e));
    }
}

/* the same for one key row i (the tail of K past the last block of BK_RB) */
static inline void bk_acc_row(int i, lina_v8 pd, lina_v8 pg, lina_v8 pq, float *dk, float *dgk, float *dq,
                              const float *av, float gr, float gq, const int gate, const int out)
{
    dk[i] += gr * lina_v8_hsum(pd);
    if (gate == BG_CHANNEL) {
        dgk[i] += av[i] * lina_v8_hsum(pg);
    }
    if (out) {
        dq[i] += gq * lina_v8_hsum(pq);
    }
}

#if LINA_VL == 16
/* One key row i of bk_row on AVX-512 (Ri, Bi: its rows of R and Sb; nkr = k_r[i], qi = q[i],
 * kpi = kp[i]; ai the row's decay of R): R_i updated, wn's sums in A, the row's sums for dk,
 * dgk and dq left as vectors in *pd, *pg, *pq. */
DL_INLINE void bk_one(float *restrict Ri, const float *restrict Bi, const lina_vf *U,
                      const lina_vf *Wb, const lina_vf *Wc, const lina_vf *Dv, const lina_vf *Ds,
                      lina_vf *A, lina_vf *G, lina_vf ai, float kri, float qis, float kpis, lina_v8 *pd,
                      lina_v8 *pg, lina_v8 *pq, const int gate, const int wg, const int out)
{
    const lina_vf nk = LINA_VSET1(-kri), qi = LINA_VSET1(qis), ki = LINA_VSET1(kpis);
    lina_vf ru = LINA_VZERO(), bw = LINA_VZERO(), pgv = LINA_VZERO(), pqv = LINA_VZERO();
    LINA_NV_UNROLL
    for (int v = 0; v < 2; v++) {
        const lina_vf bb = LINA_VLD(Bi + LINA_VL * v), r = LINA_VLD(Ri + LINA_VL * v);
        ru = LINA_VFMA(r, U[v], ru);
        if (gate == BG_CHANNEL) {
            bw = LINA_VFMA(bb, Wb[v], bw);
        } else {
            ru = LINA_VFNMA(bb, Wc[v], ru);
        }
        lina_vf x = LINA_VFMA(nk, Wb[v], r);
        if (gate == BG_CHANNEL) {
            pgv = LINA_VFMA(x, bb, pgv);
        } else if (wg) {
            G[v] = LINA_VFMA(x, bb, G[v]);
        }
        if (gate) {
            x = LINA_VMUL(ai, x);
        }
        if (out) {
            x = LINA_VFMA(qi, Ds[v], x);
            pqv = LINA_VFMA(bb, Dv[v], pqv);
        }
        A[v] = LINA_VFMA(ki, x, A[v]);
        LINA_VST(Ri + LINA_VL * v, x);
    }
    *pd = LINA_VFOLD(gate == BG_CHANNEL ? LINA_VFNMA(ai, bw, ru) : ru);
    if (gate == BG_CHANNEL) {
        *pg = LINA_VFOLD(pgv);
    }
    if (out) {
        *pq = LINA_VFOLD(pqv);
    }
}
#endif

#if LINA_VL == 8
/* bk_one on AVX2, over all BK_NV = 4 vectors of the row in one pass: ub, wb,
 * wc, D and Ds are read from L1 as operands instead of held, so that A[4], the
 * row's sums and its broadcasts fit the 16 registers (holding them all needs
 * 28; two passes of 2 vectors spill and sum every row's lanes twice). */
DL_INLINE void bk_one4(float *restrict Ri, const float *restrict Bi, const float *restrict ub,
                       const float *restrict wb, const float *restrict wc,
                       const float *restrict D, const float *restrict Ds, lina_v8 *A, lina_v8 *G,
                       lina_v8 ai, float kri, float qis, float kpis, lina_v8 *pd, lina_v8 *pg,
                       lina_v8 *pq, const int gate, const int wg, const int out)
{
    const lina_v8 nk = LINA_V8_SET1(-kri), qi = LINA_V8_SET1(qis), ki = LINA_V8_SET1(kpis);
    lina_v8 ru = LINA_V8_ZERO(), bw = LINA_V8_ZERO(), pgv = LINA_V8_ZERO(),
           pqv = LINA_V8_ZERO();
    LINA_NV_UNROLL
    for (int v = 0; v < BK_NV; v++) {
        const lina_v8 bb = LINA_V8_LD(Bi + 8 * v), r = LINA_V8_LD(Ri + 8 * v);
        ru = LINA_V8_FMA(r, LINA_V8_LD(ub + 8 * v), ru);
        if (gate == BG_CHANNEL) {
            bw = LINA_V8_FMA(bb, LINA_V8_LD(wb + 8 * v), bw);
        } else {
            ru = LINA_V8_FNMA(bb, LINA_V8_LD(wc + 8 * v), ru);
        }
        lina_v8 x = LINA_V8_FMA(nk, LINA_V8_LD(wb + 8 * v), r);
        if (gate == BG_CHANNEL) {
            pgv = LINA_V8_FMA(x, bb, pgv);
        } else if (wg) {
            G[v & 1] = LINA_V8_FMA(x, bb, G[v & 1]);
        }
        if (gate) {
            x = LINA_V8_MUL(ai, x);
        }
        if (out) {
            x = LINA_V8_FMA(qi, LINA_V8_LD(Ds + 8 * v), x);
            pqv = LINA_V8_FMA(bb, LINA_V8_LD(D + 8 * v), pqv);
        }
        A[v] = LINA_V8_FMA(ki, x, A[v]);
        LINA_V8_ST(Ri + 8 * v, x);
    }
    *pd = gate == BG_CHANNEL ? LINA_V8_FNMA(ai, bw, ru) : ru;
    if (gate == BG_CHANNEL) {
        *pg = pgv;
    }
    if (out) {
        *pq = pqv;
    }
}
#endif
#endif

/* One row r back on a K x VB tile, fused with the output term of row r-1.
 * Under the lazy decay both tiles are kept scaled: R = gr R~ (the tile R holds
 * R~, dL/dS_r with row r's output term) and S_{r-1} = gq Sb. With wb = beta R~^T k_r,
 * ub = beta u_r and wc = c wb, c the factor of the read term (the row's decay times
 * gq; 1 without a gate):
 *   dk[i] += gr (R~_i . ub - Sb_i . wc)              (dk_r, summed over the tiles;
 *            BG_CHANNEL: gr (R_i . ub - av_i Sb_i . wb), gr = 1)
 *   x_i = R~_i - k_i wb,  R~_i = a_i x_i              (dL/dS_{r-1} / the new scale, before
 *                                                      row r-1's output; a_i = 1 for BG_NONE,
 *                                                      a for BG_SCALAR, av_i for BG_CHANNEL)
 *   BG_CHANNEL: dgk[i] += av_i x_i . Sb_i;  wg (a scalar gate): *dgs = sum_i x_i . Sb_i
 *   (the caller scales it by the row's decay and the two tiles' scales)
 *   out (row r-1 has an output, D = s dO of its token, Ds = D over R's new scale):
 *     R~_i += qp_i Ds,  dq[i] += gq Sb_i . D
 *   wn = R~^T kp (kp = k_{r-1}, zeros for the first row).
 * The per-row sums are kept as vectors and BK_RB rows are summed across their
 * lanes together on the AVX paths; `gate`, `wg` and `out` are literals at every call. */
DL_INLINE void bk_row_t(int K, float *restrict R, const float *restrict Sb,
                        const float *restrict ub, const float *restrict wb,
                        const float *restrict wc, const float *restrict kr, float a,
                        const float *restrict av, const float *restrict kp,
                        const float *restrict qp, const float *restrict D,
                        const float *restrict Ds, float *restrict dk, float *restrict dq,
                        float *restrict dgk, float *restrict dgs, float *restrict wn, float gr,
                        float gq, const int gate, const int wg, const int out)
{
#if defined(BK_NV) && LINA_VL == 8
    lina_v8 A[BK_NV], G[2] = {LINA_V8_ZERO(), LINA_V8_ZERO()};
    LINA_NV_UNROLL
    for (int v = 0; v < BK_NV; v++) {
        A[v] = LINA_V8_ZERO();
    }
    const lina_v8 va = LINA_V8_SET1(a);
    int i0 = 0;
    for (; i0 + BK_RB <= K; i0 += BK_RB) {
        lina_v8 Pd[BK_RB], Pg[BK_RB], Pq[BK_RB];
        LINA_NV_UNROLL
        for (int m = 0; m < BK_RB; m++) {
            const int i = i0 + m;
            bk_one4(R + (size_t)i * VB, Sb + (size_t)i * VB, ub, wb, wc, D, Ds, A, G,
                    gate == BG_CHANNEL ? LINA_V8_SET1(av[i]) : va, kr[i], out ? qp[i] : 0.0f,
                    kp[i], &Pd[m], &Pg[m], &Pq[m], gate, wg, out);
        }
        bk_acc_rows(i0, Pd, Pg, Pq, dk, dgk, dq, av, gr, gq, gate, out);
    }
    for (; i0 < K; i0++) {
        lina_v8 pd, pg = LINA_V8_ZERO(), pq = LINA_V8_ZERO();
        bk_one4(R + (size_t)i0 * VB, Sb + (size_t)i0 * VB, ub, wb, wc, D, Ds, A, G,
                gate == BG_CHANNEL ? LINA_V8_SET1(av[i0]) : va, kr[i0], out ? qp[i0] : 0.0f,
                kp[i0], &pd, &pg, &pq, gate, wg, out);
        bk_acc_row(i0, pd, pg, pq, dk, dgk, dq, av, gr, gq, gate, out);
    }
    LINA_NV_UNROLL
    for (int v = 0; v < BK_NV; v++) {
        LINA_V8_ST(wn + 8 * v, A[v]);
    }
    if (wg) {
        *dgs = lina_v8_hsum(LINA_V8_ADD(G[0], G[1]));
    }
#elif defined(BK_NV)
    /* AVX-512: one pass over the rows, the tile's VB columns in 2 vectors */
    const lina_vf va = LINA_VSET1(a);
    lina_vf U[2], Wb[2], Wc[2], Dv[2], Dsv[2], A[2], G[2] = {LINA_VZERO(), LINA_VZERO()};
    LINA_NV_UNROLL
    for (int v = 0; v < 2; v++) {
        U[v] = LINA_VLD(ub + LINA_VL * v);
        Wb[v] = LINA_VLD(wb + LINA_VL * v);
        Wc[v] = LINA_VLD(wc + LINA_VL * v);
        Dv[v] = out ? LINA_VLD(D + LINA_VL * v) : LINA_VZERO();
        Dsv[v] = out ? LINA_VLD(Ds + LINA_VL * v) : LINA_VZERO();
        A[v] = LINA_VZERO();
    }
    int i0 = 0;
    for (; i0 + BK_RB <= K; i0 += BK_RB) {
        lina_v8 Pd[BK_RB], Pg[BK_RB], Pq[BK_RB];
        LINA_NV_UNROLL
        for (int m = 0; m < BK_RB; m++) {
            const int i = i0 + m;
            bk_one(R + (size_t)i * VB, Sb + (size_t)i * VB, U, Wb, Wc, Dv, Dsv, A, G,
                   gate == BG_CHANNEL ? LINA_VSET1(av[i]) : va, kr[i], out ? qp[i] : 0.0f, kp[i],
                   &Pd[m], &Pg[m], &Pq[m], gate, wg, out);
        }
        bk_acc_rows(i0, Pd, Pg, Pq, dk, dgk, dq, av, gr, gq, gate, out);
    }
    for (; i0 < K; i0++) {
        lina_v8 pd, pg = LINA_V8_ZERO(), pq = LINA_V8_ZERO();
        bk_one(R + (size_t)i0 * VB, Sb + (size_t)i0 * VB, U, Wb, Wc, Dv, Dsv, A, G,
               gate == BG_CHANNEL ? LINA_VSET1(av[i0]) : va, kr[i0], out ? qp[i0] : 0.0f, kp[i0],
               &pd, &pg, &pq, gate, wg, out);
        bk_acc_row(i0, pd, pg, pq, dk, dgk, dq, av, gr, gq, gate, out);
    }
    LINA_NV_UNROLL
    for (int v = 0; v < 2; v++) {
        LINA_VST(wn + LINA_VL * v, A[v]);
    }
    if (wg) {
        *dgs = lina_v8_hsum(LINA_VFOLD(LINA_VADD(G[0], G[1])));
    }
#else
    float wa[VB];
    for (int j = 0; j < VB; j++) {
        wa[j] = 0.0f;
    }
    float gs = 0.0f;
    for (int i = 0; i < K; i++) {
        float *restrict Ri = R + (size_t)i * VB;
        const float *restrict Bi = Sb + (size_t)i * VB;
        const float ki = kr[i], ai = gate == BG_CHANNEL ? av[i] : a;
        const float qi = out ? qp[i] : 0.0f, kpi = kp[i];
        float ru = 0.0f, bw = 0.0f, pg = 0.0f, pq = 0.0f;
#pragma omp simd reduction(+ : ru, bw, pg, pq)
        for (int j = 0; j < VB; j++) {
            ru += Ri[j] * ub[j];
            bw += Bi[j] * (gate == BG_CHANNEL ? wb[j] : wc[j]);
            float x = DL_FMA(-ki, wb[j], Ri[j]);
            if (gate == BG_CHANNEL || wg) {
                pg += x * Bi[j];
            }
            if (gate) {
                x *= ai;
            }
            if (out) {
                x = DL_FMA(qi, Ds[j], x);
                pq += Bi[j] * D[j];
            }
            wa[j] = DL_FMA(kpi, x, wa[j]);
            Ri[j] = x;
        }
        dk[i] += gr * (ru - (gate == BG_CHANNEL ? ai : 1.0f) * bw);
        if (gate == BG_CHANNEL) {
            dgk[i] += ai * pg;
        } else if (wg) {
            gs += pg;
        }
        if (out) {
            dq[i] += gq * pq;
        }
    }
    if (wg) {
        *dgs = gs;
    }
    for (int j = 0; j < VB; j++) {
        wn[j] = wa[j];
    }
#endif
}

/* dgs NULL: no scalar gate's sum */
static void bk_row(int K, float *R, const float *Sb, const float *ub, const float *wb, const float *wc,
                   const float *kr, float a, const float *av, const float *kp, const float *qp,
                   const float *D, const float *Ds, float *dk, float *dq, float *dgk, float *dgs,
                   float *wn, float gr, float gq, int gate, int out)
{
#define BK_ROW(g, w, o) \
    bk_row_t(K, R, Sb, ub, wb, wc, kr, a, av, kp, qp, D, Ds, dk, dq, dgk, dgs, wn, gr, gq, g, w, o)
    const int wg = dgs != NULL && gate != BG_CHANNEL;
    switch ((gate * 2 + wg) * 2 + (out != 0)) {
    case 0: BK_ROW(BG_NONE, 0, 0); break;
    case 1: BK_ROW(BG_NONE, 0, 1); break;
    case 2: BK_ROW(BG_NONE, 1, 0); break;
    case 3: BK_ROW(BG_NONE, 1, 1); break;
    case 4: BK_ROW(BG_SCALAR, 0, 0); break;
    case 5: BK_ROW(BG_SCALAR, 0, 1); break;
    case 6: BK_ROW(BG_SCALAR, 1, 0); break;
    case 7: BK_ROW(BG_SCALAR, 1, 1); break;
    case 8: BK_ROW(BG_CHANNEL, 0, 0); break;
    default: BK_ROW(BG_CHANNEL, 0, 1); break;
    }
#undef BK_ROW
}

/* Row r-1's output term for the step back over row r, when row r-1 is the last
 * sub-step of a token and do is given: D = s do of that token (zero padded to
 * VB); returns its q row and sets *dq to its dq row (NULL when no output). */
static const float *bk_out(const dl_ctx *c, const lina_delta_grad_in *gi, lina_delta_grad_out *go,
                           int b, int h, int r, int j0, int W, float *D, float **dq)
{
    if (r < 0 || r % c->n != c->n - 1 || !gi->do_) {
        *dq = NULL;
        return NULL;
    }
    const int t = r / c->n;
    const float *dot = LINA_ROW(gi->do_, b, t, h, c->T, c->H, c->V) + j0;
    for (int j = 0; j < VB; j++) {
        D[j] = j < W ? c->s * dot[j] : 0.0f;
    }
    *dq = LINA_ROW(go->dq, b, t, h, c->T, c->H, c->K);
    return dl_q(c, b, t, h);
}

/* The recurrent backward per (b, h) and tile of VB value columns, in three
 * passes: (1) the forward from h0, keeping the state every SEG rows and u of
 * every row; (2) per segment, last first, its states recomputed from the
 * checkpoint and the kept u (one multiply-add per element, no reads); (3) its
 * rows back (bk_row). */
static int dl_bwd_recurrent(const dl_ctx *c, const lina_delta_grad_in *gi,
                            lina_delta_grad_out *go, lina_ws *ws)
{
    const int B = c->B, T = c->T, H = c->H, K = c->K, V = c->V, N = c->N, n = c->n;
    const size_t KV = (size_t)K * V, tile = (size_t)K * VB;
    const int nvb = (V + VB - 1) / VB;
    const int nseg = (N + SEG - 1) / SEG;
    const int lazy = c->g && !c->gk;
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        size_t need = (tile * ((size_t)nseg + SEG + 1) + (size_t)N * VB + ((size_t)SEG + 6) * K +
                       10 * (size_t)VB + SEG + (size_t)T) * sizeof(float);
        float *mem = lina_ws_get(ws, lina_thread_id(), need);
        if (!mem) {
#pragma omp atomic write
            rc = LINA_ENOMEM;
            continue;
        }
        float *ck = mem;                          /* [nseg][K*VB] checkpoints */
        float *Sx = ck + (size_t)nseg * tile;     /* [SEG][K*VB] states before each row of a segment
                                                     (0: in ck; pass 1's running state) */
        float *R = Sx + (size_t)SEG * tile;       /* [K*VB] gradient of the state */
        float *Ua = R + tile;                     /* [N][VB] u of every row */
        float *Av = Ua + (size_t)N * VB;          /* [SEG][K] gk decays of a segment's rows */
        float *an = Av + (size_t)SEG * K, *av = an + K, *kd = av + K; /* [K]: pass 1's decays, decayed key */
        float *zk = kd + K;                       /* [K] zeros */
        float *ab = zk + K;                       /* [K] scratch */
        float *w = ab + K;                        /* [VB] */
        float *wn = w + VB, *ub = wn + VB, *wb = ub + VB, *D = wb + VB, *zv = D + VB;
        float *wc = zv + VB, *Ds = wc + VB;       /* [VB] lazy: the read term's wb, D over R's scale */
        float *Gs = Ds + VB;                      /* [SEG] lazy: the scales of a segment's states */
        float *Ag = Gs + SEG;                     /* [T] exp(g) */
        Gs[0] = 1.0f;
        if (c->g) {
            dl_gates(c, b, h, Ag);
        }
        memset(zk, 0, (size_t)K * sizeof(float));
        memset(ab, 0, (size_t)K * sizeof(float));
        memset(zv, 0, VB * sizeof(float));
        float *dgk = c->gk ? go->dgk : NULL;
        for (int t = 0; t < T; t++) {
            memset(LINA_ROW(go->dq, b, t, h, T, H, K), 0, (size_t)K * sizeof(float));
            if (c->g && go->dg) {
                go->dg[dl_gix(c, b, t, h)] = 0.0f;
            }
            if (dgk) {
                memset(LINA_ROW(dgk, b, t, h, T, H, K), 0, (size_t)K * sizeof(float));
            }
        }
        for (int r = 0; r < N; r++) {
            memset(LINA_ROW(go->dk, b, r, h, N, H, K), 0, (size_t)K * sizeof(float));
            go->dbeta[dl_bix(c, b, r, h)] = 0.0f;
        }
        for (int vb = 0; vb < nvb; vb++) {
            const int j0 = vb * VB, W = V - j0 < VB ? V - j0 : VB;
            /* (1) forward in place in Sx[0], with checkpoints and u */
            tile_load(Sx, c->h0 ? LINA_STATE(c->h0, b, h, H, KV) : NULL, K, V, j0, W);
            tile_dot(K, Sx, dl_kdec(c, b, 0, h, an, kd), w);
            float G = 1.0f; /* lazy: Sx = G S~ */
            for (int r = 0; r < N; r++) {
                if (r % SEG == 0) {
                    memcpy(ck + (size_t)(r / SEG) * tile, Sx, tile * sizeof(float));
                }
                if (r + DL_PF < N) {
                    lina_prefetch_floats(dl_k(c, b, r + DL_PF, h), K);
                    lina_prefetch_floats(dl_v(c, b, r + DL_PF, h) + j0, W);
                }
                const int dec = (c->g || c->gk) && r % n == 0;
                const float a = c->g && dec ? Ag[r / n] : 1.0f;
                float *tmp = av;
                av = an;
                an = tmp;
                const float be = c->beta[dl_bix(c, b, r, h)];
                const float *vr = dl_v(c, b, r, h) + j0;
                float *u = Ua + (size_t)r * VB;
                /* the forward's lazy decay, applied also before each checkpoint */
                const float Gn = lazy ? G * a : a;
                const int apply = lazy ? !dl_lazy_keep(Gn) || ((r == N - 1 || (r + 1) % SEG == 0) && Gn != 1.0f)
                                       : dec;
                const float us = lazy && !apply ? be / Gn : be;
                for (int j = 0; j < W; j++) {
                    u[j] = vr[j] - Gn * w[j];
                    ub[j] = us * u[j];
                }
                for (int j = W; j < VB; j++) {
                    u[j] = ub[j] = 0.0f;
                }
                const int nxt = r + 1 < N;
                rec_row_dispatch(K, Sx, Gn, c->gk ? av : NULL, dl_k(c, b, r, h), ub, NULL, NULL,
                                 nxt ? dl_kdec(c, b, r + 1, h, an, kd) : NULL, w, apply | (nxt << 2));
                G = lazy && !apply ? Gn : 1.0f;
            }
            tile_load(R, gi->dht ? LINA_STATE(gi->dht, b, h, H, KV) : NULL, K, V, j0, W);
            /* the last row's output (Sx holds S_{N-1} after the forward):
             * R += s q dO^T, dq += s S_{N-1} dO, w = R^T k_{N-1} */
            {
                float *dq = NULL;
                const float *qp = bk_out(c, gi, go, b, h, N - 1, j0, W, D, &dq);
                bk_row(K, R, Sx, zv, zv, zv, zk, 1.0f, NULL, dl_k(c, b, N - 1, h), qp, D, D, ab, dq,
                       NULL, NULL, w, 1.0f, 1.0f, BG_NONE, qp != NULL);
            }
            float Gr = 1.0f; /* lazy: the gradient of the state is Gr R (R, w: R~ and R~^T k) */
            for (int sg = nseg - 1; sg >= 0; sg--) {
                const int ts = sg * SEG, te = ts + SEG < N ? ts + SEG : N;
                const float *ckp = ck + (size_t)sg * tile;
#define BK_STATE(m) ((m) == 0 ? ckp : Sx + (size_t)(m) * tile) /* S before row ts + m */
                /* (2) the segment's states */
                for (int r = ts; r < te; r++) {
                    if (c->gk) {
                        lina_vexp(Av + (size_t)(r - ts) * K, LINA_ROW(c->gk, b, r, h, T, H, K),
                                  (size_t)K);
                    }
                    if (r + 1 == te) {
                        break;
                    }
                    if (r + DL_PF + 1 < te) {
                        lina_prefetch_floats(dl_k(c, b, r + DL_PF, h), K);
                    }
                    const int m = r - ts;
                    int gate = c->gk ? BG_CHANNEL : BG_NONE;
                    float Gn = 1.0f, us = c->beta[dl_bix(c, b, r, h)];
                    if (lazy) { /* Sx[m+1] = Gs[m+1] S~ as in pass 1 */
                        Gn = Gs[m] * (r % n == 0 ? Ag[r / n] : 1.0f);
                        if (dl_lazy_keep(Gn)) {
                            us /= Gn;
                            Gs[m + 1] = Gn;
                        } else {
                            gate = BG_SCALAR;
                            Gs[m + 1] = 1.0f;
                        }
                    }
                    const float *u = Ua + (size_t)r * VB;
                    for (int j = 0; j < VB; j++) {
                        ub[j] = us * u[j];
                    }
                    bk_fill(K, BK_STATE(m), Sx + (size_t)(m + 1) * tile, Gn, Av + (size_t)m * K,
                            dl_k(c, b, r, h), ub, gate);
                }
                /* (3) its rows back */
                for (int r = te - 1; r >= ts; r--) {
                    if (r >= DL_PF) {
                        const int rp = r - DL_PF, tp = rp / n;
                        lina_prefetch_floats(dl_k(c, b, rp, h), K);
                        lina_prefetch_floats(LINA_ROW(go->dk, b, rp, h, N, H, K), K);
                        lina_prefetch_floats(LINA_ROW(go->dv, b, rp, h, N, H, V) + j0, W);
                        if (gi->do_) {
                            lina_prefetch_floats(LINA_ROW(gi->do_, b, tp, h, T, H, V) + j0, W);
                            lina_prefetch_floats(dl_q(c, b, tp, h), K);
                            lina_prefetch_floats(LINA_ROW(go->dq, b, tp, h, T, H, K), K);
                        }
                    }
                    const int t = r / n;
                    /* lazy: S_{r-1} = Gb Sb, R's scale Gr to Gn = Gr a over the row, applied
                     * to the tile (BG_SCALAR) when it leaves the bounds and at the first row */
                    const float a = lazy && r % n == 0 ? Ag[t] : 1.0f;
                    const float Gb = lazy ? Gs[r - ts] : 1.0f, Gn = Gr * a;
                    const int apply = lazy && (!dl_lazy_keep(Gn) || (r == 0 && Gn != 1.0f));
                    const int gate = c->gk ? BG_CHANNEL : apply ? BG_SCALAR : BG_NONE;
                    const float be = c->beta[dl_bix(c, b, r, h)];
                    const float *u = Ua + (size_t)r * VB;
                    /* dv = beta w, dbeta = w . u (w = Gr R~^T k) */
                    float *dv = LINA_ROW(go->dv, b, r, h, N, H, V) + j0;
                    float dbe = 0.0f;
#pragma omp simd reduction(+ : dbe)
                    for (int j = 0; j < VB; j++) {
                        dbe += w[j] * u[j];
                        ub[j] = be * u[j];
                        wb[j] = be * w[j];
                    }
                    dbe *= Gr;
                    for (int j = 0; j < W; j++) {
                        dv[j] = Gr * wb[j];
                    }
                    go->dbeta[dl_bix(c, b, r, h)] += dbe;
                    /* the read term's factor and the output term over R's new scale */
                    const float cb = a * Gb;
                    const float *wcp = wb;
                    if (cb != 1.0f) {
                        for (int j = 0; j < VB; j++) {
                            wc[j] = cb * wb[j];
                        }
                        wcp = wc;
                    }
                    /* row r back, fused with row r-1's output and its R^T k */
                    float *dq = NULL;
                    const float *qp = bk_out(c, gi, go, b, h, r - 1, j0, W, D, &dq);
                    const float *Dsp = D;
                    if (qp && lazy && !apply && Gn != 1.0f) {
                        const float ig = 1.0f / Gn;
                        for (int j = 0; j < VB; j++) {
                            Ds[j] = ig * D[j];
                        }
                        Dsp = Ds;
                    }
                    /* the scalar gate's dg_t = a sum(dL/dS' . S_{r-1}) at the token's first row */
                    float dgs = 0.0f;
                    const int wg = lazy && go->dg && r % n == 0;
                    bk_row(K, R, BK_STATE(r - ts), ub, wb, wcp, dl_k(c, b, r, h), Gn,
                           Av + (size_t)(r - ts) * K, r > 0 ? dl_k(c, b, r - 1, h) : zk, qp, D, Dsp,
                           LINA_ROW(go->dk, b, r, h, N, H, K), dq,
                           dgk ? LINA_ROW(dgk, b, t, h, T, H, K) : ab, wg ? &dgs : NULL, wn, Gr, Gb, gate,
                           qp != NULL);
                    if (wg) {
                        go->dg[dl_gix(c, b, t, h)] += a * Gr * Gb * dgs;
                    }
                    if (lazy) {
                        Gr = apply ? 1.0f : Gn;
                    }
                    float *tmp = w;
                    w = wn;
                    wn = tmp;
                }
#undef BK_STATE
            }
            if (go->dh0) {
                tile_store(LINA_STATE(go->dh0, b, h, H, KV), R, K, V, j0, W);
            }
        }
    }
    return rc;
}

/* ======================================================== chunk machinery */

#define GB 16 /* per-channel gate: rows per sub-block of the gated Gram products */

/* per-thread chunk buffers; L x L matrices are stored compactly (ld L) */
typedef struct ck_buf {
    double *bd;  /* [C] cumulative log gate from the chunk start */
    double *db;  /* [C] gradient w.r.t. bd */
    double *xd;  /* [C] exponent scratch */
    double *Ad;  /* [C] one row of A (strictly lower) */
    double *Td;  /* [C*(C+8)] (I + A)^{-1}, rows padded to a multiple of 8 */
    float *bt;   /* [C] beta of the rows */
    float *e;    /* [C] exp(b_r) */
    float *ed;   /* [C] exp(b_{L-1} - b_r) */
    float *Gam;  /* [C*C] exp(b_r - b_c) for c <= r, 0 above */
    float *Xk;   /* [2C*K] rows 0..L-1: k of the chunk; rows L..L+Lo-1: q of its outputs */
    float *G;    /* [2C*C] Xk K^T: K K^T, then Q K^T (becomes P) */
    float *Tm;   /* [C*C] (forward) */
    float *Xb;   /* [2C*K] rows: beta e k (or -beta e k), then s e q */
    float *Y;    /* [2C*V] Xb S_in; rows 0..L-1 become Y (bwd: dY, then dO rows) */
    float *U;    /* [C*V] (forward) */
    float *Kd;   /* [C*K] exp(b_{L-1} - b) k */
    /* per-channel gate (gk) */
    double *bv;  /* [C*K] cumulative log gate per key channel from the chunk start */
    double *xk;  /* [K] exponent scratch */
    float *ek;   /* [K] */
    float *Ys;   /* [C*K] keys of earlier rows rescaled to a sub-block's first row */
    float *Xs;   /* [2*GB*K] a sub-block's keys and queries rescaled to its first row */
    /* backward only */
    float *DB;   /* [(2C+K)*V] rows [2C-Lo-L, 2C-Lo): dY, [2C-Lo, 2C): dO, [2C, 2C+K): dS */
    float *PK;   /* [C*(C+K)] [P^T | diag(ed) K] (ld Lo+K) */
    float *dU;   /* [C*V] */
    float *Z;    /* [2C*K] [dY; dO] S_in^T */
    float *AP;   /* [2C*C] [dY; dO] U^T: rows 0..L-1 = -dA, then dP (becomes M) */
    float *W2;   /* [C*2C] [dGm + dGm^T | s M^T] (ld L+Lo) */
    float *dKd;  /* [C*K] */
    float *dK;   /* [C*K] */
    float *dQ;   /* [C*K] */
    /* backward with the per-channel gate (gk) */
    float *dbv;  /* [C*K] gradient w.r.t. bv */
    float *Ev;   /* [C*K] exp(bv_r) */
    float *Edv;  /* [C*K] exp(bv_{L-1} - bv_r) */
    float *dXs;  /* [2*GB*K] gradient of Xs */
    float *dYs;  /* [C*K] gradient of Ys */
} ck_buf;

/* Lay the buffers out from `base` (NULL: only compute the size in bytes). */
static size_t ck_carve(ck_buf *cb, char *base, int C, int K, int V, int bwd)
{
    size_t off = 0;
    const size_t CC = (size_t)C * C, CK = (size_t)C * K, CV = (size_t)C * V;
#define CARVE(ptr, type, cnt)                                             \
    do {                                                                  \
        cb->ptr = base ? (type *)(void *)(base + off) : NULL;             \
        off += (((cnt) * sizeof(type)) + 63) & ~(size_t)63;               \
    } while (0)
    CARVE(bd, double, (size_t)C);
    CARVE(db, double, (size_t)C);
    CARVE(xd, double, (size_t)C);
    CARVE(Ad, double, (size_t)C);
    CARVE(Td, double, (size_t)C * (C + 8));
    CARVE(bt, float, (size_t)C);
    CARVE(e, float, (size_t)C);
    CARVE(ed, float, (size_t)C);
    CARVE(Gam, float, CC);
    CARVE(Xk, float, 2 * CK);
    CARVE(G, float, 2 * CC);
    CARVE(Tm, float, CC);
    CARVE(Xb, float, 2 * CK);
    CARVE(Y, float, 2 * CV);
    CARVE(U, float, CV);
    CARVE(Kd, float, CK);
    CARVE(bv, double, CK);
    CARVE(xk, double, (size_t)K);
    CARVE(ek, float, (size_t)K);
    CARVE(Ys, float, CK);
    CARVE(Xs, float, 2 * (size_t)GB * K);
    if (bwd) {
        CARVE(DB, float, (2 * (size_t)C + K) * V);
        CARVE(PK, float, (size_t)C * (C + K));
        CARVE(dU, float, CV);
        CARVE(Z, float, 2 * CK);
        CARVE(AP, float, 2 * CC);
        CARVE(W2, float, 2 * CC);
        CARVE(dKd, float, CK);
        CARVE(dK, float, CK);
        CARVE(dQ, float, CK);
        CARVE(dbv, float, CK);
        CARVE(Ev, float, CK);
        CARVE(Edv, float, CK);
        CARVE(dXs, float, 2 * (size_t)GB * K);
        CARVE(dYs, float, CK);
    }
#undef CARVE
    return off;
}

static size_t ck_bytes(int C, int K, int V, int bwd)
{
    ck_buf cb;
    return ck_carve(&cb, NULL, C, K, V, bwd) + 64;
}

/* Chunk [r0, r0+L) of (b,h): beta, cumulative gates b, e = exp(b),
 * ed = exp(b_{L-1} - b), Gam; returns exp(b_{L-1}). */
static float ck_gates(const dl_ctx *c, int b, int h, int r0, int L, ck_buf *cb)
{
    for (int r = 0; r < L; r++) {
        cb->bt[r] = c->beta[dl_bix(c, b, r0 + r, h)];
    }
    if (c->gk) {
        /* per-channel gate: the decays live in bv and enter the Gram products,
         * the scaled rows and the state; Gam is the causal mask */
        lina_chunk_cumgate(LINA_GATE_VECTOR, c->gk, b, h, r0, L, c->T, c->H, c->K, cb->bv);
        for (int r = 0; r < L; r++) {
            float *Gr = cb->Gam + (size_t)r * L;
            for (int cc = 0; cc < L; cc++) {
                Gr[cc] = cc <= r ? 1.0f : 0.0f;
            }
        }
        return 1.0f;
    }
    if (!c->g) {
        for (int r = 0; r < L; r++) {
            cb->bd[r] = 0.0;
            cb->e[r] = 1.0f;
            cb->ed[r] = 1.0f;
            float *Gr = cb->Gam + (size_t)r * L;
            for (int cc = 0; cc <= r; cc++) {
                Gr[cc] = 1.0f;
            }
            for (int cc = r + 1; cc < L; cc++) {
                Gr[cc] = 0.0f;
            }
        }
        return 1.0f;
    }
    if (c->n == 1) {
        lina_chunk_cumgate(LINA_GATE_SCALAR, c->g, b, h, r0, L, c->T, c->H, c->K, cb->bd);
    } else {
        /* the gate sits on the first sub-step of each token only */
        double acc = 0.0;
        for (int r = 0; r < L; r++) {
            acc += dl_gate(c, b, r0 + r, h);
            cb->bd[r] = acc;
        }
    }
    lina_vexp_d(cb->e, cb->bd, (size_t)L);
    const double bL = cb->bd[L - 1];
    for (int r = 0; r < L; r++) {
        cb->xd[r] = bL - cb->bd[r];
    }
    lina_vexp_d(cb->ed, cb->xd, (size_t)L);
    for (int r = 0; r < L; r++) {
        float *Gr = cb->Gam + (size_t)r * L;
        for (int cc = 0; cc <= r; cc++) {
            cb->xd[cc] = cb->bd[r] - cb->bd[cc]; /* <= 0: only the causal half is exponentiated */
        }
        lina_vexp_d(Gr, cb->xd, (size_t)r + 1);
        for (int cc = r + 1; cc < L; cc++) {
            Gr[cc] = 0.0f;
        }
    }
    return cb->e[L - 1];
}

/* Per-channel gate (n = 1, so the chunk's outputs are its rows): the gated
 * Gram products G_rc = k_r.(k_c * exp(bv_r - bv_c)) (rows 0..L-1) and
 * q_r.(k_c * exp(bv_r - bv_c)) (rows L..2L-1), for c <= r, zero above. Per
 * sub-block of GB rows starting at n0, the earlier columns factor through row
 * n0: exp(bv_r - bv_n0) exp(bv_n0 - bv_c), both exponents <= 0, so nothing
 * overflows (one GEMM per sub-block); inside the sub-block the exponent of
 * each pair is taken as it is. */
/* Columns of sub-block [n0, n0+nb) that go through the factored product: the earlier
 * ones (n0), or every column up to the block's end when the block's widest per-channel
 * decay is small enough (below 40 in log space) for exp(bv_n0 - bv_c) of its own rows to
 * stay far inside float's range; then no pair inside the block needs its own exponentials. */
static int ck_block_cols(const ck_buf *cb, int n0, int nb, int K)
{
    const double *b0 = cb->bv + (size_t)n0 * K, *bl = cb->bv + (size_t)(n0 + nb - 1) * K;
    double span = 0.0;
    for (int i = 0; i < K; i++) {
        span = fmax(span, b0[i] - bl[i]);
    }
    return span < 40.0 ? n0 + nb : n0;
}

/* The factored sides of sub-block [n0, n0+nb): rows r of K (and of Q when with_q, else
 * zeros) scaled by exp(bv_r - bv_n0) into Xs (K rows, then Q rows), and columns c < nc of K
 * scaled by exp(bv_n0 - bv_c) into Ys. Both exponents are <= 0 across sub-blocks. */
static void ck_block_sides(int n0, int nb, int nc, int K, int with_q, const float *Kc,
                           const float *Qc, ck_buf *cb)
{
    const double *b0 = cb->bv + (size_t)n0 * K;
    for (int r = 0; r < nb; r++) {
        const double *br = cb->bv + (size_t)(n0 + r) * K;
        for (int i = 0; i < K; i++) {
            cb->xk[i] = br[i] - b0[i];
        }
        lina_vexp_d(cb->ek, cb->xk, (size_t)K);
        const float *kr = Kc + (size_t)(n0 + r) * K, *qr = Qc + (size_t)(n0 + r) * K;
        float *xk = cb->Xs + (size_t)r * K, *xq = cb->Xs + (size_t)(nb + r) * K;
        for (int i = 0; i < K; i++) {
            xk[i] = kr[i] * cb->ek[i];
            xq[i] = with_q ? qr[i] * cb->ek[i] : 0.0f;
        }
    }
    for (int cc = 0; cc < nc; cc++) {
        const double *bc = cb->bv + (size_t)cc * K;
        for (int i = 0; i < K; i++) {
            cb->xk[i] = b0[i] - bc[i];
        }
        lina_vexp_d(cb->ek, cb->xk, (size_t)K);
        const float *kc = Kc + (size_t)cc * K;
        float *y = cb->Ys + (size_t)cc * K;
        for (int i = 0; i < K; i++) {
            y[i] = kc[i] * cb->ek[i];
        }
    }
}

static void ck_gram_gated(int L, int Lo, int K, ck_buf *cb)
{
    const float *Kc = cb->Xk, *Qc = cb->Xk + (size_t)L * K;
    float *Gk = cb->G, *Gq = cb->G + (size_t)L * L;
    for (size_t x = 0; x < (size_t)(L + Lo) * L; x++) {
        cb->G[x] = 0.0f;
    }
    for (int n0 = 0; n0 < L; n0 += GB) {
        const int nb = L - n0 < GB ? L - n0 : GB;
        const int nc = ck_block_cols(cb, n0, nb, K);
        ck_block_sides(n0, nb, nc, K, Lo, Kc, Qc, cb);
        if (nc > 0) {
            lina_sgemm_sm(0, 1, nb, nc, K, 1.0f, cb->Xs, K, cb->Ys, K, 0.0f, Gk + (size_t)n0 * L, L);
            if (Lo) {
                lina_sgemm_sm(0, 1, nb, nc, K, 1.0f, cb->Xs + (size_t)nb * K, K, cb->Ys, K, 0.0f,
                           Gq + (size_t)n0 * L, L);
            }
        }
        if (nc > n0) { /* the block's own pairs came with the product: clear above the diagonal */
            for (int r = n0; r < n0 + nb; r++) {
                for (int cc = r + 1; cc < nc; cc++) {
                    Gk[(size_t)r * L + cc] = 0.0f;
                    if (Lo) {
                        Gq[(size_t)r * L + cc] = 0.0f;
                    }
                }
            }
            continue;
        }
        for (int r = n0; r < n0 + nb; r++) {
            const double *br = cb->bv + (size_t)r * K;
            const float *kr = Kc + (size_t)r * K, *qr = Qc + (size_t)r * K;
            for (int cc = n0; cc <= r; cc++) {
                const double *bc = cb->bv + (size_t)cc * K;
                for (int i = 0; i < K; i++) {
                    cb->xk[i] = br[i] - bc[i];
                }
                lina_vexp_d(cb->ek, cb->xk, (size_t)K);
                const float *kc = Kc + (size_t)cc * K;
                float sk = 0.0f, sq = 0.0f;
                if (Lo) {
#pragma omp simd reduction(+ : sk, sq)
                    for (int i = 0; i < K; i++) {
                        const float w = kc[i] * cb->ek[i];
                        sk += kr[i] * w;
                        sq += qr[i] * w;
                    }
                    Gq[(size_t)r * L + cc] = sq;
                } else {
#pragma omp simd reduction(+ : sk)
                    for (int i = 0; i < K; i++) {
                        sk += kr[i] * kc[i] * cb->ek[i];
                    }
                }
                Gk[(size_t)r * L + cc] = sk;
            }
        }
    }
}

/* Copy the chunk's keys (rows 0..L-1) and its outputs' queries (rows L..L+Lo-1,
 * tokens ta..ta+Lo-1) into Xk, then G = Xk K^T ((L+Lo) x L). */
static void ck_gram(const dl_ctx *c, int b, int h, int r0, int L, int ta, int Lo, ck_buf *cb)
{
    const int K = c->K;
    for (int r = 0; r < L; r++) {
        memcpy(cb->Xk + (size_t)r * K, dl_k(c, b, r0 + r, h), (size_t)K * sizeof(float));
    }
    for (int o = 0; o < Lo; o++) {
        memcpy(cb->Xk + (size_t)(L + o) * K, dl_q(c, b, ta + o, h), (size_t)K * sizeof(float));
    }
    if (c->gk) {
        ck_gram_gated(L, Lo, K, cb);
        return;
    }
    lina_sgemm_sm(0, 1, L + Lo, L, K, 1.0f, cb->Xk, K, cb->Xk, K, 0.0f, cb->G, L);
}

/* Tm = (I + A)^{-1}, A = strictly-lower(diag(beta) (K K^T * Gam)), by forward
 * substitution in double: row r of Tm is e_r - sum_{c<r} A_rc Tm_c. Rows of
 * Td are zero past the diagonal and padded to a multiple of 8, so each update
 * runs over whole vectors. */
static void ck_solve(int L, ck_buf *cb, float *Tm)
{
    const int ldt = (L + 7) & ~7;
    double *Td = cb->Td;
    for (int r = 0; r < L; r++) {
        const float *Gr = cb->G + (size_t)r * L, *Rr = cb->Gam + (size_t)r * L;
        const double br = cb->bt[r];
        double *Ar = cb->Ad, *Tr = Td + (size_t)r * ldt;
        for (int cc = 0; cc < r; cc++) {
            Ar[cc] = br * (double)Gr[cc] * (double)Rr[cc];
        }
        for (int x = 0; x < ldt; x++) {
            Tr[x] = 0.0;
        }
        int cc = 0;
        /* four source rows per pass: fewer round trips of Tr through memory */
        for (; cc + 4 <= r; cc += 4) {
            const double a0 = Ar[cc], a1 = Ar[cc + 1], a2 = Ar[cc + 2], a3 = Ar[cc + 3];
            const double *T0 = Td + (size_t)cc * ldt, *T1 = T0 + ldt, *T2 = T1 + ldt, *T3 = T2 + ldt;
            const int xe = (cc + 11) & ~7; /* rows cc..cc+3 are zero from cc+4 on */
            for (int x = 0; x < xe; x++) {
                Tr[x] -= fma(a0, T0[x], fma(a1, T1[x], fma(a2, T2[x], a3 * T3[x])));
            }
        }
        for (; cc < r; cc++) {
            const double a = Ar[cc];
            const double *Tc = Td + (size_t)cc * ldt;
            const int xe = (cc + 8) & ~7; /* Tc is zero from cc+1 on */
            for (int x = 0; x < xe; x++) {
                Tr[x] -= a * Tc[x];
            }
        }
        Tr[r] = 1.0;
        float *Tf = Tm + (size_t)r * L;
        for (int x = 0; x < L; x++) {
            Tf[x] = (float)Tr[x];
        }
    }
}

/* Y = diag(beta) V - Kb S_in (rows 0..L-1; rows L.. = s e q S_in when Lo > 0),
 * U = Tm Y. Xb rows: beta e k, then s e_rho q. */
static void ck_u(const dl_ctx *c, int b, int h, int r0, int L, int ta, int Lo, const float *S,
                 const float *Tm, ck_buf *cb, float *U)
{
    const int K = c->K, V = c->V, n = c->n;
    if (c->gk) {
        /* rows beta exp(bv_r) k_r, then s exp(bv_r) q_r (n = 1: output o is row o) */
        for (int r = 0; r < L; r++) {
            lina_vexp_d(cb->ek, cb->bv + (size_t)r * K, (size_t)K);
            const float fb = cb->bt[r];
            const float *x = cb->Xk + (size_t)r * K, *xq = cb->Xk + (size_t)(L + r) * K;
            float *y = cb->Xb + (size_t)r * K, *yq = cb->Xb + (size_t)(L + r) * K;
            for (int i = 0; i < K; i++) {
                y[i] = fb * cb->ek[i] * x[i];
            }
            for (int i = 0; r < Lo && i < K; i++) {
                yq[i] = c->s * cb->ek[i] * xq[i];
            }
        }
    }
    for (int r = 0; r < L && !c->gk; r++) {
        const float f = cb->bt[r] * cb->e[r];
        const float *x = cb->Xk + (size_t)r * K;
        float *y = cb->Xb + (size_t)r * K;
        for (int i = 0; i < K; i++) {
            y[i] = f * x[i];
        }
    }
    for (int o = 0; o < Lo && !c->gk; o++) {
        const int rho = (ta + o) * n + n - 1 - r0;
        const float f = c->s * cb->e[rho];
        const float *x = cb->Xk + (size_t)(L + o) * K;
        float *y = cb->Xb + (size_t)(L + o) * K;
        for (int i = 0; i < K; i++) {
            y[i] = f * x[i];
        }
    }
    lina_sgemm_sm(0, 0, L + Lo, V, K, 1.0f, cb->Xb, K, S, V, 0.0f, cb->Y, V);
    for (int r = 0; r < L; r++) {
        const float bt = cb->bt[r];
        const float *v = dl_v(c, b, r0 + r, h);
        float *y = cb->Y + (size_t)r * V;
        for (int j = 0; j < V; j++) {
            y[j] = bt * v[j] - y[j];
        }
    }
    lina_sgemm_sm(0, 0, L, V, L, 1.0f, Tm, L, cb->Y, V, 0.0f, U, V);
}

/* Sout = exp(b_{L-1}) Sin + (diag(ed) K)^T U (Sout may be Sin) */
static void ck_state(const dl_ctx *c, int L, float eL, const float *U, ck_buf *cb,
                     const float *Sin, float *Sout)
{
    const int K = c->K, V = c->V;
    const size_t KV = (size_t)K * V;
    const float *Kd = cb->Xk;
    if (c->gk) {
        /* Sout = diag(exp(bv_{L-1})) Sin + (K * exp(bv_{L-1} - bv))^T U */
        const double *bL = cb->bv + (size_t)(L - 1) * K;
        lina_vexp_d(cb->ek, bL, (size_t)K);
        for (int i = 0; i < K; i++) {
            const float f = cb->ek[i];
            for (int j = 0; j < V; j++) {
                Sout[(size_t)i * V + j] = f * Sin[(size_t)i * V + j];
            }
        }
        for (int r = 0; r < L; r++) {
            const double *br = cb->bv + (size_t)r * K;
            for (int i = 0; i < K; i++) {
                cb->xk[i] = bL[i] - br[i];
            }
            lina_vexp_d(cb->ek, cb->xk, (size_t)K);
            const float *x = cb->Xk + (size_t)r * K;
            float *y = cb->Kd + (size_t)r * K;
            for (int i = 0; i < K; i++) {
                y[i] = cb->ek[i] * x[i];
            }
        }
        Kd = cb->Kd;
    } else if (c->g) {
        for (size_t x = 0; x < KV; x++) {
            Sout[x] = eL * Sin[x];
        }
        for (int r = 0; r < L; r++) {
            const float f = cb->ed[r];
            const float *x = cb->Xk + (size_t)r * K;
            float *y = cb->Kd + (size_t)r * K;
            for (int i = 0; i < K; i++) {
                y[i] = f * x[i];
            }
        }
        Kd = cb->Kd;
    } else if (Sout != Sin) {
        memcpy(Sout, Sin, KV * sizeof(float));
    }
    lina_sgemm_sm(1, 0, K, V, L, 1.0f, Kd, K, U, V, 1.0f, Sout, V);
}

/* output tokens of chunk [r0, r0+L): [*ta, *ta + return) */
static inline int ck_outputs(int r0, int L, int n, int *ta)
{
    *ta = r0 / n;
    return (r0 + L) / n - *ta;
}

/* ======================================================= packed documents */

/* cu_seqlens (B = 1): document j is tokens [cu[j], cu[j+1]) (rows n times those),
 * the B = 1 sequence of its own rows with its own h0 / ht / dh0 / dht row of
 * [n_docs,H,K,V] and its own cache (at coff[j]: H * ck_cache_per_bh of its rows).
 * Its chunks start at its first row; the chunk forms take (document, head) pairs
 * from one parallel loop, longest document first. */
typedef struct dl_docs {
    const int64_t *cu;
    int n;              /* documents */
    const int *ord;     /* [n] longest first */
    const size_t *coff; /* [n] start of each document's cache */
} dl_docs;

/* pair `it` = (ord[it / H], it % H): the document's context; returns h */
static int dl_doc_view(const dl_docs *docs, int it, const dl_ctx *c0, dl_ctx *c, int *j)
{
    const int H = c0->H, K = c0->K, d = docs->ord[it / H];
    const size_t t = (size_t)docs->cu[d] * H, r = t * c0->n;
    *c = *c0;
    c->B = 1;
    c->T = (int)(docs->cu[d + 1] - docs->cu[d]);
    c->N = c->T * c0->n;
    c->q = c0->q + t * K;
    c->k = c0->k + r * K;
    c->v = c0->v + r * c0->V;
    c->beta = c0->beta + r;
    c->g = c0->g ? c0->g + t : NULL;
    c->gk = c0->gk ? c0->gk + t * K : NULL;
    c->h0 = c0->h0 ? c0->h0 + (size_t)d * H * K * c0->V : NULL;
    *j = d;
    return it % H;
}

static int dl_doc_fwd(const dl_docs *docs, int it, const dl_ctx *c0, dl_ctx *c, float **o, float **ht, float **cache)
{
    int d;
    const int h = dl_doc_view(docs, it, c0, c, &d);
    *o += (size_t)docs->cu[d] * c0->H * c0->V;
    *ht = *ht ? *ht + (size_t)d * c0->H * c0->K * c0->V : NULL;
    *cache = *cache ? *cache + docs->coff[d] : NULL;
    return h;
}

static int dl_doc_bwd(const dl_docs *docs, int it, const dl_ctx *c0, const lina_delta_grad_in *gi0,
                      const lina_delta_grad_out *go0, dl_ctx *c, lina_delta_grad_in *gi, lina_delta_grad_out *go)
{
    int d;
    const int h = dl_doc_view(docs, it, c0, c, &d), H = c0->H, K = c0->K, V = c0->V;
    const size_t t = (size_t)docs->cu[d] * H, r = t * c0->n, st = (size_t)d * H * K * V;
    *gi = *gi0;
    gi->do_ = gi0->do_ ? gi0->do_ + t * V : NULL;
    gi->dht = gi0->dht ? gi0->dht + st : NULL;
    gi->cache = gi0->cache ? gi0->cache + docs->coff[d] : NULL;
    *go = *go0;
    go->dq = go0->dq + t * K;
    go->dk = go0->dk + r * K;
    go->dv = go0->dv + r * V;
    go->dbeta = go0->dbeta + r;
    go->dg = go0->dg ? go0->dg + t : NULL;
    go->dgk = go0->dgk ? go0->dgk + t * K : NULL;
    go->dh0 = go0->dh0 ? go0->dh0 + st : NULL;
    return h;
}

/* ========================================================== chunk forward */

/* floats of the cache per (b,h): [nC+1][K,V] chunk-start states, [N,V] U,
 * [nC][C*C] Tm */
static size_t ck_cache_per_bh(const dl_ctx *c)
{
    const size_t nC = ((size_t)c->N + c->C - 1) / c->C;
    return (nC + 1) * c->K * c->V + (size_t)c->N * c->V + nC * c->C * c->C;
}

/* One chunk [r0, r0+L) of (b,h) forward: Tm [L,L], U [L,V] from S_in, the
 * outputs of the chunk's tokens (when o is set) and S_out (may be S_in). */
/* Returns 1 when probe is set and the output probe (lina_delta_out.finite) of the rows
 * written here fails, else 0. */
static int ck_forward(const dl_ctx *c, int b, int h, int r0, int L, const float *Sin,
                      float *Sout, float *U, float *Tm, float *o, int probe, ck_buf *cb)
{
    const int T = c->T, H = c->H, V = c->V, n = c->n;
    int ta = 0, bad = 0;
    const int Lo = o ? ck_outputs(r0, L, n, &ta) : 0;
    const float eL = ck_gates(c, b, h, r0, L, cb);
    ck_gram(c, b, h, r0, L, ta, Lo, cb);
    ck_solve(L, cb, Tm);
    ck_u(c, b, h, r0, L, ta, Lo, Sin, Tm, cb, U);
    if (Lo > 0) {
        /* P = s (Q K^T) * Gam[rho] (masked); O = s e Q S_in + P U (rows L.. of Y) */
        float *P = cb->G + (size_t)L * L, *Oc = cb->Y + (size_t)L * V;
        for (int oo = 0; oo < Lo; oo++) {
            const int rho = (ta + oo) * n + n - 1 - r0;
            const float *Gr = cb->Gam + (size_t)rho * L;
            float *Pr = P + (size_t)oo * L;
            for (int cc = 0; cc < L; cc++) {
                Pr[cc] = c->s * Pr[cc] * Gr[cc];
            }
        }
        lina_sgemm_sm(0, 0, Lo, V, L, 1.0f, P, L, U, V, 1.0f, Oc, V);
        for (int oo = 0; oo < Lo; oo++) {
            memcpy(LINA_ROW(o, b, ta + oo, h, T, H, V), Oc + (size_t)oo * V, (size_t)V * sizeof(float));
        }
        if (probe) {
            bad = !lina_probe_finite(Oc, (size_t)Lo, (size_t)V) ||
                  (ta + Lo == T && !lina_probe_finite(Oc + (size_t)(Lo - 1) * V, (size_t)V, 1));
        }
    }
    ck_state(c, L, eL, U, cb, Sin, Sout);
    return bad;
}

static int dl_fwd_chunk(const dl_ctx *c0, float *o0, float *ht0, float *cache0, int *finite, const dl_docs *docs,
                        lina_ws *ws)
{
    const int H = c0->H, K = c0->K, V = c0->V, C = c0->C;
    const size_t KV = (size_t)K * V;
    const int nit = docs ? docs->n * H : c0->B * H;
    int rc = LINA_OK, probe_bad = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < nit; it++) {
        dl_ctx cd;
        const dl_ctx *c = c0;
        float *o = o0, *ht = ht0, *cache = cache0;
        int pbad = 0; /* the output probe (finite) of this task's rows */
        const int bh = docs ? dl_doc_fwd(docs, it, c0, &cd, &o, &ht, &cache) : it;
        if (docs) {
            c = &cd;
        }
        const int N = c->N, nC = (N + C - 1) / C, b = bh / H, h = bh % H;
        const size_t per = ck_cache_per_bh(c);
        const size_t cbb = ck_bytes(C, K, V, 0);
        char *mem = lina_ws_get(ws, lina_thread_id(), cbb + KV * sizeof(float));
        if (!mem) {
#pragma omp atomic write
            rc = LINA_ENOMEM;
            continue;
        }
        ck_buf cb;
        ck_carve(&cb, mem, C, K, V, 0);
        float *S = (float *)(void *)(mem + cbb); /* [K,V] running state (no cache) */
        float *St = cache ? cache + (size_t)bh * per : NULL; /* [nC+1][K,V] */
        float *Ua = St ? St + ((size_t)nC + 1) * KV : NULL;  /* [N,V] */
        float *Ta = Ua ? Ua + (size_t)N * V : NULL;          /* [nC][C*C] */
        if (St) {
            S = St;
        }
        if (c->h0) {
            memcpy(S, LINA_STATE(c->h0, b, h, H, KV), KV * sizeof(float));
        } else {
            memset(S, 0, KV * sizeof(float));
        }
        for (int ci = 0; ci < nC; ci++) {
            const int r0 = ci * C, L = N - r0 < C ? N - r0 : C;
            if (St) {
                pbad |= ck_forward(c, b, h, r0, L, St + (size_t)ci * KV, St + (size_t)(ci + 1) * KV,
                                   Ua + (size_t)r0 * V, Ta + (size_t)ci * C * C, o, finite != NULL, &cb);
            } else {
                pbad |= ck_forward(c, b, h, r0, L, S, S, cb.U, cb.Tm, o, finite != NULL, &cb);
            }
        }
        if (ht) {
            memcpy(LINA_STATE(ht, b, h, H, KV), St ? St + (size_t)nC * KV : S, KV * sizeof(float));
        }
        if (pbad) {
#pragma omp atomic write
            probe_bad = 1;
        }
    }
    if (probe_bad && finite) {
        *finite = 0;
    }
    return rc;
}

/* ================================= chunk backward, per-channel gate (gk) */

/* The adjoint of ck_gram_gated: given dGk (d of the gated K K^T, strictly lower) and dGq
 * (d of the gated Q K^T, lower with the diagonal), both L x L with ld L, add to dK, dQ
 * [L,K] and dbv [L,K]. A pair (r, c) term x_r.(k_c exp(bv_r - bv_c)) gives its row side
 * +term and its column side -term per channel in dbv. Across sub-blocks the products
 * factor through the block's first row n0 as in the forward (the n0 parts cancel in
 * dbv); inside a block each pair is taken as it is. */
static void ck_gram_gated_bwd(int L, int K, const float *dGk, const float *dGq, ck_buf *cb)
{
    const float *Kc = cb->Xk, *Qc = cb->Xk + (size_t)L * K;
    float *dK = cb->dK, *dQ = cb->dQ, *dbv = cb->dbv;
    for (int n0 = 0; n0 < L; n0 += GB) {
        const int nb = L - n0 < GB ? L - n0 : GB;
        const double *b0 = cb->bv + (size_t)n0 * K;
        const int nc = ck_block_cols(cb, n0, nb, K);
        if (nc > 0) {
            ck_block_sides(n0, nb, nc, K, 1, Kc, Qc, cb);
            const float *gk = dGk + (size_t)n0 * L, *gq = dGq + (size_t)n0 * L;
            lina_sgemm_sm(0, 0, nb, K, nc, 1.0f, gk, L, cb->Ys, K, 0.0f, cb->dXs, K);
            lina_sgemm_sm(0, 0, nb, K, nc, 1.0f, gq, L, cb->Ys, K, 0.0f, cb->dXs + (size_t)nb * K, K);
            lina_sgemm_sm(1, 0, nc, K, nb, 1.0f, gk, L, cb->Xs, K, 0.0f, cb->dYs, K);
            lina_sgemm_sm(1, 0, nc, K, nb, 1.0f, gq, L, cb->Xs + (size_t)nb * K, K, 1.0f, cb->dYs, K);
            for (int r = 0; r < nb; r++) {
                const double *br = cb->bv + (size_t)(n0 + r) * K;
                for (int i = 0; i < K; i++) {
                    cb->xk[i] = br[i] - b0[i];
                }
                lina_vexp_d(cb->ek, cb->xk, (size_t)K);
                const float *xk = cb->Xs + (size_t)r * K, *xq = cb->Xs + (size_t)(nb + r) * K;
                const float *dxk = cb->dXs + (size_t)r * K, *dxq = cb->dXs + (size_t)(nb + r) * K;
                float *dkr = dK + (size_t)(n0 + r) * K, *dqr = dQ + (size_t)(n0 + r) * K;
                float *dbr = dbv + (size_t)(n0 + r) * K;
#pragma omp simd
                for (int i = 0; i < K; i++) {
                    dkr[i] += dxk[i] * cb->ek[i];
                    dqr[i] += dxq[i] * cb->ek[i];
                    dbr[i] += xk[i] * dxk[i] + xq[i] * dxq[i];
                }
            }
            for (int cc = 0; cc < nc; cc++) {
                const double *bc = cb->bv + (size_t)cc * K;
                for (int i = 0; i < K; i++) {
                    cb->xk[i] = b0[i] - bc[i];
                }
                lina_vexp_d(cb->ek, cb->xk, (size_t)K);
                const float *y = cb->Ys + (size_t)cc * K, *dy = cb->dYs + (size_t)cc * K;
                float *dkc = dK + (size_t)cc * K, *dbc = dbv + (size_t)cc * K;
#pragma omp simd
                for (int i = 0; i < K; i++) {
                    dkc[i] += dy[i] * cb->ek[i];
                    dbc[i] -= y[i] * dy[i];
                }
            }
        }
        for (int r = n0; r < n0 + nb && nc == n0; r++) { /* the block's own pairs, one by one */
            const double *br = cb->bv + (size_t)r * K;
            const float *kr = Kc + (size_t)r * K, *qr = Qc + (size_t)r * K;
            float *dkr = dK + (size_t)r * K, *dqr = dQ + (size_t)r * K, *dbr = dbv + (size_t)r * K;
            for (int cc = n0; cc <= r; cc++) {
                const float gk = dGk[(size_t)r * L + cc], gq = dGq[(size_t)r * L + cc];
                if (gk == 0.0f && gq == 0.0f) {
                    continue;
                }
                const double *bc = cb->bv + (size_t)cc * K;
                for (int i = 0; i < K; i++) {
                    cb->xk[i] = br[i] - bc[i];
                }
                lina_vexp_d(cb->ek, cb->xk, (size_t)K);
                const float *kc = Kc + (size_t)cc * K;
                float *dkc = dK + (size_t)cc * K, *dbc = dbv + (size_t)cc * K;
#pragma omp simd
                for (int i = 0; i < K; i++) {
                    const float e = cb->ek[i], w = kc[i] * e, u = e * (gk * kr[i] + gq * qr[i]);
                    dkr[i] += gk * w;
                    dqr[i] += gq * w;
                    dkc[i] += u;
                    const float t = kc[i] * u;
                    dbr[i] += t;
                    dbc[i] -= t;
                }
            }
        }
    }
}

/* One chunk [r0, r0+L) of (b,h) backward with the per-channel gate (n = 1: row r is
 * token r0 + r). With e_r = exp(bv_r), ed_r = exp(bv_{L-1} - bv_r) per channel:
 *   Kb = diag(beta) (e * K), Qe = s (e * Q), Kd = ed * K,
 *   A = strictly-lower(diag(beta) Gk), P = s Gq (Gk, Gq the gated Gram products),
 *   U = (I + A)^{-1} (diag(beta) V - Kb S_in),  O = Qe S_in + P U,
 *   S_out = diag(exp(bv_{L-1})) S_in + Kd^T U.
 * The backward follows dl_bwd_chunk's with these rows: dU = P^T dO + Kd dS,
 * dY = Tm^T dU, dA = -dY U^T, dP = dO U^T, [-dKb; dQe] = [dY; dO] S_in^T,
 * dKd = U dS^T, dS_in = diag(exp(bv_{L-1})) dS - Kb^T dY + Qe^T dO; the Gram
 * products' adjoint (ck_gram_gated_bwd) takes dGk = diag(beta) dA and dGq = s dP.
 * Every exponent is a difference of the per-channel cumulative gate bv, whose
 * gradient dbv is summed backwards over the chunk's rows into dgk. dS is updated
 * in place to the gradient of S_in. */
static void ck_bwd_gated(const dl_ctx *c, int b, int h, int r0, int L, const float *Sin, const float *U,
                         const float *Tm, const lina_delta_grad_in *gi, lina_delta_grad_out *go, float *dS,
                         ck_buf *cb)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V, C = c->C, N = c->N;
    const float s = c->s;
    const int Lo = L, ldp = L + K;
    (void)ck_gates(c, b, h, r0, L, cb);
    ck_gram(c, b, h, r0, L, r0, Lo, cb);
    const float *Kc = cb->Xk, *Qc = cb->Xk + (size_t)L * K;
    float *Gq = cb->G + (size_t)L * L;
    float *dOc = cb->DB + (size_t)(2 * C - Lo) * V; /* [dO; dS] back to back */
    float *dY = dOc - (size_t)L * V;
    float *PK = cb->PK, *dA = cb->AP, *dP = cb->AP + (size_t)L * L;
    float *dGk = cb->W2, *dGq = cb->W2 + (size_t)L * L;
    const double *bL = cb->bv + (size_t)(L - 1) * K;
    for (int r = 0; r < L; r++) {
        const double *br = cb->bv + (size_t)r * K;
        lina_vexp_d(cb->Ev + (size_t)r * K, br, (size_t)K);
        for (int i = 0; i < K; i++) {
            cb->xk[i] = bL[i] - br[i];
        }
        lina_vexp_d(cb->Edv + (size_t)r * K, cb->xk, (size_t)K);
        const float *k = Kc + (size_t)r * K, *ed = cb->Edv + (size_t)r * K;
        float *y = PK + (size_t)r * ldp + Lo;
        for (int i = 0; i < K; i++) {
            y[i] = ed[i] * k[i];
        }
    }
    for (int oo = 0; oo < Lo; oo++) {
        const float *Gr = Gq + (size_t)oo * L;
        for (int cc = 0; cc < L; cc++) {
            PK[(size_t)cc * ldp + oo] = s * Gr[cc];
        }
        if (gi->do_) {
            memcpy(dOc + (size_t)oo * V, LINA_ROW(gi->do_, b, r0 + oo, h, T, H, V), (size_t)V * sizeof(float));
        } else {
            memset(dOc + (size_t)oo * V, 0, (size_t)V * sizeof(float));
        }
    }
    /* dU = [P^T | Kd] [dO; dS]; dY = Tm^T dU; [-dA; dP] = [dY; dO] U^T; Z = [dY; dO] S_in^T;
       dKd = U dS^T */
    lina_sgemm_sm(0, 0, L, V, Lo + K, 1.0f, PK, ldp, dOc, V, 0.0f, cb->dU, V);
    lina_sgemm_sm(1, 0, L, V, L, 1.0f, Tm, L, cb->dU, V, 0.0f, dY, V);
    lina_sgemm_sm(0, 1, L + Lo, L, V, 1.0f, dY, V, U, V, 0.0f, cb->AP, L);
    lina_sgemm_sm(0, 1, L + Lo, K, V, 1.0f, dY, V, Sin, V, 0.0f, cb->Z, K);
    lina_sgemm_sm(0, 1, L, K, V, 1.0f, U, V, dS, V, 0.0f, cb->dKd, K);
    float *dbv = cb->dbv;
    memset(dbv, 0, (size_t)L * K * sizeof(float));
    memset(cb->dQ, 0, (size_t)L * K * sizeof(float));
    /* the decay of S_in: dbv_{L-1} += exp(bv_{L-1}) rowsum(S_in * dS) */
    lina_vexp_d(cb->ek, bL, (size_t)K);
    for (int i = 0; i < K; i++) {
        const float *Si = Sin + (size_t)i * V, *Di = dS + (size_t)i * V;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int j = 0; j < V; j++) {
            acc += Si[j] * Di[j];
        }
        dbv[(size_t)(L - 1) * K + i] += cb->ek[i] * acc;
    }
    /* per row: dv, dbeta, dk and dbv from Kb (dKb = -Z) and Kd */
    float *dbL = dbv + (size_t)(L - 1) * K;
    for (int r = 0; r < L; r++) {
        const float bt = cb->bt[r];
        const float *v = dl_v(c, b, r0 + r, h), *k = Kc + (size_t)r * K;
        const float *er = cb->Ev + (size_t)r * K, *edr = cb->Edv + (size_t)r * K;
        const float *dy = dY + (size_t)r * V, *z = cb->Z + (size_t)r * K, *dkd = cb->dKd + (size_t)r * K;
        float *dv = LINA_ROW(go->dv, b, r0 + r, h, N, H, V);
        float *dk = cb->dK + (size_t)r * K, *dbr = dbv + (size_t)r * K;
        float vdy = 0.0f, kz = 0.0f;
#pragma omp simd reduction(+ : vdy)
        for (int j = 0; j < V; j++) {
            dv[j] = bt * dy[j];
            vdy += v[j] * dy[j];
        }
#pragma omp simd reduction(+ : kz)
        for (int i = 0; i < K; i++) {
            const float ekz = er[i] * k[i] * z[i], kd = edr[i] * k[i] * dkd[i];
            kz += ekz;
            dk[i] = -bt * er[i] * z[i] + edr[i] * dkd[i];
            dbr[i] -= bt * ekz + kd;
            dbL[i] += kd;
        }
        go->dbeta[dl_bix(c, b, r0 + r, h)] = vdy - kz;
    }
    /* dA (AP rows 0..L-1 hold -dA): dbeta += sum_c dA_rc Gk_rc; dGk = diag(beta) dA; dGq = s dP */
    for (int r = 0; r < L; r++) {
        const float bt = cb->bt[r];
        const float *Gr = cb->G + (size_t)r * L, *dAr = dA + (size_t)r * L, *dPr = dP + (size_t)r * L;
        float *wk = dGk + (size_t)r * L, *wq = dGq + (size_t)r * L;
        float dbe = 0.0f;
        for (int cc = 0; cc < r; cc++) {
            const float da = -dAr[cc];
            dbe += da * Gr[cc];
            wk[cc] = bt * da;
        }
        for (int cc = r; cc < L; cc++) {
            wk[cc] = 0.0f;
        }
        for (int cc = 0; cc <= r; cc++) {
            wq[cc] = s * dPr[cc];
        }
        for (int cc = r + 1; cc < L; cc++) {
            wq[cc] = 0.0f;
        }
        go->dbeta[dl_bix(c, b, r0 + r, h)] += dbe;
    }
    ck_gram_gated_bwd(L, K, dGk, dGq, cb);
    /* Qe = s e Q: dq = dQ + s e dQe, dbv += s e q dQe (dQe = Z rows L..) */
    for (int oo = 0; oo < Lo; oo++) {
        const float *z = cb->Z + (size_t)(L + oo) * K, *q = Qc + (size_t)oo * K, *er = cb->Ev + (size_t)oo * K;
        const float *dqm = cb->dQ + (size_t)oo * K;
        float *dq = LINA_ROW(go->dq, b, r0 + oo, h, T, H, K), *dbr = dbv + (size_t)oo * K;
#pragma omp simd
        for (int i = 0; i < K; i++) {
            const float f = s * er[i] * z[i];
            dq[i] = dqm[i] + f;
            dbr[i] += f * q[i];
        }
    }
    for (int r = 0; r < L; r++) {
        memcpy(LINA_ROW(go->dk, b, r0 + r, h, N, H, K), cb->dK + (size_t)r * K, (size_t)K * sizeof(float));
    }
    /* dS_in = diag(exp(bv_{L-1})) dS + [-Kb; Qe]^T [dY; dO] */
    for (int r = 0; r < L; r++) {
        const float fb = -cb->bt[r];
        const float *k = Kc + (size_t)r * K, *q = Qc + (size_t)r * K, *er = cb->Ev + (size_t)r * K;
        float *yk = cb->Xb + (size_t)r * K, *yq = cb->Xb + (size_t)(L + r) * K;
        for (int i = 0; i < K; i++) {
            yk[i] = fb * er[i] * k[i];
            yq[i] = s * er[i] * q[i];
        }
    }
    lina_vexp_d(cb->ek, bL, (size_t)K);
    for (int i = 0; i < K; i++) {
        const float f = cb->ek[i];
        float *Di = dS + (size_t)i * V;
        for (int j = 0; j < V; j++) {
            Di[j] *= f;
        }
    }
    lina_sgemm_sm(1, 0, K, V, L + Lo, 1.0f, cb->Xb, K, dY, V, 1.0f, dS, V);
    /* dgk: the reverse cumulative sum of dbv inside the chunk */
    if (go->dgk) {
        float *acc = cb->ek;
        memset(acc, 0, (size_t)K * sizeof(float));
        for (int r = L - 1; r >= 0; r--) {
            const float *dbr = dbv + (size_t)r * K;
            float *dg = LINA_ROW(go->dgk, b, r0 + r, h, T, H, K);
            for (int i = 0; i < K; i++) {
                acc[i] += dbr[i];
                dg[i] = acc[i];
            }
        }
    }
}

/* ========================================================= chunk backward */

/*
 * Per chunk, going backwards with dS = gradient of S_out (starting at dht):
 *   dU  = P^T dO + diag(ed) K dS            dY = Tm^T dU
 *   dA  = -dY U^T (strictly lower)          [dKb; X] = [dY; dO] S_in^T  (dKb = -(...))
 *   dP  = dO U^T (masked), M = dP * Gam     dKd = U dS^T
 *   dv  = beta dY;  dbeta = v.dY + e k.dKb + sum_c dA_rc (K K^T * Gam)_rc
 *   dk  = beta e dKb + ed dKd + (dGm + dGm^T) K + s M^T Q,  dGm = dA beta Gam
 *   dq  = s e X + s M K
 *   dS_in = exp(b_{L-1}) dS + (s e Q)^T dO - (beta e K)^T dY
 * and the gradient of the cumulative gate b (in double):
 *   db_r += beta_r e_r k_r.dKb_r + rowsum(dA*A)_r - colsum(dA*A)_r
 *         + rowsum(dP*P)_rho - colsum(dP*P)_r + s e_rho q.X (at output rows)
 *         - ed_r k_r.dKd_r (+ their sum and exp(b_{L-1}) sum(S_in dS) at r = L-1),
 * then dgamma_r = sum_{r' >= r} db_r' and dg_t = dgamma at the token's first row.
 * dY, dO and dS sit back to back in one buffer so that [P^T | Kd][dO; dS],
 * [dY; dO] U^T, [dY; dO] S_in^T and [-Kb; s e Q]^T [dY; dO] are single GEMMs.
 */
static int dl_bwd_chunk(const dl_ctx *c0, const lina_delta_grad_in *gi0, lina_delta_grad_out *go0,
                        const dl_docs *docs, lina_ws *ws)
{
    const int H = c0->H, K = c0->K, V = c0->V, C = c0->C, n = c0->n;
    const size_t KV = (size_t)K * V;
    const float s = c0->s;
    const int nit = docs ? docs->n * H : c0->B * H;
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int it = 0; it < nit; it++) {
        dl_ctx cd;
        lina_delta_grad_in gd;
        lina_delta_grad_out od;
        const dl_ctx *c = c0;
        const lina_delta_grad_in *gi = gi0;
        lina_delta_grad_out *go = go0;
        const int bh = docs ? dl_doc_bwd(docs, it, c0, gi0, go0, &cd, &gd, &od) : it;
        if (docs) {
            c = &cd, gi = &gd, go = &od;
        }
        const int T = c->T, N = c->N, nC = (N + C - 1) / C, b = bh / H, h = bh % H;
        const size_t cbb = ck_bytes(C, K, V, 1);
        const size_t per = ck_cache_per_bh(c);
        char *mem = lina_ws_get(ws, lina_thread_id(), cbb + (gi->cache ? 0 : per * sizeof(float)) + 256);
        if (!mem) {
#pragma omp atomic write
            rc = LINA_ENOMEM;
            continue;
        }
        ck_buf cb;
        ck_carve(&cb, mem, C, K, V, 1);
        float *own = (float *)(void *)(mem + cbb);
        const float *St = gi->cache ? gi->cache + (size_t)bh * per : own; /* [nC+1][K,V] chunk starts */
        const float *Ua = St + ((size_t)nC + 1) * KV;                      /* [N,V] U of every row */
        const float *Ta = Ua + (size_t)N * V;                              /* [nC][C*C] Tm per chunk */
        float *dS = cb.DB + (size_t)2 * C * V;    /* [K,V] gradient of the state */
        if (!gi->cache) {
            /* 1. forward over chunks: states, U, Tm */
            float *Sw = own, *Uw = own + ((size_t)nC + 1) * KV, *Tw = Uw + (size_t)N * V;
            if (c->h0) {
                memcpy(Sw, LINA_STATE(c->h0, b, h, H, KV), KV * sizeof(float));
            } else {
                memset(Sw, 0, KV * sizeof(float));
            }
            for (int ci = 0; ci < nC; ci++) {
                const int r0 = ci * C, L = N - r0 < C ? N - r0 : C;
                ck_forward(c, b, h, r0, L, Sw + (size_t)ci * KV, Sw + (size_t)(ci + 1) * KV,
                           Uw + (size_t)r0 * V, Tw + (size_t)ci * C * C, NULL, 0, &cb);
            }
        }
        /* 2. backward over chunks */
        if (gi->dht) {
            memcpy(dS, LINA_STATE(gi->dht, b, h, H, KV), KV * sizeof(float));
        } else {
            memset(dS, 0, KV * sizeof(float));
        }
        for (int ci = nC - 1; ci >= 0; ci--) {
            const int r0 = ci * C, L = N - r0 < C ? N - r0 : C;
            const float *Tm = Ta + (size_t)ci * C * C, *U = Ua + (size_t)r0 * V;
            const float *Sin = St + (size_t)ci * KV;
            if (c->gk) {
                ck_bwd_gated(c, b, h, r0, L, Sin, U, Tm, gi, go, dS, &cb);
                continue;
            }
            int ta;
            const int Lo = ck_outputs(r0, L, n, &ta);
            const float eL = ck_gates(c, b, h, r0, L, &cb);
            ck_gram(c, b, h, r0, L, ta, Lo, &cb);
            const float *Kc = cb.Xk, *Qc = cb.Xk + (size_t)L * K;
            float *P = cb.G + (size_t)L * L;                      /* [Lo,L] */
            float *dOc = cb.DB + (size_t)(2 * C - Lo) * V;        /* [Lo,V] */
            float *dY = dOc - (size_t)L * V;                      /* [L,V] */
            const int ldp = Lo + K, ldw = L + Lo;
            float *PK = cb.PK, *W2 = cb.W2;
            float *dA = cb.AP, *M = cb.AP + (size_t)L * L;        /* [L,L] (negated), [Lo,L] */
            for (int oo = 0; oo < Lo; oo++) {
                const int rho = (ta + oo) * n + n - 1 - r0;
                const float *Gr = cb.Gam + (size_t)rho * L;
                float *Pr = P + (size_t)oo * L;
                for (int cc = 0; cc < L; cc++) {
                    const float p = s * Pr[cc] * Gr[cc];
                    Pr[cc] = p;
                    PK[(size_t)cc * ldp + oo] = p;
                }
                if (gi->do_) {
                    memcpy(dOc + (size_t)oo * V, LINA_ROW(gi->do_, b, ta + oo, h, T, H, V),
                           (size_t)V * sizeof(float));
                } else {
                    memset(dOc + (size_t)oo * V, 0, (size_t)V * sizeof(float));
                }
            }
            for (int r = 0; r < L; r++) {
                const float f = cb.ed[r];
                const float *x = Kc + (size_t)r * K;
                float *y = PK + (size_t)r * ldp + Lo;
                for (int i = 0; i < K; i++) {
                    y[i] = f * x[i];
                }
            }
            /* dU = [P^T | Kd] [dO; dS]; dY = Tm^T dU */
            lina_sgemm_sm(0, 0, L, V, Lo + K, 1.0f, PK, ldp, dOc, V, 0.0f, cb.dU, V);
            lina_sgemm_sm(1, 0, L, V, L, 1.0f, Tm, L, cb.dU, V, 0.0f, dY, V);
            /* [-dA; dP] = [dY; dO] U^T; [dY; dO] S_in^T; dKd = U dS^T */
            lina_sgemm_sm(0, 1, L + Lo, L, V, 1.0f, dY, V, U, V, 0.0f, cb.AP, L);
            lina_sgemm_sm(0, 1, L + Lo, K, V, 1.0f, dY, V, Sin, V, 0.0f, cb.Z, K);
            lina_sgemm_sm(0, 1, L, K, V, 1.0f, U, V, dS, V, 0.0f, cb.dKd, K);
            double *db = cb.db;
            for (int r = 0; r < L; r++) {
                db[r] = 0.0;
            }
            if (c->g) {
                double fin = 0.0;
                for (int i = 0; i < K; i++) {
                    const float *Si = Sin + (size_t)i * V, *Di = dS + (size_t)i * V;
                    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                    for (int j = 0; j < V; j++) {
                        acc += Si[j] * Di[j];
                    }
                    fin += acc;
                }
                db[L - 1] += (double)eL * fin;
            }
            /* per row: dv, dbeta, dk (dKb and dKd parts), db */
            for (int r = 0; r < L; r++) {
                const float bt = cb.bt[r], er = cb.e[r], edr = cb.ed[r];
                const float *v = dl_v(c, b, r0 + r, h), *k = Kc + (size_t)r * K;
                const float *dy = dY + (size_t)r * V, *z = cb.Z + (size_t)r * K;
                const float *dkd = cb.dKd + (size_t)r * K;
                float *dv = LINA_ROW(go->dv, b, r0 + r, h, N, H, V);
                float *dk = cb.dK + (size_t)r * K;
                float vdy = 0.0f, kz = 0.0f, kdk = 0.0f;
#pragma omp simd reduction(+ : vdy)
                for (int j = 0; j < V; j++) {
                    dv[j] = bt * dy[j];
                    vdy += v[j] * dy[j];
                }
                const float fb = -bt * er;
#pragma omp simd reduction(+ : kz, kdk)
                for (int i = 0; i < K; i++) {
                    kz += k[i] * z[i];
                    kdk += k[i] * dkd[i];
                    dk[i] = fb * z[i] + edr * dkd[i];
                }
                /* dKb = -Z: dbeta += e k.dKb, db += beta e k.dKb */
                go->dbeta[dl_bix(c, b, r0 + r, h)] = vdy - er * kz;
                if (c->g) {
                    db[r] -= (double)bt * er * kz;
                    const double zc = (double)edr * kdk;
                    db[L - 1] += zc;
                    db[r] -= zc;
                }
            }
            /* dA (stored negated): dbeta, db, symmetric dGm into W2[:, 0..L) */
            for (int r = 0; r < L; r++) {
                const float bt = cb.bt[r];
                const float *Gr = cb.G + (size_t)r * L, *Rr = cb.Gam + (size_t)r * L;
                const float *dAr = dA + (size_t)r * L;
                float *Wr = W2 + (size_t)r * ldw;
                float dbe = 0.0f, zr = 0.0f;
                for (int cc = 0; cc < r; cc++) {
                    const float ga = Gr[cc] * Rr[cc], da = -dAr[cc];
                    dbe += da * ga;
                    if (c->g) {
                        const float zz = da * bt * ga;
                        zr += zz;
                        db[cc] -= zz;
                    }
                    Wr[cc] = da * bt * Rr[cc];
                }
                Wr[r] = 0.0f;
                db[r] += zr;
                go->dbeta[dl_bix(c, b, r0 + r, h)] += dbe;
            }
            for (int r = 0; r < L; r++) {
                float *Wr = W2 + (size_t)r * ldw;
                for (int cc = r + 1; cc < L; cc++) {
                    Wr[cc] = W2[(size_t)cc * ldw + r];
                }
            }
            /* dP: M = dP * Gam (masked), db; s M^T into W2[:, L..L+Lo) */
            for (int oo = 0; oo < Lo; oo++) {
                const int rho = (ta + oo) * n + n - 1 - r0;
                const float *Gr = cb.Gam + (size_t)rho * L, *Pr = P + (size_t)oo * L;
                float *Mr = M + (size_t)oo * L;
                if (c->g) {
                    float zr = 0.0f;
                    for (int cc = 0; cc <= rho; cc++) {
                        const float zz = Mr[cc] * Pr[cc];
                        zr += zz;
                        db[cc] -= zz;
                    }
                    db[rho] += zr;
                }
                for (int cc = 0; cc < L; cc++) {
                    const float m = Mr[cc] * Gr[cc];
                    Mr[cc] = m;
                    W2[(size_t)cc * ldw + L + oo] = s * m;
                }
            }
            /* dK += [dGm + dGm^T | s M^T] [K; Q]; dQ = s M K + s e X */
            lina_sgemm_sm(0, 0, L, K, L + Lo, 1.0f, W2, ldw, cb.Xk, K, 1.0f, cb.dK, K);
            lina_sgemm_sm(0, 0, Lo, K, L, s, M, L, Kc, K, 0.0f, cb.dQ, K);
            for (int oo = 0; oo < Lo; oo++) {
                const int rho = (ta + oo) * n + n - 1 - r0;
                const float f = s * cb.e[rho];
                const float *x = cb.Z + (size_t)(L + oo) * K, *q = Qc + (size_t)oo * K;
                float *dq = LINA_ROW(go->dq, b, ta + oo, h, T, H, K);
                const float *dqm = cb.dQ + (size_t)oo * K;
                float qx = 0.0f;
#pragma omp simd reduction(+ : qx)
                for (int i = 0; i < K; i++) {
                    dq[i] = dqm[i] + f * x[i];
                    qx += q[i] * x[i];
                }
                if (c->g) {
                    db[rho] += (double)f * qx;
                }
            }
            for (int r = 0; r < L; r++) {
                memcpy(LINA_ROW(go->dk, b, r0 + r, h, N, H, K), cb.dK + (size_t)r * K,
                       (size_t)K * sizeof(float));
            }
            /* dS_in = eL dS + [-beta e K; s e Q]^T [dY; dO] */
            for (int r = 0; r < L; r++) {
                const float f = -cb.bt[r] * cb.e[r];
                const float *x = Kc + (size_t)r * K;
                float *y = cb.Xb + (size_t)r * K;
                for (int i = 0; i < K; i++) {
                    y[i] = f * x[i];
                }
            }
            for (int oo = 0; oo < Lo; oo++) {
                const int rho = (ta + oo) * n + n - 1 - r0;
                const float f = s * cb.e[rho];
                const float *x = Qc + (size_t)oo * K;
                float *y = cb.Xb + (size_t)(L + oo) * K;
                for (int i = 0; i < K; i++) {
                    y[i] = f * x[i];
                }
            }
            lina_sgemm_sm(1, 0, K, V, L + Lo, 1.0f, cb.Xb, K, dY, V, eL, dS, V);
            /* gate gradient: reverse cumulative sum of db inside the chunk */
            if (c->g && go->dg) {
                double acc = 0.0;
                for (int r = L - 1; r >= 0; r--) {
                    acc += db[r];
                    if ((r0 + r) % n == 0) {
                        go->dg[dl_gix(c, b, (r0 + r) / n, h)] = (float)acc;
                    }
                }
            }
        }
        if (go->dh0) {
            memcpy(LINA_STATE(go->dh0, b, h, H, KV), dS, KV * sizeof(float));
        }
    }
    return rc;
}

/* ================================================================ public */

int LINA_KFN(lina_delta_fwd)(const lina_mix_dims *d, const lina_delta_in *in, lina_delta_out *out,
                             lina_form form, lina_ws *ws)
{
    dl_ctx c;
    int rc = dl_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "delta: output o is NULL");
    }
    if (out->finite) {
        *out->finite = 1;
    }
    if (c.N == 0) {
        if (out->ht) {
            size_t nb = (size_t)c.B * c.H * c.K * c.V * sizeof(float);
            if (c.h0) {
                memmove(out->ht, c.h0, nb); /* ht may be h0 */
            } else {
                memset(out->ht, 0, nb);
            }
        }
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    if (form == LINA_FORM_RECURRENT) {
        rc = dl_fwd_recurrent(&c, out->o, out->ht, out->finite, sc.ws);
    } else {
        rc = dl_fwd_chunk(&c, out->o, out->ht, out->cache, out->finite, NULL, sc.ws);
    }
    lina_ws_scope_close(&sc);
    if (rc) {
        return lina_set_error(rc, "delta: out of memory");
    }
    return LINA_OK;
}

#if LINA_ISA_PRIMARY
size_t lina_delta_cache_floats(const lina_mix_dims *d, int n)
{
    if (!d || d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return 0;
    }
    dl_ctx c = {0};
    c.K = d->K;
    c.V = d->V;
    c.N = d->T * (n > 0 ? n : 1);
    c.C = lina_chunk_len(d->chunk, d->K);
    return (size_t)d->B * d->H * ck_cache_per_bh(&c);
}
#endif

int LINA_KFN(lina_delta_bwd)(const lina_mix_dims *d, const lina_delta_in *in,
                             const lina_delta_grad_in *gin, lina_delta_grad_out *gout,
                             lina_form form, lina_ws *ws)
{
    dl_ctx c;
    int rc = dl_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gout || !gout->dq || !gout->dk || !gout->dv || !gout->dbeta) {
        return lina_set_error(LINA_EINVAL, "delta: gradient outputs dq, dk, dv, dbeta are required");
    }
    if (c.N == 0) {
        if (gout->dh0) {
            size_t nb = (size_t)c.B * c.H * c.K * c.V * sizeof(float);
            if (gin->dht) {
                memcpy(gout->dh0, gin->dht, nb);
            } else {
                memset(gout->dh0, 0, nb);
            }
        }
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    if (form == LINA_FORM_RECURRENT) {
        rc = dl_bwd_recurrent(&c, gin, gout, sc.ws);
    } else {
        rc = dl_bwd_chunk(&c, gin, gout, NULL, sc.ws);
    }
    lina_ws_scope_close(&sc);
    if (rc) {
        return lina_set_error(rc, "delta: out of memory");
    }
    return LINA_OK;
}

/* ------------------------------------------------- packed documents (public) */

static int dl_docs_open(const dl_ctx *c, const int64_t *cu, int64_t ncu, dl_docs *docs)
{
    int *ord = NULL;
    int rc = lina_docs_order("delta", c->B, c->T, cu, ncu, &ord);
    if (rc) {
        return rc;
    }
    const int n = (int)(ncu - 1);
    size_t *coff = malloc((size_t)n * sizeof(size_t));
    if (!coff) {
        free(ord);
        return lina_set_error(LINA_ENOMEM, "delta: out of memory (%d documents)", n);
    }
    size_t at = 0;
    for (int j = 0; j < n; j++) {
        dl_ctx cj = *c;
        cj.N = (int)(cu[j + 1] - cu[j]) * c->n;
        coff[j] = at;
        at += (size_t)c->H * ck_cache_per_bh(&cj);
    }
    docs->cu = cu;
    docs->n = n;
    docs->ord = ord;
    docs->coff = coff;
    return LINA_OK;
}

static void dl_docs_close(dl_docs *docs)
{
    free((void *)docs->ord);
    free((void *)docs->coff);
}

/* a varlen call's context, documents and workspace (dl_docs_end releases them);
 * `bad`: the message for missing outputs, or NULL */
static int dl_docs_begin(dl_ctx *c, dl_docs *docs, lina_ws_scope *sc, const lina_mix_dims *d,
                         const lina_delta_in *in, const char *bad, const int64_t *cu, int64_t ncu, lina_ws *ws)
{
    int rc = dl_setup(c, d, in);
    if (rc || bad) {
        return rc ? rc : lina_set_error(LINA_EINVAL, "delta: %s", bad);
    }
    if ((rc = dl_docs_open(c, cu, ncu, docs)) == 0 && (rc = lina_ws_scope_open(sc, ws, lina_get_threads())) != 0) {
        dl_docs_close(docs);
    }
    return rc;
}

static int dl_docs_end(dl_docs *docs, lina_ws_scope *sc, int rc)
{
    lina_ws_scope_close(sc);
    dl_docs_close(docs);
    return rc ? lina_set_error(rc, "delta: out of memory") : LINA_OK;
}

int LINA_KFN(lina_delta_fwd_varlen)(const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_delta_in *in,
                                    lina_delta_out *out, lina_form form, lina_ws *ws)
{
    dl_ctx c;
    dl_docs docs;
    lina_ws_scope sc;
    int rc = dl_docs_begin(&c, &docs, &sc, d, in, !out || !out->o ? "output o is NULL" : NULL, cu, ncu, ws);
    if (rc) {
        return rc;
    }
    if (out->finite) {
        *out->finite = 1;
    }
    if (form == LINA_FORM_RECURRENT) { /* one document after another, each parallel over its heads */
        for (int j = 0; j < docs.n && !rc; j++) {
            dl_ctx cd;
            float *o = out->o, *ht = out->ht, *cache = NULL;
            dl_doc_fwd(&docs, j * c.H, &c, &cd, &o, &ht, &cache);
            rc = dl_fwd_recurrent(&cd, o, ht, out->finite, sc.ws);
        }
    } else {
        rc = dl_fwd_chunk(&c, out->o, out->ht, out->cache, out->finite, &docs, sc.ws);
    }
    return dl_docs_end(&docs, &sc, rc);
}

int LINA_KFN(lina_delta_bwd_varlen)(const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_delta_in *in,
                                    const lina_delta_grad_in *gin, lina_delta_grad_out *gout, lina_form form,
                                    lina_ws *ws)
{
    dl_ctx c;
    dl_docs docs;
    lina_ws_scope sc;
    int rc = dl_docs_begin(&c, &docs, &sc, d, in,
                           !gin || !gout || !gout->dq || !gout->dk || !gout->dv || !gout->dbeta
                               ? "gradient outputs dq, dk, dv, dbeta are required"
                               : NULL,
                           cu, ncu, ws);
    if (rc) {
        return rc;
    }
    if (form == LINA_FORM_RECURRENT) {
        for (int j = 0; j < docs.n && !rc; j++) {
            dl_ctx cd;
            lina_delta_grad_in gd;
            lina_delta_grad_out od;
            dl_doc_bwd(&docs, j * c.H, &c, gin, gout, &cd, &gd, &od);
            rc = dl_bwd_recurrent(&cd, &gd, &od, sc.ws);
        }
    } else {
        rc = dl_bwd_chunk(&c, gin, gout, &docs, sc.ws);
    }
    return dl_docs_end(&docs, &sc, rc);
}

#if LINA_ISA_PRIMARY
size_t lina_delta_cache_floats_varlen(const lina_mix_dims *d, int n, const int64_t *cu, int64_t ncu)
{
    size_t tot = 0;
    for (int64_t j = 0; j + 1 < ncu; j++) {
        lina_mix_dims dj = *d;
        dj.B = 1;
        dj.T = (int)(cu[j + 1] - cu[j]);
        tot += lina_delta_cache_floats(&dj, n);
    }
    return tot;
}

LINA_ISA_DISPATCH(int, lina_delta_fwd_varlen,
                  (const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_delta_in *in,
                   lina_delta_out *out, lina_form form, lina_ws *ws),
                  (d, cu, ncu, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_delta_bwd_varlen,
                  (const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_delta_in *in,
                   const lina_delta_grad_in *gin, lina_delta_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, cu, ncu, in, gin, gout, form, ws))
#endif

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_delta_fwd,
                  (const lina_mix_dims *d, const lina_delta_in *in, lina_delta_out *out,
                   lina_form form, lina_ws *ws),
                  (d, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_delta_bwd,
                  (const lina_mix_dims *d, const lina_delta_in *in, const lina_delta_grad_in *gin,
                   lina_delta_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, in, gin, gout, form, ws))

/* ================================================ ops for `lina op` / bench */

enum { DL_DELTA = 0, DL_GATED, DL_PRODUCT, DL_KDA };

#define DL_BENCH_N 2 /* delta_product sub-steps in benchmark inputs (FLA layer default) */

/* y = x / sqrt(sum x^2 + 1e-6) per row of D (y may alias x) */
static void l2n_fwd(size_t rows, int D, const float *x, float *y)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) {
            ss += (double)xr[i] * xr[i];
        }
        const double inv = 1.0 / sqrt(ss + 1e-6);
        float *yr = y + r * D;
        for (int i = 0; i < D; i++) {
            yr[i] = (float)(xr[i] * inv);
        }
    }
}

/* in place: d (= dy on entry) <- (dy - y (y . dy)) / sqrt(sum x^2 + 1e-6) */
static void l2n_bwd(size_t rows, int D, const float *x, float *d)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        float *dr = d + r * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) {
            ss += (double)xr[i] * xr[i];
        }
        const double inv = 1.0 / sqrt(ss + 1e-6);
        double yd = 0.0;
        for (int i = 0; i < D; i++) {
            yd += xr[i] * inv * dr[i];
        }
        for (int i = 0; i < D; i++) {
            dr[i] = (float)((dr[i] - xr[i] * inv * yd) * inv);
        }
    }
}

static int dl_op_run(int variant, const lina_tset *in, lina_tset *out, const lina_op_opts *o,
                     lina_ws *ws)
{
    const int prod = variant == DL_PRODUCT, kda = variant == DL_KDA;
    /* kda: v, beta, g, h0 on J value heads (J a multiple of the H q/k heads) */
    const char *sv = prod ? "BNHV" : kda ? "BTJV" : "BTHV", *sb = prod ? "BNH" : kda ? "BTJ" : "BTH";
    const char *sh = kda ? "BJKV" : "BHKV", *so = kda ? "BTJV" : "BTHV";
    lina_binds bd;
    lina_binds_init(&bd);
    int err = 0;
    /* N: rows of k, v, beta (T*n for delta_product, T otherwise) */
    const lina_tensor *q = lina_op_input(in, "q", "BTHK", &bd, 0, &err);
    const lina_tensor *k = err ? NULL : lina_op_input(in, "k", prod ? "BNHK" : "BTHK", &bd, 0, &err);
    const lina_tensor *v = err ? NULL : lina_op_input(in, "v", sv, &bd, 0, &err);
    const lina_tensor *beta = err ? NULL : lina_op_input(in, "beta", sb, &bd, 0, &err);
    const lina_tensor *g = NULL, *h0 = NULL, *dO = NULL, *dht = NULL;
    if (!err && variant != DL_DELTA) {
        g = lina_op_input(in, "g", kda ? "BTJK" : "BTH", &bd, prod, &err);
    } else if (!err && lina_tset_cfind(in, "g")) {
        return lina_set_error(LINA_EINVAL, "g.npy is not an input of delta_rule (use gated_delta_rule)");
    }
    if (!err) {
        h0 = lina_op_input(in, "h0", sh, &bd, 1, &err);
    }
    if (!err && o->backward) {
        dO = lina_op_input(in, "do", so, &bd, 0, &err);
        dht = err ? NULL : lina_op_input(in, "dht", sh, &bd, 1, &err);
    }
    if (err) {
        return err;
    }
    if (g) {
        int64_t ng = lina_op_trusted() ? 0 : lina_tensor_numel(g);
        for (int64_t i = 0; i < ng; i++) {
            if (g->data[i] > 0.0f) {
                return lina_set_error(LINA_EINVAL,
                                      "g.npy must hold log decays <= 0 (found %g at index %lld)",
                                      (double)g->data[i], (long long)i);
            }
        }
    }
    const int64_t T = bd.v['T' - 'A'], Hq = bd.v['H' - 'A'];
    const int64_t Hv = kda ? bd.v['J' - 'A'] : Hq;
    int64_t n = 1;
    if (prod) {
        const int64_t N = bd.v['N' - 'A'];
        if (T == 0 ? N != 0 : (N % T != 0 || N == 0)) {
            return lina_set_error(LINA_EINVAL,
                                  "k.npy has %lld rows per sequence, which is not n*T for an "
                                  "integer n >= 1 (q.npy gives T=%lld)",
                                  (long long)N, (long long)T);
        }
        n = T == 0 ? 1 : N / T;
    }
    if (T * n > 0x7fffffffLL || bd.v['B' - 'A'] > 0x7fffffffLL || Hv > 0x7fffffffLL ||
        bd.v['K' - 'A'] > 0x7fffffffLL || bd.v['V' - 'A'] > 0x7fffffffLL) {
        return lina_set_error(LINA_EINVAL, "dimensions too large (T*n, B, H, K or V above 2^31)");
    }
    if (bd.v['B' - 'A'] == 0 || Hq == 0 || Hv == 0 || bd.v['K' - 'A'] == 0 || bd.v['V' - 'A'] == 0) {
        return lina_set_error(LINA_EINVAL, "B, H, K and V must be positive");
    }
    if (Hv % Hq != 0) {
        return lina_set_error(LINA_EINVAL,
                              "v.npy has %lld heads, which is not a multiple of the %lld heads of q.npy",
                              (long long)Hv, (long long)Hq);
    }
    const int G = (int)(Hv / Hq);
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)T, (int)Hv, (int)bd.v['K' - 'A'],
                       (int)bd.v['V' - 'A'], o->chunk, 0.0f};
    lina_delta_in din = {q->data, k->data, v->data, beta->data, g && !kda ? g->data : NULL,
                         h0 ? h0->data : NULL, (int)n, kda ? g->data : NULL};
    /* The wrapper's own scratch (the chunk cache for --backward, the
     * normalised q and k for --qk-l2norm, q and k repeated over grouped value
     * heads) lives in one workspace slot past the per-thread slots the
     * kernels use, so repeated calls reuse it. */
    const size_t nqe = (size_t)lina_tensor_numel(q), nke = (size_t)lina_tensor_numel(k);
    const size_t ncache = o->backward && o->form == LINA_FORM_CHUNK ? lina_delta_cache_floats(&d, (int)n) : 0;
    const size_t nqk = o->qk_l2norm ? nqe + nke : 0;
    const size_t nrep = G > 1 ? (nqe + nke) * (size_t)G * (o->backward ? 2 : 1) : 0;
    const int slot = lina_ws_extra_slot();
    lina_ws_scope sc;
    int rc = lina_ws_scope_open(&sc, ws, slot + 1);
    if (rc) {
        return rc;
    }
    float *extra = NULL;
    if (ncache + nqk + nrep > 0) {
        extra = lina_ws_get(sc.ws, slot, (ncache + nqk + nrep) * sizeof(float));
        if (!extra) {
            rc = LINA_ENOMEM;
            goto done;
        }
    }
    float *cache = ncache ? extra : NULL;          /* [lina_delta_cache_floats] */
    if (o->qk_l2norm) {
        float *qn = extra + ncache, *kn = qn + nqe; /* shapes of q, k */
        l2n_fwd(nqe / (size_t)d.K, d.K, q->data, qn);
        l2n_fwd(nke / (size_t)d.K, d.K, k->data, kn);
        din.q = qn;
        din.k = kn;
    }
    float *rq = NULL, *rk = NULL; /* [B,T,Hv,K] q, k per value head (G > 1) */
    const size_t BT = (size_t)d.B * (size_t)T;
    if (G > 1) {
        rq = extra + ncache + nqk;
        rk = rq + nqe * (size_t)G;
        lina_op_heads_repeat(BT, (int)Hq, G, d.K, din.q, rq);
        lina_op_heads_repeat(BT, (int)Hq, G, d.K, din.k, rk);
        din.q = rq;
        din.k = rk;
    }
    float *po = lina_op_output(out, "o", so, &bd);
    float *pht = lina_op_output(out, "ht", sh, &bd);
    if (!po || !pht) {
        rc = LINA_ENOMEM;
        goto done;
    }
    lina_delta_out dout = {.o = po, .ht = pht, .cache = cache};
    if ((rc = lina_delta_fwd(&d, &din, &dout, o->form, sc.ws))) {
        goto done;
    }
    if (o->backward) {
        const char *ks = prod ? "BNHK" : "BTHK";
        float *pdq = lina_op_output(out, "dq", "BTHK", &bd);
        float *pdk = lina_op_output(out, "dk", ks, &bd);
        float *pdv = lina_op_output(out, "dv", sv, &bd);
        float *pdb = lina_op_output(out, "dbeta", sb, &bd);
        float *pdg = g ? lina_op_output(out, "dg", kda ? "BTJK" : "BTH", &bd) : NULL;
        float *pdh0 = h0 ? lina_op_output(out, "dh0", sh, &bd) : NULL;
        if (!pdq || !pdk || !pdv || !pdb || (g && !pdg) || (h0 && !pdh0)) {
            rc = LINA_ENOMEM;
            goto done;
        }
        float *gq = G > 1 ? rk + nke * (size_t)G : pdq, *gk = G > 1 ? gq + nqe * (size_t)G : pdk;
        lina_delta_grad_in gin = {dO->data, dht ? dht->data : NULL, cache};
        lina_delta_grad_out gout = {gq, gk, pdv, pdb, kda ? NULL : pdg, pdh0, kda ? pdg : NULL};
        if ((rc = lina_delta_bwd(&d, &din, &gin, &gout, o->form, sc.ws))) {
            goto done;
        }
        if (G > 1) {
            lina_op_heads_reduce(BT, (int)Hq, G, d.K, gq, pdq);
            lina_op_heads_reduce(BT, (int)Hq, G, d.K, gk, pdk);
        }
        if (o->qk_l2norm) {
            l2n_bwd(nqe / (size_t)d.K, d.K, q->data, pdq);
            l2n_bwd(nke / (size_t)d.K, d.K, k->data, pdk);
        }
    }
done:
    lina_ws_scope_close(&sc);
    if (rc && !lina_last_error()[0]) {
        lina_set_error(rc, "out of memory");
    }
    return rc;
}

static int run_delta_rule(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    return dl_op_run(DL_DELTA, in, out, o, ws);
}
static int run_gated_delta_rule(const lina_tset *in, lina_tset *out, const lina_op_opts *o,
                                lina_ws *ws)
{
    return dl_op_run(DL_GATED, in, out, o, ws);
}
static int run_delta_product(const lina_tset *in, lina_tset *out, const lina_op_opts *o,
                             lina_ws *ws)
{
    return dl_op_run(DL_PRODUCT, in, out, o, ws);
}
static int run_kda(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    return dl_op_run(DL_KDA, in, out, o, ws);
}

/* Benchmark inputs: L2-normalised q, k; v ~ N(0,1); beta ~ U(0,1) (delta_product:
 * U(0,2), n = DL_BENCH_N, with the gate); g ~ U(-0.5, -0.01). */
static int dl_make_inputs(int variant, const lina_mix_dims *d, int backward, uint64_t seed,
                          lina_tset *in)
{
    uint64_t rng = seed;
    const int n = variant == DL_PRODUCT ? DL_BENCH_N : 1;
    const int64_t N = (int64_t)d->T * n;
    int64_t sq[4] = {d->B, d->T, d->H, d->K}, sk[4] = {d->B, N, d->H, d->K};
    int64_t sv[4] = {d->B, N, d->H, d->V}, sb[3] = {d->B, N, d->H}, sg[3] = {d->B, d->T, d->H};
    int64_t so[4] = {d->B, d->T, d->H, d->V};
    int rc = lina_bench_tensor(in, "q", 4, sq, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "beta", 3, sb, &rng, 0.0f, variant == DL_PRODUCT ? 2.0f : 1.0f, 0);
    int64_t sgk[4] = {d->B, d->T, d->H, d->K};
    if (!rc && variant != DL_DELTA) {
        rc = lina_bench_tensor(in, "g", variant == DL_KDA ? 4 : 3, variant == DL_KDA ? sgk : sg, &rng, -0.5f,
                               -0.01f, 0);
    }
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, so, &rng, 0, 1, 1);
    }
    if (!rc) {
        lina_tensor *tq = lina_tset_find(in, "q"), *tk = lina_tset_find(in, "k");
        l2n_fwd((size_t)(lina_tensor_numel(tq) / d->K), d->K, tq->data, tq->data);
        l2n_fwd((size_t)(lina_tensor_numel(tk) / d->K), d->K, tk->data, tk->data);
    }
    return rc;
}

static int mk_delta_rule(const lina_mix_dims *d, int bw, uint64_t s, lina_tset *in)
{
    return dl_make_inputs(DL_DELTA, d, bw, s, in);
}
static int mk_gated_delta_rule(const lina_mix_dims *d, int bw, uint64_t s, lina_tset *in)
{
    return dl_make_inputs(DL_GATED, d, bw, s, in);
}
static int mk_delta_product(const lina_mix_dims *d, int bw, uint64_t s, lina_tset *in)
{
    return dl_make_inputs(DL_PRODUCT, d, bw, s, in);
}
static int mk_kda(const lina_mix_dims *d, int bw, uint64_t s, lina_tset *in)
{
    return dl_make_inputs(DL_KDA, d, bw, s, in);
}

/* B*H*rows*(5CK + 3CV + 6KV), rows = T (T*n for delta_product; the benchmark
 * inputs have n = DL_BENCH_N); C = 64 without --chunk, whatever chunk the engine
 * picks (a fixed measure of the work, as dd_flops) */
static double dl_flops_rows(const lina_mix_dims *d, const lina_op_opts *o, int n)
{
    const double C = o->chunk > 0 ? o->chunk : 64, K = d->K, V = d->V;
    if (o->form == LINA_FORM_RECURRENT) {
        return 7.0 * d->B * d->H * d->T * n * K * V; /* recurrent: 7*B*H*(T*n)*K*V */
    }
    return (double)d->B * d->H * d->T * n * (5 * C * K + 3 * C * V + 6 * K * V);
}
static double dl_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    return dl_flops_rows(d, o, 1);
}

static double dl_flops_product(const lina_mix_dims *d, const lina_op_opts *o)
{
    return dl_flops_rows(d, o, DL_BENCH_N);
}

const lina_op_info lina_op_delta_rule = {
    "delta_rule", "DeltaNet: h_t = (I - beta k k^T) h_{t-1} + beta k v^T", {"--qk-l2norm", NULL},
    run_delta_rule, mk_delta_rule, dl_flops};
const lina_op_info lina_op_gated_delta_rule = {
    "gated_delta_rule", "Gated DeltaNet: h_t = exp(g) (I - beta k k^T) h_{t-1} + beta k v^T",
    {"--qk-l2norm", NULL}, run_gated_delta_rule, mk_gated_delta_rule, dl_flops};
const lina_op_info lina_op_delta_product = {
    "delta_product", "DeltaProduct: n Householder steps per token (k rows = n*T), optional gate",
    {"--qk-l2norm", NULL}, run_delta_product, mk_delta_product, dl_flops_product};
const lina_op_info lina_op_kda = {
    "kda", "Kimi Delta Attention: h_t = (I - beta k k^T) diag(exp(g_t)) h_{t-1} + beta k v^T, g per key channel",
    {"--qk-l2norm", NULL}, run_kda, mk_kda, dl_flops};
#endif /* LINA_ISA_PRIMARY */
