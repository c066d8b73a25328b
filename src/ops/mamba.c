/*
 * mamba.c -- the Mamba (Mamba-1) selective scan (docs/ops.md, docs/mixers.md 12):
 *
 *   dt_t[c]  = delta_t[c] + delta_bias[c]            (softplus of it with delta_softplus)
 *   h_t[c,:] = exp(dt_t[c] A[c,:]) * h_{t-1}[c,:] + dt_t[c] u_t[c] B_t
 *   y_t[c]   = C_t . h_t[c,:] + D[c] u_t[c],   o_t = y_t * silu(z_t)
 *
 * RECURRENT: the scan itself, one task per (batch, block of MB_CG channels),
 * the block's state [MB_CG, N] kept in place while t runs; its backward keeps
 * the state every `chunk` steps and recomputes each segment (states and
 * decays) before walking it backwards with R_t = dL/dh_t:
 *   R_t = C_t dy_t + exp(dt_{t+1} A) R_{t+1},   dy = do * silu(z)
 *   dC_t = sum_c h_t[c,:] dy_t[c],  dB_t = sum_c R_t[c,:] dt_t[c] u_t[c]
 *   du = dt sum_n R B + D dy,  ddt = sum_n R (A exp(dt A) h_{t-1} + u B)
 *   dA = sum_t R dt exp(dt A) h_{t-1},  dh0 = exp(dt_1 A) R_1.
 * The sums over channels (dB, dC) go to one partial per block, the sums over
 * batch (dA, dD, ddelta_bias) to one partial per batch row, each reduced in a
 * fixed order, so every gradient is the same for any thread count.
 *
 * CHUNK: every channel is a GLA head with K = N, V = 1 (q = C, k = B,
 * v = dt u, vector log gate dt A, scale 1) run through the diagonal-decay
 * engine; the gradients come back through the engine's backward and the
 * sums above.
 */
#include "ops_internal.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MB_CG 32 /* channels per scan task */

typedef struct mb_ctx {
    int B, T, E, N;
    int S;      /* checkpoint interval of the recurrent backward */
    int ng;     /* channel blocks */
} mb_ctx;

static int mb_setup(mb_ctx *c, const lina_mix_dims *d, const lina_mamba_in *in)
{
    if (!d || !in) {
        return lina_set_error(LINA_EINVAL, "mamba: NULL dims or inputs");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0) {
        return lina_set_error(LINA_EINVAL, "mamba: bad dims B=%d T=%d E=%d N=%d", d->B, d->T,
                              d->H, d->K);
    }
    if (!in->u || !in->delta || !in->A || !in->Bm || !in->Cm) {
        return lina_set_error(LINA_EINVAL, "mamba: u, delta, A, B and C are required");
    }
    c->B = d->B;
    c->T = d->T;
    c->E = d->H;
    c->N = d->K;
    c->S = d->chunk > 0 ? d->chunk : 64;
    c->ng = (c->E + MB_CG - 1) / MB_CG;
    return LINA_OK;
}

static inline float mb_sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* dt of channel ch from its raw delta */
static inline float mb_dt(const lina_mamba_in *in, float delta, int ch)
{
    float x = delta + (in->delta_bias ? in->delta_bias[ch] : 0.0f);
    return in->delta_softplus ? lina_softplusf(x) : x;
}

/* d dt / d delta */
static inline float mb_ddt(const lina_mamba_in *in, float delta, int ch)
{
    return in->delta_softplus ? mb_sigmoid(delta + (in->delta_bias ? in->delta_bias[ch] : 0.0f))
                              : 1.0f;
}

/* o from the scan's C.h part s: y = s + D u, o = y silu(z) */
static inline float mb_out(const lina_mamba_in *in, size_t r, int ch, float s)
{
    float y = s + (in->D ? in->D[ch] * in->u[r] : 0.0f);
    if (in->z) {
        const float z = in->z[r];
        y *= z * mb_sigmoid(z);
    }
    return y;
}

/* dy and dz of one element from do and the scan part s */
static inline float mb_gate_back(const lina_mamba_in *in, size_t r, int ch, float s, float dout,
                                 float *dz)
{
    if (!in->z) {
        return dout;
    }
    const float y = s + (in->D ? in->D[ch] * in->u[r] : 0.0f);
    const float z = in->z[r], sg = mb_sigmoid(z);
    if (dz) {
        *dz = dout * y * sg * (1.0f + z * (1.0f - sg));
    }
    return dout * z * sg;
}

/* The scan's per-step transcendentals for a block of n <= MB_CG channels, as
 * vector loops around lina_vexp (the scalar expf / log1pf of mb_dt, mb_out and
 * mb_gate_back cost more than the N-wide state update itself). */

