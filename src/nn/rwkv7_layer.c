/* rwkv7_layer.c -- FLA's RWKV-7 block (RWKV7Block: RWKV7Attention and
 * RWKV7FeedForward between LayerNorms; docs/mixers.md section 14) as one kind
 * that is the whole block (LINA_KIND_BLOCK):
 *
 *   x0 = pre_norm(x) (layer 0 with norm_first) or x
 *   u  = attn_norm(x0);  d = u_{t-1} - u_t (token shift, u_0 from the state or 0)
 *   x_c = u + d * x_c   for c in r, w, k, v, a, g
 *   r = W_r x_r,  k = W_k x_k,  v = W_v x_v
 *   w = -e^-1/2 sigmoid(W_w2 tanh(W_w1 x_w) + b_w)           (log decay)
 *   layer 0: v_first = v;  later: v += (v_first - v) * sigmoid(W_v2 W_v1 x_v + b_v)
 *   iclr = sigmoid(W_a2 W_a1 x_a + b_a),  g = W_g2 sigmoid(W_g1 x_g)
 *   kk = L2Norm_head(k * k_k) (eps 1e-6);  k <- k * (1 + (iclr - 1) * k_a)
 *   o = rwkv7(r, w, k, v, a = -kk, b = kk * iclr) (scale 1)
 *   o = GroupNorm_heads(o) (eps head_dim * norm_eps);  o = (o + (sum_i r k r_k) v) * g
 *   h = x0 + W_o o
 *   f = ffn_norm(h);  e = f_{t-1} - f_t;  y = h + W_value relu(W_key (f + e * ffn.x_k))^2
 *   out = y - x   (the model adds x back)
 *
 * v_first travels from layer 0 to the others through lina_mixer_call.carry.
 * Decode state per sequence: the last attn_norm output [D], the last
 * ffn_norm output [D], the state [H, K, Vh]. Forward, backward, FLA's
 * initial values; the kind table at the end. */
#include "nn.h"

#include <math.h>
#include <string.h>

#define RW_DECAY_SCALE 0.6065306597126334 /* e^-1/2 */

typedef struct rw_dims {
    int D, H, K, Vd, I, L, layer;
    int rw, rv, ra, rg; /* LoRA ranks */
    int pre, bias;      /* layer 0's pre_norm; LayerNorm biases */
    float eps, geps;    /* LayerNorm eps, GroupNorm eps (head_dim * norm_eps) */
} rw_dims;

enum {
    RW_PRE_W, RW_PRE_B, RW_AN_W, RW_AN_B, RW_FN_W, RW_FN_B,
    RW_XR, RW_XW, RW_XK, RW_XV, RW_XA, RW_XG, /* the six mixes, in this order */
    RW_KK, RW_KA, RW_RK, RW_WR, RW_WK, RW_WV, RW_WO,
    RW_W1, RW_W2, RW_WB, RW_V1, RW_V2, RW_VB, RW_A1, RW_A2, RW_AB, RW_G1, RW_G2,
    RW_GN_W, RW_GN_B, RW_FX, RW_KEY, RW_VAL
};

/* per-row activations, in this order (floats per row in rw_row) */
typedef struct rw_acts {
    float *x0, *u, *mix, *r, *k, *v0, *v, *tw, *w, *vl, *sv, *al, *ic, *gs, *g;
    float *kk, *k2, *na, *nb, *o, *on, *ob, *og, *h, *f, *fm, *kp, *kh;
    float *st; /* row statistics: pre (2), attn (2), ffn (2), group (2H), kk rnorm (H) */
} rw_acts;

static size_t rw_row(const rw_dims *d)
{
    const size_t D = d->D, Kd = D, V = d->Vd, I = d->I;
    return 2 * D + 6 * D + 2 * Kd + 2 * V + d->rw + Kd + d->rv + V + d->ra + Kd + d->rg + V + 4 * Kd + 5 * V +
           3 * D + 2 * I + 6 + 3 * (size_t)d->H;
}

static void rw_carve(rw_acts *a, float *p, const rw_dims *d, int N)
{
    const size_t n = (size_t)N, D = d->D, V = d->Vd, I = d->I;
#define TAKE(f, w) (a->f = p, p += n * (size_t)(w))
    TAKE(x0, D); TAKE(u, D); TAKE(mix, 6 * D); TAKE(r, D); TAKE(k, D); TAKE(v0, V); TAKE(v, V);
    TAKE(tw, d->rw); TAKE(w, D); TAKE(vl, d->rv); TAKE(sv, V); TAKE(al, d->ra); TAKE(ic, D);
    TAKE(gs, d->rg); TAKE(g, V); TAKE(kk, D); TAKE(k2, D); TAKE(na, D); TAKE(nb, D);
    TAKE(o, V); TAKE(on, V); TAKE(ob, V); TAKE(og, V); TAKE(h, D); TAKE(f, D); TAKE(fm, D);
    TAKE(kp, I); TAKE(kh, I); TAKE(st, 6 + 3 * d->H);
#undef TAKE
}

