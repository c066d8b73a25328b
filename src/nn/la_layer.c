/* la_layer.c -- FLA's LinearAttention layer (docs/mixers.md section 3.3): q/k/v
 * projections, the per-head feature maps (identity, elu, relu,
 * elementwise_product, hedgehog, t2r, dpfp), optional sum normalisation of q
 * and k, grouped kv heads, linear attention on the diagonal-decay engine
 * (lina_dd_fwd with no gate), the optional running normaliser
 * (norm_feature_map), the per-head output RMSNorm and o_proj. Forward (with
 * an optional decode state) and backward. Shapes in la_layer.h. */
#include "la_layer.h"

#include "nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LA_SUM_EPS 1e-4  /* norm_q / norm_k: x / (sum x + 1e-4) */
#define LA_DEN_EPS 1e-10 /* normaliser: o / (scale q.z + 1e-10) */

static const char *const fmap_names[] = {"identity", "elu", "relu", "elementwise_product", "hedgehog", "t2r", "dpfp"};
#define N_FMAPS ((int)(sizeof(fmap_names) / sizeof(fmap_names[0])))

int lina_la_fmap_parse(const char *name, int *fmap)
{
    for (int i = 0; name && i < N_FMAPS; i++) {
        if (strcmp(name, fmap_names[i]) == 0) {
            *fmap = i;
            return LINA_OK;
        }
    }
    return lina_set_error(LINA_EINVAL,
                          "linear_attn: unknown feature_map \"%s\" (expected one of identity, elu, relu, "
                          "elementwise_product, hedgehog, t2r, dpfp)",
                          name && name[0] ? name : "null");
}

int lina_la_fmap_dim(int fmap, int K)
{
    switch (fmap) {
    case LINA_LA_FM_HEDGEHOG:
        return 2 * K;
    case LINA_LA_FM_DPFP:
        return 2 * LINA_LA_DPFP_NU * K;
    default:
        return K;
    }
}

int lina_la_fmap_linears(int fmap)
{
    return fmap == LINA_LA_FM_HADAMARD ? 2 : fmap == LINA_LA_FM_HEDGEHOG || fmap == LINA_LA_FM_T2R ? 1 : 0;
}

int lina_la_check_dims(const lina_la_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->Hkv <= 0 || d->H % d->Hkv != 0 || d->K <= 0 || d->V <= 0 ||
        d->fmap < 0 || d->fmap >= N_FMAPS || d->F != lina_la_fmap_dim(d->fmap, d->K)) {
        return lina_set_error(LINA_EINVAL, "linear_attn layer: bad dims");
    }
    if (!(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "linear_attn layer: norm_eps must be > 0");
    }
    return LINA_OK;
}

/* map internals per row: floats of s1 and s2 ([R, K] each or absent) */
static int n_internal(const lina_la_dims *d)
{
    return lina_la_fmap_linears(d->fmap);
}

size_t lina_la_acts_floats(const lina_la_dims *d, int N)
{
    size_t n = (size_t)N, H = (size_t)d->H, G = (size_t)d->Hkv, K = (size_t)d->K, V = (size_t)d->V,
           F = (size_t)d->F;
    size_t s = H * K + G * K + G * V;           /* qp, kp, vv */
    s += (size_t)n_internal(d) * (H * K + G * K); /* q1, q2, k1, k2 */
    s += H * F + G * F;                          /* qf, kf */
    s += d->norm_q ? H * F : 0;                  /* q */
    s += d->norm_k ? G * F : 0;                  /* kn */
    s += G != H ? H * F + H * V : 0;             /* k, v */
    s += H * V;                                  /* num */
    s += d->normalize ? H + H * V : 0;           /* den, o */
    s += H + H * V;                              /* rstd, y */
    s += d->use_short_conv ? H * K + G * K + G * V : 0; /* qc, kc, vc */
    return n * s;
}