/* y = sigmoid(x) */
static void mb_vsigmoid(float *y, const float *x, int n)
{
    float e[MB_CG] = {0};
    for (int i = 0; i < n; i++) {
        e[i] = -x[i];
    }
    lina_vexp(e, e, (size_t)n);
#pragma omp simd
    for (int i = 0; i < n; i++) {
        y[i] = 1.0f / (1.0f + e[i]);
    }
}

/* y = softplus(x) = max(x, 0) + log1p(exp(-|x|)); log1p(e) for e in (0, 1] as
 * 2 atanh(s), s = e / (2 + e) <= 1/3, by its odd series to s^13 (relative error
 * below 1e-7) */
static void mb_vsoftplus(float *y, const float *x, int n)
{
    float e[MB_CG] = {0};
    for (int i = 0; i < n; i++) {
        e[i] = -fabsf(x[i]);
    }
    lina_vexp(e, e, (size_t)n);
#pragma omp simd
    for (int i = 0; i < n; i++) {
        const float sv = e[i] / (2.0f + e[i]), s2 = sv * sv;
        float p = 1.0f / 13.0f;
        p = p * s2 + 1.0f / 11.0f;
        p = p * s2 + 1.0f / 9.0f;
        p = p * s2 + 1.0f / 7.0f;
        p = p * s2 + 1.0f / 5.0f;
        p = p * s2 + 1.0f / 3.0f;
        p = p * s2 + 1.0f;
        y[i] = (x[i] > 0.0f ? x[i] : 0.0f) + 2.0f * sv * p;
    }
}

/* dt of nc channels c0.. of row r0 (delta + delta_bias, softplus of it with delta_softplus) */
static void mb_vdt(const lina_mamba_in *in, size_t r0, int c0, int nc, float *dt)
{
    for (int i = 0; i < nc; i++) {
        dt[i] = in->delta[r0 + i] + (in->delta_bias ? in->delta_bias[c0 + i] : 0.0f);
    }
    if (in->delta_softplus) {
        mb_vsoftplus(dt, dt, nc);
    }
}

/* sigmoid of the gate z (NULL: none) and of delta + delta_bias (the softplus's
 * derivative; 1 without delta_softplus) for nc channels of row r0 */
static void mb_vgates(const lina_mamba_in *in, size_t r0, int c0, int nc, float *sz, float *sd)
{
    if (in->z) {
        mb_vsigmoid(sz, in->z + r0, nc);
    }
    if (in->delta_softplus) {
        for (int i = 0; i < nc; i++) {
            sd[i] = in->delta[r0 + i] + (in->delta_bias ? in->delta_bias[c0 + i] : 0.0f);
        }
        mb_vsigmoid(sd, sd, nc);
    } else {
        for (int i = 0; i < nc; i++) {
            sd[i] = 1.0f;
        }
    }
}

/* The decays a[i*N+n] = exp(dt_i A[c0+i, n]) and the inputs x_i = dt_i u_i
 * of row r0 (offset of (b,t,c0)) for nc channels. */
static void mb_step_in(const mb_ctx *c, const lina_mamba_in *in, size_t r0, int c0, int nc,
                       float *dt, float *x, float *a)
{
    const int N = c->N;
    mb_vdt(in, r0, c0, nc, dt);
    for (int i = 0; i < nc; i++) {
        x[i] = dt[i] * in->u[r0 + i];
        const float *Ar = in->A + (size_t)(c0 + i) * N;
        float *ar = a + (size_t)i * N;
        for (int n = 0; n < N; n++) {
            ar[n] = dt[i] * Ar[n];
        }
    }
    lina_vexp(a, a, (size_t)nc * N);
}

/* h = a * h + x B for nc channels */
static inline void mb_update(int nc, int N, const float *a, const float *x, const float *Bt,
                             const float *hp, float *h)
{
    for (int i = 0; i < nc; i++) {
        const float xi = x[i];
        const float *ar = a + (size_t)i * N, *hr = hp + (size_t)i * N;
        float *ho = h + (size_t)i * N;
#pragma omp simd
        for (int n = 0; n < N; n++) {
            ho[n] = ar[n] * hr[n] + xi * Bt[n];
        }
    }
}

/* ============================================================ recurrent */

/* per-thread floats of the forward scan */
static size_t mb_fwd_floats(const mb_ctx *c)
{
    return (size_t)MB_CG * c->N * 2 + 2 * MB_CG;
}