static size_t rw_acts_floats(const rw_dims *d, int N)
{
    return (size_t)N * rw_row(d);
}

static size_t rw_scratch_floats(const rw_dims *d, int N)
{
    /* the gradients of the activations, then the kernel's dr, dw, dk, da, db [N, D] and dv [N, Vd],
       a row-product buffer [N, D], dr_k [H, K] */
    return (size_t)N * (rw_row(d) + 6 * (size_t)d->D + (size_t)d->Vd) + (size_t)d->H * d->K;
}

static size_t rw_state_floats(const rw_dims *d, int B)
{
    return (size_t)B * (2 * (size_t)d->D + (size_t)d->D * ((size_t)d->Vd / d->H));
}

static size_t rw_carry_floats(const rw_dims *d, int N)
{
    return (size_t)N * d->Vd;
}

static inline float sigf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* token-shift mix of rows [B*T, C]: y_c = x + (x_{t-1} - x) * mu_c for nmu mixes (y: nmu
 * blocks of [N, C]); x_{-1} from prev [B, C] or 0 */
static void rw_shift_mix(float *y, const float *x, const float *const *mu, int nmu, const float *prev, int B, int T,
                         int C)
{
    const size_t N = (size_t)B * T;
#pragma omp parallel for if (N * (size_t)C >= 32768)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const size_t n = (size_t)b * T + t;
            const float *xr = x + n * C, *xp = t ? xr - C : prev ? prev + (size_t)b * C : NULL;
            for (int j = 0; j < nmu; j++) {
                float *yr = y + ((size_t)j * N + n) * C;
                for (int i = 0; i < C; i++) {
                    const float dl = (xp ? xp[i] : 0.0f) - xr[i];
                    yr[i] = xr[i] + dl * mu[j][i];
                }
            }
        }
    }
}

/* its backward: dx += sum_j dy_j * (1 - mu_j) at t and dy_j * mu_j at t-1; dmu_j += sum_n dy_j * d
 * (a fixed-order reduction over rows); training only (no previous state) */
static void rw_shift_mix_bwd(float *dx, float *const *dmu, const float *dy, const float *x,
                             const float *const *mu, int nmu, int B, int T, int C)
{
    const size_t N = (size_t)B * T;
#pragma omp parallel for if (N * (size_t)C >= 32768)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const size_t n = (size_t)b * T + t;
            float *dxr = dx + n * C;
            for (int j = 0; j < nmu; j++) {
                const float *dyr = dy + ((size_t)j * N + n) * C;
                const float *dyn = t + 1 < T ? dyr + C : NULL;
                for (int i = 0; i < C; i++) {
                    dxr[i] += dyr[i] * (1.0f - mu[j][i]) + (dyn ? dyn[i] * mu[j][i] : 0.0f);
                }
            }
        }
    }
    for (int j = 0; j < nmu; j++) {
        const float *dyj = dy + (size_t)j * N * C;
#pragma omp parallel for if (N * (size_t)C >= 32768)
        for (int i = 0; i < C; i++) {
            double s = 0.0;
            for (int b = 0; b < B; b++) {
                for (int t = 0; t < T; t++) {
                    const size_t n = (size_t)b * T + t;
                    const float xp = t ? x[(n - 1) * C + i] : 0.0f;
                    s += (double)dyj[n * C + i] * (xp - x[n * C + i]);
                }
            }
            dmu[j][i] += (float)s;
        }
    }
}

/* ============================================================ forward */

static lina_mix_dims rw_kdims(const rw_dims *d, int B, int T)
{
    lina_mix_dims md = {B, T, d->H, d->K, d->Vd / d->H, 0, 1.0f};
    return md;
}