void lina_la_acts_carve(lina_la_acts *a, float *buf, const lina_la_dims *d, int N)
{
    size_t n = (size_t)N, H = (size_t)d->H, G = (size_t)d->Hkv, K = (size_t)d->K, V = (size_t)d->V,
           F = (size_t)d->F;
    int ni = n_internal(d);
    float *p = buf;
    a->qp = p;  p += n * H * K;
    a->kp = p;  p += n * G * K;
    a->vv = p;  p += n * G * V;
    a->q1 = a->q2 = a->k1 = a->k2 = NULL;
    if (ni >= 1) {
        a->q1 = p; p += n * H * K;
        a->k1 = p; p += n * G * K;
    }
    if (ni >= 2) {
        a->q2 = p; p += n * H * K;
        a->k2 = p; p += n * G * K;
    }
    a->qf = p;  p += n * H * F;
    a->kf = p;  p += n * G * F;
    a->q = a->qf;
    a->kn = a->kf;
    if (d->norm_q) {
        a->q = p; p += n * H * F;
    }
    if (d->norm_k) {
        a->kn = p; p += n * G * F;
    }
    a->k = a->kn;
    a->v = a->vv;
    if (G != H) {
        a->k = p; p += n * H * F;
        a->v = p; p += n * H * V;
    }
    a->num = p; p += n * H * V;
    a->den = NULL;
    a->o = a->num;
    if (d->normalize) {
        a->den = p; p += n * H;
        a->o = p;   p += n * H * V;
    }
    a->rstd = p; p += n * H;
    a->y = p;    p += n * H * V;
    if (d->use_short_conv) {
        a->qc = p; p += n * H * K;
        a->kc = p; p += n * G * K;
        a->vc = p;
    } else {
        a->qc = a->qp;
        a->kc = a->kp;
        a->vc = a->vv;
    }
}

size_t lina_la_scratch_floats(const lina_la_dims *d, int N)
{
    size_t n = (size_t)N, H = (size_t)d->H, G = (size_t)d->Hkv, K = (size_t)d->K, V = (size_t)d->V,
           F = (size_t)d->F;
    size_t s = 3 * H * V + 2 * H * F;           /* dy, dO, dv, dq, dk */
    s += d->normalize ? H : 0;                  /* dden */
    s += G != H ? G * F + G * V : 0;            /* dkn, dvv */
    s += d->norm_q ? H * F : 0;                 /* dqf */
    s += d->norm_k ? G * F : 0;                 /* dkf */
    s += H * K + G * K;                         /* dqp, dkp */
    s += 3 * H * K;                             /* map temporaries t1 [R, 2K], t2 [R, K] */
    s += d->use_short_conv ? H * K + G * K + G * V : 0; /* dqc, dkc, dvc */
    return n * s;
}

/* the recurrent state [B,H,F,V] (+ z [B,H,F]) without the conv tails */
static size_t la_rec_floats(const lina_la_dims *d, int B)
{
    size_t hf = (size_t)B * d->H * d->F;
    return hf * (size_t)d->V + (d->normalize ? hf : 0);
}

size_t lina_la_state_floats(const lina_la_dims *d, int B)
{
    size_t conv = (size_t)d->H * d->K + (size_t)d->Hkv * (d->K + d->V);
    return la_rec_floats(d, B) + (d->use_short_conv ? (size_t)B * conv * (size_t)d->conv_size : 0);
}

/* ------------------------------------------------------------ feature maps */

/* r[i] of dpfp: [relu(x), -relu(x)] over 2K */
static inline float dpfp_r(const float *x, int i, int K)
{
    float v = i < K ? x[i] : x[i - K];
    v = v > 0.0f ? v : 0.0f;
    return i < K ? v : -v;
}