static int mb_scan_fwd(const mb_ctx *c, const lina_mamba_in *in, lina_mamba_out *out, lina_ws *ws)
{
    const int T = c->T, E = c->E, N = c->N;
    const int tasks = c->B * c->ng;
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < tasks; task++) {
        const int b = task / c->ng, c0 = (task % c->ng) * MB_CG;
        const int nc = c0 + MB_CG <= E ? MB_CG : E - c0;
        float *h = lina_ws_get(ws, lina_thread_id(), mb_fwd_floats(c) * sizeof(float));
        if (!h) {
            rc = LINA_ENOMEM;
            continue;
        }
        float *a = h + (size_t)MB_CG * N, *dt = a + (size_t)MB_CG * N, *x = dt + MB_CG;
        const size_t hoff = ((size_t)b * E + c0) * N;
        if (in->h0) {
            memcpy(h, in->h0 + hoff, (size_t)nc * N * sizeof(float));
        } else {
            memset(h, 0, (size_t)nc * N * sizeof(float));
        }
        for (int t = 0; t < T; t++) {
            const size_t r0 = ((size_t)b * T + t) * E + c0;
            const float *Bt = in->Bm + ((size_t)b * T + t) * N, *Ct = in->Cm + ((size_t)b * T + t) * N;
            mb_step_in(c, in, r0, c0, nc, dt, x, a);
            float sy[MB_CG], sz[MB_CG];
            for (int i = 0; i < nc; i++) {
                float *hr = h + (size_t)i * N;
                const float *ar = a + (size_t)i * N, xi = x[i];
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (int n = 0; n < N; n++) {
                    const float hn = ar[n] * hr[n] + xi * Bt[n];
                    hr[n] = hn;
                    s += hn * Ct[n];
                }
                sy[i] = s + (in->D ? in->D[c0 + i] * in->u[r0 + i] : 0.0f);
            }
            if (in->z) { /* o = y silu(z) */
                mb_vsigmoid(sz, in->z + r0, nc);
                for (int i = 0; i < nc; i++) {
                    sy[i] *= in->z[r0 + i] * sz[i];
                }
            }
            memcpy(out->o + r0, sy, (size_t)nc * sizeof(float));
        }
        if (out->ht) {
            memcpy(out->ht + hoff, h, (size_t)nc * N * sizeof(float));
        }
    }
    return rc;
}

/* per-thread floats of the backward scan */
static size_t mb_bwd_floats(const mb_ctx *c)
{
    const size_t CN = (size_t)MB_CG * c->N, nseg = ((size_t)c->T + c->S - 1) / c->S;
    return (nseg + 1) * CN      /* checkpoints */
           + (size_t)(c->S + 1) * CN /* segment states */
           + (size_t)c->S * CN  /* segment decays */
           + (size_t)c->S * MB_CG /* segment dt */
           + CN + 2 * MB_CG     /* R, x, spare */
           + 2 * CN;            /* dA accumulators (double) */
}

/* shared partial sums of the backward: dB, dC per (batch, block) [T,N];
 * dA [E,N], dD and ddelta_bias [E] per batch row (double) */
typedef struct mb_parts {
    float *dB, *dC;
    double *dA, *dD, *dbias;
} mb_parts;