static int rw_forward(const lina_mixer_call *c)
{
    const rw_dims *d = c->dims;
    float *const *P = c->P;
    const int B = c->B, T = c->T, N = B * T, D = d->D, H = d->H, K = d->K, V = d->Vd, Vh = V / H, I = d->I;
    const size_t n = (size_t)N;
    if (T == 0) {
        return LINA_OK;
    }
    rw_acts a;
    rw_carve(&a, c->acts, d, N);
    float *st_pre = a.st, *st_an = st_pre + 2 * n, *st_fn = st_an + 2 * n, *st_gn = st_fn + 2 * n;
    float *st_kk = st_gn + 2 * n * H;
    float *sa = c->state, *sf = sa ? sa + (size_t)B * D : NULL, *S = sa ? sf + (size_t)B * D : NULL;
    /* norms */
    if (d->pre) {
        lina_layernorm_forward(a.x0, st_pre, st_pre + n, c->x, P[RW_PRE_W], P[RW_PRE_B], N, D, 1, d->eps);
    } else {
        memcpy(a.x0, c->x, n * D * sizeof(float));
    }
    lina_layernorm_forward(a.u, st_an, st_an + n, a.x0, P[RW_AN_W], P[RW_AN_B], N, D, 1, d->eps);
    const float *mu[6] = {P[RW_XR], P[RW_XW], P[RW_XK], P[RW_XV], P[RW_XA], P[RW_XG]};
    rw_shift_mix(a.mix, a.u, mu, 6, sa, B, T, D);
    const float *xr = a.mix, *xw = xr + n * D, *xk = xw + n * D, *xv = xk + n * D, *xa = xv + n * D,
                *xg = xa + n * D;
    lina_linear_forward(a.r, xr, P[RW_WR], NULL, N, D, D);
    lina_linear_forward(a.k, xk, P[RW_WK], NULL, N, D, D);
    lina_linear_forward(a.v0, xv, P[RW_WV], NULL, N, D, V);
    lina_linear_forward(a.tw, xw, P[RW_W1], NULL, N, D, d->rw);
    for (size_t i = 0; i < n * d->rw; i++) {
        a.tw[i] = tanhf(a.tw[i]);
    }
    lina_linear_forward(a.w, a.tw, P[RW_W2], P[RW_WB], N, d->rw, D);
    for (size_t i = 0; i < n * D; i++) {
        a.w[i] = (float)(-RW_DECAY_SCALE) * sigf(a.w[i]);
    }
    if (d->layer == 0) {
        memcpy(a.v, a.v0, n * V * sizeof(float));
        if (c->carry) {
            memcpy(c->carry, a.v0, n * V * sizeof(float));
        }
    } else {
        if (!c->carry) {
            return lina_set_error(LINA_EINVAL, "rwkv7: layer %d has no v_first from layer 0", d->layer);
        }
        lina_linear_forward(a.vl, xv, P[RW_V1], NULL, N, D, d->rv);
        lina_linear_forward(a.sv, a.vl, P[RW_V2], P[RW_VB], N, d->rv, V);
        for (size_t i = 0; i < n * V; i++) {
            a.sv[i] = sigf(a.sv[i]);
            a.v[i] = a.v0[i] + (c->carry[i] - a.v0[i]) * a.sv[i];
        }
    }
    lina_linear_forward(a.al, xa, P[RW_A1], NULL, N, D, d->ra);
    lina_linear_forward(a.ic, a.al, P[RW_A2], P[RW_AB], N, d->ra, D);
    for (size_t i = 0; i < n * D; i++) {
        a.ic[i] = sigf(a.ic[i]);
    }
    lina_linear_forward(a.gs, xg, P[RW_G1], NULL, N, D, d->rg);
    for (size_t i = 0; i < n * d->rg; i++) {
        a.gs[i] = sigf(a.gs[i]);
    }
    lina_linear_forward(a.g, a.gs, P[RW_G2], NULL, N, d->rg, V);
    /* kk = L2Norm_head(k * k_k); k2 = k (1 + (iclr - 1) k_a); kernel a = -kk, b = kk iclr */
    for (size_t i = 0; i < n * D; i++) {
        a.kk[i] = a.k[i] * P[RW_KK][i % D];
    }
    lina_l2norm_forward(a.kk, st_kk, a.kk, N * H, K, 1e-6f);
    for (size_t i = 0; i < n * D; i++) {
        const size_t j = i % D;
        a.k2[i] = a.k[i] * (1.0f + (a.ic[i] - 1.0f) * P[RW_KA][j]);
        a.na[i] = -a.kk[i];
        a.nb[i] = a.kk[i] * a.ic[i];
    }
    lina_mix_dims md = rw_kdims(d, B, T);
    lina_rwkv7_in in = {a.r, a.w, a.k2, a.v, a.na, a.nb, S};
    lina_rwkv7_out out = {a.o, S};
    /* every form runs the op's recurrent form: it is faster than its chunk form (docs/mixers.md 13) */
    int rc = lina_rwkv7_fwd(&md, &in, &out, LINA_FORM_RECURRENT, c->ws);
    if (rc) {
        return rc;
    }
    lina_layernorm_forward(a.on, st_gn, st_gn + n * H, a.o, P[RW_GN_W], P[RW_GN_B], N, V, H, d->geps);
    for (size_t m = 0; m < n; m++) {
        for (int hh = 0; hh < H; hh++) {
            const size_t ok = m * D + (size_t)hh * K, ov = m * V + (size_t)hh * Vh;
            float s = 0.0f;
            for (int i = 0; i < K; i++) {
                s += a.r[ok + i] * a.k2[ok + i] * P[RW_RK][(size_t)hh * K + i];
            }
            for (int j = 0; j < Vh; j++) {
                a.ob[ov + j] = a.on[ov + j] + s * a.v[ov + j];
                a.og[ov + j] = a.ob[ov + j] * a.g[ov + j];
            }
        }
    }
    lina_linear_forward(a.h, a.og, P[RW_WO], NULL, N, V, D);
    for (size_t i = 0; i < n * D; i++) {
        a.h[i] += a.x0[i];
    }
    /* feed-forward */
    lina_layernorm_forward(a.f, st_fn, st_fn + n, a.h, P[RW_FN_W], P[RW_FN_B], N, D, 1, d->eps);
    const float *fmu[1] = {P[RW_FX]};
    rw_shift_mix(a.fm, a.f, fmu, 1, sf, B, T, D);
    lina_linear_forward(a.kp, a.fm, P[RW_KEY], NULL, N, D, I);
    for (size_t i = 0; i < n * I; i++) {
        const float z = a.kp[i] > 0.0f ? a.kp[i] : 0.0f;
        a.kh[i] = z * z;
    }
    lina_linear_forward(c->out, a.kh, P[RW_VAL], NULL, N, I, D);
    for (size_t i = 0; i < n * D; i++) {
        c->out[i] += a.h[i] - c->x[i];
    }
    if (sa) { /* the shift caches: each sequence's last normalised row */
        for (int b = 0; b < B; b++) {
            const size_t last = ((size_t)b * T + T - 1) * D;
            memcpy(sa + (size_t)b * D, a.u + last, D * sizeof(float));
            memcpy(sf + (size_t)b * D, a.f + last, D * sizeof(float));
        }
    }
    return LINA_OK;
}

