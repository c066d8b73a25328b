/* delta_layer.c -- the delta-rule layer of FLA's DeltaNet, GatedDeltaNet,
 * GatedDeltaProduct and KimiDeltaAttention (docs/mixers.md sections 4.1-4.4): q and n keys / values /
 * betas per token through short convolutions (SiLU), L2-normalised q and
 * keys (DeltaNet: the q/k activation relu / elu + 1 / identity and the sum
 * norm as options), the optional decay g = -exp(A_log) softplus(a + dt_bias) (KDA: one
 * per key channel from a low-rank projection, optionally bounded), the delta
 * rule (n = 1) or delta product (n = num_householder sub-steps) on the
 * delta-rule engine (lina_delta_fwd), the per-head output norm (gated or
 * plain; KDA: RMSNorm times a sigmoid gate) and o_proj. Forward (with an optional decode cache) and backward.
 * Shapes in nn.h; N = B*T rows, HK = H*K, VV = HV*V. */
#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GDN_L2_EPS 1e-6f

/* value heads */
static int nv_of(const lina_gdn_dims *d)
{
    return d->num_v_heads > 0 ? d->num_v_heads : d->H;
}

/* log-gate values per row: one per value head, KDA one per value head and key channel */
static size_t gw_of(const lina_gdn_dims *d)
{
    return (size_t)nv_of(d) * (d->kda ? (size_t)d->K : 1);
}

/* sub-steps per token */
static int ns_of(const lina_gdn_dims *d)
{
    return d->n > 0 ? d->n : 1;
}

int lina_gdn_check_dims(const lina_gdn_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->K <= 0 || d->V <= 0 || (d->use_short_conv && d->conv_size <= 0) ||
        d->num_v_heads < 0 || nv_of(d) % d->H != 0 || d->n < 0) {
        return lina_set_error(LINA_EINVAL, "delta-rule layer: bad dims");
    }
    if (!(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "delta-rule layer: norm_eps must be > 0");
    }
    return LINA_OK;
}

size_t lina_gdn_acts_floats(const lina_gdn_dims *d, int N)
{
    size_t m = (size_t)ns_of(d), H = (size_t)d->H, NV = (size_t)nv_of(d), HK = H * d->K, VK = NV * d->K,
           VV = NV * d->V;
    size_t s = 3 * (HK + m * HK) + m * VV; /* qp, kp, qc, kc, qn, kn; vp */
    s += (size_t)NV + m * NV + LINA_PROJ_PAD; /* the a, b columns of the fused projections, padding */
    s += H + m * H;                         /* rq, rk */
    s += NV != H ? VK + m * VK : 0;         /* qe, ke */
    s += m * VV;                            /* v */
    s += 2 * gw_of(d) + 2 * m * NV;         /* a, g, bl, beta */
    s += 3 * VV + NV;                       /* gate, o, y, rstd */
    s += d->kda ? 2 * (size_t)d->V + VV : 0; /* f1, z1, yn */
    return (size_t)N * s;
}

void lina_gdn_acts_carve(lina_gdn_acts *a, float *buf, const lina_gdn_dims *d, int N)
{
    size_t n = (size_t)N, m = (size_t)ns_of(d), H = (size_t)d->H, NV = (size_t)nv_of(d), HK = H * d->K,
           VK = NV * d->K, VV = NV * d->V;
    float *p = buf;
    a->qp = p;   p += n * HK;
    a->kp = p;   p += n * m * HK;
    a->vp = p;   p += n * m * VV;
    p += n * (NV + m * NV + LINA_PROJ_PAD); /* fused: qp.. holds [N, HK + m HK + m VV (+ NV) (+ m NV)], padded */
    a->qc = p;   p += n * HK;
    a->kc = p;   p += n * m * HK;
    a->qn = p;   p += n * HK;
    a->kn = p;   p += n * m * HK;
    a->rq = p;   p += n * H;
    a->rk = p;   p += n * m * H;
    a->qe = a->qn;
    a->ke = a->kn;
    if (NV != H) {
        a->qe = p; p += n * VK;
        a->ke = p; p += n * m * VK;
    }
    a->v = p;    p += n * m * VV;
    a->a = p;    p += n * gw_of(d);
    a->g = p;    p += n * gw_of(d);
    a->bl = p;   p += n * m * NV;
    a->beta = p; p += n * m * NV;
    a->gate = p; p += n * VV;
    a->o = p;    p += n * VV;
    a->rstd = p; p += n * NV;
    a->f1 = a->z1 = a->yn = NULL;
    if (d->kda) {
        a->f1 = p; p += n * d->V;
        a->z1 = p; p += n * d->V;
        a->yn = p; p += n * VV;
    }
    a->y = p;
}

size_t lina_gdn_scratch_floats(const lina_gdn_dims *d, int N)
{
    size_t m = (size_t)ns_of(d), H = (size_t)d->H, NV = (size_t)nv_of(d), HK = H * d->K, VK = NV * d->K,
           VV = NV * d->V;
    size_t s = 2 * m * VV + VV;     /* dy (later dv), dO (later dvp), dgate */
    s += 2 * (HK + m * HK);         /* dqn (later dqp), dkn (later dkp), dqc, dkc */
    s += m * NV + gw_of(d);         /* dbeta, dg */
    s += NV != H ? VK + m * VK : 0; /* dqe, dke */
    s += d->kda ? (size_t)d->V : 0; /* dz1, later df1 */
    s += d->use_short_conv ? HK + m * HK + m * VV + NV + m * NV + LINA_PROJ_PAD : 0; /* fused projections' gradient */
    return (size_t)N * s;
}