static void mb_scan_task_bwd(const mb_ctx *c, const lina_mamba_in *in, const lina_mamba_grad_in *gin,
                             lina_mamba_grad_out *gout, const mb_parts *pt, int b, int g, float *w)
{
    const int T = c->T, E = c->E, N = c->N, S = c->S;
    const int c0 = g * MB_CG, nc = c0 + MB_CG <= E ? MB_CG : E - c0;
    const size_t CN = (size_t)MB_CG * N, nseg = ((size_t)T + S - 1) / S;
    float *ck = w, *hs = ck + (nseg + 1) * CN, *ex = hs + (size_t)(S + 1) * CN;
    float *dts = ex + (size_t)S * CN, *R = dts + (size_t)S * MB_CG, *x = R + CN;
    double *dAacc = (double *)(((uintptr_t)(x + 2 * MB_CG) + 7) & ~(uintptr_t)7);
    float *pB = pt->dB + ((size_t)b * c->ng + g) * T * N, *pC = pt->dC + ((size_t)b * c->ng + g) * T * N;
    const size_t hoff = ((size_t)b * E + c0) * N;
    const size_t nN = (size_t)nc * N;
    /* pass 1: the state before every segment */
    float *h = hs;
    if (in->h0) {
        memcpy(h, in->h0 + hoff, nN * sizeof(float));
    } else {
        memset(h, 0, nN * sizeof(float));
    }
    for (int t = 0; t < T; t++) {
        if (t % S == 0) {
            memcpy(ck + (size_t)(t / S) * CN, h, nN * sizeof(float));
        }
        const size_t r0 = ((size_t)b * T + t) * E + c0;
        mb_step_in(c, in, r0, c0, nc, dts, x, ex);
        mb_update(nc, N, ex, x, in->Bm + ((size_t)b * T + t) * N, h, h);
    }
    /* pass 2: segments backwards */
    if (gin->dht) {
        memcpy(R, gin->dht + hoff, nN * sizeof(float));
    } else {
        memset(R, 0, nN * sizeof(float));
    }
    memset(dAacc, 0, nN * sizeof(double));
    double dD[MB_CG] = {0}, dbias[MB_CG] = {0};
    for (int s = (int)nseg - 1; s >= 0; s--) {
        const int t0 = s * S, L = T - t0 < S ? T - t0 : S;
        memcpy(hs, ck + (size_t)s * CN, nN * sizeof(float));
        for (int r = 0; r < L; r++) {
            const size_t r0 = ((size_t)b * T + t0 + r) * E + c0;
            mb_step_in(c, in, r0, c0, nc, dts + (size_t)r * MB_CG, x, ex + (size_t)r * CN);
            mb_update(nc, N, ex + (size_t)r * CN, x, in->Bm + ((size_t)b * T + t0 + r) * N,
                      hs + (size_t)r * CN, hs + (size_t)(r + 1) * CN);
        }
        for (int r = L - 1; r >= 0; r--) {
            const int t = t0 + r;
            const size_t r0 = ((size_t)b * T + t) * E + c0;
            const float *Bt = in->Bm + ((size_t)b * T + t) * N, *Ct = in->Cm + ((size_t)b * T + t) * N;
            const float *ht = hs + (size_t)(r + 1) * CN, *hp = hs + (size_t)r * CN;
            const float *er = ex + (size_t)r * CN, *dtr = dts + (size_t)r * MB_CG;
            float *pBt = pB + (size_t)t * N, *pCt = pC + (size_t)t * N;
            for (int n = 0; n < N; n++) {
                pBt[n] = 0.0f;
                pCt[n] = 0.0f;
            }
            float sz[MB_CG], sd[MB_CG];
            mb_vgates(in, r0, c0, nc, sz, sd);
            for (int i = 0; i < nc; i++) {
                const int ch = c0 + i;
                const float *hti = ht + (size_t)i * N, *hpi = hp + (size_t)i * N, *eri = er + (size_t)i * N;
                const float *Ai = in->A + (size_t)ch * N;
                float *Ri = R + (size_t)i * N;
                double *dAi = dAacc + (size_t)i * N;
                float sC = 0.0f;
                if (in->z) {
#pragma omp simd reduction(+ : sC)
                    for (int n = 0; n < N; n++) {
                        sC += hti[n] * Ct[n];
                    }
                }
                float dz = 0.0f, dy = gin->do_[r0 + i];
                if (in->z) { /* dy = do silu(z), dz = do y silu'(z) */
                    const float y = sC + (in->D ? in->D[ch] * in->u[r0 + i] : 0.0f);
                    const float zv = in->z[r0 + i], sg = sz[i];
                    dz = dy * y * sg * (1.0f + zv * (1.0f - sg));
                    dy *= zv * sg;
                }
                const float dt = dtr[i], u = in->u[r0 + i], xu = dt * u;
                float sRB = 0.0f, sdec = 0.0f;
#pragma omp simd reduction(+ : sRB, sdec)
                for (int n = 0; n < N; n++) {
                    const float Rn = Ri[n] + Ct[n] * dy;
                    pCt[n] += hti[n] * dy;
                    pBt[n] += Rn * xu;
                    sRB += Rn * Bt[n];
                    const float eh = eri[n] * hpi[n] * Rn;
                    sdec += Ai[n] * eh;
                    dAi[n] += (double)(eh * dt);
                    Ri[n] = eri[n] * Rn;
                }
                const float ddt = sdec + u * sRB;
                gout->du[r0 + i] = dt * sRB + (in->D ? in->D[ch] * dy : 0.0f);
                const float dd = ddt * sd[i];
                gout->ddelta[r0 + i] = dd;
                if (gout->dz && in->z) {
                    gout->dz[r0 + i] = dz;
                }
                dD[i] += (double)dy * u;
                dbias[i] += dd;
            }
        }
    }
    if (gout->dh0) {
        memcpy(gout->dh0 + hoff, R, nN * sizeof(float));
    }
    memcpy(pt->dA + hoff, dAacc, nN * sizeof(double));
    for (int i = 0; i < nc; i++) {
        pt->dD[(size_t)b * E + c0 + i] = dD[i];
        pt->dbias[(size_t)b * E + c0 + i] = dbias[i];
    }
}

