/* gsa_layer.c -- FLA's GatedSlotAttention (docs/mixers.md section 16.1) on the
 * gsa kernel: q/k/v/f projections (optional SiLU short convolutions on q, k,
 * v), the feature map on q and k (swish, relu, or t2r: relu of one shared
 * [K, K] linear map per head), SiLU on v, the slot gates g = logsigmoid(f) /
 * gate_logit_normalizer with the write weights s = 1 - exp(g), grouped kv
 * heads repeated over their query heads, the kernel with scale 1, SiLU on the
 * output, RMSNorm over the whole value width (eps 1e-5, as FLA's fused norm +
 * o_proj takes its own default) and o_proj.
 * N = B*T rows; H query heads, Hkv kv heads (G = H / Hkv), K, V per head, M
 * slots. */
#include "nn.h"

#include "../kern/checked.h"

#include <math.h>
#include <string.h>

/* FLA's output norm: rms_norm_linear at its default eps, not the config's norm_eps */
#define GSA_NORM_EPS 1e-5f

/* The kernel's form for training, prefill and decode alike: both forms compute the same
   function, and on a CPU the recurrent one is the faster by far (B=1 T=4096 H=4 K=V=128 M=64,
   CPU time: forward 75 ms against the chunk form's 453, forward + backward 483 against 2796;
   the chunk form's first pass runs H*M heads of one value column each). */
#define GSA_FORM LINA_FORM_RECURRENT

enum { GSA_FM_SWISH, GSA_FM_RELU, GSA_FM_T2R };

typedef struct gsa_dims {
    int D, H, Hkv, K, V, M;
    int conv, W, fmap, affine;
    float inv_norm; /* 1 / gate_logit_normalizer */
} gsa_dims;

_Static_assert(sizeof(gsa_dims) <= LINA_MIXER_DIMS_BYTES, "gsa dims too large");

typedef struct gsa_params {
    const float *q_proj, *k_proj, *v_proj, *f_proj, *fm, *q_conv, *k_conv, *v_conv, *g_norm, *o_proj;
} gsa_params;

typedef struct gsa_gparams {
    float *q_proj, *k_proj, *v_proj, *f_proj, *fm, *q_conv, *k_conv, *v_conv, *g_norm, *o_proj;
} gsa_gparams;

/* activations: projections, their convolved values, the kernel inputs, the repeated kv-head
   inputs, the kernel output, its SiLU, the normed output */
typedef struct gsa_acts {
    float *qp, *kp, *vp, *fp;   /* [N, H*K], [N, Hkv*K], [N, Hkv*V], [N, Hkv*M] */
    float *qc, *kc, *vc;        /* after the short convs (= qp, kp, vp without) */
    float *qf, *kf, *vs;        /* feature-mapped q, k; SiLU(v) */
    float *g, *s;               /* [N, Hkv*M] */
    float *kr, *vr, *gr, *sr;   /* repeated over the groups (= kf, vs, g, s when G = 1) */
    float *o, *so, *y, *rstd;   /* [N, H*V] x 3, [N] */
} gsa_acts;

/* widths of the parts, in floats per row */
typedef struct gsa_w {
    size_t Kd, Kg, Vd, Vg, Md, Mg;
} gsa_w;

static gsa_w gsa_widths(const gsa_dims *d)
{
    gsa_w w = {(size_t)d->H * d->K, (size_t)d->Hkv * d->K, (size_t)d->H * d->V,
               (size_t)d->Hkv * d->V, (size_t)d->H * d->M, (size_t)d->Hkv * d->M};
    return w;
}

static size_t gsa_acts_floats(const gsa_dims *d, int N)
{
    gsa_w w = gsa_widths(d);
    size_t row = 2 * (w.Kd + w.Kg + w.Vg + w.Mg) + w.Mg + 3 * w.Vd + 1;
    row += d->conv ? w.Kd + w.Kg + w.Vg : 0;
    row += d->H != d->Hkv ? w.Kd + w.Vd + 2 * w.Md : 0;
    return lina_szmul((size_t)N, row);
}

