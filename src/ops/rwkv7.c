/*
 * rwkv7.c -- RWKV-7's generalized delta rule with a diagonal-plus-low-rank
 * transition (docs/ops.md, docs/mixers.md 13), per head, K x V state:
 *
 *   S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T
 *   o_t = scale S_t^T r_t                                   (scale 1 by default)
 *
 * Both transition terms read S_{t-1}, and both act on the left: every value
 * column of the state evolves on its own. The recurrent form runs one task per
 * (batch, head, block of RB value columns) with the K x RB state block in L1,
 * one pass over its rows per step: row i becomes
 * e^{w_i} S[i,:] + b_i u + k_i v, and the same pass accumulates the read
 * o = S^T r and u' = S^T a_{t+1} of the next step (u = S_{t-1}^T a).
 * Backward: the state every SEG steps, each segment recomputed, then with
 * R_t = dL/dS_t = scale r_t do_t^T + P_{t+1}^T R_{t+1}, P_t = diag(e^{w_t}) + b_t a_t^T:
 *   dr = scale S_t do,  dk = R v,  dv = R^T k,  db = R u,  c = R^T b,
 *   da = S_{t-1} c,  dw = e^{w} rowsum(R o S_{t-1}),  dS_{t-1} = e^{w} R + a c^T,
 * also per block of value columns (the row sums dr, dk, db, da, dw add up over
 * the blocks), one pass over the rows per step that also accumulates c and dv
 * of the step before; S_t do = e^{w} (S_{t-1} do) + b (u.do) + k (v.do).
 * The chunk form's forward is the chunkwise DPLR algorithm (rw_fwd_chunk: gated
 * products per sub-block, a unit-triangular solve, state passing); its backward
 * is the recurrent one.
 */
#include "ops_internal.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RB 32   /* forward: value columns per state block (K x RB floats in L1) */
#define TB 64   /* forward: steps whose exps a task computes at once */
#define RBB 64  /* backward: value columns per block */
#define RBMAX 64
#define SEG 16  /* backward: checkpoint interval (steps) */
#define RC 64   /* chunk form: tokens per chunk unless the call names one */

#if defined(__GNUC__)
#define RW_INLINE static inline __attribute__((always_inline))
#else
#define RW_INLINE static inline
#endif

typedef struct rw_ctx {
    int B, T, H, K, V;
    int C; /* chunk form: tokens per chunk */
    float scale;
} rw_ctx;

static int rw_setup(rw_ctx *c, const lina_mix_dims *d, const lina_rwkv7_in *in)
{
    if (!d || !in) {
        return lina_set_error(LINA_EINVAL, "rwkv7: NULL dims or inputs");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "rwkv7: bad dims B=%d T=%d H=%d K=%d V=%d", d->B, d->T, d->H, d->K,
                              d->V);
    }
    if (!in->r || !in->w || !in->k || !in->v || !in->a || !in->b) {
        return lina_set_error(LINA_EINVAL, "rwkv7: r, w, k, v, a and b are required");
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->C = d->chunk > 0 ? d->chunk : RC;
    c->scale = d->scale != 0.0f ? d->scale : 1.0f;
    return LINA_OK;
}

/* the cache lines of x[0..n) requested ahead of their use */
static inline void rw_prefetch(const float *x, int n)
{
#if defined(__GNUC__)
    for (int i = 0; i < n; i += 16) {
        __builtin_prefetch(x + i, 0, 2);
    }
#else
    (void)x;
    (void)n;
#endif
}

/* columns j0 .. j0+W of a [K,V] state into a [K,N] block (zero padded), and back */
static void blk_load(float *S, const float *src, int K, int V, int j0, int W, int N)
{
    for (int i = 0; i < K; i++) {
        float *Si = S + (size_t)i * N;
        if (src) {
            memcpy(Si, src + (size_t)i * V + j0, (size_t)W * sizeof(float));
        } else {
            memset(Si, 0, (size_t)W * sizeof(float));
        }
        for (int j = W; j < N; j++) {
            Si[j] = 0.0f;
        }
    }
}

static void blk_store(float *dst, const float *S, int K, int V, int j0, int W, int N)
{
    for (int i = 0; i < K; i++) {
        memcpy(dst + (size_t)i * V + j0, S + (size_t)i * N, (size_t)W * sizeof(float));
    }
}

/* y[0..N) = x[0..W) then zeros */
static void vec_pad(float *y, const float *x, int W, int N)
{
    memcpy(y, x, (size_t)W * sizeof(float));
    for (int j = W; j < N; j++) {
        y[j] = 0.0f;
    }
}

/* u = S^T a on a K x N block */
static void blk_tdot(int K, int N, const float *S, const float *a, float *u)
{
    for (int j = 0; j < N; j++) {
        u[j] = 0.0f;
    }
    for (int i = 0; i < K; i++) {
        const float ai = a[i], *Si = S + (size_t)i * N;
#pragma omp simd
        for (int j = 0; j < N; j++) {
            u[j] += ai * Si[j];
        }
    }
}

/* One step on a K x N block (N <= RBMAX, a literal at every call): row i of Sout becomes
 * e_i Sin[i,:] + b_i u + k_i v (Sout == Sin: in place), in the same pass o = Sout^T rs
 * (out) and un = Sout^T an (nxt, u of the next step). */
RW_INLINE void step_rows(int K, const int N, const float *Sin, float *Sout, const float *restrict e,
                         const float *restrict bb, const float *restrict k, const float *restrict rs,
                         const float *restrict an, const float *restrict u, const float *restrict v,
                         float *restrict o, float *restrict un, const int out, const int nxt)
{
    float oa[RBMAX], ua[RBMAX], uu[RBMAX], vv[RBMAX];
    for (int j = 0; j < N; j++) {
        oa[j] = 0.0f;
        ua[j] = 0.0f;
        uu[j] = u[j];
        vv[j] = v[j];
    }
    for (int i = 0; i < K; i++) {
        const float *Si = Sin + (size_t)i * N;
        float *So = Sout + (size_t)i * N;
        const float ei = e[i], bi = bb[i], ki = k[i], ri = out ? rs[i] : 0.0f, ai = nxt ? an[i] : 0.0f;
#pragma omp simd
        for (int j = 0; j < N; j++) {
            const float x = ei * Si[j] + bi * uu[j] + ki * vv[j];
            So[j] = x;
            if (out) {
                oa[j] += ri * x;
            }
            if (nxt) {
                ua[j] += ai * x;
            }
        }
    }
    for (int j = 0; j < N; j++) {
        if (out) {
            o[j] = oa[j];
        }
        if (nxt) {
            un[j] = ua[j];
        }
    }
}

