/* gla_layer.c -- FLA's GatedLinearAttention layer (docs/mixers.md section 3.5):
 * projections, the low-rank forget gate g = logsigmoid(gk)/16, the GLA kernel
 * (lina_dd_fwd with a vector gate), the per-head FusedRMSNormGated output and
 * o_proj. Forward, backward and a one-token decode step. Shapes are in nn.h;
 * N = B*T rows, HK = H*K, HV = H*V, R = 16. */
#include "nn.h"

#include "../kern/checked.h"

#include <math.h>
#include <string.h>

#define GLA_ROPE_BASE 10000.0
#define GLA_MAX_HEADS 4096

static int hkv_of(const lina_gla_dims *d)
{
    return d->num_kv_heads > 0 ? d->num_kv_heads : d->H;
}

int lina_gla_check_dims(const lina_gla_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->K <= 0 || d->V <= 0 || d->num_kv_heads < 0 || d->H % hkv_of(d) != 0) {
        return lina_set_error(LINA_EINVAL, "gla layer: bad dims");
    }
    if (!(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "gla layer: norm_eps must be > 0");
    }
    if (d->retention && (d->K % 2 != 0 || d->K > LINA_ROPE_MAX_DIM || d->H > GLA_MAX_HEADS)) {
        return lina_set_error(LINA_EINVAL, "retention layer: key head dim must be even (RoPE), heads <= %d",
                              GLA_MAX_HEADS);
    }
    return LINA_OK;
}

size_t lina_gla_acts_floats(const lina_gla_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V;
    size_t GK = (size_t)hkv_of(d) * d->K, GV = (size_t)hkv_of(d) * d->V;
    size_t grp = hkv_of(d) != d->H ? 2 * GK + GV : 0;
    size_t conv = d->use_short_conv ? HK + GK + GV + LINA_PROJ_PAD : 0; /* fused: rows padded */
    return n * (3 * HK + GK + 4 * HV + LINA_GLA_GATE_RANK + (size_t)d->H + grp + conv);
}

size_t lina_gla_conv_cache_floats(const lina_gla_dims *d, int B)
{
    size_t HK = (size_t)d->H * d->K, GK = (size_t)hkv_of(d) * d->K, GV = (size_t)hkv_of(d) * d->V;
    return d->use_short_conv ? (size_t)B * (HK + GK + GV) * (size_t)d->conv_size : 0;
}

void lina_gla_acts_carve(lina_gla_acts *a, float *buf, const lina_gla_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V;
    size_t GK = (size_t)hkv_of(d) * d->K, GV = (size_t)hkv_of(d) * d->V;
    float *p = buf;
    a->q = p;     p += n * HK;
    a->k = p;     p += n * HK;
    a->v = p;     p += n * HV;
    a->gr = p;    p += n * LINA_GLA_GATE_RANK;
    a->gk = p;    p += n * GK;
    a->g = p;     p += n * HK;
    a->gate = p;  p += n * HV;
    a->o = p;     p += n * HV;
    a->rstd = p;  p += n * (size_t)d->H;
    a->y = p;     p += n * HV;
    if (hkv_of(d) != d->H) {
        a->kk = p; p += n * GK;
        a->vv = p; p += n * GV;
        a->gg = p; p += n * GK;
    } else {
        a->kk = a->k;
        a->vv = a->v;
        a->gg = a->g;
    }
    if (d->use_short_conv) {
        a->qc = p; p += n * HK;
        a->kc = p; p += n * GK;
        a->vc = p;
    } else {
        a->qc = a->q;
        a->kc = a->kk;
        a->vc = a->vv;
    }
}

size_t lina_gla_scratch_floats(const lina_gla_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V;
    size_t GK = (size_t)hkv_of(d) * d->K, GV = (size_t)hkv_of(d) * d->V;
    size_t grp = hkv_of(d) != d->H ? 2 * GK + GV : 0;
    size_t conv = d->use_short_conv ? HK + GK + GV + LINA_PROJ_PAD : 0; /* fused: rows padded */
    return n * (3 * HV + 3 * HK + LINA_GLA_GATE_RANK + grp + conv);
}