static void gsa_carve(gsa_acts *a, float *p, const gsa_dims *d, int N)
{
    gsa_w w = gsa_widths(d);
    size_t n = (size_t)N;
#define GSA_TAKE(f, width) (a->f = p, p += n * (width))
    GSA_TAKE(qp, w.Kd);
    GSA_TAKE(kp, w.Kg);
    GSA_TAKE(vp, w.Vg);
    GSA_TAKE(fp, w.Mg);
    GSA_TAKE(qf, w.Kd);
    GSA_TAKE(kf, w.Kg);
    GSA_TAKE(vs, w.Vg);
    GSA_TAKE(g, w.Mg);
    GSA_TAKE(s, w.Mg);
    GSA_TAKE(o, w.Vd);
    GSA_TAKE(so, w.Vd);
    GSA_TAKE(y, w.Vd);
    GSA_TAKE(rstd, 1);
    a->qc = a->qp, a->kc = a->kp, a->vc = a->vp;
    if (d->conv) {
        GSA_TAKE(qc, w.Kd);
        GSA_TAKE(kc, w.Kg);
        GSA_TAKE(vc, w.Vg);
    }
    a->kr = a->kf, a->vr = a->vs, a->gr = a->g, a->sr = a->s;
    if (d->H != d->Hkv) {
        GSA_TAKE(kr, w.Kd);
        GSA_TAKE(vr, w.Vd);
        GSA_TAKE(gr, w.Md);
        GSA_TAKE(sr, w.Md);
    }
#undef GSA_TAKE
}

/* scratch: dy, dso, do [N, Vd]; the kernel's dq, dk [N, Kd], dv [N, Vd], ds, dg [N, Md]; the
   group-reduced dk, dv, ds, dg; the gradients before the feature map / convs dq, dk, dv; t2r's */
static size_t gsa_scratch_floats(const gsa_dims *d, int N)
{
    gsa_w w = gsa_widths(d);
    size_t row = 4 * w.Vd + 2 * w.Kd + 2 * w.Md + (w.Kg + w.Vg + 2 * w.Mg) + (w.Kd + w.Kg + w.Vg);
    row += d->fmap == GSA_FM_T2R ? w.Kd : 0;
    return lina_szmul((size_t)N, row);
}

static size_t gsa_state_floats(const gsa_dims *d, int B)
{
    gsa_w w = gsa_widths(d);
    size_t st = (size_t)d->H * d->M * ((size_t)d->K + d->V);
    st += d->conv ? (w.Kd + w.Kg + w.Vg) * (size_t)d->W : 0;
    return lina_szmul((size_t)B, st);
}

/* the feature map of n rows of K (x -> phi) */
static void gsa_fmap_forward(const gsa_dims *d, float *phi, const float *x, const float *fm, size_t rows)
{
    size_t n = rows * (size_t)d->K;
    switch (d->fmap) {
    case GSA_FM_SWISH:
        lina_silu_forward(phi, x, n);
        break;
    case GSA_FM_RELU:
        lina_phi_forward(phi, x, n, 0);
        break;
    default:
        lina_linear_forward(phi, x, fm, NULL, (int)rows, d->K, d->K);
        lina_phi_forward(phi, phi, n, 0);
        break;
    }
}

/* dx (and dfm) += the feature map's backward; dt: scratch of n rows (t2r) */
static void gsa_fmap_backward(const gsa_dims *d, float *dx, float *dfm, float *dt, const float *dphi, const float *x,
                              const float *phi, const float *fm, size_t rows)
{
    size_t n = rows * (size_t)d->K;
    switch (d->fmap) {
    case GSA_FM_SWISH:
        lina_silu_backward(dx, dphi, x, n);
        break;
    case GSA_FM_RELU:
        lina_phi_backward(dx, dphi, phi, n, 0);
        break;
    default:
        memset(dt, 0, n * sizeof(float));
        lina_phi_backward(dt, dphi, phi, n, 0);
        lina_linear_backward(dx, dfm, NULL, dt, x, fm, (int)rows, d->K, d->K);
        break;
    }
}