static int rw_fwd(const rw_ctx *c, const lina_rwkv7_in *in, lina_rwkv7_out *out, lina_ws *ws)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V, BH = c->B * H;
    const size_t KV = (size_t)K * V;
    /* a task is one (batch, head) and a group of its value blocks: the exps of a block of TB
     * steps are shared by the group's blocks; groups only when there are fewer heads than threads */
    const int nvb = (V + RB - 1) / RB, nth = lina_get_threads();
    int ngrp = BH >= nth ? 1 : (nth + BH - 1) / BH;
    ngrp = ngrp < nvb ? ngrp : nvb;
    const int per = (nvb + ngrp - 1) / ngrp, ntask = BH * ngrp;
    const size_t need = ((size_t)per * (K * (size_t)RB + 2 * RB) + 2 * (size_t)TB * K + 2 * RB) * sizeof(float);
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        const int g = task % ngrp, bh = task / ngrp, b = bh / H, h = bh % H;
        const int vb0 = g * per, vb1 = vb0 + per < nvb ? vb0 + per : nvb;
        float *St = lina_ws_get(ws, lina_thread_id(), need);
        if (!St) {
#pragma omp atomic write
            rc = LINA_ENOMEM;
            continue;
        }
        float *us = St + (size_t)per * K * RB, *es = us + (size_t)per * 2 * RB, *rs = es + (size_t)TB * K;
        float *vt = rs + (size_t)TB * K, *ot = vt + RB;
        for (int vb = vb0; vb < vb1; vb++) {
            const int j0 = vb * RB, W = V - j0 < RB ? V - j0 : RB;
            float *S = St + (size_t)(vb - vb0) * K * RB;
            blk_load(S, in->h0 ? LINA_STATE(in->h0, b, h, H, KV) : NULL, K, V, j0, W, RB);
            blk_tdot(K, RB, S, in->a + (((size_t)b * T) * H + h) * K, us + (size_t)(vb - vb0) * 2 * RB);
        }
        for (int t0 = 0; t0 < T; t0 += TB) {
            const int L = T - t0 < TB ? T - t0 : TB;
            for (int q = 0; q < L; q++) {
                const size_t rk = (((size_t)b * T + t0 + q) * H + h) * K;
                if (t0 + TB + q < T) { /* the inputs of the next block of steps on their way to L2 */
                    const size_t rn = rk + (size_t)TB * H * K;
                    rw_prefetch(in->r + rn, K);
                    rw_prefetch(in->w + rn, K);
                    rw_prefetch(in->k + rn, K);
                    rw_prefetch(in->a + rn, K);
                    rw_prefetch(in->b + rn, K);
                    rw_prefetch(LINA_ROW(in->v, b, t0 + q, h, T, H, V) + (size_t)TB * H * V, V);
                }
                lina_vexp(es + (size_t)q * K, in->w + rk, (size_t)K);
                for (int i = 0; i < K; i++) {
                    rs[(size_t)q * K + i] = c->scale * in->r[rk + i];
                }
            }
            for (int vb = vb0; vb < vb1; vb++) {
                const int j0 = vb * RB, W = V - j0 < RB ? V - j0 : RB;
                float *S = St + (size_t)(vb - vb0) * K * RB, *u = us + (size_t)(vb - vb0) * 2 * RB, *un = u + RB;
                for (int q = 0; q < L; q++) {
                    const int t = t0 + q;
                    const size_t rk = (((size_t)b * T + t) * H + h) * K;
                    const float *v = LINA_ROW(in->v, b, t, h, T, H, V) + j0;
                    float *o = LINA_ROW(out->o, b, t, h, T, H, V) + j0;
                    if (W < RB) { /* the last block of a V that is not a multiple of RB */
                        vec_pad(vt, v, W, RB);
                        v = vt;
                        o = ot;
                    }
                    if (t + 1 < T) {
                        step_rows(K, RB, S, S, es + (size_t)q * K, in->b + rk, in->k + rk, rs + (size_t)q * K,
                                  in->a + rk + (size_t)H * K, u, v, o, un, 1, 1);
                    } else {
                        step_rows(K, RB, S, S, es + (size_t)q * K, in->b + rk, in->k + rk, rs + (size_t)q * K,
                                  NULL, u, v, o, un, 1, 0);
                    }
                    if (W < RB) {
                        memcpy(LINA_ROW(out->o, b, t, h, T, H, V) + j0, ot, (size_t)W * sizeof(float));
                    }
                    float *tmp = u;
                    u = un;
                    un = tmp;
                }
                if (u != us + (size_t)(vb - vb0) * 2 * RB) { /* odd L: u back in the block's first slot */
                    memcpy(un, u, RB * sizeof(float));
                }
            }
        }
        for (int vb = vb0; vb < vb1 && out->ht; vb++) {
            const int j0 = vb * RB, W = V - j0 < RB ? V - j0 : RB;
            blk_store(LINA_STATE(out->ht, b, h, H, KV), St + (size_t)(vb - vb0) * K * RB, K, V, j0, W, RB);
        }
    }
    return rc;
}

/* The per-step inputs of one backward step on a block (tile columns padded to RBB). */
typedef struct bw_step {
    const float *Sp, *e, *a, *b, *k, *u, *v, *dO; /* S_{t-1} block, e^{w}, a, b, k; u, v, do columns */
    const float *c;                              /* c_t = R_t^T b_t */
    const float *rs, *bn, *kn, *dOn;             /* step t-1: scale r, b, k, do columns (nxt) */
    float *dr, *dk, *db, *da, *dw;               /* row sums, added to */
    float *cn, *dvn;                             /* step t-1: R_{t-1}^T b, R_{t-1}^T k (nxt) */
    float scale;
} bw_step;

/* Row i of one backward step (below): returns its five row sums in sums[0..4]
 * (R.v, R.u, R.Sp, Sp.c, Sp.do) and updates R[i,:]. */