/* phi [R, F] = map(x [R, K]); s1, s2 [R, K] the Linear outputs kept for backward */
static void fmap_forward(const lina_la_dims *d, const float *w1, const float *b1, const float *w2, const float *b2,
                         const float *x, float *phi, float *s1, float *s2, int R)
{
    int K = d->K, F = d->F;
    size_t nk = (size_t)R * K;
    switch (d->fmap) {
    case LINA_LA_FM_IDENTITY:
        memcpy(phi, x, nk * sizeof(float));
        break;
    case LINA_LA_FM_ELU:
    case LINA_LA_FM_RELU:
        lina_phi_forward(phi, x, nk, d->fmap == LINA_LA_FM_ELU);
        break;
    case LINA_LA_FM_HADAMARD:
        lina_linear_forward(s1, x, w1, b1, R, K, K);
        lina_linear_forward(s2, x, w2, b2, R, K, K);
        for (size_t i = 0; i < nk; i++) {
            phi[i] = s1[i] * s2[i];
        }
        break;
    case LINA_LA_FM_HEDGEHOG:
        lina_linear_forward(s1, x, w1, b1, R, K, K);
#pragma omp parallel for if (nk >= 32768)
        for (int r = 0; r < R; r++) {
            const float *u = s1 + (size_t)r * K;
            float *y = phi + (size_t)r * F;
            float m = 0.0f;
            for (int i = 0; i < K; i++) {
                float a = fabsf(2.0f * u[i]);
                m = a > m ? a : m;
            }
            double s = 0.0;
            for (int i = 0; i < K; i++) {
                y[i] = expf(2.0f * u[i] - m);
                y[K + i] = expf(-2.0f * u[i] - m);
                s += (double)y[i] + y[K + i];
            }
            float inv = (float)(1.0 / s);
            for (int i = 0; i < F; i++) {
                y[i] *= inv;
            }
        }
        break;
    case LINA_LA_FM_T2R:
        lina_linear_forward(s1, x, w1, NULL, R, K, K);
        for (size_t i = 0; i < nk; i++) {
            phi[i] = s1[i] > 0.0f ? s1[i] : 0.0f;
        }
        break;
    case LINA_LA_FM_DPFP: {
        int K2 = 2 * K;
#pragma omp parallel for if ((size_t)R * F >= 32768)
        for (int r = 0; r < R; r++) {
            const float *xr = x + (size_t)r * K;
            float *y = phi + (size_t)r * F;
            for (int j = 1; j <= LINA_LA_DPFP_NU; j++) {
                for (int i = 0; i < K2; i++) {
                    int p = ((i - j) % K2 + K2) % K2;
                    y[(size_t)(j - 1) * K2 + i] = dpfp_r(xr, i, K) * dpfp_r(xr, p, K);
                }
            }
        }
        break;
    }
    default:
        break;
    }
}

/* dx [R, K] += d map / dx^T dphi [R, F]; parameter gradients accumulate (NULL:
 * skipped). t1 [R, 2K], t2 [R, K] temporaries. */