size_t lina_gdn_cache_floats(const lina_gdn_dims *d, int B)
{
    size_t m = (size_t)ns_of(d), HK = (size_t)d->H * d->K, VV = (size_t)nv_of(d) * d->V;
    size_t conv = d->use_short_conv ? (HK + m * HK + m * VV) * (size_t)d->conv_size : 0;
    return (size_t)B * (conv + (size_t)nv_of(d) * d->K * (size_t)d->V);
}

static float sigm(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* KDA's gate per value head h and key channel i, x = f + dt_bias[h*K + i]:
 * g = -exp(A_log[h]) softplus(x), or with a lower bound lb
 * g = lb sigmoid(exp(A_log[h]) x) in (lb, 0). f, g [N, HV*K]. */
static void kda_gate_forward(float *g, const float *f, const float *A_log, const float *dt_bias,
                             const lina_gdn_dims *d, size_t N)
{
    const int NV = nv_of(d), K = d->K;
    for (size_t n = 0; n < N; n++) {
        for (int h = 0; h < NV; h++) {
            const float ea = expf(A_log[h]);
            for (int i = 0; i < K; i++) {
                const size_t c = (size_t)h * K + i, x = n * (size_t)NV * K + c;
                const float z = f[x] + dt_bias[c];
                g[x] = d->has_lower_bound ? d->lower_bound * sigm(ea * z) : -ea * lina_softplusf(z);
            }
        }
    }
}

/* dg [N, HV*K] becomes d(f) in place; dA_log [HV], ddt_bias [HV*K] accumulate
 * (sums in double, in a fixed order) */
static void kda_gate_backward(float *dg, float *dA_log, float *ddt_bias, const float *f, const float *g,
                              const float *A_log, const float *dt_bias, const lina_gdn_dims *d, size_t N)
{
    const int NV = nv_of(d), K = d->K;
    const size_t W = (size_t)NV * K;
    for (int h = 0; h < NV; h++) {
        const float ea = expf(A_log[h]);
        double sA = 0.0;
        for (int i = 0; i < K; i++) {
            const size_t c = (size_t)h * K + i;
            double sdt = 0.0;
            for (size_t n = 0; n < N; n++) {
                const size_t x = n * W + c;
                const float z = f[x] + dt_bias[c];
                float df;
                if (d->has_lower_bound) {
                    const float s = sigm(ea * z);
                    df = dg[x] * d->lower_bound * s * (1.0f - s) * ea;
                    sA += (double)df * z;
                } else {
                    df = dg[x] * -ea * sigm(z);
                    sA += (double)dg[x] * g[x];
                }
                sdt += df;
                dg[x] = df;
            }
            if (ddt_bias) {
                ddt_bias[c] += (float)sdt;
            }
        }
        if (dA_log) {
            dA_log[h] += (float)sA;
        }
    }
}

/* The fused input projections (nn.h lina_proj_*): q, k, v with their short
 * convs, then a_proj and b_proj where their weights follow in the same
 * matrix (a before b, or b before a as Gated DeltaProduct declares them).
 * Needs the short convs and whole sequences (no sequence-parallel pieces).
 * Fills pt (outputs and gradients left NULL), *np parts, *ia / *ib the index
 * of a / b among them (-1: not fused); returns 1 when fused. */
static int gdn_parts(lina_proj_part *pt, int *np, int *ia, int *ib, const lina_gdn_dims *d,
                     const lina_gdn_params *p, const lina_sp *sp, const int64_t *cu)
{
    *np = 0;
    *ia = *ib = -1;
    if (!d->use_short_conv || (sp && sp->size > 1) || cu) { /* packed documents: convs per document */
        return 0;
    }
    const int m = ns_of(d), NV = nv_of(d), HK = d->H * d->K, VV = NV * d->V;
    const lina_act qka = d->qk_act == LINA_QK_SILU ? LINA_ACT_SILU : LINA_ACT_NONE;
    memset(pt, 0, 5 * sizeof(*pt));
    pt[0] = (lina_proj_part){.w = p->q_proj, .cols = HK, .conv = p->q_conv, .act = qka};
    pt[1] = (lina_proj_part){.w = p->k_proj, .cols = m * HK, .conv = p->k_conv, .act = qka};
    pt[2] = (lina_proj_part){.w = p->v_proj, .cols = m * VV, .conv = p->v_conv, .act = LINA_ACT_SILU};
    int n = 3;
    const float *next = p->v_proj + (size_t)m * VV * d->D;
    for (int pass = 0; pass < 2; pass++) {
        if (d->gated && *ia < 0 && p->a_proj && p->a_proj == next) {
            *ia = n;
            pt[n++] = (lina_proj_part){.w = p->a_proj, .cols = NV};
            next += (size_t)NV * d->D;
        }
        if (d->use_beta && *ib < 0 && p->b_proj && p->b_proj == next) {
            *ib = n;
            pt[n++] = (lina_proj_part){.w = p->b_proj, .cols = m * NV};
            next += (size_t)m * NV * d->D;
        }
    }
    *np = n;
    if (!lina_proj_fusable(pt, n, d->D)) {
        *ia = *ib = -1;
        return 0;
    }
    return 1;
}

int lina_gdn_forward(float *out, lina_gdn_acts *a, const float *x, const lina_gdn_dims *d,
                     const lina_gdn_params *p, int B, int T, float *cache, lina_form form, lina_ws *ws)
{
    return lina_gdn_forward_sp(out, a, x, d, p, B, T, cache, NULL, NULL, 0, form, ws);
}

int lina_gdn_forward_sp(float *out, lina_gdn_acts *a, const float *x, const lina_gdn_dims *d,
                        const lina_gdn_params *p, int B, int T, float *cache, const lina_sp *sp, const int64_t *cu,
                        int64_t ncu, lina_form form, lina_ws *ws)
{
    int rc = lina_gdn_check_dims(d);
    if (rc) {
        return rc;
    }

    int N = B * T, D = d->D, H = d->H, NV = nv_of(d), m = ns_of(d), HK = H * d->K, VV = NV * d->V,
        W = d->conv_size;
    size_t nm = (size_t)N * m;
    /* cache views: conv tails [B,HK,W], [B,m*HK,W], [B,m*VV,W]; state [B,NV,K,V] */
    float *cq = NULL, *ck = NULL, *cv = NULL, *st = NULL;
    if (cache) {
        size_t ct = d->use_short_conv ? (size_t)B * W : 0;
        cq = d->use_short_conv ? cache : NULL;
        ck = d->use_short_conv ? cache + ct * HK : NULL;
        cv = d->use_short_conv ? cache + ct * (HK + (size_t)m * HK) : NULL;
        st = cache + ct * (HK + (size_t)m * HK + (size_t)m * VV);
    }
    /* projections and short convs */
    const int sc = d->use_short_conv;
    const lina_act qka = d->qk_act == LINA_QK_SILU ? LINA_ACT_SILU : LINA_ACT_NONE;
    lina_proj_part pt[5];
    int np, ia, ib;
    const int fused = gdn_parts(pt, &np, &ia, &ib, d, p, sp, cu);
    if (fused) {
        /* pre-activations [N, tot] in the qp.. space */
        lina_proj_qkv_out(pt, a->qc, a->kc, a->v, cq, ck, cv);
        if (ia >= 0) {
            pt[ia].y = a->a;
        }
        if (ib >= 0) {
            pt[ib].y = a->bl;
        }
        lina_proj_forward(a->qp, pt, np, x, B, T, D, W);
    } else {
        lina_linear_forward(a->qp, x, p->q_proj, NULL, N, D, HK);
        lina_linear_forward(a->kp, x, p->k_proj, NULL, N, D, m * HK);
        lina_linear_forward(a->vp, x, p->v_proj, NULL, N, D, m * VV);
    }
    if (fused) {
        /* done above */
    } else if (sc && sp && sp->size > 1) {
        /* with the inputs before this piece */
        if ((rc = lina_sp_conv_forward(sp, a->qc, a->qp, p->q_conv, NULL, B, T, HK, W, qka)) ||
            (rc = lina_sp_conv_forward(sp, a->kc, a->kp, p->k_conv, NULL, B, T, m * HK, W, qka)) ||
            (rc = lina_sp_conv_forward(sp, a->v, a->vp, p->v_conv, NULL, B, T, m * VV, W, LINA_ACT_SILU))) {
            return rc;
        }
    } else if (cu) {
        lina_docs_conv_forward(a->qc, a->qp, sc ? p->q_conv : NULL, cu, ncu, HK, W, qka);
        lina_docs_conv_forward(a->kc, a->kp, sc ? p->k_conv : NULL, cu, ncu, m * HK, W, qka);
        lina_docs_conv_forward(a->v, a->vp, sc ? p->v_conv : NULL, cu, ncu, m * VV, W, LINA_ACT_SILU);
    } else {
        lina_conv_act_forward(a->qc, a->qp, sc ? p->q_conv : NULL, cq, B, T, HK, W, qka);
        lina_conv_act_forward(a->kc, a->kp, sc ? p->k_conv : NULL, ck, B, T, m * HK, W, qka);
        lina_conv_act_forward(a->v, a->vp, sc ? p->v_conv : NULL, cv, B, T, m * VV, W, LINA_ACT_SILU);
    }
    if (d->qk_act == LINA_QK_RELU || d->qk_act == LINA_QK_ELU) {
        lina_phi_forward(a->qc, a->qc, (size_t)N * HK, d->qk_act == LINA_QK_ELU);
        lina_phi_forward(a->kc, a->kc, nm * HK, d->qk_act == LINA_QK_ELU);
    }
    if (d->qk_sum) {
        lina_sumnorm_forward(a->qn, a->qc, N * H, d->K, 0.0);
        lina_sumnorm_forward(a->kn, a->kc, (int)nm * H, d->K, 0.0);
    } else {
        lina_l2norm_forward(a->qn, a->rq, a->qc, N * H, d->K, GDN_L2_EPS);
        lina_l2norm_forward(a->kn, a->rk, a->kc, (int)nm * H, d->K, GDN_L2_EPS);
    }
    if (NV != H) {
        lina_heads_repeat(a->qe, a->qn, (size_t)N, NV, H, d->K);
        lina_heads_repeat(a->ke, a->kn, nm, NV, H, d->K);
    }
    /* gates: a, g [N,NV]; b logits, beta [N*m,NV] */
    if (d->gated) {
        if (ia < 0) {
            lina_linear_forward(a->a, x, p->a_proj, NULL, N, D, NV);
        }
        lina_decay_forward(a->g, a->a, p->A_log, p->dt_bias, (size_t)N, NV);
    } else if (d->kda) {
        lina_linear_forward(a->f1, x, p->f_proj0, NULL, N, D, d->V);
        lina_linear_forward(a->a, a->f1, p->f_proj1, NULL, N, d->V, (int)gw_of(d));
        kda_gate_forward(a->g, a->a, p->A_log, p->dt_bias, d, (size_t)N);
    }
    if (d->use_beta && ib < 0) {
        lina_linear_forward(a->bl, x, p->b_proj, NULL, N, D, m * NV);
    }
    for (size_t i = 0; i < nm * NV; i++) {
        a->beta[i] = (d->allow_neg_eigval ? 2.0f : 1.0f) * (d->use_beta ? sigm(a->bl[i]) : 1.0f);
    }
    if (d->use_gate) {
        lina_linear_forward(a->gate, x, p->g_proj, NULL, N, D, VV);
    } else if (d->kda) {
        lina_linear_forward(a->z1, x, p->g_proj0, NULL, N, D, d->V);
        lina_linear_forward(a->gate, a->z1, p->g_proj1, p->g_bias, N, d->V, VV);
    }
    /* kernel over the value heads */
    lina_mix_dims md = lina_layer_mix(B, T, nv_of(d), d->K, d->V, 64, 0.0f);
    lina_delta_in in = {a->qe, a->ke, a->v, a->beta, d->gated ? a->g : NULL, st, m, d->kda ? a->g : NULL};
    lina_delta_out o = {.o = a->o, .ht = st, .cache = NULL}; /* the state is updated in place */
    rc = cu ? lina_delta_fwd_varlen(&md, cu, ncu, &in, &o, form, ws) : lina_sp_delta_fwd(sp, d, &md, &in, &o, form, ws);
    if (rc) {
        return rc;
    }
    /* output norm per value head, o_proj */
    if (d->kda) {
        /* y = RMSNorm(o) w * sigmoid(gate) (FLA's FusedRMSNormGated with the sigmoid) */
        lina_rmsnorm_forward(a->yn, a->rstd, a->o, p->o_norm, NULL, N * NV, d->V, d->norm_eps);
        for (size_t i = 0; i < (size_t)N * VV; i++) {
            a->y[i] = a->yn[i] * sigm(a->gate[i]);
        }
        lina_linear_forward(out, a->y, p->o_proj, NULL, N, VV, D);
        return LINA_OK;
    }
    lina_out_forward(out, a->y, a->rstd, a->o, d->use_gate ? a->gate : NULL, p->o_norm, p->o_proj, N, NV, d->V, D,
                     d->norm_eps);
    return LINA_OK;
}

int lina_gdn_backward(float *dx, lina_gdn_params *gp, const float *dout, const float *x, const lina_gdn_acts *a,
                      const lina_gdn_dims *d, const lina_gdn_params *p, int B, int T, float *scratch,
                      const lina_sp *sp, const int64_t *cu, int64_t ncu, lina_form form, lina_ws *ws)
{
    int rc = lina_gdn_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, NV = nv_of(d), m = ns_of(d), HK = H * d->K, VK = NV * d->K, VV = NV * d->V;
    size_t n = (size_t)N, nm = n * m;
    float *s = scratch;
    float *dy = s;    s += nm * VV; /* [N,VV], later dv [N,m*VV] */
    float *dO = s;    s += nm * VV; /* [N,VV], later dvp [N,m*VV] */
    float *dgate = s; s += n * VV;
    float *dqn = s;   s += n * HK;  /* later dqp */
    float *dkn = s;   s += nm * HK; /* later dkp */
    float *dqc = s;   s += n * HK;
    float *dkc = s;   s += nm * HK;
    float *dbeta = s; s += nm * NV;
    float *dg = s;    s += n * gw_of(d);
    float *dqe = dqn, *dke = dkn;   /* kernel gradients (own buffers with GVA) */
    if (NV != H) {
        dqe = s; s += n * VK;
        dke = s; s += nm * VK;
    }
    float *dz1 = d->kda ? s : NULL; /* [N, V] */
    s += d->kda ? n * d->V : 0;
    float *dpre = s;                /* fused projections: [N, tot] (written by lina_proj_backward) */
    /* every buffer before dpre is written whole by its first writer, except the q/k norms'
     * input gradients (their backward accumulates) and the zeroed ones below */
    memset(dqc, 0, n * HK * sizeof(float));
    memset(dkc, 0, nm * HK * sizeof(float));
    lina_proj_part pt[5];
    int np, ia, ib;
    const int fused = gdn_parts(pt, &np, &ia, &ib, d, p, sp, cu);

    if (d->kda) {
        lina_linear_backward_set(dy, gp->o_proj, NULL, dout, a->y, p->o_proj, N, VV, D);
        for (size_t i = 0; i < n * VV; i++) {
            const float sg = sigm(a->gate[i]);
            dgate[i] = dy[i] * a->yn[i] * sg * (1.0f - sg);
            dy[i] *= sg;
        }
        lina_rmsnorm_backward_set(dO, gp->o_norm, NULL, dy, a->o, p->o_norm, a->rstd, N * NV, d->V);
    } else {
        lina_out_backward(dO, dgate, dy, gp->o_norm, gp->o_proj, dout, a->y, a->o, d->use_gate ? a->gate : NULL,
                          p->o_norm, p->o_proj, a->rstd, N, NV, d->V, D);
    }
    /* kernel: dqe, dke, dv (into dy), dbeta, dg */
    float *dv = dy; /* written by the kernel */
    lina_mix_dims md = lina_layer_mix(B, T, nv_of(d), d->K, d->V, 64, 0.0f);
    lina_delta_in in = {a->qe, a->ke, a->v, a->beta, d->gated ? a->g : NULL, NULL, m, d->kda ? a->g : NULL};
    lina_delta_grad_in gin = {dO, NULL, NULL};
    lina_delta_grad_out gout = {dqe, dke, dv, dbeta, d->gated ? dg : NULL, NULL, d->kda ? dg : NULL};
    rc = cu ? lina_delta_bwd_varlen(&md, cu, ncu, &in, &gin, &gout, form, ws)
            : lina_sp_delta_bwd(sp, d, &md, &in, &gin, &gout, form, ws);
    if (rc) {
        return rc;
    }
    if (NV != H) {
        lina_heads_reduce(dqn, dqe, n, NV, H, d->K, 0);
        lina_heads_reduce(dkn, dke, nm, NV, H, d->K, 0);
    }
    /* norms, the q/k activation, then convs: dqp into dqn, dkp into dkn, dvp
     * into dO (with relu / elu + 1: the conv output gradients into dqn, dkn and
     * dqp, dkp into dqc, dkc) */
    if (d->qk_sum) {
        lina_sumnorm_backward(dqc, dqn, a->qc, a->qn, N * H, d->K, 0.0);
        lina_sumnorm_backward(dkc, dkn, a->kc, a->kn, (int)nm * H, d->K, 0.0);
    } else {
        lina_l2norm_backward(dqc, dqn, a->qn, a->rq, N * H, d->K);
        lina_l2norm_backward(dkc, dkn, a->kn, a->rk, (int)nm * H, d->K);
    }
    float *dqp = dqn, *dkp = dkn, *dvp = dO, *dqa = dqc, *dka = dkc;
    if (d->qk_act == LINA_QK_RELU || d->qk_act == LINA_QK_ELU) {
        memset(dqn, 0, n * HK * sizeof(float));
        memset(dkn, 0, nm * HK * sizeof(float));
        lina_phi_backward(dqn, dqc, a->qc, n * HK, d->qk_act == LINA_QK_ELU);
        lina_phi_backward(dkn, dkc, a->kc, nm * HK, d->qk_act == LINA_QK_ELU);
        dqa = dqn;
        dka = dkn;
        dqp = dqc;
        dkp = dkc;
    }
    if (!fused) { /* the convs' input gradients accumulate; the fused path writes dpre instead */
        memset(dqp, 0, n * HK * sizeof(float));
        memset(dkp, 0, nm * HK * sizeof(float));
        memset(dvp, 0, nm * VV * sizeof(float));
    }
    const int sc = d->use_short_conv, W = d->conv_size;
    const lina_act qka = d->qk_act == LINA_QK_SILU ? LINA_ACT_SILU : LINA_ACT_NONE;
    if (fused) {
        /* below, with the gates */
    } else if (sc && sp && sp->size > 1) {
        if ((rc = lina_sp_conv_backward(sp, dqp, gp->q_conv, NULL, dqa, a->qp, p->q_conv, NULL, B, T, HK, W, qka)) ||
            (rc = lina_sp_conv_backward(sp, dkp, gp->k_conv, NULL, dka, a->kp, p->k_conv, NULL, B, T, m * HK, W,
                                        qka)) ||
            (rc = lina_sp_conv_backward(sp, dvp, gp->v_conv, NULL, dv, a->vp, p->v_conv, NULL, B, T, m * VV, W,
                                        LINA_ACT_SILU))) {
            return rc;
        }
    } else if (cu) {
        lina_docs_conv_backward(dqp, gp->q_conv, dqa, a->qp, sc ? p->q_conv : NULL, cu, ncu, HK, W, qka);
        lina_docs_conv_backward(dkp, gp->k_conv, dka, a->kp, sc ? p->k_conv : NULL, cu, ncu, m * HK, W, qka);
        lina_docs_conv_backward(dvp, gp->v_conv, dv, a->vp, sc ? p->v_conv : NULL, cu, ncu, m * VV, W,
                                LINA_ACT_SILU);
    } else {
        lina_conv_act_backward(dqp, gp->q_conv, dqa, a->qp, sc ? p->q_conv : NULL, B, T, HK, W, qka);
        lina_conv_act_backward(dkp, gp->k_conv, dka, a->kp, sc ? p->k_conv : NULL, B, T, m * HK, W, qka);
        lina_conv_act_backward(dvp, gp->v_conv, dv, a->vp, sc ? p->v_conv : NULL, B, T, m * VV, W, LINA_ACT_SILU);
    }
    /* g = -exp(A_log) softplus(a + dt_bias): dg -> d(a) in place */
    if (d->gated) {
        lina_decay_backward(dg, gp->A_log, gp->dt_bias, a->a, a->g, p->A_log, p->dt_bias, (size_t)N, NV);
    }
    /* beta = c sigmoid(bl): d bl = d beta c s (1 - s) (in place) */
    for (size_t i = 0; i < nm * NV && d->use_beta; i++) {
        float sg = sigm(a->bl[i]);
        dbeta[i] = dbeta[i] * (d->allow_neg_eigval ? 2.0f : 1.0f) * sg * (1.0f - sg);
    }
    if (d->gated && ia < 0) {
        lina_linear_backward(dx, gp->a_proj, NULL, dg, x, p->a_proj, N, D, NV);
    }
    if (d->use_beta && ib < 0) {
        lina_linear_backward(dx, gp->b_proj, NULL, dbeta, x, p->b_proj, N, D, m * NV);
    }
    if (fused) {
        lina_proj_qkv_grad(pt, dqa, dka, dv, gp->q_proj, gp->k_proj, gp->v_proj, gp->q_conv, gp->k_conv,
                           gp->v_conv);
        if (ia >= 0) {
            pt[ia].dy = dg;
            pt[ia].gw = gp->a_proj;
        }
        if (ib >= 0) {
            pt[ib].dy = dbeta;
            pt[ib].gw = gp->b_proj;
        }
        lina_proj_backward(dx, dpre, pt, np, a->qp, x, B, T, D, W);
    } else {
        lina_linear_backward(dx, gp->q_proj, NULL, dqp, x, p->q_proj, N, D, HK);
        lina_linear_backward(dx, gp->k_proj, NULL, dkp, x, p->k_proj, N, D, m * HK);
        lina_linear_backward(dx, gp->v_proj, NULL, dvp, x, p->v_proj, N, D, m * VV);
    }
    if (d->use_gate) {
        lina_linear_backward(dx, gp->g_proj, NULL, dgate, x, p->g_proj, N, D, VV);
    }
    if (d->kda) {
        /* output gate g_proj.1(g_proj.0 x) + bias; the decay f_proj.1(f_proj.0 x) */
        memset(dz1, 0, n * d->V * sizeof(float));
        lina_linear_backward(dz1, gp->g_proj1, gp->g_bias, dgate, a->z1, p->g_proj1, N, d->V, VV);
        lina_linear_backward(dx, gp->g_proj0, NULL, dz1, x, p->g_proj0, N, D, d->V);
        kda_gate_backward(dg, gp->A_log, gp->dt_bias, a->a, a->g, p->A_log, p->dt_bias, d, n);
        memset(dz1, 0, n * d->V * sizeof(float));
        lina_linear_backward(dz1, gp->f_proj1, NULL, dg, a->f1, p->f_proj1, N, d->V, (int)gw_of(d));
        lina_linear_backward(dx, gp->f_proj0, NULL, dz1, x, p->f_proj0, N, D, d->V);
    }
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * model_type "delta_net", "gated_deltanet", "gated_deltaproduct" and "kda" (kind.h;
 * docs/checkpoints.md section 2.2). Tensors under model.layers.{i}.attn.
 * (n sub-steps, HK = H*K, HV value
 * heads, VV = HV*V):
 *   q_proj.weight [HK, D], k_proj.weight [n*HK, D], v_proj.weight [n*VV, D],
 *   a_proj.weight [HV, D], A_log [HV], dt_bias [HV] (decay only),
 *   b_proj.weight [n*HV, D] (use_beta), {q,k,v}_conv1d.weight [C, 1, W]
 *   (use_short_conv), g_proj.weight [VV, D] (output gate), o_norm.weight [V],
 *   o_proj.weight [D, VV].
 * DeltaNet: K = D*expand_k/H, V = D*expand_v/H, no decay, optional beta, n = 1.
 * Gated DeltaNet: K = head_dim, V = head_dim*expand_v, num_v_heads, n = 1.
 * Gated DeltaProduct: as Gated DeltaNet with n = num_householder, the decay
 * only with use_forget_gate, the output gate from use_output_gate (FLA's key
 * for this class).
 * KDA: K = head_dim, V = head_dim*expand_v, num_v_heads, n = 1; the decay from
 *   f_proj.0.weight [V, D], f_proj.1.weight [HV*K, V], A_log [HV], dt_bias [HV*K];
 *   b_proj.weight [HV, D]; the output gate g_proj.0.weight [V, D],
 *   g_proj.1.weight [VV, V], g_proj.1.bias [VV]. */
enum { GDN_Q, GDN_K, GDN_V, GDN_A, GDN_B, GDN_ALOG, GDN_DT, GDN_QC, GDN_KC, GDN_VC, GDN_G, GDN_NORM, GDN_O,
       GDN_F0, GDN_F1, GDN_G0, GDN_G1, GDN_GB };

_Static_assert(sizeof(lina_gdn_dims) <= LINA_MIXER_DIMS_BYTES, "lina_gdn_dims too large");

/* the dims of a model type of the family from the config */
static int delta_dims(lina_gdn_dims *d, const lina_config *c)
{
    const char *mt = lina_model_type_name(c->model_type);
    int H = c->num_heads, D = c->hidden_size;
    memset(d, 0, sizeof(*d));
    d->D = D;
    d->H = H;
    d->use_short_conv = c->use_short_conv ? 1 : 0;
    d->conv_size = c->conv_size;
    d->allow_neg_eigval = c->allow_neg_eigval ? 1 : 0;
    d->norm_eps = (float)c->norm_eps;
    d->n = 1;
    if (c->model_type == LINA_MODEL_DELTA_NET) {
        static const char *const acts[] = {"silu", "relu", "elu", "identity"};
        d->qk_act = -1;
        for (int i = 0; i < 4; i++) {
            d->qk_act = strcmp(c->qk_activation, acts[i]) == 0 ? i : d->qk_act;
        }
        if (d->qk_act < 0 || (strcmp(c->qk_norm, "l2") != 0 && strcmp(c->qk_norm, "sum") != 0)) {
            return lina_set_error(LINA_EINVAL, "delta_net: qk_activation \"%s\" / qk_norm \"%s\": expected silu, relu, "
                                  "elu or identity / l2 or sum", c->qk_activation, c->qk_norm);
        }
        d->qk_sum = strcmp(c->qk_norm, "sum") == 0;
        d->K = (int)(D * c->expand_k) / H;
        d->V = (int)(D * c->expand_v) / H;
        d->num_v_heads = H;
        d->use_beta = c->use_beta ? 1 : 0;
        d->use_gate = c->use_gate ? 1 : 0;
        return LINA_OK;
    }
    int HV = c->num_v_heads > 0 ? c->num_v_heads : H;
    double vd = c->head_dim * c->expand_v;
    d->K = c->head_dim;
    d->V = (int)vd;
    d->num_v_heads = HV;
    d->use_beta = 1;
    if (c->model_type == LINA_MODEL_GATED_DELTANET) {
        d->gated = 1;
        d->use_gate = c->use_gate ? 1 : 0;
        return LINA_OK;
    }
    if (c->model_type == LINA_MODEL_KDA) {
        d->kda = 1;
        d->has_lower_bound = c->has_lower_bound;
        d->lower_bound = (float)c->lower_bound;
        if (c->has_lower_bound && !(c->lower_bound < 0.0)) {
            return lina_set_error(LINA_EINVAL, "kda: lower_bound must be negative (got %g)", c->lower_bound);
        }
        return lina_gdn_check_dims(d);
    }
    if (H < 1 || c->head_dim < 1 || vd < 1 || vd != floor(vd) || HV % H != 0) {
        return lina_set_error(LINA_EINVAL,
                              "%s: need head_dim >= 1, head_dim * expand_v (%g) a positive integer and num_v_heads "
                              "(%d) a multiple of num_heads (%d)", mt, vd, HV, H);
    }
    if (c->num_householder < 1 || c->num_householder > 16) {
        return lina_set_error(LINA_EINVAL, "%s: num_householder must be in [1, 16] (got %d)", mt,
                              c->num_householder);
    }
    d->n = c->num_householder;
    d->gated = c->use_forget_gate ? 1 : 0;
    d->use_gate = c->use_output_gate ? 1 : 0;
    return lina_gdn_check_dims(d);
}

static int delta_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_gdn_dims *d = dims;
    int rc = delta_dims(d, c);
    if (rc) {
        return rc;
    }
    int64_t D = d->D, n = d->n, NV = d->num_v_heads, HK = (int64_t)d->H * d->K, VV = NV * d->V, W = d->conv_size;
    /* FLA declares a_proj before b_proj in (Gated)DeltaNet and after it in
     * GatedDeltaProduct; the order fixes the seeded initialisation */
    int a_first = c->model_type != LINA_MODEL_GATED_DELTAPRODUCT;
    if ((rc = lina_mixer_add(b, GDN_Q, "q_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GDN_K, "k_proj.weight", 2, n * HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GDN_V, "v_proj.weight", 2, n * VV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (a_first && d->gated && (rc = lina_mixer_add(b, GDN_A, "a_proj.weight", 2, NV, D, 0, 1, LINA_INIT_NORMAL))) ||
        (d->use_beta && !d->kda &&
         (rc = lina_mixer_add(b, GDN_B, "b_proj.weight", 2, n * NV, D, 0, 1, LINA_INIT_NORMAL))) ||
        (!a_first && d->gated &&
         (rc = lina_mixer_add(b, GDN_A, "a_proj.weight", 2, NV, D, 0, 1, LINA_INIT_NORMAL))) ||
        (d->gated && (rc = lina_mixer_add(b, GDN_ALOG, "A_log", 1, NV, 0, 0, 0, LINA_INIT_A_LOG))) ||
        (d->gated && (rc = lina_mixer_add(b, GDN_DT, "dt_bias", 1, NV, 0, 0, 0, LINA_INIT_DT_BIAS)))) {
        return rc;
    }
    if (d->use_short_conv &&
        ((rc = lina_mixer_add(b, GDN_QC, "q_conv1d.weight", 3, HK, 1, W, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, GDN_KC, "k_conv1d.weight", 3, n * HK, 1, W, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, GDN_VC, "v_conv1d.weight", 3, n * VV, 1, W, 1, LINA_INIT_NORMAL)))) {
        return rc;
    }
    if (d->kda) {
        /* FLA: A_log = ln U(1, 16) (zeros with safe_gate), dt_bias per value head and key channel */
        const int64_t Vh = d->V, GW = NV * d->K;
        if ((rc = lina_mixer_add(b, GDN_F0, "f_proj.0.weight", 2, Vh, D, 0, 1, LINA_INIT_NORMAL)) ||
            (rc = lina_mixer_add(b, GDN_F1, "f_proj.1.weight", 2, GW, Vh, 0, 1, LINA_INIT_NORMAL)) ||
            (rc = lina_mixer_add(b, GDN_B, "b_proj.weight", 2, NV, D, 0, 1, LINA_INIT_NORMAL)) ||
            (rc = lina_mixer_add(b, GDN_ALOG, "A_log", 1, NV, 0, 0, 0,
                                 c->safe_gate ? LINA_INIT_ZEROS : LINA_INIT_A_LOG_1_16)) ||
            (rc = lina_mixer_add(b, GDN_DT, "dt_bias", 1, GW, 0, 0, 0, LINA_INIT_DT_BIAS)) ||
            (rc = lina_mixer_add(b, GDN_G0, "g_proj.0.weight", 2, Vh, D, 0, 1, LINA_INIT_NORMAL)) ||
            (rc = lina_mixer_add(b, GDN_G1, "g_proj.1.weight", 2, VV, Vh, 0, 1, LINA_INIT_NORMAL)) ||
            (rc = lina_mixer_add(b, GDN_GB, "g_proj.1.bias", 1, VV, 0, 0, 0, LINA_INIT_ZEROS)) ||
            (rc = lina_mixer_add(b, GDN_NORM, "o_norm.weight", 1, d->V, 0, 0, 0, LINA_INIT_ONES)) ||
            (rc = lina_mixer_add(b, GDN_O, "o_proj.weight", 2, D, VV, 0, 1, LINA_INIT_NORMAL))) {
            return rc;
        }
        return LINA_OK;
    }
    if ((d->use_gate && (rc = lina_mixer_add(b, GDN_G, "g_proj.weight", 2, VV, D, 0, 1, LINA_INIT_NORMAL))) ||
        (rc = lina_mixer_add(b, GDN_NORM, "o_norm.weight", 1, d->V, 0, 0, 0, LINA_INIT_ONES)) ||
        (rc = lina_mixer_add(b, GDN_O, "o_proj.weight", 2, D, VV, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(gdn_acts, lina_gdn_acts_floats)
LINA_KIND_SIZE(gdn_scratch, lina_gdn_scratch_floats)
LINA_KIND_STATE(gdn_state, lina_gdn_cache_floats)

static void gdn_views(float *const *v, lina_gdn_params *p)
{
    p->q_proj = v[GDN_Q];
    p->k_proj = v[GDN_K];
    p->v_proj = v[GDN_V];
    p->a_proj = v[GDN_A];
    p->b_proj = v[GDN_B];
    p->A_log = v[GDN_ALOG];
    p->dt_bias = v[GDN_DT];
    p->q_conv = v[GDN_QC];
    p->k_conv = v[GDN_KC];
    p->v_conv = v[GDN_VC];
    p->g_proj = v[GDN_G];
    p->o_norm = v[GDN_NORM];
    p->o_proj = v[GDN_O];
    p->f_proj0 = v[GDN_F0];
    p->f_proj1 = v[GDN_F1];
    p->g_proj0 = v[GDN_G0];
    p->g_proj1 = v[GDN_G1];
    p->g_bias = v[GDN_GB];
}

static int gdn_kind_forward(const lina_mixer_call *c)
{
    const lina_gdn_dims *d = c->dims;
    lina_gdn_params p;
    lina_gdn_acts a;
    gdn_views(c->P, &p);
    lina_gdn_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_gdn_forward_sp(c->out, &a, c->x, d, &p, c->B, c->T, c->state, c->sp, c->cu, c->ncu, c->form, c->ws);
}

static int gdn_kind_backward(const lina_mixer_call *c)
{
    const lina_gdn_dims *d = c->dims;
    lina_gdn_params p, gp;
    lina_gdn_acts a;
    gdn_views(c->P, &p);
    gdn_views(c->G, &gp);
    lina_gdn_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_gdn_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->sp, c->cu, c->ncu,
                             c->form, c->ws);
}

const lina_mixer_vt lina_delta_kind = {
    .name = "delta",
    .build = delta_build,
    .acts_floats = gdn_acts,
    .scratch_floats = gdn_scratch,
    .state_floats = gdn_state,
    .forward = gdn_kind_forward,
    .backward = gdn_kind_backward,
    .flags = LINA_KIND_SP | LINA_KIND_VARLEN,
};