static int gsa_forward(float *out, gsa_acts *a, const float *x, const gsa_dims *d, const gsa_params *p, int B, int T,
                       float *state, lina_ws *ws)
{
    const int N = B * T, D = d->D, H = d->H, Hkv = d->Hkv;
    gsa_w w = gsa_widths(d);
    float *hk = state, *hv = state ? hk + (size_t)B * H * d->K * d->M : NULL;
    float *cq = state && d->conv ? hv + (size_t)B * H * d->M * d->V : NULL;
    float *ck = cq ? cq + (size_t)B * w.Kd * d->W : NULL, *cv = ck ? ck + (size_t)B * w.Kg * d->W : NULL;
    lina_linear_forward(a->qp, x, p->q_proj, NULL, N, D, (int)w.Kd);
    lina_linear_forward(a->kp, x, p->k_proj, NULL, N, D, (int)w.Kg);
    lina_linear_forward(a->vp, x, p->v_proj, NULL, N, D, (int)w.Vg);
    lina_linear_forward(a->fp, x, p->f_proj, NULL, N, D, (int)w.Mg);
    if (d->conv) {
        lina_conv_act_forward(a->qc, a->qp, p->q_conv, cq, B, T, (int)w.Kd, d->W, LINA_ACT_SILU);
        lina_conv_act_forward(a->kc, a->kp, p->k_conv, ck, B, T, (int)w.Kg, d->W, LINA_ACT_SILU);
        lina_conv_act_forward(a->vc, a->vp, p->v_conv, cv, B, T, (int)w.Vg, d->W, LINA_ACT_SILU);
    }
    gsa_fmap_forward(d, a->qf, a->qc, p->fm, (size_t)N * H);
    gsa_fmap_forward(d, a->kf, a->kc, p->fm, (size_t)N * Hkv);
    lina_silu_forward(a->vs, a->vc, (size_t)N * w.Vg);
    /* g = logsigmoid(f) / normalizer, s = 1 - exp(g) */
    size_t nm = (size_t)N * w.Mg;
    lina_vlogsigmoid(a->g, a->fp, nm);
    for (size_t i = 0; i < nm; i++) {
        a->g[i] *= d->inv_norm;
    }
    lina_vexp(a->s, a->g, nm);
    for (size_t i = 0; i < nm; i++) {
        a->s[i] = 1.0f - a->s[i];
    }
    if (H != Hkv) {
        lina_heads_repeat(a->kr, a->kf, (size_t)N, H, Hkv, d->K);
        lina_heads_repeat(a->vr, a->vs, (size_t)N, H, Hkv, d->V);
        lina_heads_repeat(a->gr, a->g, (size_t)N, H, Hkv, d->M);
        lina_heads_repeat(a->sr, a->s, (size_t)N, H, Hkv, d->M);
    }
    lina_mix_dims md = lina_layer_mix(B, T, H, d->K, d->V, 0, 1.0f);
    lina_gsa_in in = {a->qf, a->kr, a->vr, a->sr, a->gr, hk, hv};
    lina_gsa_out o = {a->o, hk, hv};
    int rc = lina_gsa_fwd(&md, d->M, &in, &o, GSA_FORM, ws);
    if (rc) {
        return rc;
    }
    lina_silu_forward(a->so, a->o, (size_t)N * w.Vd);
    lina_out_forward(out, a->y, a->rstd, a->so, NULL, p->g_norm, p->o_proj, N, 1, (int)w.Vd, D, GSA_NORM_EPS);
    return LINA_OK;
}