RW_INLINE void bwd_row(int i, float *restrict R, const bw_step *p, const float *restrict uu,
                       const float *restrict vv, const float *restrict dd, const float *restrict cc,
                       const float *restrict dn, float *restrict ca, float *restrict va, float *restrict sums,
                       const int nxt)
{
    float *restrict Ri = R + (size_t)i * RBB;
    const float *restrict Spi = p->Sp + (size_t)i * RBB;
    const float ei = p->e[i], ai = p->a[i];
    const float ri = nxt ? p->rs[i] : 0.0f, bi = nxt ? p->bn[i] : 0.0f, ki = nxt ? p->kn[i] : 0.0f;
    float sk = 0.0f, sb = 0.0f, sw = 0.0f, sa = 0.0f, sd = 0.0f;
#pragma omp simd reduction(+ : sk, sb, sw, sa, sd)
    for (int j = 0; j < RBB; j++) {
        const float x = Ri[j], s = Spi[j];
        sk += x * vv[j];
        sb += x * uu[j];
        sw += x * s;
        sa += s * cc[j];
        sd += s * dd[j];
        const float y = ei * x + ai * cc[j] + (nxt ? ri * dn[j] : 0.0f);
        Ri[j] = y;
        if (nxt) {
            ca[j] += bi * y;
            va[j] += ki * y;
        }
    }
    sums[0] = sk;
    sums[1] = sb;
    sums[2] = sw;
    sums[3] = sa;
    sums[4] = sd;
}

#if defined(__AVX512F__)
#include <immintrin.h>

/* lane l of the result = the sum of the 16 lanes of x[l] */
static inline __m512 hsum16(const __m512 *x)
{
    __m512 y[8], z[4];
    for (int i = 0; i < 8; i++) {
        y[i] = _mm512_add_ps(_mm512_unpacklo_ps(x[2 * i], x[2 * i + 1]), _mm512_unpackhi_ps(x[2 * i], x[2 * i + 1]));
    }
    for (int i = 0; i < 4; i++) {
        const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(y[2 * i]), _mm512_castps_pd(y[2 * i + 1]));
        const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(y[2 * i]), _mm512_castps_pd(y[2 * i + 1]));
        z[i] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
    }
    const __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], 0x88), _mm512_shuffle_f32x4(z[0], z[1], 0xDD));
    const __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(z[2], z[3], 0x88), _mm512_shuffle_f32x4(z[2], z[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(w0, w1, 0x88), _mm512_shuffle_f32x4(w0, w1, 0xDD));
}

/* Rows i0 .. i0+15 of one backward step with RBB = 64: the row sums as 16-lane
 * partial vectors, reduced together by hsum16. */
RW_INLINE void bwd_rows16(int i0, float *restrict R, const bw_step *p, const float *restrict uu,
                          const float *restrict vv, const float *restrict dd, const float *restrict cc,
                          const float *restrict dn, __m512 *ca, __m512 *va, float ud, float vd, const int nxt)
{
    __m512 D[5][16];
    for (int r = 0; r < 16; r++) {
        const int i = i0 + r;
        float *Ri = R + (size_t)i * RBB;
        const float *Spi = p->Sp + (size_t)i * RBB;
        const __m512 ei = _mm512_set1_ps(p->e[i]), ai = _mm512_set1_ps(p->a[i]);
        const __m512 ri = _mm512_set1_ps(nxt ? p->rs[i] : 0.0f), bi = _mm512_set1_ps(nxt ? p->bn[i] : 0.0f);
        const __m512 ki = _mm512_set1_ps(nxt ? p->kn[i] : 0.0f);
        __m512 sk = _mm512_setzero_ps(), sb = sk, sw = sk, sa = sk, sd = sk;
        for (int q = 0; q < RBB / 16; q++) {
            const __m512 x = _mm512_loadu_ps(Ri + 16 * q), s = _mm512_loadu_ps(Spi + 16 * q);
            const __m512 c = _mm512_loadu_ps(cc + 16 * q);
            sk = _mm512_fmadd_ps(x, _mm512_loadu_ps(vv + 16 * q), sk);
            sb = _mm512_fmadd_ps(x, _mm512_loadu_ps(uu + 16 * q), sb);
            sw = _mm512_fmadd_ps(x, s, sw);
            sa = _mm512_fmadd_ps(s, c, sa);
            sd = _mm512_fmadd_ps(s, _mm512_loadu_ps(dd + 16 * q), sd);
            __m512 y = _mm512_fmadd_ps(ai, c, _mm512_mul_ps(ei, x));
            if (nxt) {
                y = _mm512_fmadd_ps(ri, _mm512_loadu_ps(dn + 16 * q), y);
                ca[q] = _mm512_fmadd_ps(bi, y, ca[q]);
                va[q] = _mm512_fmadd_ps(ki, y, va[q]);
            }
            _mm512_storeu_ps(Ri + 16 * q, y);
        }
        D[0][r] = sk;
        D[1][r] = sb;
        D[2][r] = sw;
        D[3][r] = sa;
        D[4][r] = sd;
    }
    const __m512 e = _mm512_loadu_ps(p->e + i0);
    float *dk = p->dk + i0, *db = p->db + i0, *dw = p->dw + i0, *da = p->da + i0, *dr = p->dr + i0;
    _mm512_storeu_ps(dk, _mm512_add_ps(_mm512_loadu_ps(dk), hsum16(D[0])));
    _mm512_storeu_ps(db, _mm512_add_ps(_mm512_loadu_ps(db), hsum16(D[1])));
    _mm512_storeu_ps(dw, _mm512_fmadd_ps(e, hsum16(D[2]), _mm512_loadu_ps(dw)));
    _mm512_storeu_ps(da, _mm512_add_ps(_mm512_loadu_ps(da), hsum16(D[3])));
    __m512 x = _mm512_mul_ps(e, hsum16(D[4]));
    x = _mm512_fmadd_ps(_mm512_loadu_ps(p->b + i0), _mm512_set1_ps(ud), x);
    x = _mm512_fmadd_ps(_mm512_loadu_ps(p->k + i0), _mm512_set1_ps(vd), x);
    _mm512_storeu_ps(dr, _mm512_fmadd_ps(_mm512_set1_ps(p->scale), x, _mm512_loadu_ps(dr)));
}
#endif

/* One backward step on a K x RBB block of R = R_t: the row sums of step t, then
 * R <- e R + a c^T (+ scale r' do'^T of step t-1, nxt) with c', dv' of step t-1. */