/* ============================================================ backward */

/* dW, db += over rows of the elementwise products in fixed order: g[i % C] += sum_n x[n, i] */
static void rw_colsum(float *g, const float *x, size_t N, int C)
{
#pragma omp parallel for if (N * (size_t)C >= 32768)
    for (int i = 0; i < C; i++) {
        double s = 0.0;
        for (size_t m = 0; m < N; m++) {
            s += x[m * C + i];
        }
        g[i] += (float)s;
    }
}

static int rw_backward(const lina_mixer_call *c)
{
    const rw_dims *d = c->dims;
    float *const *P = c->P, *const *G = c->G;
    const int B = c->B, T = c->T, N = B * T, D = d->D, H = d->H, K = d->K, V = d->Vd, Vh = V / H, I = d->I;
    const size_t n = (size_t)N, nD = n * D, nV = n * V;
    if (T == 0) {
        return LINA_OK;
    }
    rw_acts a, g; /* activations and their gradients (same layout) */
    rw_carve(&a, c->acts, d, N);
    memset(c->scratch, 0, rw_scratch_floats(d, N) * sizeof(float));
    rw_carve(&g, c->scratch, d, N);
    float *kr = c->scratch + n * rw_row(d), *dw = kr + nD, *dk2 = dw + nD, *dna = dk2 + nD, *dnb = dna + nD;
    float *dv = dnb + nD, *tmp = dv + nV, *grk = tmp + nD;
    const float *st_pre = a.st, *st_an = st_pre + 2 * n, *st_fn = st_an + 2 * n, *st_gn = st_fn + 2 * n;
    const float *st_kk = st_gn + 2 * n * H;
    /* y = h + ffn: dh = dout, dffn = dout */
    memcpy(g.h, c->dout, nD * sizeof(float));
    lina_linear_backward(g.kh, G[RW_VAL], NULL, c->dout, a.kh, P[RW_VAL], N, I, D);
    for (size_t i = 0; i < n * I; i++) {
        g.kp[i] = a.kp[i] > 0.0f ? g.kh[i] * 2.0f * a.kp[i] : 0.0f;
    }
    lina_linear_backward(g.fm, G[RW_KEY], NULL, g.kp, a.fm, P[RW_KEY], N, D, I);
    const float *fmu[1] = {P[RW_FX]};
    float *dfmu[1] = {G[RW_FX]};
    rw_shift_mix_bwd(g.f, dfmu, g.fm, a.f, fmu, 1, B, T, D);
    lina_layernorm_backward(g.h, G[RW_FN_W], G[RW_FN_B], g.f, a.h, P[RW_FN_W], st_fn, st_fn + n, N, D, 1);
    /* h = x0 + W_o og */
    memcpy(g.x0, g.h, nD * sizeof(float));
    lina_linear_backward(g.og, G[RW_WO], NULL, g.h, a.og, P[RW_WO], N, V, D);
    /* og = ob * g; ob = on + s v, s = sum_i r k2 r_k per head */
    for (size_t m = 0; m < n; m++) {
        for (int hh = 0; hh < H; hh++) {
            const size_t ok = m * D + (size_t)hh * K, ov = m * V + (size_t)hh * Vh;
            const float *rk = P[RW_RK] + (size_t)hh * K;
            float s = 0.0f, ds = 0.0f;
            for (int i = 0; i < K; i++) {
                s += a.r[ok + i] * a.k2[ok + i] * rk[i];
            }
            for (int j = 0; j < Vh; j++) {
                const float dob = g.og[ov + j] * a.g[ov + j];
                g.g[ov + j] += g.og[ov + j] * a.ob[ov + j];
                g.on[ov + j] = dob;
                g.v[ov + j] += s * dob;
                ds += dob * a.v[ov + j];
            }
            for (int i = 0; i < K; i++) {
                g.r[ok + i] += ds * a.k2[ok + i] * rk[i];
                g.k2[ok + i] += ds * a.r[ok + i] * rk[i];
                grk[(size_t)hh * K + i] += ds * a.r[ok + i] * a.k2[ok + i];
            }
        }
    }
    for (size_t i = 0; i < (size_t)H * K; i++) {
        G[RW_RK][i] += grk[i];
    }
    lina_layernorm_backward(g.o, G[RW_GN_W], G[RW_GN_B], g.on, a.o, P[RW_GN_W], st_gn, st_gn + n * H, N, V, H);
    /* the kernel */
    lina_mix_dims md = rw_kdims(d, B, T);
    lina_rwkv7_in in = {a.r, a.w, a.k2, a.v, a.na, a.nb, NULL};
    lina_rwkv7_grad_in gi = {g.o, NULL};
    lina_rwkv7_grad_out go = {kr, dw, dk2, dv, dna, dnb, NULL};
    int rc = lina_rwkv7_bwd(&md, &in, &gi, &go, LINA_FORM_RECURRENT, c->ws);
    if (rc) {
        return rc;
    }
    for (size_t i = 0; i < nD; i++) {
        g.r[i] += kr[i];
        g.k2[i] += dk2[i];
        g.kk[i] = -dna[i] + dnb[i] * a.ic[i];
        g.ic[i] += dnb[i] * a.kk[i];
    }
    for (size_t i = 0; i < nV; i++) {
        g.v[i] += dv[i];
    }
    /* w = -c sigmoid(z): dz = dw * w * (1 - sigmoid) */
    for (size_t i = 0; i < nD; i++) {
        const float s = a.w[i] / (float)(-RW_DECAY_SCALE);
        g.w[i] = dw[i] * a.w[i] * (1.0f - s);
    }
    /* k2 = k (1 + (ic - 1) k_a) */
    for (size_t i = 0; i < nD; i++) {
        const float ka = P[RW_KA][i % D];
        g.k[i] += g.k2[i] * (1.0f + (a.ic[i] - 1.0f) * ka);
        g.ic[i] += g.k2[i] * a.k[i] * ka;
        tmp[i] = g.k2[i] * a.k[i] * (a.ic[i] - 1.0f);
    }
    rw_colsum(G[RW_KA], tmp, n, D);
    /* kk = l2norm(k k_k): d(k k_k) into dk2 (free now) */
    memset(dk2, 0, nD * sizeof(float));
    lina_l2norm_backward(dk2, g.kk, a.kk, st_kk, N * H, K);
    for (size_t i = 0; i < nD; i++) {
        g.k[i] += dk2[i] * P[RW_KK][i % D];
        tmp[i] = dk2[i] * a.k[i];
    }
    rw_colsum(G[RW_KK], tmp, n, D);
    /* the mixes' gradients: g.mix blocks r, w, k, v, a, g */
    float *gxr = g.mix, *gxw = gxr + nD, *gxk = gxw + nD, *gxv = gxk + nD, *gxa = gxv + nD, *gxg = gxa + nD;
    const float *xr = a.mix, *xw = xr + nD, *xk = xw + nD, *xv = xk + nD, *xa = xv + nD, *xg = xa + nD;
    /* iclr = sigmoid(al W_a2 + b) */
    for (size_t i = 0; i < nD; i++) {
        g.ic[i] *= a.ic[i] * (1.0f - a.ic[i]);
    }
    /* g = W_g2 gs, gs = sigmoid(W_g1 xg) */
    lina_linear_backward(g.gs, G[RW_G2], NULL, g.g, a.gs, P[RW_G2], N, d->rg, V);
    for (size_t i = 0; i < n * d->rg; i++) {
        g.gs[i] *= a.gs[i] * (1.0f - a.gs[i]);
    }
    /* v: later layers lerp to v_first */
    if (d->layer == 0) {
        for (size_t i = 0; i < nV; i++) {
            g.v0[i] = g.v[i] + (c->dcarry ? c->dcarry[i] : 0.0f);
        }
    } else {
        for (size_t i = 0; i < nV; i++) {
            const float s = a.sv[i], vf = c->carry[i];
            g.v0[i] = g.v[i] * (1.0f - s);
            c->dcarry[i] += g.v[i] * s;
            g.sv[i] = g.v[i] * (vf - a.v0[i]) * s * (1.0f - s);
        }
    }
    lina_linear_backward(gxr, G[RW_WR], NULL, g.r, xr, P[RW_WR], N, D, D);
    lina_linear_backward(gxk, G[RW_WK], NULL, g.k, xk, P[RW_WK], N, D, D);
    lina_linear_backward(gxv, G[RW_WV], NULL, g.v0, xv, P[RW_WV], N, D, V);
    lina_linear_backward(g.tw, G[RW_W2], G[RW_WB], g.w, a.tw, P[RW_W2], N, d->rw, D);
    for (size_t i = 0; i < n * d->rw; i++) {
        g.tw[i] *= 1.0f - a.tw[i] * a.tw[i];
    }
    lina_linear_backward(gxw, G[RW_W1], NULL, g.tw, xw, P[RW_W1], N, D, d->rw);
    if (d->layer > 0) {
        lina_linear_backward(g.vl, G[RW_V2], G[RW_VB], g.sv, a.vl, P[RW_V2], N, d->rv, V);
        lina_linear_backward(gxv, G[RW_V1], NULL, g.vl, xv, P[RW_V1], N, D, d->rv);
    }
    lina_linear_backward(g.al, G[RW_A2], G[RW_AB], g.ic, a.al, P[RW_A2], N, d->ra, D);
    lina_linear_backward(gxa, G[RW_A1], NULL, g.al, xa, P[RW_A1], N, D, d->ra);
    lina_linear_backward(gxg, G[RW_G1], NULL, g.gs, xg, P[RW_G1], N, D, d->rg);
    const float *mu[6] = {P[RW_XR], P[RW_XW], P[RW_XK], P[RW_XV], P[RW_XA], P[RW_XG]};
    float *dmu[6] = {G[RW_XR], G[RW_XW], G[RW_XK], G[RW_XV], G[RW_XA], G[RW_XG]};
    rw_shift_mix_bwd(g.u, dmu, gxr, a.u, mu, 6, B, T, D);
    lina_layernorm_backward(g.x0, G[RW_AN_W], G[RW_AN_B], g.u, a.x0, P[RW_AN_W], st_an, st_an + n, N, D, 1);
    if (d->pre) {
        lina_layernorm_backward(c->dx, G[RW_PRE_W], G[RW_PRE_B], g.x0, c->x, P[RW_PRE_W], st_pre, st_pre + n, N, D,
                                1);
    } else {
        for (size_t i = 0; i < nD; i++) {
            c->dx[i] += g.x0[i];
        }
    }
    for (size_t i = 0; i < nD; i++) {
        c->dx[i] -= c->dout[i]; /* out = y - x */
    }
    return LINA_OK;
}