/* Reduce the partials into gout: dB, dC over blocks, dA, dD, ddelta_bias over batch. */
static void mb_reduce(const mb_ctx *c, const lina_mamba_in *in, lina_mamba_grad_out *gout,
                      const mb_parts *pt)
{
    const int B = c->B, T = c->T, E = c->E, N = c->N, ng = c->ng;
    if (pt->dB) {
#pragma omp parallel for schedule(static)
        for (int bt = 0; bt < B * T; bt++) {
            const int b = bt / T, t = bt % T;
            float *dB = gout->dB + (size_t)bt * N, *dC = gout->dC + (size_t)bt * N;
            for (int n = 0; n < N; n++) {
                double sb = 0.0, sc = 0.0;
                for (int g = 0; g < ng; g++) {
                    const size_t o = (((size_t)b * ng + g) * T + t) * N + n;
                    sb += pt->dB[o];
                    sc += pt->dC[o];
                }
                dB[n] = (float)sb;
                dC[n] = (float)sc;
            }
        }
    }
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < E; ch++) {
        for (int n = 0; n < N; n++) {
            double s = 0.0;
            for (int b = 0; b < B; b++) {
                s += pt->dA[((size_t)b * E + ch) * N + n];
            }
            gout->dA[(size_t)ch * N + n] = (float)s;
        }
        double sd = 0.0, sb = 0.0;
        for (int b = 0; b < B; b++) {
            sd += pt->dD[(size_t)b * E + ch];
            sb += pt->dbias[(size_t)b * E + ch];
        }
        if (gout->dD && in->D) {
            gout->dD[ch] = (float)sd;
        }
        if (gout->ddelta_bias && in->delta_bias) {
            gout->ddelta_bias[ch] = (float)sb;
        }
    }
}

static size_t mb_al(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

/* bytes of the shared partials; with_bc: also the dB, dC partials */
static size_t mb_parts_bytes(const mb_ctx *c, int with_bc)
{
    const size_t bc = with_bc ? 2 * mb_al((size_t)c->B * c->ng * c->T * c->N * sizeof(float)) : 0;
    return bc + mb_al((size_t)c->B * c->E * c->N * sizeof(double)) +
           2 * mb_al((size_t)c->B * c->E * sizeof(double));
}

static void mb_parts_carve(const mb_ctx *c, int with_bc, char *mem, mb_parts *pt)
{
    memset(pt, 0, sizeof *pt);
    if (with_bc) {
        const size_t nb = mb_al((size_t)c->B * c->ng * c->T * c->N * sizeof(float));
        pt->dB = (float *)mem;
        pt->dC = (float *)(mem + nb);
        mem += 2 * nb;
    }
    pt->dA = (double *)mem;
    mem += mb_al((size_t)c->B * c->E * c->N * sizeof(double));
    pt->dD = (double *)mem;
    mem += mb_al((size_t)c->B * c->E * sizeof(double));
    pt->dbias = (double *)mem;
}

static int mb_scan_bwd(const mb_ctx *c, const lina_mamba_in *in, const lina_mamba_grad_in *gin,
                       lina_mamba_grad_out *gout, lina_ws *ws)
{
    const int slot = lina_ws_extra_slot();
    char *mem = lina_ws_get(ws, slot, mb_parts_bytes(c, 1));
    if (!mem) {
        return LINA_ENOMEM;
    }
    mb_parts pt;
    mb_parts_carve(c, 1, mem, &pt);
    const int tasks = c->B * c->ng;
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < tasks; task++) {
        float *w = lina_ws_get(ws, lina_thread_id(), mb_bwd_floats(c) * sizeof(float) + 64);
        if (!w) {
            rc = LINA_ENOMEM;
            continue;
        }
        mb_scan_task_bwd(c, in, gin, gout, &pt, task / c->ng, task % c->ng, w);
    }
    if (!rc) {
        mb_reduce(c, in, gout, &pt);
    }
    return rc;
}

/* ================================================================ chunk */

/* The engine's operands: q = C, k = B broadcast to [B,T,E,N], g = dt A
 * [B,T,E,N], v = dt u [B,T,E], o1 [B,T,E] (the C.h part). */
typedef struct mb_eng {
    float *q, *k, *g, *v, *o1;
    float *dq, *dk, *dg, *dv; /* backward */
} mb_eng;

static int mb_eng_begin(const mb_ctx *c, const lina_mamba_in *in, int bwd, lina_ws *ws, mb_eng *e)
{
    const size_t big = mb_al((size_t)c->B * c->T * c->E * c->N * sizeof(float));
    const size_t row = mb_al((size_t)c->B * c->T * c->E * sizeof(float));
    const size_t need = (bwd ? 6 : 3) * big + (bwd ? 3 : 2) * row;
    char *mem = lina_ws_get(ws, lina_ws_extra_slot(), need);
    if (!mem) {
        return LINA_ENOMEM;
    }
    memset(e, 0, sizeof *e);
    e->q = (float *)mem;
    e->k = (float *)(mem + big);
    e->g = (float *)(mem + 2 * big);
    e->v = (float *)(mem + 3 * big);
    e->o1 = (float *)(mem + 3 * big + row);
    if (bwd) {
        e->dq = (float *)(mem + 3 * big + 2 * row);
        e->dk = (float *)(mem + 4 * big + 2 * row);
        e->dg = (float *)(mem + 5 * big + 2 * row);
        e->dv = (float *)(mem + 6 * big + 2 * row);
    }
    const int T = c->T, E = c->E, N = c->N;
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < c->B * T; bt++) {
        const float *Bt = in->Bm + (size_t)bt * N, *Ct = in->Cm + (size_t)bt * N;
        for (int ch = 0; ch < E; ch++) {
            const size_t r = (size_t)bt * E + ch;
            const float dt = mb_dt(in, in->delta[r], ch);
            e->v[r] = dt * in->u[r];
            const float *Ar = in->A + (size_t)ch * N;
            for (int n = 0; n < N; n++) {
                e->q[r * N + n] = Ct[n];
                e->k[r * N + n] = Bt[n];
                e->g[r * N + n] = dt * Ar[n];
            }
        }
    }
    return LINA_OK;
}