RW_INLINE void bwd_rows(int K, float *restrict R, const bw_step *p, const int nxt)
{
    _Alignas(64) float uu[RBB], vv[RBB], dd[RBB], cc[RBB], dn[RBB], ca[RBB], va[RBB];
    float ud = 0.0f, vd = 0.0f;
    for (int j = 0; j < RBB; j++) {
        uu[j] = p->u[j];
        vv[j] = p->v[j];
        dd[j] = p->dO[j];
        cc[j] = p->c[j];
        dn[j] = nxt ? p->dOn[j] : 0.0f;
        ca[j] = 0.0f;
        va[j] = 0.0f;
        ud += uu[j] * dd[j];
        vd += vv[j] * dd[j];
    }
    int i = 0;
#if defined(__AVX512F__)
    {
        __m512 cq[RBB / 16], vq[RBB / 16];
        for (int q = 0; q < RBB / 16; q++) {
            cq[q] = _mm512_setzero_ps();
            vq[q] = _mm512_setzero_ps();
        }
        for (; i + 16 <= K; i += 16) {
            bwd_rows16(i, R, p, uu, vv, dd, cc, dn, cq, vq, ud, vd, nxt);
        }
        for (int q = 0; q < RBB / 16; q++) {
            _mm512_store_ps(ca + 16 * q, cq[q]);
            _mm512_store_ps(va + 16 * q, vq[q]);
        }
    }
#endif
    for (; i < K; i++) {
        float sm[5];
        bwd_row(i, R, p, uu, vv, dd, cc, dn, ca, va, sm, nxt);
        p->dk[i] += sm[0];
        p->db[i] += sm[1];
        p->dw[i] += p->e[i] * sm[2];
        p->da[i] += sm[3];
        p->dr[i] += p->scale * (p->e[i] * sm[4] + p->b[i] * ud + p->k[i] * vd);
    }
    if (nxt) {
        for (int j = 0; j < RBB; j++) {
            p->cn[j] = ca[j];
            p->dvn[j] = va[j];
        }
    }
}

static int rw_bwd(const rw_ctx *c, const lina_rwkv7_in *in, const lina_rwkv7_grad_in *gin,
                  lina_rwkv7_grad_out *go, lina_ws *ws)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V;
    const size_t KV = (size_t)K * V, KB = (size_t)K * RBB, nseg = ((size_t)T + SEG - 1) / SEG;
    const int nvb = (V + RBB - 1) / RBB;
    /* per block: checkpoints, R, c; the segment's states, u and e per step, the row sums of the
     * segment's steps (five per row), per-block vectors */
    const size_t need = ((size_t)nvb * (nseg * KB + KB + 2 * RBB) + (SEG + 1) * KB + (size_t)SEG * RBB +
                         (size_t)SEG * K + (size_t)SEG * 5 * K + 6 * RBB + K) *
                        sizeof(float);
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < c->B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float *ck = lina_ws_get(ws, lina_thread_id(), need);
        if (!ck) {
#pragma omp atomic write
            rc = LINA_ENOMEM;
            continue;
        }
        float *Rs = ck + (size_t)nvb * nseg * KB, *cs = Rs + (size_t)nvb * KB, *hs = cs + (size_t)nvb * 2 * RBB;
        float *us = hs + (SEG + 1) * KB, *es = us + (size_t)SEG * RBB, *acc = es + (size_t)SEG * K;
        float *vt = acc + (size_t)SEG * 5 * K, *dt = vt + RBB, *dtn = dt + RBB, *dvt = dtn + RBB;
        float *u = dvt + RBB, *un = u + RBB, *rs = un + RBB;
        for (int vb = 0; vb < nvb; vb++) {
            const int j0 = vb * RBB, W = V - j0 < RBB ? V - j0 : RBB;
            /* forward over the block, the state before every SEG-th step kept */
            float *S = hs, *cb = ck + (size_t)vb * nseg * KB;
            blk_load(S, in->h0 ? LINA_STATE(in->h0, b, h, H, KV) : NULL, K, V, j0, W, RBB);
            blk_tdot(K, RBB, S, in->a + (((size_t)b * T) * H + h) * K, u);
            for (int t = 0; t < T; t++) {
                const size_t rk = (((size_t)b * T + t) * H + h) * K;
                if (t % SEG == 0) {
                    memcpy(cb + (size_t)(t / SEG) * KB, S, KB * sizeof(float));
                }
                if (t + 1 < T) {
                    lina_vexp(es, in->w + rk, (size_t)K);
                    vec_pad(vt, LINA_ROW(in->v, b, t, h, T, H, V) + j0, W, RBB);
                    step_rows(K, RBB, S, S, es, in->b + rk, in->k + rk, NULL, in->a + rk + (size_t)H * K, u, vt,
                              NULL, un, 0, 1);
                }
                float *tmp = u;
                u = un;
                un = tmp;
            }
            /* R_{T-1} = dht + scale r do^T, its c and dv */
            const size_t rk = (((size_t)b * T + T - 1) * H + h) * K;
            float *R = Rs + (size_t)vb * KB, *cv = cs + (size_t)vb * 2 * RBB;
            blk_load(R, gin->dht ? LINA_STATE(gin->dht, b, h, H, KV) : NULL, K, V, j0, W, RBB);
            vec_pad(dt, LINA_ROW(gin->do_, b, T - 1, h, T, H, V) + j0, W, RBB);
            for (int j = 0; j < RBB; j++) {
                cv[j] = 0.0f;
                dvt[j] = 0.0f;
            }
            for (int i = 0; i < K; i++) {
                const float ri = c->scale * in->r[rk + i], bi = in->b[rk + i], ki = in->k[rk + i];
                float *Ri = R + (size_t)i * RBB;
#pragma omp simd
                for (int j = 0; j < RBB; j++) {
                    Ri[j] += ri * dt[j];
                    cv[j] += bi * Ri[j];
                    dvt[j] += ki * Ri[j];
                }
            }
            memcpy(LINA_ROW(go->dv, b, T - 1, h, T, H, V) + j0, dvt, (size_t)W * sizeof(float));
        }
        for (int s = (int)nseg - 1; s >= 0; s--) {
            const int t0 = s * SEG, L = T - t0 < SEG ? T - t0 : SEG;
            for (int q = 0; q < L; q++) {
                lina_vexp(es + (size_t)q * K, in->w + (((size_t)b * T + t0 + q) * H + h) * K, (size_t)K);
            }
            memset(acc, 0, (size_t)L * 5 * K * sizeof(float));
            for (int vb = 0; vb < nvb; vb++) {
                const int j0 = vb * RBB, W = V - j0 < RBB ? V - j0 : RBB;
                float *R = Rs + (size_t)vb * KB, *cv = cs + (size_t)vb * 2 * RBB, *cn = cv + RBB;
                /* the segment's states S_{t0} .. S_{t0+L-1} and u of each step */
                memcpy(hs, ck + ((size_t)vb * nseg + s) * KB, KB * sizeof(float));
                blk_tdot(K, RBB, hs, in->a + (((size_t)b * T + t0) * H + h) * K, us);
                for (int q = 0; q + 1 < L; q++) {
                    const size_t rk = (((size_t)b * T + t0 + q) * H + h) * K;
                    float *Sq = hs + (size_t)q * KB;
                    vec_pad(vt, LINA_ROW(in->v, b, t0 + q, h, T, H, V) + j0, W, RBB);
                    step_rows(K, RBB, Sq, Sq + KB, es + (size_t)q * K, in->b + rk, in->k + rk, NULL,
                              in->a + rk + (size_t)H * K, us + (size_t)q * RBB, vt, NULL, us + (size_t)(q + 1) * RBB,
                              0, 1);
                }
                for (int q = L - 1; q >= 0; q--) {
                    const int t = t0 + q;
                    const size_t rk = (((size_t)b * T + t) * H + h) * K;
                    float *aq = acc + (size_t)q * 5 * K;
                    vec_pad(vt, LINA_ROW(in->v, b, t, h, T, H, V) + j0, W, RBB);
                    vec_pad(dt, LINA_ROW(gin->do_, b, t, h, T, H, V) + j0, W, RBB);
                    bw_step p = {hs + (size_t)q * KB, es + (size_t)q * K, in->a + rk, in->b + rk, in->k + rk,
                                 us + (size_t)q * RBB, vt, dt, cv, NULL, NULL, NULL, NULL,
                                 aq, aq + K, aq + 2 * (size_t)K, aq + 3 * (size_t)K, aq + 4 * (size_t)K, cn, dvt,
                                 c->scale};
                    if (t > 0) {
                        const size_t rn = rk - (size_t)H * K;
                        for (int i = 0; i < K; i++) {
                            rs[i] = c->scale * in->r[rn + i];
                        }
                        vec_pad(dtn, LINA_ROW(gin->do_, b, t - 1, h, T, H, V) + j0, W, RBB);
                        p.rs = rs;
                        p.bn = in->b + rn;
                        p.kn = in->k + rn;
                        p.dOn = dtn;
                        bwd_rows(K, R, &p, 1);
                        memcpy(LINA_ROW(go->dv, b, t - 1, h, T, H, V) + j0, dvt, (size_t)W * sizeof(float));
                        memcpy(cv, cn, RBB * sizeof(float));
                    } else {
                        bwd_rows(K, R, &p, 0);
                    }
                }
            }
            for (int q = 0; q < L; q++) {
                const size_t rk = (((size_t)b * T + t0 + q) * H + h) * K;
                const float *aq = acc + (size_t)q * 5 * K;
                memcpy(go->dr + rk, aq, (size_t)K * sizeof(float));
                memcpy(go->dk + rk, aq + K, (size_t)K * sizeof(float));
                memcpy(go->db + rk, aq + 2 * (size_t)K, (size_t)K * sizeof(float));
                memcpy(go->da + rk, aq + 3 * (size_t)K, (size_t)K * sizeof(float));
                memcpy(go->dw + rk, aq + 4 * (size_t)K, (size_t)K * sizeof(float));
            }
        }
        for (int vb = 0; go->dh0 && vb < nvb; vb++) {
            const int j0 = vb * RBB, W = V - j0 < RBB ? V - j0 : RBB;
            blk_store(LINA_STATE(go->dh0, b, h, H, KV), Rs + (size_t)vb * KB, K, V, j0, W, RBB);
        }
    }
    return rc;
}