/* ============================================================ kind
 * model_type "rwkv7": FLA's names under model.layers.{i}. */

_Static_assert(sizeof(rw_dims) <= LINA_MIXER_DIMS_BYTES, "rwkv7 dims do not fit");

static int rw_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    rw_dims *d = dims;
    memset(d, 0, sizeof *d);
    d->D = c->hidden_size;
    d->H = c->num_heads;
    d->K = c->head_dim;
    d->Vd = c->value_dim ? c->value_dim : c->hidden_size;
    d->I = lina_config_mlp_size(c);
    d->L = c->num_hidden_layers;
    d->layer = layer;
    d->rw = c->decay_low_rank_dim;
    d->rv = c->v_low_rank_dim;
    d->ra = c->a_low_rank_dim;
    d->rg = c->gate_low_rank_dim;
    d->pre = layer == 0 && c->norm_first;
    d->bias = c->norm_bias;
    d->eps = (float)c->norm_eps;
    d->geps = (float)(c->head_dim * c->norm_eps);
    if (d->H < 1 || d->K < 1 || d->H * d->K != d->D || d->Vd % d->H != 0 || d->I < 1 || d->rw < 1 || d->rv < 1 ||
        d->ra < 1 || d->rg < 1) {
        return lina_set_error(LINA_EINVAL, "rwkv7: need num_heads * head_dim == hidden_size, value_dim a multiple of "
                                           "num_heads and positive low-rank dims");
    }
    if (strcmp(c->hidden_act, "sqrelu") != 0) {
        return lina_set_error(LINA_EINVAL, "rwkv7: hidden_act \"%s\" is not supported (only sqrelu)", c->hidden_act);
    }
    if (c->num_experts > 0 || c->attn.enabled) {
        return lina_set_error(LINA_EINVAL, "rwkv7: MoE feed-forward and hybrid attention layers are not supported");
    }
    const int64_t D = d->D, V = d->Vd, I = d->I, H = d->H, K = d->K;
    const int bs = d->bias;
    int rc = 0;