static lina_mix_dims mb_eng_dims(const mb_ctx *c)
{
    lina_mix_dims d = {c->B, c->T, c->E, c->N, 1, c->S, 1.0f};
    return d;
}

static int mb_chunk_fwd(const mb_ctx *c, const lina_mamba_in *in, lina_mamba_out *out, lina_ws *ws)
{
    mb_eng e;
    int rc = mb_eng_begin(c, in, 0, ws, &e);
    if (rc) {
        return rc;
    }
    lina_mix_dims d = mb_eng_dims(c);
    lina_dd_in din = {.q = e.q, .k = e.k, .v = e.v, .gate = LINA_GATE_VECTOR, .g = e.g, .h0 = in->h0};
    lina_dd_out dout = {.o = e.o1, .ht = out->ht};
    if ((rc = lina_dd_fwd(&d, &din, &dout, LINA_FORM_CHUNK, ws))) {
        return rc;
    }
    const size_t nr = (size_t)c->B * c->T * c->E;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < nr; r++) {
        out->o[r] = mb_out(in, r, (int)(r % (size_t)c->E), e.o1[r]);
    }
    return LINA_OK;
}

static int mb_chunk_bwd(const mb_ctx *c, const lina_mamba_in *in, const lina_mamba_grad_in *gin,
                        lina_mamba_grad_out *gout, lina_ws *ws)
{
    mb_eng e;
    int rc = mb_eng_begin(c, in, 1, ws, &e);
    if (rc) {
        return rc;
    }
    lina_mix_dims d = mb_eng_dims(c);
    lina_dd_in din = {.q = e.q, .k = e.k, .v = e.v, .gate = LINA_GATE_VECTOR, .g = e.g, .h0 = in->h0};
    const int T = c->T, E = c->E, N = c->N;
    const size_t nr = (size_t)c->B * T * E;
    if (in->z) { /* dz needs the C.h part */
        lina_dd_out dout = {.o = e.o1};
        if ((rc = lina_dd_fwd(&d, &din, &dout, LINA_FORM_CHUNK, ws))) {
            return rc;
        }
    }
    /* dy into o1 (the engine's do), dz on the way */
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < nr; r++) {
        float dz = 0.0f;
        e.o1[r] = mb_gate_back(in, r, (int)(r % (size_t)E), e.o1[r], gin->do_[r], &dz);
        if (gout->dz && in->z) {
            gout->dz[r] = dz;
        }
    }
    lina_dd_grad_in dgi = {.do_ = e.o1, .dht = gin->dht};
    lina_dd_grad_out dgo = {.dq = e.dq, .dk = e.dk, .dv = e.dv, .dg = e.dg, .dh0 = gout->dh0};
    if ((rc = lina_dd_bwd(&d, &din, &dgi, &dgo, LINA_FORM_CHUNK, ws))) {
        return rc;
    }
    const float *dy = e.o1;
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < c->B * T; bt++) {
        float *dB = gout->dB + (size_t)bt * N, *dC = gout->dC + (size_t)bt * N;
        for (int n = 0; n < N; n++) {
            double sb = 0.0, sc = 0.0;
            for (int ch = 0; ch < E; ch++) {
                sb += e.dk[((size_t)bt * E + ch) * N + n];
                sc += e.dq[((size_t)bt * E + ch) * N + n];
            }
            dB[n] = (float)sb;
            dC[n] = (float)sc;
        }
        for (int ch = 0; ch < E; ch++) {
            const size_t r = (size_t)bt * E + ch;
            const float dt = mb_dt(in, in->delta[r], ch);
            const float *Ar = in->A + (size_t)ch * N, *dgr = e.dg + r * N;
            float sg = 0.0f;
            for (int n = 0; n < N; n++) {
                sg += dgr[n] * Ar[n];
            }
            gout->du[r] = e.dv[r] * dt + (in->D ? in->D[ch] * dy[r] : 0.0f);
            gout->ddelta[r] = (e.dv[r] * in->u[r] + sg) * mb_ddt(in, in->delta[r], ch);
            e.v[r] = dt; /* for dA below */
        }
    }
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < E; ch++) {
        double sd = 0.0, sb = 0.0;
        for (int n = 0; n < N; n++) {
            double sa = 0.0;
            for (size_t bt = 0; bt < (size_t)c->B * T; bt++) {
                const size_t r = bt * E + ch;
                sa += (double)e.dg[r * N + n] * e.v[r];
            }
            gout->dA[(size_t)ch * N + n] = (float)sa;
        }
        for (size_t bt = 0; bt < (size_t)c->B * T; bt++) {
            const size_t r = bt * E + ch;
            sd += (double)dy[r] * in->u[r];
            sb += gout->ddelta[r];
        }
        if (gout->dD && in->D) {
            gout->dD[ch] = (float)sd;
        }
        if (gout->ddelta_bias && in->delta_bias) {
            gout->ddelta_bias[ch] = (float)sb;
        }
    }
    return LINA_OK;
}