static void fmap_backward(const lina_la_dims *d, const float *w1, const float *w2, float *gw1, float *gb1,
                          float *gw2, float *gb2, const float *x, const float *phi, const float *s1, const float *s2,
                          const float *dphi, float *dx, float *t1, float *t2, int R)
{
    int K = d->K, F = d->F;
    size_t nk = (size_t)R * K;
    switch (d->fmap) {
    case LINA_LA_FM_IDENTITY:
        for (size_t i = 0; i < nk; i++) {
            dx[i] += dphi[i];
        }
        break;
    case LINA_LA_FM_ELU:
    case LINA_LA_FM_RELU:
        lina_phi_backward(dx, dphi, phi, nk, d->fmap == LINA_LA_FM_ELU);
        break;
    case LINA_LA_FM_HADAMARD:
        for (size_t i = 0; i < nk; i++) {
            t1[i] = dphi[i] * s2[i];
            t2[i] = dphi[i] * s1[i];
        }
        lina_linear_backward(dx, gw1, gb1, t1, x, w1, R, K, K);
        lina_linear_backward(dx, gw2, gb2, t2, x, w2, R, K, K);
        break;
    case LINA_LA_FM_HEDGEHOG:
        /* softmax over y = [2u, -2u]: dy = phi (dphi - phi.dphi); du = 2 (dy_i - dy_{K+i}) */
#pragma omp parallel for if (nk >= 32768)
        for (int r = 0; r < R; r++) {
            const float *ph = phi + (size_t)r * F, *g = dphi + (size_t)r * F;
            double c = 0.0;
            for (int i = 0; i < F; i++) {
                c += (double)ph[i] * g[i];
            }
            float cf = (float)c;
            float *du = t1 + (size_t)r * K;
            for (int i = 0; i < K; i++) {
                du[i] = 2.0f * (ph[i] * (g[i] - cf) - ph[K + i] * (g[K + i] - cf));
            }
        }
        lina_linear_backward(dx, gw1, gb1, t1, x, w1, R, K, K);
        break;
    case LINA_LA_FM_T2R:
        for (size_t i = 0; i < nk; i++) {
            t1[i] = s1[i] > 0.0f ? dphi[i] : 0.0f;
        }
        lina_linear_backward(dx, gw1, NULL, t1, x, w1, R, K, K);
        break;
    case LINA_LA_FM_DPFP: {
        int K2 = 2 * K;
#pragma omp parallel for if ((size_t)R * F >= 32768)
        for (int r = 0; r < R; r++) {
            const float *xr = x + (size_t)r * K, *g = dphi + (size_t)r * F;
            float *dr = t1 + (size_t)r * K2;
            memset(dr, 0, (size_t)K2 * sizeof(float));
            for (int j = 1; j <= LINA_LA_DPFP_NU; j++) {
                for (int i = 0; i < K2; i++) {
                    int p = ((i - j) % K2 + K2) % K2;
                    float gi = g[(size_t)(j - 1) * K2 + i];
                    dr[i] += gi * dpfp_r(xr, p, K);
                    dr[p] += gi * dpfp_r(xr, i, K);
                }
            }
            float *dxr = dx + (size_t)r * K;
            for (int i = 0; i < K; i++) {
                dxr[i] += xr[i] > 0.0f ? dr[i] - dr[K + i] : 0.0f;
            }
        }
        break;
    }
    default:
        break;
    }
    (void)t2;
}

/* ------------------------------------------------------------ the layer */