#define ADD(slot, name, nd, a0, a1, a2, dec, init)                                                                  \
    if (!rc) {                                                                                                      \
        rc = lina_mixer_add(b, slot, name, nd, a0, a1, a2, dec, init);                                              \
    }
    if (d->pre) {
        ADD(RW_PRE_W, "pre_norm.weight", 1, D, 0, 0, 0, LINA_INIT_ONES);
        if (bs) {
            ADD(RW_PRE_B, "pre_norm.bias", 1, D, 0, 0, 0, LINA_INIT_ZEROS);
        }
    }
    ADD(RW_AN_W, "attn_norm.weight", 1, D, 0, 0, 0, LINA_INIT_ONES);
    if (bs) {
        ADD(RW_AN_B, "attn_norm.bias", 1, D, 0, 0, 0, LINA_INIT_ZEROS);
    }
    static const char *const mixn[6] = {"attn.x_r", "attn.x_w", "attn.x_k", "attn.x_v", "attn.x_a", "attn.x_g"};
    for (int j = 0; j < 6; j++) {
        ADD(RW_XR + j, mixn[j], 3, 1, 1, D, 0, LINA_INIT_ZEROS);
    }
    ADD(RW_KK, "attn.k_k", 1, D, 0, 0, 0, LINA_INIT_ZEROS);
    ADD(RW_KA, "attn.k_a", 1, D, 0, 0, 0, LINA_INIT_ZEROS);
    ADD(RW_RK, "attn.r_k", 2, H, K, 0, 0, LINA_INIT_ZEROS);
    ADD(RW_WR, "attn.r_proj.weight", 2, D, D, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_WK, "attn.k_proj.weight", 2, D, D, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_WV, "attn.v_proj.weight", 2, V, D, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_WO, "attn.o_proj.weight", 2, D, V, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_W1, "attn.w_lora.lora.0.weight", 2, d->rw, D, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_W2, "attn.w_lora.lora.2.weight", 2, D, d->rw, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_WB, "attn.w_lora.lora.2.bias", 1, D, 0, 0, 0, LINA_INIT_ZEROS);
    if (layer > 0) {
        ADD(RW_V1, "attn.v_lora.lora.0.weight", 2, d->rv, D, 0, 1, LINA_INIT_NORMAL);
        ADD(RW_V2, "attn.v_lora.lora.2.weight", 2, V, d->rv, 0, 1, LINA_INIT_NORMAL);
        ADD(RW_VB, "attn.v_lora.lora.2.bias", 1, V, 0, 0, 0, LINA_INIT_ZEROS);
    }
    ADD(RW_A1, "attn.a_lora.lora.0.weight", 2, d->ra, D, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_A2, "attn.a_lora.lora.2.weight", 2, D, d->ra, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_AB, "attn.a_lora.lora.2.bias", 1, D, 0, 0, 0, LINA_INIT_ZEROS);
    ADD(RW_G1, "attn.g_lora.lora.0.weight", 2, d->rg, D, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_G2, "attn.g_lora.lora.2.weight", 2, V, d->rg, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_GN_W, "attn.g_norm.weight", 1, V, 0, 0, 0, LINA_INIT_ONES);
    ADD(RW_GN_B, "attn.g_norm.bias", 1, V, 0, 0, 0, LINA_INIT_ZEROS);
    ADD(RW_FN_W, "ffn_norm.weight", 1, D, 0, 0, 0, LINA_INIT_ONES);
    if (bs) {
        ADD(RW_FN_B, "ffn_norm.bias", 1, D, 0, 0, 0, LINA_INIT_ZEROS);
    }
    ADD(RW_FX, "ffn.x_k", 1, D, 0, 0, 0, LINA_INIT_ZEROS);
    ADD(RW_KEY, "ffn.key.weight", 2, I, D, 0, 1, LINA_INIT_NORMAL);
    ADD(RW_VAL, "ffn.value.weight", 2, D, I, 0, 1, LINA_INIT_NORMAL);