/* ============================================================ chunk form */

#define RG 16         /* chunk form: rows per sub-block of the gated products */
#define RG_SPAN 30.0  /* largest log decay across a sub-block for which its inner pairs factor too */

/* Chunk form, per (batch, head), chunk of L tokens from state S (local index s, m in
 * 0..L-1), g_s = sum_{q<=s} w_q per key channel (double), gp_s = g_{s-1} (gp_0 = 0):
 *   u_s = S_{s-1}^T a_s,   o_s = S_s^T r_s,   r scaled by `scale`
 *   G rows 0..L-1 (a rows), L..2L-1 (r rows); columns 0..L-1 (b), L..2L-1 (k):
 *     G[s, m]   = sum_i a_si b_mi e^{gp_si - g_mi}  (m < s),  G[s, L+m]   likewise with k
 *     G[L+s, m] = sum_i r_si b_mi e^{g_si - g_mi}   (m <= s), G[L+s, L+m] likewise with k
 *   P = [a e^{gp}; r e^{g}] S                                   (2L x V)
 *   U = (I - G_ab)^{-1} (P_a + G_ak V)   by forward substitution
 *   O = P_r + G[L:2L, :] [U; V]
 *   S <- diag(e^{g_{L-1}}) S + ([b; k] e^{g_{L-1} - g})^T [U; V]
 * Every exponent is <= 0 except in G, which a sub-block of RG rows s (from n0) gets
 * from one GEMM through e^{gp_n0}: e^{gp_s - gp_n0} e^{gp_n0 - g_m}, both <= 0 for the
 * columns m < n0; its own columns (n0 <= m <= s) take the same route when the decay
 * across the sub-block is at most RG_SPAN (the second factor at most e^RG_SPAN), and
 * one exponential per pair and channel otherwise. */
typedef struct rk_buf {
    double *g;  /* [C*K] cumulative log decay */
    double *x;  /* [K] exponent scratch */
    float *ex;  /* [K] */
    float *Xs;  /* [2*RG*K] a sub-block's a and r rows, rescaled */
    float *Ys;  /* [2*C*K] b and k rows of the columns, rescaled */
    float *Gs;  /* [2*RG*2*C] */
    float *G;   /* [2C x 2C] */
    float *Xq;  /* [2*C*K] */
    float *P;   /* [2*C*V] */
    float *UV;  /* [2*C*V] */
    float *S;   /* [K*V] */
} rk_buf;