int lina_la_forward(float *out, lina_la_acts *a, const float *x, const lina_la_dims *d, const lina_la_params *p,
                    int B, int T, float *state, const lina_sp *sp, lina_form form, lina_ws *ws)
{
    int rc = lina_la_check_dims(d);
    if (rc == LINA_OK && sp && sp->size > 1 && d->normalize) {
        rc = lina_set_error(LINA_EINVAL, "linear_attn: sequence parallelism (--sp) with norm_feature_map is not "
                                         "supported");
    }
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, G = d->Hkv, K = d->K, V = d->V, F = d->F;
    size_t SZ = (size_t)B * H * F * V;
    /* projections, then the optional SiLU short convs (decode tails after the recurrent state) */
    lina_linear_forward(a->qc, x, p->q_proj, NULL, N, D, H * K);
    lina_linear_forward(a->kc, x, p->k_proj, NULL, N, D, G * K);
    lina_linear_forward(a->vc, x, p->v_proj, NULL, N, D, G * V);
    if (d->use_short_conv) {
        int W = d->conv_size;
        float *cq = state ? state + la_rec_floats(d, B) : NULL;
        float *ck = cq ? cq + (size_t)B * H * K * W : NULL, *cv = ck ? ck + (size_t)B * G * K * W : NULL;
        lina_conv_act_forward(a->qp, a->qc, p->q_conv, cq, B, T, H * K, W, LINA_ACT_SILU);
        lina_conv_act_forward(a->kp, a->kc, p->k_conv, ck, B, T, G * K, W, LINA_ACT_SILU);
        lina_conv_act_forward(a->vv, a->vc, p->v_conv, cv, B, T, G * V, W, LINA_ACT_SILU);
    }
    /* feature maps (per kv head before the repeat: the map is shared by heads) */
    fmap_forward(d, p->fq_w1, p->fq_b1, p->fq_w2, p->fq_b2, a->qp, a->qf, a->q1, a->q2, N * H);
    fmap_forward(d, p->fk_w1, p->fk_b1, p->fk_w2, p->fk_b2, a->kp, a->kf, a->k1, a->k2, N * G);
    if (d->norm_q) {
        lina_sumnorm_forward(a->q, a->qf, N * H, F, LA_SUM_EPS);
    }
    if (d->norm_k) {
        lina_sumnorm_forward(a->kn, a->kf, N * G, F, LA_SUM_EPS);
    }
    if (G != H) {
        lina_heads_repeat(a->k, a->kn, (size_t)N, H, G, F);
        lina_heads_repeat(a->v, a->vv, (size_t)N, H, G, V);
    }
    /* linear attention; the state [B,H,F,V] (+ z [B,H,F]) */
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->F, d->V, 64, 0.0f);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_NONE, NULL, state};
    lina_dd_out o = {.o = a->num, .ht = state, .states = NULL}; /* the state is updated in place */
    rc = lina_sp_dd_fwd(sp, d, &md, &in, &o, form, ws);
    if (rc) {
        return rc;
    }
    if (d->normalize) {
        /* z_t = z_0 + sum_{s<=t} k_s; den_t = scale q_t.z_t + 1e-10; o_t = num_t / den_t */
        double scale = 1.0 / sqrt((double)F);
        double *z = malloc((size_t)F * sizeof(double));
        if (!z) {
            return lina_set_error(LINA_ENOMEM, "linear_attn layer: out of memory");
        }
        float *zs = state ? state + SZ : NULL; /* [B,H,F] */
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                float *zbh = zs ? zs + ((size_t)b * H + h) * F : NULL;
                for (int i = 0; i < F; i++) {
                    z[i] = zbh ? zbh[i] : 0.0;
                }
                for (int t = 0; t < T; t++) {
                    size_t r = ((size_t)b * T + t) * H + h;
                    const float *kr = a->k + r * F, *qr = a->q + r * F;
                    double s = 0.0;
                    for (int i = 0; i < F; i++) {
                        z[i] += kr[i];
                        s += (double)qr[i] * z[i];
                    }
                    float den = (float)(scale * s + LA_DEN_EPS);
                    a->den[r] = den;
                    for (int j = 0; j < V; j++) {
                        a->o[r * V + j] = a->num[r * V + j] / den;
                    }
                }
                for (int i = 0; zbh && i < F; i++) {
                    zbh[i] = (float)z[i];
                }
            }
        }
        free(z);
    }
    /* output RMSNorm per head, o_proj */
    lina_rmsnorm_forward(a->y, a->rstd, a->o, d->affine ? p->norm_w : NULL, NULL, N * H, V, d->norm_eps);
    lina_linear_forward(out, a->y, p->o_proj, NULL, N, H * V, D);
    return LINA_OK;
}