/* g = max(logsigmoid(gk) / 16, clamp_min), n elements */
static void gla_gate_forward(float *g, const float *gk, size_t n, const lina_gla_dims *d)
{
    lina_vlogsigmoid(g, gk, n);
    for (size_t i = 0; i < n; i++) {
        float x = g[i] / LINA_GLA_GATE_NORMALIZER;
        if (d->has_clamp_min && x < d->clamp_min) {
            x = d->clamp_min;
        }
        g[i] = x;
    }
}

/* dgk = dg * sigmoid(-gk) / 16 (0 where clamped); in place on dg */
static void gla_gate_backward(float *dg, const float *gk, size_t n, const lina_gla_dims *d)
{
    enum { BL = 256 };
    float s[BL], ls[BL];
    for (size_t i0 = 0; i0 < n; i0 += BL) {
        size_t m = n - i0 < BL ? n - i0 : BL;
        for (size_t i = 0; i < m; i++) {
            s[i] = -gk[i0 + i];
        }
        lina_vsigmoid(s, s, m); /* sigmoid(-gk) */
        for (size_t i = 0; i < m; i++) {
            dg[i0 + i] = dg[i0 + i] * s[i] / LINA_GLA_GATE_NORMALIZER;
        }
        if (d->has_clamp_min) {
            lina_vlogsigmoid(ls, gk + i0, m);
            for (size_t i = 0; i < m; i++) {
                dg[i0 + i] = ls[i] / LINA_GLA_GATE_NORMALIZER < d->clamp_min ? 0.0f : dg[i0 + i];
            }
        }
    }
}

/* q, k, v projections with their SiLU short convs as one fused product
 * (nn.h lina_proj_*) when the layer has the convs, runs on whole sequences
 * (no sequence-parallel pieces) and the three weights lie back to back;
 * parts[0..2] filled (gradients and outputs left NULL) and 1 returned then */
static int gla_qkv_parts(lina_proj_part *pt, const lina_gla_dims *d, const lina_gla_params *p, const lina_sp *sp,
                         const int64_t *cu)
{
    if (!d->use_short_conv || (sp && sp->size > 1) || cu) { /* packed documents: convs per document */
        return 0;
    }
    const int Hkv = hkv_of(d);
    memset(pt, 0, 3 * sizeof(*pt));
    pt[0] = (lina_proj_part){.w = p->q_proj, .cols = d->H * d->K, .conv = p->q_conv, .act = LINA_ACT_SILU};
    pt[1] = (lina_proj_part){.w = p->k_proj, .cols = Hkv * d->K, .conv = p->k_conv, .act = LINA_ACT_SILU};
    pt[2] = (lina_proj_part){.w = p->v_proj, .cols = Hkv * d->V, .conv = p->v_conv, .act = LINA_ACT_SILU};
    return lina_proj_fusable(pt, 3, d->D);
}

int lina_gla_forward(float *out, lina_gla_acts *a, const float *x, const lina_gla_dims *d,
                     const lina_gla_params *p, int B, int T, const float *h0, float *ht,
                     lina_form form, lina_ws *ws)
{
    return lina_gla_forward_at(out, a, x, d, p, B, T, h0, ht, 0, form, ws);
}

int lina_gla_forward_at(float *out, lina_gla_acts *a, const float *x, const lina_gla_dims *d,
                        const lina_gla_params *p, int B, int T, const float *h0, float *ht, int64_t pos0,
                        lina_form form, lina_ws *ws)
{
    return lina_gla_forward_cached(out, a, x, d, p, B, T, h0, ht, NULL, pos0, NULL, NULL, 0, form, ws);
}