/* ============================================================ entry points */

int LINA_KFN(lina_mamba_fwd)(const lina_mix_dims *d, const lina_mamba_in *in, lina_mamba_out *out,
                             lina_form form, lina_ws *ws)
{
    mb_ctx c;
    int rc = mb_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "mamba: output o is NULL");
    }
    if (c.T == 0) {
        lina_state_pass(out->ht, in->h0, (size_t)c.B * c.E * c.N);
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_ws_extra_slot() + 1))) {
        return rc;
    }
    rc = form == LINA_FORM_CHUNK ? mb_chunk_fwd(&c, in, out, sc.ws) : mb_scan_fwd(&c, in, out, sc.ws);
    lina_ws_scope_close(&sc);
    if (rc == LINA_ENOMEM) {
        return lina_set_error(rc, "mamba: out of memory");
    }
    return rc;
}

int LINA_KFN(lina_mamba_bwd)(const lina_mix_dims *d, const lina_mamba_in *in,
                             const lina_mamba_grad_in *gin, lina_mamba_grad_out *gout,
                             lina_form form, lina_ws *ws)
{
    mb_ctx c;
    int rc = mb_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gin->do_ || !gout || !gout->du || !gout->ddelta || !gout->dA || !gout->dB ||
        !gout->dC) {
        return lina_set_error(LINA_EINVAL, "mamba: do and the outputs du, ddelta, dA, dB, dC are required");
    }
    if (c.T == 0) {
        lina_state_pass(gout->dh0, gin->dht, (size_t)c.B * c.E * c.N);
        memset(gout->dA, 0, (size_t)c.E * c.N * sizeof(float));
        if (gout->dD) {
            memset(gout->dD, 0, (size_t)c.E * sizeof(float));
        }
        if (gout->ddelta_bias) {
            memset(gout->ddelta_bias, 0, (size_t)c.E * sizeof(float));
        }
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_ws_extra_slot() + 1))) {
        return rc;
    }
    rc = form == LINA_FORM_CHUNK ? mb_chunk_bwd(&c, in, gin, gout, sc.ws)
                                 : mb_scan_bwd(&c, in, gin, gout, sc.ws);
    lina_ws_scope_close(&sc);
    if (rc == LINA_ENOMEM) {
        return lina_set_error(rc, "mamba: out of memory");
    }
    return rc;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_mamba_fwd,
                  (const lina_mix_dims *d, const lina_mamba_in *in, lina_mamba_out *out,
                   lina_form form, lina_ws *ws),
                  (d, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_mamba_bwd,
                  (const lina_mix_dims *d, const lina_mamba_in *in, const lina_mamba_grad_in *gin,
                   lina_mamba_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, in, gin, gout, form, ws))

/* ================================================ op for `lina op` / bench */