int lina_la_backward(float *dx, lina_la_params *gp, const float *dout, const float *x, const lina_la_acts *a,
                     const lina_la_dims *d, const lina_la_params *p, int B, int T, float *scratch,
                     const lina_sp *sp, lina_form form, lina_ws *ws)
{
    int rc = lina_la_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, G = d->Hkv, K = d->K, V = d->V, F = d->F;
    size_t n = (size_t)N;
    memset(scratch, 0, lina_la_scratch_floats(d, N) * sizeof(float));
    float *s = scratch;
    float *dy = s;   s += n * H * V; /* [N,HV], later d num */
    float *dO = s;   s += n * H * V; /* [N,HV] d o */
    float *dv = s;   s += n * H * V; /* [N,HV] kernel dv */
    float *dq = s;   s += n * H * F; /* [N,HF] kernel dq (+ normaliser) */
    float *dk = s;   s += n * H * F; /* [N,HF] kernel dk (+ normaliser) */
    float *dden = NULL, *dkn = dk, *dvv = dv, *dqf = dq, *dkf;
    if (d->normalize) {
        dden = s; s += n * H;
    }
    if (G != H) {
        dkn = s; s += n * G * F;
        dvv = s; s += n * G * V;
    }
    if (d->norm_q) {
        dqf = s; s += n * H * F;
    }
    dkf = dkn;
    if (d->norm_k) {
        dkf = s; s += n * G * F;
    }
    float *dqp = s;  s += n * H * K;
    float *dkp = s;  s += n * G * K;
    float *t1 = s;   s += n * H * 2 * K;
    float *t2 = s;   s += n * H * K;
    float *dqc = s;  s += d->use_short_conv ? n * H * K : 0;
    float *dkc = s;  s += d->use_short_conv ? n * G * K : 0;
    float *dvc = s;

    lina_linear_backward(dy, gp->o_proj, NULL, dout, a->y, p->o_proj, N, H * V, D);
    lina_rmsnorm_backward(dO, d->affine ? gp->norm_w : NULL, NULL, dy, a->o, d->affine ? p->norm_w : NULL, a->rstd,
                          N * H, V);
    const float *dkern = dO;
    if (d->normalize) {
        /* o = num / den: d num = dO / den, d den = -(dO . o) / den */
        for (size_t r = 0; r < n * H; r++) {
            double c = 0.0;
            for (int j = 0; j < V; j++) {
                dy[r * V + j] = dO[r * V + j] / a->den[r];
                c += (double)dO[r * V + j] * a->o[r * V + j];
            }
            dden[r] = (float)(-c / a->den[r]);
        }
        dkern = dy;
    }
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->F, d->V, 64, 0.0f);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_NONE, NULL, NULL};
    lina_dd_grad_in gin = {dkern, NULL, NULL};
    lina_dd_grad_out gout = {dq, dk, dv, NULL, NULL};
    if ((rc = lina_sp_dd_bwd(sp, d, &md, &in, &gin, &gout, form, ws))) {
        return rc;
    }
    if (d->normalize) {
        /* den_t = scale q_t.z_t: dq_t += dden_t scale z_t; dk_s += scale sum_{t>=s} dden_t q_t */
        double scale = 1.0 / sqrt((double)F);
        double *z = malloc(2 * (size_t)F * sizeof(double));
        if (!z) {
            return lina_set_error(LINA_ENOMEM, "linear_attn layer: out of memory");
        }
        double *acc = z + F;
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                for (int i = 0; i < F; i++) {
                    z[i] = 0.0;
                    acc[i] = 0.0;
                }
                for (int t = 0; t < T; t++) {
                    size_t r = ((size_t)b * T + t) * H + h;
                    double c = scale * dden[r];
                    for (int i = 0; i < F; i++) {
                        z[i] += a->k[r * F + i];
                        dq[r * F + i] += (float)(c * z[i]);
                    }
                }
                for (int t = T - 1; t >= 0; t--) {
                    size_t r = ((size_t)b * T + t) * H + h;
                    double c = scale * dden[r];
                    for (int i = 0; i < F; i++) {
                        acc[i] += c * a->q[r * F + i];
                        dk[r * F + i] += (float)acc[i];
                    }
                }
            }
        }
        free(z);
    }
    if (G != H) {
        lina_heads_reduce(dkn, dk, (size_t)N, H, G, F, 1);
        lina_heads_reduce(dvv, dv, (size_t)N, H, G, V, 1);
    }
    if (d->norm_q) {
        lina_sumnorm_backward(dqf, dq, a->qf, a->q, N * H, F, LA_SUM_EPS);
    }
    if (d->norm_k) {
        lina_sumnorm_backward(dkf, dkn, a->kf, a->kn, N * G, F, LA_SUM_EPS);
    }
    fmap_backward(d, p->fq_w1, p->fq_w2, gp->fq_w1, gp->fq_b1, gp->fq_w2, gp->fq_b2, a->qp, a->qf, a->q1, a->q2,
                  dqf, dqp, t1, t2, N * H);
    fmap_backward(d, p->fk_w1, p->fk_w2, gp->fk_w1, gp->fk_b1, gp->fk_w2, gp->fk_b2, a->kp, a->kf, a->k1, a->k2,
                  dkf, dkp, t1, t2, N * G);
    if (d->use_short_conv) {
        int W = d->conv_size;
        lina_conv_act_backward(dqc, gp->q_conv, dqp, a->qc, p->q_conv, B, T, H * K, W, LINA_ACT_SILU);
        lina_conv_act_backward(dkc, gp->k_conv, dkp, a->kc, p->k_conv, B, T, G * K, W, LINA_ACT_SILU);
        lina_conv_act_backward(dvc, gp->v_conv, dvv, a->vc, p->v_conv, B, T, G * V, W, LINA_ACT_SILU);
        dqp = dqc;
        dkp = dkc;
        dvv = dvc;
    }
    lina_linear_backward(dx, gp->q_proj, NULL, dqp, x, p->q_proj, N, D, H * K);
    lina_linear_backward(dx, gp->k_proj, NULL, dkp, x, p->k_proj, N, D, G * K);
    lina_linear_backward(dx, gp->v_proj, NULL, dvv, x, p->v_proj, N, D, G * V);
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * model_type "linear_attn" (kind.h; docs/mixers.md section 3.3). Tensors
 * under model.layers.{i}.attn.:
 *   q_proj.weight [H*K, D], k_proj.weight [Hkv*K, D], v_proj.weight [Hkv*V, D],
 *   feature_map_q.* / feature_map_k.* (elementwise_product: layer1.{weight,bias},
 *   layer2.{weight,bias} [K, K], [K]; hedgehog: layer.{weight,bias}; t2r:
 *   layer.weight; only feature_map_q.* when tie_feature_map_qk),
 *   norm.weight [V] (unless elementwise_affine is false), o_proj.weight [D, H*V],
 *   {q,k,v}_conv1d.weight [C, 1, W] (use_short_conv)
 * with K = hidden_size*expand_k/H, V = hidden_size*expand_v/H. */