static size_t rk_carve(rk_buf *kb, char *base, int C, int K, int V)
{
    size_t off = 0;
#define CARVE(ptr, type, cnt)                                             \
    do {                                                                  \
        kb->ptr = base ? (type *)(void *)(base + off) : NULL;             \
        off += (((cnt) * sizeof(type)) + 63) & ~(size_t)63;               \
    } while (0)
    CARVE(g, double, (size_t)C * K);
    CARVE(x, double, (size_t)K);
    CARVE(ex, float, (size_t)K);
    CARVE(Xs, float, 2 * (size_t)RG * K);
    CARVE(Ys, float, 2 * (size_t)C * K);
    CARVE(Gs, float, 4 * (size_t)RG * C);
    CARVE(G, float, 4 * (size_t)C * C);
    CARVE(Xq, float, 2 * (size_t)C * K);
    CARVE(P, float, 2 * (size_t)C * V);
    CARVE(UV, float, 2 * (size_t)C * V);
    CARVE(S, float, (size_t)K * V);
#undef CARVE
    return off + 64;
}

/* ex = e^{x1 - x0} per channel (x0 NULL: e^{x1}) */
static void rk_expdiff(rk_buf *kb, int K, const double *x1, const double *x0)
{
    for (int i = 0; i < K; i++) {
        kb->x[i] = x0 ? x1[i] - x0[i] : x1[i];
    }
    lina_vexp_d(kb->ex, kb->x, (size_t)K);
}

/* The gated products G of a chunk (see above). ar, rr, br, kr: the chunk's rows (stride ld). */
static void rk_gram(int L, int K, const float *ar, const float *rr, const float *br, const float *kr, size_t ld,
                    float scale, rk_buf *kb)
{
    const int L2 = 2 * L;
    const double *g = kb->g;
    float *G = kb->G;
    memset(G, 0, (size_t)L2 * L2 * sizeof(float));
    for (int n0 = 0; n0 < L; n0 += RG) {
        const int nb = L - n0 < RG ? L - n0 : RG;
        const double *ref = n0 ? g + (size_t)(n0 - 1) * K : NULL; /* gp_n0 (NULL: 0) */
        double span = 0.0;
        for (int i = 0; i < K; i++) {
            const double d = (ref ? ref[i] : 0.0) - g[(size_t)(n0 + nb - 1) * K + i];
            span = d > span ? d : span;
        }
        const int fast = span <= RG_SPAN, ncol = fast ? n0 + nb : n0;
        /* rows: a_s e^{gp_s - gp_n0}, scale r_s e^{g_s - gp_n0} */
        for (int q = 0; q < nb; q++) {
            const int sx = n0 + q;
            const float *a = ar + (size_t)sx * ld, *r = rr + (size_t)sx * ld;
            float *xa = kb->Xs + (size_t)q * K, *xr = kb->Xs + (size_t)(nb + q) * K;
            if (sx > n0) {
                rk_expdiff(kb, K, g + (size_t)(sx - 1) * K, ref);
                for (int i = 0; i < K; i++) {
                    xa[i] = a[i] * kb->ex[i];
                }
            } else {
                memcpy(xa, a, (size_t)K * sizeof(float));
            }
            rk_expdiff(kb, K, g + (size_t)sx * K, ref);
            for (int i = 0; i < K; i++) {
                xr[i] = scale * r[i] * kb->ex[i];
            }
        }
        if (ncol > 0) {
            /* columns: b_m e^{gp_n0 - g_m}, k_m e^{gp_n0 - g_m} */
            for (int m = 0; m < ncol; m++) {
                if (ref) {
                    rk_expdiff(kb, K, ref, g + (size_t)m * K);
                } else {
                    for (int i = 0; i < K; i++) {
                        kb->x[i] = -g[(size_t)m * K + i];
                    }
                    lina_vexp_d(kb->ex, kb->x, (size_t)K);
                }
                const float *b = br + (size_t)m * ld, *k = kr + (size_t)m * ld;
                float *yb = kb->Ys + (size_t)m * K, *yk = kb->Ys + (size_t)(ncol + m) * K;
                for (int i = 0; i < K; i++) {
                    yb[i] = b[i] * kb->ex[i];
                    yk[i] = k[i] * kb->ex[i];
                }
            }
            lina_sgemm(0, 1, 2 * nb, 2 * ncol, K, 1.0f, kb->Xs, K, kb->Ys, K, 0.0f, kb->Gs, 2 * ncol);
            for (int q = 0; q < nb; q++) {
                const int sx = n0 + q;
                const float *ga = kb->Gs + (size_t)q * 2 * ncol, *gr = kb->Gs + (size_t)(nb + q) * 2 * ncol;
                float *Ga = G + (size_t)sx * L2, *Gr = G + (size_t)(L + sx) * L2;
                for (int m = 0; m < ncol; m++) {
                    if (m < sx) {
                        Ga[m] = ga[m];
                        Ga[L + m] = ga[ncol + m];
                    }
                    if (m <= sx) {
                        Gr[m] = gr[m];
                        Gr[L + m] = gr[ncol + m];
                    }
                }
            }
        }
        if (!fast) {
            /* the sub-block's own pairs, one exponential per pair and channel */
            for (int sx = n0; sx < n0 + nb; sx++) {
                const float *a = ar + (size_t)sx * ld, *r = rr + (size_t)sx * ld;
                for (int m = n0; m <= sx; m++) {
                    const float *b = br + (size_t)m * ld, *k = kr + (size_t)m * ld;
                    if (m < sx) {
                        rk_expdiff(kb, K, g + (size_t)(sx - 1) * K, g + (size_t)m * K);
                        float sb = 0.0f, sk = 0.0f;
                        for (int i = 0; i < K; i++) {
                            const float x = a[i] * kb->ex[i];
                            sb += x * b[i];
                            sk += x * k[i];
                        }
                        G[(size_t)sx * L2 + m] = sb;
                        G[(size_t)sx * L2 + L + m] = sk;
                    }
                    rk_expdiff(kb, K, g + (size_t)sx * K, g + (size_t)m * K);
                    float sb = 0.0f, sk = 0.0f;
                    for (int i = 0; i < K; i++) {
                        const float x = scale * r[i] * kb->ex[i];
                        sb += x * b[i];
                        sk += x * k[i];
                    }
                    G[(size_t)(L + sx) * L2 + m] = sb;
                    G[(size_t)(L + sx) * L2 + L + m] = sk;
                }
            }
        }
    }
}