#undef ADD
    return rc;
}

/* FLA's initial values (RWKV7Attention / RWKV7FeedForward / LoRA): the mixes and biases by
 * position, zero o_proj, ffn.value and LoRA down-projections; the orthogonal inits of r, k, v,
 * ffn.key and the LoRA up-projections are drawn as N(0, gain^2 / max(rows, cols)), the entry
 * scale of an orthogonal matrix of that gain. */
static void rw_normal(float *p, size_t rows, size_t cols, double gain, uint64_t *s)
{
    const double sd = gain / sqrt((double)(rows > cols ? rows : cols));
    for (size_t i = 0; i < rows * cols; i += 2) {
        double u1 = ((double)(lina_splitmix64(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
        double u2 = (double)(lina_splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
        double rad = sqrt(-2.0 * log(u1));
        p[i] = (float)(sd * rad * cos(6.283185307179586 * u2));
        if (i + 1 < rows * cols) {
            p[i + 1] = (float)(sd * rad * sin(6.283185307179586 * u2));
        }
    }
}

static void rw_init(const void *dims, float *const *P, uint64_t seed)
{
    const rw_dims *d = dims;
    const int D = d->D, K = d->K, V = d->Vd, l = d->layer, L = d->L;
    const double r01 = L > 1 ? (double)l / (L - 1) : 0.0, r10 = 1.0 - (double)l / L;
    static const double pw[6] = {0.2, 0.9, 0.7, 0.7, 0.9, 0.2}; /* r, w, k, v, a, g */
    for (int i = 0; i < D; i++) {
        const double ddd = (double)i / D, lin = D > 1 ? (double)i / (D - 1) - 0.5 : 0.0;
        double zz = K > 1 ? ((i % K) - (K - 1) / 2.0) / ((K - 1) / 2.0) : 0.0;
        zz *= fabs(zz);
        const double www = -6.0 + 6.0 * pow(D > 1 ? (double)i / (D - 1) : 0.0, 1.0 + pow(r01, 0.3));
        for (int j = 0; j < 6; j++) {
            P[RW_XR + j][i] = (float)(1.0 - pow(ddd, pw[j] * r10));
        }
        P[RW_KK][i] = (float)(0.71 - lin * 0.1);
        P[RW_KA][i] = 1.02f;
        P[RW_WB][i] = (float)(www + 0.5 + zz * 2.5);
        P[RW_AB][i] = (float)(-0.19 + zz * 0.3 + lin * 0.4);
        P[RW_FX][i] = (float)(1.0 - pow(ddd, pow(r10, 4.0)));
    }
    for (int i = 0; i < d->H * K; i++) {
        P[RW_RK][i] = -0.04f;
    }
    for (int i = 0; i < V; i++) {
        P[RW_GN_W][i] = (float)pow((double)(l + 1) / L, 0.7);
        if (P[RW_VB]) {
            P[RW_VB][i] = (float)(0.73 - (V > 1 ? (double)i / (V - 1) - 0.5 : 0.0) * 0.4);
        }
    }
    uint64_t s = seed;
    rw_normal(P[RW_WR], D, D, 1.0, &s);
    rw_normal(P[RW_WK], D, D, 0.1, &s);
    rw_normal(P[RW_WV], V, D, 1.0, &s);
    memset(P[RW_WO], 0, (size_t)D * V * sizeof(float));
    memset(P[RW_W1], 0, (size_t)d->rw * D * sizeof(float));
    rw_normal(P[RW_W2], D, d->rw, 0.1, &s);
    if (P[RW_V1]) {
        memset(P[RW_V1], 0, (size_t)d->rv * D * sizeof(float));
        rw_normal(P[RW_V2], V, d->rv, 0.1, &s);
    }
    memset(P[RW_A1], 0, (size_t)d->ra * D * sizeof(float));
    rw_normal(P[RW_A2], D, d->ra, 0.1, &s);
    memset(P[RW_G1], 0, (size_t)d->rg * D * sizeof(float));
    rw_normal(P[RW_G2], V, d->rg, 0.1, &s);
    rw_normal(P[RW_KEY], d->I, D, 1.0, &s);
    memset(P[RW_VAL], 0, (size_t)D * d->I * sizeof(float));
}

LINA_KIND_SIZE(rw_acts_k, rw_acts_floats)
LINA_KIND_SIZE(rw_scratch_k, rw_scratch_floats)
LINA_KIND_SIZE(rw_carry_k, rw_carry_floats)
LINA_KIND_STATE(rw_state_k, rw_state_floats)

static const lina_kind_names rw_names = {
    "model.embeddings.weight",
    NULL,
    "model.layers.%d.",
    "model.norm.weight",
    "model.norm.bias",
};

const lina_mixer_vt lina_rwkv7_kind = {
    .name = "rwkv7",
    .build = rw_build,
    .acts_floats = rw_acts_k,
    .scratch_floats = rw_scratch_k,
    .state_floats = rw_state_k,
    .forward = rw_forward,
    .backward = rw_backward,
    .flags = LINA_KIND_BLOCK | LINA_KIND_LAYERNORM,
    .names = &rw_names,
    .carry_floats = rw_carry_k,
    .init = rw_init,
};