enum {
    LA_Q = 0,
    LA_K,
    LA_V,
    LA_FQ_W1,
    LA_FQ_B1,
    LA_FQ_W2,
    LA_FQ_B2,
    LA_FK_W1,
    LA_FK_B1,
    LA_FK_W2,
    LA_FK_B2,
    LA_NORM,
    LA_O,
    LA_QC,
    LA_KC,
    LA_VC
};

_Static_assert(sizeof(lina_la_dims) <= LINA_MIXER_DIMS_BYTES, "lina_la_dims too large");

/* declare one feature map's parameters under "feature_map_<qk>." */
static int add_fmap(lina_mixer_builder *b, const lina_la_dims *d, char qk, int s0)
{
    int nl = lina_la_fmap_linears(d->fmap), rc = LINA_OK;
    char nm[64];
    int64_t K = d->K;
    if (nl == 2) {
        for (int j = 0; j < 2 && !rc; j++) {
            snprintf(nm, sizeof(nm), "feature_map_%c.layer%d.weight", qk, j + 1);
            rc = lina_mixer_add(b, s0 + 2 * j, nm, 2, K, K, 0, 1, LINA_INIT_NORMAL);
            snprintf(nm, sizeof(nm), "feature_map_%c.layer%d.bias", qk, j + 1);
            rc = rc ? rc : lina_mixer_add(b, s0 + 2 * j + 1, nm, 1, K, 0, 0, 0, LINA_INIT_ZEROS);
        }
    } else if (nl == 1) {
        int hh = d->fmap == LINA_LA_FM_HEDGEHOG;
        snprintf(nm, sizeof(nm), "feature_map_%c.layer.weight", qk);
        /* hedgehog starts at the identity map (FLA's HedgehogFeatureMap init) */
        rc = lina_mixer_add(b, s0, nm, 2, K, K, 0, 1, hh ? LINA_INIT_EYE : LINA_INIT_NORMAL);
        if (!rc && hh) {
            snprintf(nm, sizeof(nm), "feature_map_%c.layer.bias", qk);
            rc = lina_mixer_add(b, s0 + 1, nm, 1, K, 0, 0, 0, LINA_INIT_ZEROS);
        }
    }
    return rc;
}