static int rw_fwd_chunk(const rw_ctx *c, const lina_rwkv7_in *in, lina_rwkv7_out *out, lina_ws *ws)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V;
    const size_t KV = (size_t)K * V, ldk = (size_t)H * K, ldv = (size_t)H * V;
    const int C = c->C;
    const size_t need = rk_carve(&(rk_buf){0}, NULL, C, K, V);
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < c->B * H; bh++) {
        const int b = bh / H, h = bh % H;
        char *base = lina_ws_get(ws, lina_thread_id(), need);
        if (!base) {
#pragma omp atomic write
            rc = LINA_ENOMEM;
            continue;
        }
        rk_buf kb;
        rk_carve(&kb, (char *)(((uintptr_t)base + 63) & ~(uintptr_t)63), C, K, V);
        float *S = kb.S;
        if (in->h0) {
            memcpy(S, LINA_STATE(in->h0, b, h, H, KV), KV * sizeof(float));
        } else {
            memset(S, 0, KV * sizeof(float));
        }
        for (int t0 = 0; t0 < T; t0 += C) {
            const int L = T - t0 < C ? T - t0 : C, L2 = 2 * L;
            const size_t rk = (((size_t)b * T + t0) * H + h) * K;
            const float *ar = in->a + rk, *rr = in->r + rk, *br = in->b + rk, *kr = in->k + rk;
            const float *vr = LINA_ROW(in->v, b, t0, h, T, H, V);
            float *orow = LINA_ROW(out->o, b, t0, h, T, H, V);
            lina_chunk_cumgate(LINA_GATE_VECTOR, in->w, b, h, t0, L, T, H, K, kb.g);
            rk_gram(L, K, ar, rr, br, kr, ldk, c->scale, &kb);
            /* P = [a e^{gp}; scale r e^{g}] S */
            for (int s = 0; s < L; s++) {
                float *xa = kb.Xq + (size_t)s * K, *xr = kb.Xq + (size_t)(L + s) * K;
                const float *a = ar + (size_t)s * ldk, *r = rr + (size_t)s * ldk;
                if (s > 0) {
                    rk_expdiff(&kb, K, kb.g + (size_t)(s - 1) * K, NULL);
                    for (int i = 0; i < K; i++) {
                        xa[i] = a[i] * kb.ex[i];
                    }
                } else {
                    memcpy(xa, a, (size_t)K * sizeof(float));
                }
                rk_expdiff(&kb, K, kb.g + (size_t)s * K, NULL);
                for (int i = 0; i < K; i++) {
                    xr[i] = c->scale * r[i] * kb.ex[i];
                }
            }
            lina_sgemm(0, 0, L2, V, K, 1.0f, kb.Xq, K, S, V, 0.0f, kb.P, V);
            /* [U; V]: U = P_a + G_ak V, then the unit-triangular solve in place */
            float *U = kb.UV, *Vc = kb.UV + (size_t)L * V;
            for (int s = 0; s < L; s++) {
                memcpy(Vc + (size_t)s * V, vr + (size_t)s * ldv, (size_t)V * sizeof(float));
            }
            memcpy(U, kb.P, (size_t)L * V * sizeof(float));
            lina_sgemm(0, 0, L, V, L, 1.0f, kb.G + L, L2, Vc, V, 1.0f, U, V);
            for (int s = 1; s < L; s++) {
                float *Us = U + (size_t)s * V;
                const float *Gs = kb.G + (size_t)s * L2;
                for (int m = 0; m < s; m++) {
                    const float gm = Gs[m];
                    const float *Um = U + (size_t)m * V;
#pragma omp simd
                    for (int j = 0; j < V; j++) {
                        Us[j] += gm * Um[j];
                    }
                }
            }
            /* O = P_r + G[L:2L, :] [U; V] */
            for (int s = 0; s < L; s++) {
                memcpy(orow + (size_t)s * ldv, kb.P + (size_t)(L + s) * V, (size_t)V * sizeof(float));
            }
            lina_sgemm(0, 0, L, V, L2, 1.0f, kb.G + (size_t)L * L2, L2, kb.UV, V, 1.0f, orow, (int)ldv);
            /* S <- diag(e^{g_{L-1}}) S + ([b; k] e^{g_{L-1} - g})^T [U; V] */
            const double *gL = kb.g + (size_t)(L - 1) * K;
            for (int m = 0; m < L; m++) {
                rk_expdiff(&kb, K, gL, kb.g + (size_t)m * K);
                const float *bm = br + (size_t)m * ldk, *km = kr + (size_t)m * ldk;
                float *yb = kb.Xq + (size_t)m * K, *yk = kb.Xq + (size_t)(L + m) * K;
                for (int i = 0; i < K; i++) {
                    yb[i] = bm[i] * kb.ex[i];
                    yk[i] = km[i] * kb.ex[i];
                }
            }
            rk_expdiff(&kb, K, gL, NULL);
            for (int i = 0; i < K; i++) {
                const float f = kb.ex[i];
                float *Si = S + (size_t)i * V;
                for (int j = 0; j < V; j++) {
                    Si[j] *= f;
                }
            }
            lina_sgemm(1, 0, K, V, L2, 1.0f, kb.Xq, K, kb.UV, V, 1.0f, S, V);
        }
        if (out->ht) {
            memcpy(LINA_STATE(out->ht, b, h, H, KV), S, KV * sizeof(float));
        }
    }
    return rc;
}

int LINA_KFN(lina_rwkv7_fwd)(const lina_mix_dims *d, const lina_rwkv7_in *in, lina_rwkv7_out *out,
                             lina_form form, lina_ws *ws)
{
    rw_ctx c;
    int rc = rw_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "rwkv7: output o is NULL");
    }
    if (c.T == 0) {
        lina_state_pass(out->ht, in->h0, (size_t)c.B * c.H * c.K * c.V);
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    rc = form == LINA_FORM_CHUNK ? rw_fwd_chunk(&c, in, out, sc.ws) : rw_fwd(&c, in, out, sc.ws);
    lina_ws_scope_close(&sc);
    return rc ? lina_set_error(rc, "rwkv7: out of memory") : LINA_OK;
}