static int run_mamba(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    lina_binds bd;
    lina_binds_init(&bd);
    int err = 0;
    /* letters: B batch, T time, E channels, N state size */
    const lina_tensor *u = lina_op_input(in, "u", "BTE", &bd, 0, &err);
    const lina_tensor *dl = err ? NULL : lina_op_input(in, "delta", "BTE", &bd, 0, &err);
    const lina_tensor *A = err ? NULL : lina_op_input(in, "A", "EN", &bd, 0, &err);
    const lina_tensor *Bm = err ? NULL : lina_op_input(in, "B", "BTN", &bd, 0, &err);
    const lina_tensor *Cm = err ? NULL : lina_op_input(in, "C", "BTN", &bd, 0, &err);
    const lina_tensor *D = err ? NULL : lina_op_input(in, "D", "E", &bd, 1, &err);
    const lina_tensor *z = err ? NULL : lina_op_input(in, "z", "BTE", &bd, 1, &err);
    const lina_tensor *db = err ? NULL : lina_op_input(in, "delta_bias", "E", &bd, 1, &err);
    const lina_tensor *h0 = err ? NULL : lina_op_input(in, "h0", "BEN", &bd, 1, &err);
    if (err) {
        return err;
    }
    if ((err = lina_op_check_nonpos(A, "A", "exp(dt A) is a decay"))) {
        return err;
    }
    const int64_t E = bd.v['E' - 'A'];
    const int64_t nd = (lina_op_trusted() || o->delta_softplus) ? 0 : lina_tensor_numel(dl);
    for (int64_t i = 0; i < nd; i++) {
        const float dt = dl->data[i] + (db ? db->data[i % E] : 0.0f);
        if (dt < 0.0f) {
            return lina_set_error(LINA_EINVAL,
                                  "delta%s must be >= 0 without --delta-softplus (found %g at index %lld)",
                                  db ? " + delta_bias" : "", (double)dt, (long long)i);
        }
    }
    const lina_tensor *dO = NULL, *dht = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTE", &bd, 0, &err);
        dht = err ? NULL : lina_op_input(in, "dht", "BEN", &bd, 1, &err);
        if (err) {
            return err;
        }
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)E, (int)bd.v['N' - 'A'], 1,
                       o->chunk, 0.0f};
    lina_mamba_in min = {u->data, dl->data, A->data, Bm->data, Cm->data,
                         D ? D->data : NULL, z ? z->data : NULL, db ? db->data : NULL,
                         h0 ? h0->data : NULL, o->delta_softplus};
    lina_mamba_out mo = {lina_op_output(out, "o", "BTE", &bd), lina_op_output(out, "ht", "BEN", &bd)};
    if (!mo.o || !mo.ht) {
        return LINA_ENOMEM;
    }
    int rc = lina_mamba_fwd(&d, &min, &mo, o->form, ws);
    if (rc || !o->backward) {
        return rc;
    }
    lina_mamba_grad_out go = {lina_op_output(out, "du", "BTE", &bd),
                              lina_op_output(out, "ddelta", "BTE", &bd),
                              lina_op_output(out, "dA", "EN", &bd),
                              lina_op_output(out, "dB", "BTN", &bd),
                              lina_op_output(out, "dC", "BTN", &bd),
                              D ? lina_op_output(out, "dD", "E", &bd) : NULL,
                              z ? lina_op_output(out, "dz", "BTE", &bd) : NULL,
                              db ? lina_op_output(out, "ddelta_bias", "E", &bd) : NULL,
                              h0 ? lina_op_output(out, "dh0", "BEN", &bd) : NULL};
    if (!go.du || !go.ddelta || !go.dA || !go.dB || !go.dC || (D && !go.dD) || (z && !go.dz) ||
        (db && !go.ddelta_bias) || (h0 && !go.dh0)) {
        return LINA_ENOMEM;
    }
    lina_mamba_grad_in gi = {dO->data, dht ? dht->data : NULL};
    return lina_mamba_bwd(&d, &min, &gi, &go, o->form, ws);
}

/* Benchmark inputs: E = d->H channels, N = d->K; the layer's domain (A = -(1..N),
 * dt >= 0 with or without --delta-softplus, D and z present). */
static int mk_mamba(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    const int64_t E = d->H, N = d->K;
    int64_t se[3] = {d->B, d->T, E}, sn[3] = {d->B, d->T, N}, sa[2] = {E, N}, s1[1] = {E};
    int rc = lina_bench_tensor(in, "u", 3, se, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "delta", 3, se, &rng, 0.0f, 0.1f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "A", 2, sa, &rng, -1.0f, -0.0f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "B", 3, sn, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "C", 3, sn, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "D", 1, s1, &rng, 0.5f, 1.5f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "z", 3, se, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "delta_bias", 1, s1, &rng, 0.0f, 0.01f, 0);
    if (!rc) {
        lina_tensor *A = lina_tset_find(in, "A");
        for (int64_t i = 0; i < E * N; i++) {
            A->data[i] = -(float)(1 + i % N) * (0.5f - 0.5f * A->data[i]); /* -(n+1) x [0.5, 1] */
        }
    }
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 3, se, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule), E = H channels, N = K: recurrent 6*B*T*E*N (dt A, the
 * decay and input products, the C.h read; the exponentials not counted);
 * chunk: the engine's GLA count with K = N, V = 1. */
static double mamba_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    const double bte = (double)d->B * d->T * d->H, N = d->K, C = o->chunk > 0 ? o->chunk : 64;
    if (o->form == LINA_FORM_RECURRENT) {
        return 6.0 * bte * N;
    }
    return bte * (2 * C * N + 2 * C + 4 * N);
}

const lina_op_info lina_op_mamba = {
    "mamba", "Mamba-1 selective scan (u, delta, A, B, C [, D, z, delta_bias, h0]); --H = E, --K = N",
    {"--delta-softplus", NULL},
    run_mamba, mk_mamba, mamba_flops};
#endif /* LINA_ISA_PRIMARY */