static int gsa_backward(float *dx, gsa_gparams *gp, const float *dout, const float *x, const gsa_acts *a,
                        const gsa_dims *d, const gsa_params *p, int B, int T, float *scratch, lina_ws *ws)
{
    const int N = B * T, D = d->D, H = d->H, Hkv = d->Hkv;
    gsa_w w = gsa_widths(d);
    const size_t n = (size_t)N;
    memset(scratch, 0, gsa_scratch_floats(d, N) * sizeof(float));
    float *dy = scratch, *dso = dy + n * w.Vd, *dO = dso + n * w.Vd;
    float *dq = dO + n * w.Vd, *dk = dq + n * w.Kd, *dv = dk + n * w.Kd, *ds = dv + n * w.Vd, *dg = ds + n * w.Md;
    float *dkg = dg + n * w.Md, *dvg = dkg + n * w.Kg, *dsg = dvg + n * w.Vg, *dgg = dsg + n * w.Mg;
    float *dqc = dgg + n * w.Mg, *dkc = dqc + n * w.Kd, *dvc = dkc + n * w.Kg, *dt = dvc + n * w.Vg;

    lina_out_backward(dso, NULL, dy, gp->g_norm, gp->o_proj, dout, a->y, a->so, NULL, p->g_norm, p->o_proj, a->rstd,
                      N, 1, (int)w.Vd, D);
    lina_silu_backward(dO, dso, a->o, n * w.Vd);
    lina_mix_dims md = lina_layer_mix(B, T, H, d->K, d->V, 0, 1.0f);
    lina_gsa_in in = {a->qf, a->kr, a->vr, a->sr, a->gr, NULL, NULL};
    lina_gsa_grad_in gin = {dO, NULL, NULL};
    lina_gsa_grad_out gout = {dq, dk, dv, ds, dg, NULL, NULL};
    int rc = lina_gsa_bwd(&md, d->M, &in, &gin, &gout, GSA_FORM, ws);
    if (rc) {
        return rc;
    }
    if (H != Hkv) {
        lina_heads_reduce(dkg, dk, n, H, Hkv, d->K, 0);
        lina_heads_reduce(dvg, dv, n, H, Hkv, d->V, 0);
        lina_heads_reduce(dsg, ds, n, H, Hkv, d->M, 0);
        lina_heads_reduce(dgg, dg, n, H, Hkv, d->M, 0);
    } else {
        dkg = dk, dvg = dv, dsg = ds, dgg = dg;
    }
    /* s = 1 - exp(g): dg += ds (s - 1); g = logsigmoid(f) / c: df = dg sigmoid(-f) / c, into dgg */
    const size_t nm = n * w.Mg;
    for (size_t i = 0; i < nm; i++) {
        dgg[i] += dsg[i] * (a->s[i] - 1.0f);
        dsg[i] = -a->fp[i];
    }
    lina_vsigmoid(dsg, dsg, nm); /* 1 - sigmoid(f) = sigmoid(-f) */
    for (size_t i = 0; i < nm; i++) {
        dgg[i] *= dsg[i] * d->inv_norm;
    }
    lina_silu_backward(dvc, dvg, a->vc, n * w.Vg);
    gsa_fmap_backward(d, dqc, gp->fm, dt, dq, a->qc, a->qf, p->fm, n * H);
    gsa_fmap_backward(d, dkc, gp->fm, dt, dkg, a->kc, a->kf, p->fm, n * Hkv);
    const float *dqp = dqc, *dkp = dkc, *dvp = dvc;
    if (d->conv) { /* the convolutions' input gradients into the free dq, dk, dv */
        memset(dq, 0, n * w.Kd * sizeof(float));
        memset(dk, 0, n * w.Kg * sizeof(float));
        memset(dv, 0, n * w.Vg * sizeof(float));
        lina_conv_act_backward(dq, gp->q_conv, dqc, a->qp, p->q_conv, B, T, (int)w.Kd, d->W, LINA_ACT_SILU);
        lina_conv_act_backward(dk, gp->k_conv, dkc, a->kp, p->k_conv, B, T, (int)w.Kg, d->W, LINA_ACT_SILU);
        lina_conv_act_backward(dv, gp->v_conv, dvc, a->vp, p->v_conv, B, T, (int)w.Vg, d->W, LINA_ACT_SILU);
        dqp = dq, dkp = dk, dvp = dv;
    }
    lina_linear_backward(dx, gp->q_proj, NULL, dqp, x, p->q_proj, N, D, (int)w.Kd);
    lina_linear_backward(dx, gp->k_proj, NULL, dkp, x, p->k_proj, N, D, (int)w.Kg);
    lina_linear_backward(dx, gp->v_proj, NULL, dvp, x, p->v_proj, N, D, (int)w.Vg);
    lina_linear_backward(dx, gp->f_proj, NULL, dgg, x, p->f_proj, N, D, (int)w.Mg);
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * model_type "gsa" (kind.h). Tensors under model.layers.{i}.attn.:
 * feature_map.layer.weight [K, K] (t2r), q_proj.weight [H*K, D], k_proj.weight
 * [Hkv*K, D], v_proj.weight [Hkv*V, D], f_proj.weight [Hkv*M, D],
 * {q,k,v}_conv1d.weight [., 1, W] (use_short_conv), g_norm.weight [D]
 * (elementwise_affine), o_proj.weight [D, H*V]. Decode state: hk [B, H, K, M],
 * hv [B, H, M, V], then the conv tails of q, k, v [B, C, W]. */
enum { GS_FM, GS_Q, GS_K, GS_V, GS_F, GS_QC, GS_KC, GS_VC, GS_NORM, GS_O };

static int gsa_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    gsa_dims *d = dims;
    memset(d, 0, sizeof(*d));
    const int D = c->hidden_size, H = c->num_heads, Hkv = c->num_kv_heads ? c->num_kv_heads : H;
    const double kd = floor(D * c->expand_k), vd = floor(D * c->expand_v);
    if (H < 1 || Hkv < 1 || H % Hkv || kd < 1 || vd < 1 || fmod(kd, H) || fmod(vd, H)) {
        return lina_set_error(LINA_EINVAL, "gsa: num_heads (%d) must divide hidden_size*expand_k (%g) and "
                                           "hidden_size*expand_v (%g), and num_kv_heads (%d) must divide num_heads",
                              H, kd, vd, Hkv);
    }
    d->D = D;
    d->H = H;
    d->Hkv = Hkv;
    d->K = (int)kd / H;
    d->V = (int)vd / H;
    d->M = c->num_slots > 0 ? c->num_slots : d->K; /* null: the layer's default, the key dim per head */
    d->conv = c->use_short_conv ? 1 : 0;
    d->W = c->conv_size;
    d->affine = c->elementwise_affine ? 1 : 0;
    if (!(c->gate_logit_normalizer > 0.0) || !isfinite(c->gate_logit_normalizer)) {
        return lina_set_error(LINA_EINVAL, "gsa: gate_logit_normalizer must be > 0 (got %g)",
                              c->gate_logit_normalizer);
    }
    d->inv_norm = (float)(1.0 / c->gate_logit_normalizer);
    if (!strcmp(c->feature_map, "swish")) {
        d->fmap = GSA_FM_SWISH;
    } else if (!strcmp(c->feature_map, "relu")) {
        d->fmap = GSA_FM_RELU;
    } else if (!strcmp(c->feature_map, "t2r")) {
        d->fmap = GSA_FM_T2R;
    } else {
        return lina_set_error(LINA_EINVAL, "gsa: feature_map \"%s\" is not supported (swish, relu or t2r)",
                              c->feature_map[0] ? c->feature_map : "null");
    }
    if (d->affine && vd != D) {
        return lina_set_error(LINA_EINVAL, "gsa: the output norm's weight has hidden_size entries, so "
                                           "hidden_size*expand_v (%g) must equal hidden_size (%d)", vd, D);
    }
    if (d->conv && d->W < 1) {
        return lina_set_error(LINA_EINVAL, "gsa: conv_size must be >= 1");
    }
    gsa_w w = gsa_widths(d);
    int64_t K = d->K, W = d->W;
    int rc;
    if ((d->fmap == GSA_FM_T2R &&
         (rc = lina_mixer_add(b, GS_FM, "feature_map.layer.weight", 2, K, K, 0, 1, LINA_INIT_NORMAL))) ||
        (rc = lina_mixer_add(b, GS_Q, "q_proj.weight", 2, (int64_t)w.Kd, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GS_K, "k_proj.weight", 2, (int64_t)w.Kg, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GS_V, "v_proj.weight", 2, (int64_t)w.Vg, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GS_F, "f_proj.weight", 2, (int64_t)w.Mg, D, 0, 1, LINA_INIT_NORMAL)) ||
        (d->conv &&
         (rc = lina_mixer_add_qkv_convs(b, GS_QC, GS_KC, GS_VC, (int64_t)w.Kd, (int64_t)w.Kg, (int64_t)w.Vg, W))) ||
        (d->affine && (rc = lina_mixer_add(b, GS_NORM, "g_norm.weight", 1, D, 0, 0, 0, LINA_INIT_ONES))) ||
        (rc = lina_mixer_add(b, GS_O, "o_proj.weight", 2, D, (int64_t)w.Vd, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(gsa_acts_k, gsa_acts_floats)
LINA_KIND_SIZE(gsa_scratch_k, gsa_scratch_floats)
LINA_KIND_STATE(gsa_state_k, gsa_state_floats)

static void gsa_views(float *const *v, gsa_gparams *p)
{
    p->fm = v[GS_FM];
    p->q_proj = v[GS_Q];
    p->k_proj = v[GS_K];
    p->v_proj = v[GS_V];
    p->f_proj = v[GS_F];
    p->q_conv = v[GS_QC];
    p->k_conv = v[GS_KC];
    p->v_conv = v[GS_VC];
    p->g_norm = v[GS_NORM];
    p->o_proj = v[GS_O];
}

static gsa_params gsa_const(const gsa_gparams *g)
{
    gsa_params p = {g->q_proj, g->k_proj, g->v_proj, g->f_proj, g->fm,
                    g->q_conv, g->k_conv, g->v_conv, g->g_norm, g->o_proj};
    return p;
}

static int gsa_kind_forward(const lina_mixer_call *c)
{
    gsa_gparams v;
    gsa_acts a;
    gsa_views(c->P, &v);
    gsa_params p = gsa_const(&v);
    gsa_carve(&a, c->acts, c->dims, c->B * c->T);
    return gsa_forward(c->out, &a, c->x, c->dims, &p, c->B, c->T, c->state, c->ws);
}

static int gsa_kind_backward(const lina_mixer_call *c)
{
    gsa_gparams v, gp;
    gsa_acts a;
    gsa_views(c->P, &v);
    gsa_views(c->G, &gp);
    gsa_params p = gsa_const(&v);
    gsa_carve(&a, c->acts, c->dims, c->B * c->T);
    return gsa_backward(c->dx, &gp, c->dout, c->x, &a, c->dims, &p, c->B, c->T, c->scratch, c->ws);
}

const lina_mixer_vt lina_gsa_kind = {
    .name = "gsa",
    .build = gsa_build,
    .acts_floats = gsa_acts_k,
    .scratch_floats = gsa_scratch_k,
    .state_floats = gsa_state_k,
    .forward = gsa_kind_forward,
    .backward = gsa_kind_backward,
};