int LINA_KFN(lina_rwkv7_bwd)(const lina_mix_dims *d, const lina_rwkv7_in *in, const lina_rwkv7_grad_in *gin,
                             lina_rwkv7_grad_out *gout, lina_form form, lina_ws *ws)
{
    (void)form;
    rw_ctx c;
    int rc = rw_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gin->do_ || !gout || !gout->dr || !gout->dw || !gout->dk || !gout->dv || !gout->da ||
        !gout->db) {
        return lina_set_error(LINA_EINVAL, "rwkv7: do and the outputs dr, dw, dk, dv, da, db are required");
    }
    if (c.T == 0) {
        lina_state_pass(gout->dh0, gin->dht, (size_t)c.B * c.H * c.K * c.V);
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    rc = rw_bwd(&c, in, gin, gout, sc.ws);
    lina_ws_scope_close(&sc);
    return rc ? lina_set_error(rc, "rwkv7: out of memory") : LINA_OK;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_rwkv7_fwd,
                  (const lina_mix_dims *d, const lina_rwkv7_in *in, lina_rwkv7_out *out, lina_form form,
                   lina_ws *ws),
                  (d, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_rwkv7_bwd,
                  (const lina_mix_dims *d, const lina_rwkv7_in *in, const lina_rwkv7_grad_in *gin,
                   lina_rwkv7_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, in, gin, gout, form, ws))

/* ================================================ op for `lina op` / bench */

static int run_rwkv7(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    lina_binds bd;
    lina_binds_init(&bd);
    int err = 0;
    const lina_tensor *r = lina_op_input(in, "r", "BTHK", &bd, 0, &err);
    const lina_tensor *w = err ? NULL : lina_op_input(in, "w", "BTHK", &bd, 0, &err);
    const lina_tensor *k = err ? NULL : lina_op_input(in, "k", "BTHK", &bd, 0, &err);
    const lina_tensor *v = err ? NULL : lina_op_input(in, "v", "BTHV", &bd, 0, &err);
    const lina_tensor *a = err ? NULL : lina_op_input(in, "a", "BTHK", &bd, 0, &err);
    const lina_tensor *b = err ? NULL : lina_op_input(in, "b", "BTHK", &bd, 0, &err);
    const lina_tensor *h0 = err ? NULL : lina_op_input(in, "h0", "BHKV", &bd, 1, &err);
    if (err) {
        return err;
    }
    if ((err = lina_op_check_nonpos(w, "w", "w holds log decays"))) {
        return err;
    }
    const lina_tensor *dO = NULL, *dht = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTHV", &bd, 0, &err);
        dht = err ? NULL : lina_op_input(in, "dht", "BHKV", &bd, 1, &err);
        if (err) {
            return err;
        }
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['H' - 'A'], (int)bd.v['K' - 'A'],
                       (int)bd.v['V' - 'A'], o->chunk, 1.0f};
    lina_rwkv7_in rin = {r->data, w->data, k->data, v->data, a->data, b->data, h0 ? h0->data : NULL};
    lina_rwkv7_out ro = {lina_op_output(out, "o", "BTHV", &bd), lina_op_output(out, "ht", "BHKV", &bd)};
    if (!ro.o || !ro.ht) {
        return LINA_ENOMEM;
    }
    int rc = lina_rwkv7_fwd(&d, &rin, &ro, o->form, ws);
    if (rc || !o->backward) {
        return rc;
    }
    lina_rwkv7_grad_out go = {lina_op_output(out, "dr", "BTHK", &bd), lina_op_output(out, "dw", "BTHK", &bd),
                              lina_op_output(out, "dk", "BTHK", &bd), lina_op_output(out, "dv", "BTHV", &bd),
                              lina_op_output(out, "da", "BTHK", &bd), lina_op_output(out, "db", "BTHK", &bd),
                              h0 ? lina_op_output(out, "dh0", "BHKV", &bd) : NULL};
    if (!go.dr || !go.dw || !go.dk || !go.dv || !go.da || !go.db || (h0 && !go.dh0)) {
        return LINA_ENOMEM;
    }
    lina_rwkv7_grad_in gi = {dO->data, dht ? dht->data : NULL};
    return lina_rwkv7_bwd(&d, &rin, &gi, &go, o->form, ws);
}

/* Benchmark inputs in RWKV-7's domain: w = -e^{-1/2} sigmoid(z), a = -kk, b = kk * iclr
 * with kk L2-normalised per head and iclr in (0, 1). */
static int mk_rwkv7(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V};
    int rc = lina_bench_tensor(in, "r", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "w", 4, sk, &rng, -0.6065f, -0.001f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0, 0.3f, 1);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "a", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "b", 4, sk, &rng, 0.0f, 1.0f, 0);
    if (!rc) {
        lina_tensor *a = lina_tset_find(in, "a"), *b = lina_tset_find(in, "b");
        const int64_t rows = (int64_t)d->B * d->T * d->H;
        for (int64_t r = 0; r < rows; r++) {
            float *ar = a->data + r * d->K, *br = b->data + r * d->K;
            double ss = 0.0;
            for (int i = 0; i < d->K; i++) {
                ss += (double)ar[i] * ar[i];
            }
            const float inv = (float)(1.0 / sqrt(ss + 1e-6));
            for (int i = 0; i < d->K; i++) {
                const float kk = ar[i] * inv;
                ar[i] = -kk;
                br[i] = kk * br[i];
            }
        }
    }
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, sv, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule): recurrent 6*B*H*T*K*V (a^T S, the decay / low-rank / k v^T update, the
 * read); chunk B*H*T*(8KV + 7CV + 4CK) (P and the state update 8KV, G_ak V, the solve and the
 * read 7CV, the gated products 4CK, per token). */
static double rwkv7_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    const double bht = (double)d->B * d->H * d->T, K = d->K, V = d->V;
    if (o->form == LINA_FORM_CHUNK) {
        const double C = o->chunk > 0 ? o->chunk : RC;
        return bht * (8.0 * K * V + 7.0 * C * V + 4.0 * C * K);
    }
    return 6.0 * bht * K * V;
}

const lina_op_info lina_op_rwkv7 = {
    "rwkv7", "RWKV-7 DPLR delta rule (r, w, k, v, a, b [, h0]), scale 1; chunk: chunkwise DPLR forward, recurrent backward",
    {NULL},
    run_rwkv7, mk_rwkv7, rwkv7_flops};
#endif /* LINA_ISA_PRIMARY */