int lina_gla_forward_cached(float *out, lina_gla_acts *a, const float *x, const lina_gla_dims *d,
                            const lina_gla_params *p, int B, int T, const float *h0, float *ht,
                            float *conv_cache, int64_t pos0, const lina_sp *sp, const int64_t *cu, int64_t ncu,
                            lina_form form, lina_ws *ws)
{
    int rc = lina_gla_check_dims(d);
    if (rc) {
        return rc;
    }

    int N = B * T, D = d->D, H = d->H, Hkv = hkv_of(d), HK = d->H * d->K, HV = d->H * d->V;
    int GK = Hkv * d->K, GV = Hkv * d->V, R = LINA_GLA_GATE_RANK;
    /* projections: q [N,HK]; kk [N,GK]; vv [N,GV]; gr [N,R]; gk, gg [N,GK]; gate [N,HV] */
    lina_proj_part qkv[3];
    const int W = d->conv_size;
    float *cq = conv_cache, *ck = cq ? cq + (size_t)B * HK * W : NULL, *cv = ck ? ck + (size_t)B * GK * W : NULL;
    const int fused = gla_qkv_parts(qkv, d, p, sp, cu);
    if (fused) {
        /* pre-activations [N, HK+GK+GV] in the qc, kc, vc space */
        lina_proj_qkv_out(qkv, a->q, a->kk, a->vv, cq, ck, cv);
        lina_proj_forward(a->qc, qkv, 3, x, B, T, D, W);
    } else {
        lina_linear_forward(a->qc, x, p->q_proj, NULL, N, D, HK);
        lina_linear_forward(a->kc, x, p->k_proj, NULL, N, D, GK);
        lina_linear_forward(a->vc, x, p->v_proj, NULL, N, D, GV);
    }
    if (d->use_short_conv && !fused) {
        if (sp && sp->size > 1) {
            /* with the inputs before this piece */
            if ((rc = lina_sp_conv_forward(sp, a->q, a->qc, p->q_conv, NULL, B, T, HK, W, LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_forward(sp, a->kk, a->kc, p->k_conv, NULL, B, T, GK, W, LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_forward(sp, a->vv, a->vc, p->v_conv, NULL, B, T, GV, W, LINA_ACT_SILU))) {
                return rc;
            }
        } else if (cu) {
            lina_docs_conv_forward(a->q, a->qc, p->q_conv, cu, ncu, HK, W, LINA_ACT_SILU);
            lina_docs_conv_forward(a->kk, a->kc, p->k_conv, cu, ncu, GK, W, LINA_ACT_SILU);
            lina_docs_conv_forward(a->vv, a->vc, p->v_conv, cu, ncu, GV, W, LINA_ACT_SILU);
        } else {
            lina_shortconv_forward(a->q, a->qc, p->q_conv, NULL, cq, cq, B, T, HK, W, LINA_ACT_SILU);
            lina_shortconv_forward(a->kk, a->kc, p->k_conv, NULL, ck, ck, B, T, GK, W, LINA_ACT_SILU);
            lina_shortconv_forward(a->vv, a->vc, p->v_conv, NULL, cv, cv, B, T, GV, W, LINA_ACT_SILU);
        }
    }
    float g_head[GLA_MAX_HEADS];
    if (d->retention) {
        lina_retention_gates(H, g_head);
        if (cu) {
            if ((rc = lina_docs_rope(a->q, a->q, cu, ncu, H, d->K, GLA_ROPE_BASE, 0)) ||
                (rc = lina_docs_rope(a->kk, a->kk, cu, ncu, Hkv, d->K, GLA_ROPE_BASE, 0))) {
                return rc;
            }
        } else if ((rc = lina_rope_forward(a->q, a->q, B, T, H, d->K, pos0, GLA_ROPE_BASE)) ||
            (rc = lina_rope_forward(a->kk, a->kk, B, T, Hkv, d->K, pos0, GLA_ROPE_BASE))) {
            return rc;
        }
    } else {
        lina_linear_forward(a->gr, x, p->gk0, NULL, N, D, R);
        lina_linear_forward(a->gk, a->gr, p->gk1, p->gk1_b, N, R, GK);
        gla_gate_forward(a->gg, a->gk, (size_t)N * GK, d);
    }
    if (Hkv != H) {
        lina_heads_repeat(a->k, a->kk, (size_t)N, H, Hkv, d->K);
        lina_heads_repeat(a->v, a->vv, (size_t)N, H, Hkv, d->V);
        if (!d->retention) {
            lina_heads_repeat(a->g, a->gg, (size_t)N, H, Hkv, d->K);
        }
    }
    if (d->output_gate) {
        lina_linear_forward(a->gate, x, p->g_proj, NULL, N, D, HV);
    }
    /* kernel: o [B,T,H,V] */
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->K, d->V, 64, 0.0f);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_VECTOR, a->g, h0};
    if (d->retention) {
        in.gate = LINA_GATE_HEAD;
        in.g = g_head;
    }
    lina_dd_out o = {.o = a->o, .ht = ht, .states = NULL};
    rc = cu ? lina_dd_fwd_varlen(&md, cu, ncu, &in, &o, form, ws) : lina_sp_dd_fwd(sp, d, &md, &in, &o, form, ws);
    if (rc) {
        return rc;
    }
    /* per-head output norm y [N*H, V], out [N,D] = y Wo^T */
    lina_out_forward(out, a->y, a->rstd, a->o, d->output_gate ? a->gate : NULL, p->norm_w, p->o_proj, N, H, d->V, D,
                     d->norm_eps);
    return LINA_OK;
}