static int la_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_la_dims *d = dims;
    memset(d, 0, sizeof(*d));
    int rc = lina_la_fmap_parse(c->feature_map, &d->fmap);
    if (rc) {
        return rc;
    }
    int H = c->num_heads, D = c->hidden_size;
    int kd = (int)(D * c->expand_k), vd = (int)(D * c->expand_v);
    int Hkv = c->num_kv_heads > 0 ? c->num_kv_heads : H;
    if (H < 1 || kd < H || vd < H || kd % H != 0 || vd % H != 0 || Hkv < 1 || H % Hkv != 0) {
        return lina_set_error(LINA_EINVAL,
                              "linear_attn: key dim %d and value dim %d must be multiples of num_heads %d, and "
                              "num_heads a multiple of num_kv_heads %d",
                              kd, vd, H, Hkv);
    }
    d->D = D;
    d->H = H;
    d->Hkv = Hkv;
    d->K = kd / H;
    d->V = vd / H;
    d->F = lina_la_fmap_dim(d->fmap, d->K);
    d->tie = c->tie_feature_map_qk && lina_la_fmap_linears(d->fmap) > 0;
    d->norm_q = c->norm_q;
    d->norm_k = c->norm_k;
    d->normalize = c->norm_feature_map;
    d->affine = c->elementwise_affine;
    d->norm_eps = (float)c->norm_eps;
    d->use_short_conv = c->use_short_conv ? 1 : 0;
    d->conv_size = c->conv_size;
    if ((rc = lina_la_check_dims(d))) {
        return rc;
    }
    int64_t HK = (int64_t)H * d->K, GK = (int64_t)Hkv * d->K, GV = (int64_t)Hkv * d->V, HV = (int64_t)H * d->V;
    if ((rc = lina_mixer_add(b, LA_Q, "q_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, LA_K, "k_proj.weight", 2, GK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, LA_V, "v_proj.weight", 2, GV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = add_fmap(b, d, 'q', LA_FQ_W1)) || (!d->tie && (rc = add_fmap(b, d, 'k', LA_FK_W1))) ||
        (d->affine && (rc = lina_mixer_add(b, LA_NORM, "norm.weight", 1, d->V, 0, 0, 0, LINA_INIT_ONES))) ||
        (rc = lina_mixer_add(b, LA_O, "o_proj.weight", 2, D, HV, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    int64_t W = d->conv_size;
    if (d->use_short_conv && (rc = lina_mixer_add_qkv_convs(b, LA_QC, LA_KC, LA_VC, HK, GK, GV, W))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(la_acts, lina_la_acts_floats)
LINA_KIND_SIZE(la_scratch, lina_la_scratch_floats)
LINA_KIND_STATE(la_state, lina_la_state_floats)

static void la_views(const lina_la_dims *d, float *const *v, lina_la_params *p)
{
    p->q_proj = v[LA_Q];
    p->k_proj = v[LA_K];
    p->v_proj = v[LA_V];
    p->fq_w1 = v[LA_FQ_W1];
    p->fq_b1 = v[LA_FQ_B1];
    p->fq_w2 = v[LA_FQ_W2];
    p->fq_b2 = v[LA_FQ_B2];
    int t = d->tie;
    p->fk_w1 = v[t ? LA_FQ_W1 : LA_FK_W1];
    p->fk_b1 = v[t ? LA_FQ_B1 : LA_FK_B1];
    p->fk_w2 = v[t ? LA_FQ_W2 : LA_FK_W2];
    p->fk_b2 = v[t ? LA_FQ_B2 : LA_FK_B2];
    p->norm_w = v[LA_NORM];
    p->o_proj = v[LA_O];
    p->q_conv = v[LA_QC];
    p->k_conv = v[LA_KC];
    p->v_conv = v[LA_VC];
}

static int la_forward(const lina_mixer_call *c)
{
    const lina_la_dims *d = c->dims;
    lina_la_params p;
    lina_la_acts a;
    la_views(d, c->P, &p);
    lina_la_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_la_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->state, c->sp, c->form, c->ws);
}

static int la_backward(const lina_mixer_call *c)
{
    const lina_la_dims *d = c->dims;
    lina_la_params p, gp;
    lina_la_acts a;
    la_views(d, c->P, &p);
    la_views(d, c->G, &gp);
    lina_la_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_la_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->sp, c->form, c->ws);
}

const lina_mixer_vt lina_linear_attn_kind = {
    .name = "linear_attn",
    .build = la_build,
    .acts_floats = la_acts,
    .scratch_floats = la_scratch,
    .state_floats = la_state,
    .forward = la_forward,
    .backward = la_backward,
    .flags = LINA_KIND_SP,
};