int lina_gla_backward(float *dx, lina_gla_params *gp, const float *dout, const float *x,
                      const lina_gla_acts *a, const lina_gla_dims *d, const lina_gla_params *p,
                      int B, int T, const float *h0, float *scratch, const lina_sp *sp, const int64_t *cu,
                      int64_t ncu, lina_form form, lina_ws *ws)
{
    int rc = lina_gla_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, Hkv = hkv_of(d), HK = d->H * d->K, HV = d->H * d->V;
    int GK = Hkv * d->K, GV = Hkv * d->V, R = LINA_GLA_GATE_RANK;
    float g_head[GLA_MAX_HEADS];
    size_t nk = (size_t)N * HK, nv = (size_t)N * HV;
    float *dy = scratch;          /* [N,HV], later dv */
    float *dO = dy + nv;          /* [N,HV] */
    float *dgate = dO + nv;       /* [N,HV] */
    float *dq = dgate + nv;       /* [N,HK] */
    float *dk = dq + nk;          /* [N,HK] */
    float *dg = dk + nk;          /* [N,HK] */
    float *dgr = dg + nk;         /* [N,R] */
    float *dkk = dk, *dvv = dy, *dgg = dg; /* per kv head: [N,GK], [N,GV], [N,GK] (own buffers with groups) */
    if (Hkv != H) {
        dkk = dgr + (size_t)N * R;
        dvv = dkk + (size_t)N * GK;
        dgg = dvv + (size_t)N * GV;
    }
    /* the short convs' gradients after these: written by the fused projection, or zeroed below;
     * everything before them is written whole by its first writer (no zeroing pass) */
    float *dconv = dgr + (size_t)N * R + (Hkv != H ? (size_t)N * (2 * GK + GV) : 0);

    /* o_proj (dy = dout Wo, dWo += dout^T y), output norm (per head) */
    lina_out_backward(dO, dgate, dy, gp->norm_w, gp->o_proj, dout, a->y, a->o, d->output_gate ? a->gate : NULL,
                      p->norm_w, p->o_proj, a->rstd, N, H, d->V, D);
    /* kernel: dq, dk, dv (into dy), dg */
    float *dv = dy; /* written by the kernel */
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->K, d->V, 64, 0.0f);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_VECTOR, a->g, h0};
    lina_dd_grad_in gin = {dO, NULL, NULL};
    lina_dd_grad_out gout = {dq, dk, dv, dg, NULL};
    if (d->retention) {
        lina_retention_gates(H, g_head);
        in.gate = LINA_GATE_HEAD;
        in.g = g_head;
        gout.dg = NULL;
    }
    rc = cu ? lina_dd_bwd_varlen(&md, cu, ncu, &in, &gin, &gout, form, ws)
            : lina_sp_dd_bwd(sp, d, &md, &in, &gin, &gout, form, ws);
    if (rc) {
        return rc;
    }
    if (Hkv != H) {
        lina_heads_reduce(dkk, dk, (size_t)N, H, Hkv, d->K, 0);
        lina_heads_reduce(dvv, dv, (size_t)N, H, Hkv, d->V, 0);
        if (!d->retention) {
            lina_heads_reduce(dgg, dg, (size_t)N, H, Hkv, d->K, 0);
        }
    }
    if (d->retention) {
        /* RoPE transposed (training starts at position 0, or at its piece's first position) */
        const int64_t pos0 = sp ? sp->pos0 : 0;
        if (cu) {
            if ((rc = lina_docs_rope(dq, dq, cu, ncu, H, d->K, GLA_ROPE_BASE, 1)) ||
                (rc = lina_docs_rope(dkk, dkk, cu, ncu, Hkv, d->K, GLA_ROPE_BASE, 1))) {
                return rc;
            }
        } else if ((rc = lina_rope_backward(dq, dq, B, T, H, d->K, pos0, GLA_ROPE_BASE)) ||
            (rc = lina_rope_backward(dkk, dkk, B, T, Hkv, d->K, pos0, GLA_ROPE_BASE))) {
            return rc;
        }
    } else {
        /* gate: dgk (in place), then the low-rank projections */
        gla_gate_backward(dgg, a->gk, (size_t)N * GK, d);
        lina_linear_backward_set(dgr, gp->gk1, gp->gk1_b, dgg, a->gr, p->gk1, N, R, GK);
        lina_linear_backward(dx, gp->gk0, NULL, dgr, x, p->gk0, N, D, R);
    }
    /* short convs (SiLU), then the input projections */
    float *dqc = dq, *dkc = dkk, *dvc = dvv;
    lina_proj_part qkv[3];
    if (d->use_short_conv) {
        int W = d->conv_size;
        dqc = dconv;
        dkc = dqc + (size_t)N * HK;
        dvc = dkc + (size_t)N * GK;
        if (gla_qkv_parts(qkv, d, p, sp, cu)) {
            /* one product each for dx and the weights; dqc.. is the [N, HK+GK+GV] gradient */
            lina_proj_qkv_grad(qkv, dq, dkk, dvv, gp->q_proj, gp->k_proj, gp->v_proj, gp->q_conv, gp->k_conv,
                               gp->v_conv);
            lina_proj_backward(dx, dqc, qkv, 3, a->qc, x, B, T, D, W);
            if (d->output_gate) {
                lina_linear_backward(dx, gp->g_proj, NULL, dgate, x, p->g_proj, N, D, HV);
            }
            return LINA_OK;
        }
        memset(dqc, 0, (size_t)N * (HK + GK + GV) * sizeof(float)); /* the convs accumulate */
        if (sp && sp->size > 1) {
            /* the gradient of the inputs before the piece goes back to their pieces */
            if ((rc = lina_sp_conv_backward(sp, dqc, gp->q_conv, NULL, dq, a->qc, p->q_conv, NULL, B, T, HK, W,
                                            LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_backward(sp, dkc, gp->k_conv, NULL, dkk, a->kc, p->k_conv, NULL, B, T, GK, W,
                                            LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_backward(sp, dvc, gp->v_conv, NULL, dvv, a->vc, p->v_conv, NULL, B, T, GV, W,
                                            LINA_ACT_SILU))) {
                return rc;
            }
        } else if (cu) {
            lina_docs_conv_backward(dqc, gp->q_conv, dq, a->qc, p->q_conv, cu, ncu, HK, W, LINA_ACT_SILU);
            lina_docs_conv_backward(dkc, gp->k_conv, dkk, a->kc, p->k_conv, cu, ncu, GK, W, LINA_ACT_SILU);
            lina_docs_conv_backward(dvc, gp->v_conv, dvv, a->vc, p->v_conv, cu, ncu, GV, W, LINA_ACT_SILU);
        } else {
            lina_shortconv_backward(dqc, gp->q_conv, NULL, NULL, dq, a->qc, p->q_conv, NULL, NULL, B, T, HK, W,
                                    LINA_ACT_SILU);
            lina_shortconv_backward(dkc, gp->k_conv, NULL, NULL, dkk, a->kc, p->k_conv, NULL, NULL, B, T, GK, W,
                                    LINA_ACT_SILU);
            lina_shortconv_backward(dvc, gp->v_conv, NULL, NULL, dvv, a->vc, p->v_conv, NULL, NULL, B, T, GV, W,
                                    LINA_ACT_SILU);
        }
    }
    lina_linear_backward(dx, gp->q_proj, NULL, dqc, x, p->q_proj, N, D, HK);
    lina_linear_backward(dx, gp->k_proj, NULL, dkc, x, p->k_proj, N, D, GK);
    lina_linear_backward(dx, gp->v_proj, NULL, dvc, x, p->v_proj, N, D, GV);
    if (d->output_gate) {
        lina_linear_backward(dx, gp->g_proj, NULL, dgate, x, p->g_proj, N, D, HV);
    }
    return LINA_OK;
}

size_t lina_gla_step_floats(const lina_gla_dims *d, int B)
{
    return lina_gla_acts_floats(d, B);
}

int lina_gla_step(float *out, const float *x, const lina_gla_dims *d, const lina_gla_params *p, int B,
                  float *state, float *scratch, lina_ws *ws)
{
    int rc = lina_gla_check_dims(d);
    if (rc) {
        return rc;
    }
    lina_gla_acts a;
    lina_gla_acts_carve(&a, scratch, d, B);
    /* ht == h0: the engine updates the state in place */
    return lina_gla_forward(out, &a, x, d, p, B, 1, state, state, LINA_FORM_RECURRENT, ws);
}

/* ============================================================ plug-in kind
 * model_type "gla" and "retnet" (kind.h). Tensors under model.layers.{i}.attn.
 * (K, V per head; Hkv kv heads):
 *   q_proj.weight [H*K, D], k_proj.weight [Hkv*K, D], v_proj.weight [Hkv*V, D],
 *   g_proj.weight [H*V, D] (use_output_gate), {q,k,v}_conv1d.weight [C, 1, W]
 *   (use_short_conv), gk_proj.0.weight [16, D], gk_proj.1.weight [Hkv*K, 16],
 *   gk_proj.1.bias [Hkv*K] (GLA only), g_norm_swish_gate.weight [V]
 *   (g_norm.weight without output gate or with fuse_norm false; neither with
 *   elementwise_affine false), o_proj.weight [D, H*V].
 * The decode state is [B,H,K,V] followed by the conv tails. */
enum { GLA_Q, GLA_K, GLA_V, GLA_G, GLA_GK0, GLA_GK1, GLA_GK1B, GLA_NORM, GLA_O, GLA_QC, GLA_KC, GLA_VC };

_Static_assert(sizeof(lina_gla_dims) <= LINA_MIXER_DIMS_BYTES, "lina_gla_dims too large");

static int gla_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_gla_dims *d = dims;
    memset(d, 0, sizeof(*d));
    int D = c->hidden_size, H = c->num_heads;
    int kd = (int)(D * c->expand_k), vd = (int)(D * c->expand_v);
    int ret = c->model_type == LINA_MODEL_RETNET;
    const char *mt = lina_model_type_name(c->model_type);
    int G = H / (c->num_kv_heads > 0 ? c->num_kv_heads : H); /* kv groups (validated by the config) */
    if (c->feature_map[0]) {
        return lina_set_error(LINA_EINVAL, "%s: feature_map \"%s\" is not implemented yet", mt, c->feature_map);
    }
    d->D = D;
    d->H = H;
    d->K = kd / H;
    d->V = vd / H;
    d->output_gate = c->use_output_gate ? 1 : 0;
    d->norm_eps = (float)c->norm_eps;
    d->has_clamp_min = c->has_clamp_min;
    d->clamp_min = (float)c->clamp_min;
    d->retention = ret;
    d->num_kv_heads = H / G;
    d->use_short_conv = c->use_short_conv ? 1 : 0;
    d->conv_size = c->conv_size;
    if ((kd / H) % 2 != 0 && ret) {
        return lina_set_error(LINA_EINVAL, "retnet: the key head dim %d must be even (RoPE)", kd / H);
    }
    int64_t W = c->conv_size;
    int rc;
    if ((rc = lina_mixer_add(b, GLA_Q, "q_proj.weight", 2, kd, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GLA_K, "k_proj.weight", 2, kd / G, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GLA_V, "v_proj.weight", 2, vd / G, D, 0, 1, LINA_INIT_NORMAL)) ||
        (d->output_gate && (rc = lina_mixer_add(b, GLA_G, "g_proj.weight", 2, vd, D, 0, 1, LINA_INIT_NORMAL)))) {
        return rc;
    }
    if (d->use_short_conv && (rc = lina_mixer_add_qkv_convs(b, GLA_QC, GLA_KC, GLA_VC, kd, kd / G, vd / G, W))) {
        return rc;
    }
    if (!ret &&
        ((rc = lina_mixer_add(b, GLA_GK0, "gk_proj.0.weight", 2, LINA_GLA_GATE_RANK, D, 0, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, GLA_GK1, "gk_proj.1.weight", 2, kd / G, LINA_GLA_GATE_RANK, 0, 1,
                              LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, GLA_GK1B, "gk_proj.1.bias", 1, kd / G, 0, 0, 0, LINA_INIT_ZEROS)))) {
        return rc;
    }
    /* FLA fuses norm and gate (FusedRMSNormGated, g_norm_swish_gate) only with
     * fuse_norm; otherwise g_norm (an RMSNorm) then * swish(g): the same math */
    const char *norm = d->output_gate && c->fuse_norm ? "g_norm_swish_gate.weight" : "g_norm.weight";
    /* elementwise_affine false: the norm has no weight (FLA's RMSNorm / FusedRMSNormGated) */
    if ((c->elementwise_affine && (rc = lina_mixer_add(b, GLA_NORM, norm, 1, vd / H, 0, 0, 0, LINA_INIT_ONES))) ||
        (rc = lina_mixer_add(b, GLA_O, "o_proj.weight", 2, D, vd, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(gla_acts, lina_gla_acts_floats)
LINA_KIND_SIZE(gla_scratch, lina_gla_scratch_floats)

static size_t gla_state(const void *dims, int B, int max_len)
{
    (void)max_len;
    const lina_gla_dims *d = dims;
    return lina_szadd(lina_szmul3((size_t)B, (size_t)d->H * d->K, (size_t)d->V), lina_gla_conv_cache_floats(d, B));
}

static void gla_views(float *const *v, lina_gla_params *p)
{
    p->q_proj = v[GLA_Q];
    p->k_proj = v[GLA_K];
    p->v_proj = v[GLA_V];
    p->g_proj = v[GLA_G];
    p->gk0 = v[GLA_GK0];
    p->gk1 = v[GLA_GK1];
    p->gk1_b = v[GLA_GK1B];
    p->norm_w = v[GLA_NORM];
    p->o_proj = v[GLA_O];
    p->q_conv = v[GLA_QC];
    p->k_conv = v[GLA_KC];
    p->v_conv = v[GLA_VC];
}

static int gla_kind_forward(const lina_mixer_call *c)
{
    const lina_gla_dims *d = c->dims;
    lina_gla_params p;
    lina_gla_acts a;
    gla_views(c->P, &p);
    lina_gla_acts_carve(&a, c->acts, d, c->B * c->T);
    /* state [B,H,K,V] updated in place (lina_dd_fwd allows ht == h0), then the conv tails */
    float *hs = c->state;
    float *conv = hs && d->use_short_conv ? hs + (size_t)c->B * d->H * d->K * d->V : NULL;
    return lina_gla_forward_cached(c->out, &a, c->x, d, &p, c->B, c->T, hs, hs, conv, c->sp ? c->sp->pos0 : c->pos,
                                   c->sp, c->cu, c->ncu, c->form, c->ws);
}

static int gla_kind_backward(const lina_mixer_call *c)
{
    const lina_gla_dims *d = c->dims;
    lina_gla_params p, gp;
    lina_gla_acts a;
    gla_views(c->P, &p);
    gla_views(c->G, &gp);
    lina_gla_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_gla_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, NULL, c->scratch, c->sp, c->cu,
                             c->ncu, c->form, c->ws);
}

const lina_mixer_vt lina_gla_kind = {
    .name = "gla",
    .build = gla_build,
    .acts_floats = gla_acts,
    .scratch_floats = gla_scratch,
    .state_floats = gla_state,
    .forward = gla_kind_forward,
    .backward = gla_kind_backward,
    .flags = LINA_KIND_SP | LINA_KIND_VARLEN,
};
