/*
 * lion.c -- LION-S bidirectional decayed linear attention (docs/ops.md, docs/mixers.md 10):
 *
 *   lambda_t = exp(g_t),  M_ij = prod_{k=j}^{i-1} lambda_k (i > j), 1 (i = j),
 *                                prod_{k=i+1}^{j} lambda_k (i < j)
 *   unnormalised: o_i = s sum_j M_ij (q_i.k_j) v_j
 *   --normalize:  o_i = sum_j M_ij (q_i.k_j) v_j / sum_j M_ij (q_i.k_j)   (no eps)
 *
 * O(T) as two causal scans of the diagonal-decay engine (scalar gates):
 *   forward  SF_i = lambda_{i-1} SF_{i-1} + k_i v_i^T : engine gate gf_i = g_{i-1}
 *            (gf_0 = 0, it meets the zero state);
 *   backward SB_i = lambda_{i+1} SB_{i+1} + k_i v_i^T : the engine on the time-reversed
 *            sequence (t' = T-1-i) with gate gr_t' = g_{T-t'} (gr_0 = 0);
 *   o_i = s q_i^T (SF_i + SB_i - k_i v_i^T).
 * With --normalize the values carry one more column of ones, whose output is
 * the denominator (scale 1; it cancels). Backward: the same two scans in
 * reverse mode (lina_dd_bwd), the diagonal term by hand, the quotient rule
 * dnum = do/den, dden = -(do.o)/den, and the gate gradient
 *   dg_t = dgf_{t+1} + dgr_{T-t}   (terms outside 0..T-1 dropped).
 */
#include "ops_internal.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct li_ctx {
    int B, T, H, K, V, Va; /* Va = V (+1 with normalize) */
    float s;               /* engine scale: s, or 1 with normalize */
    int norm;
    size_t nr;             /* B*T*H rows */
} li_ctx;

typedef struct li_buf {
    float *gf, *gr;          /* [B,T,H] forward-scan and reversed-scan gates */
    float *qr, *kr;          /* [B,T,H,K] time-reversed q, k */
    float *va, *vr;          /* [B,T,H,Va] values (+ ones), and reversed */
    float *oF, *oB;          /* [B,T,H,Va] scan outputs (oB in reversed time) */
    /* backward */
    float *dn, *dnr;         /* [B,T,H,Va] cotangent of the numerator (+ den), reversed */
    float *dqB, *dkB;        /* [B,T,H,K] reversed-scan gradients (reversed time) */
    float *dvF, *dvB;        /* [B,T,H,Va] */
    float *dgF, *dgB;        /* [B,T,H] */
    float *stF, *stB;        /* [B,H,nC+1,K,Va] chunk-start states of the two scans
                                (normalize backward, which recomputes the forward) */
} li_buf;

static size_t li_al64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* engine dims of both scans */
static lina_mix_dims li_engine_dims(const li_ctx *c, const lina_mix_dims *d)
{
    lina_mix_dims dd = {c->B, c->T, c->H, c->K, c->Va, d->chunk, c->s};
    return dd;
}

/* bytes of one saved-states buffer (0 unless the normalize backward needs it) */
static size_t li_st_bytes(const li_ctx *c, const lina_mix_dims *d, int bwd)
{
    lina_mix_dims dd = li_engine_dims(c, d);
    return bwd && c->norm ? li_al64(lina_dd_states_size(&dd) * sizeof(float)) : 0;
}

static size_t li_bytes(const li_ctx *c, const lina_mix_dims *d, int bwd)
{
    const size_t g = li_al64(c->nr * sizeof(float)), k = li_al64(c->nr * c->K * sizeof(float)),
                 v = li_al64(c->nr * c->Va * sizeof(float));
    return 2 * g + 2 * k + 4 * v + (bwd ? 2 * g + 2 * k + 4 * v : 0) + 2 * li_st_bytes(c, d, bwd) +
           64;
}

static void li_carve(const li_ctx *c, const lina_mix_dims *d, void *mem, int bwd, li_buf *b)
{
    const size_t g = li_al64(c->nr * sizeof(float)), k = li_al64(c->nr * c->K * sizeof(float)),
                 v = li_al64(c->nr * c->Va * sizeof(float)), st = li_st_bytes(c, d, bwd);
    char *p = mem;
    memset(b, 0, sizeof *b);
#define LI_TAKE(ptr, n)          \
    do {                         \
        b->ptr = (float *)p;     \
        p += (n);                \
    } while (0)
    LI_TAKE(gf, g);
    LI_TAKE(gr, g);
    LI_TAKE(qr, k);
    LI_TAKE(kr, k);
    LI_TAKE(va, v);
    LI_TAKE(vr, v);
    LI_TAKE(oF, v);
    LI_TAKE(oB, v);
    if (bwd) {
        LI_TAKE(dn, v);
        LI_TAKE(dnr, v);
        LI_TAKE(dqB, k);
        LI_TAKE(dkB, k);
        LI_TAKE(dvF, v);
        LI_TAKE(dvB, v);
        LI_TAKE(dgF, g);
        LI_TAKE(dgB, g);
        if (st) {
            LI_TAKE(stF, st);
            LI_TAKE(stB, st);
        }
    }
#undef LI_TAKE
}

static int li_setup(li_ctx *c, const lina_mix_dims *d, const lina_lion_in *in)
{
    if (!d || !in || !in->q || !in->k || !in->v || !in->g) {
        return lina_set_error(LINA_EINVAL, "lion: missing q, k, v or g");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "lion: bad dims B=%d T=%d H=%d K=%d V=%d", d->B, d->T,
                              d->H, d->K, d->V);
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->norm = in->normalize != 0;
    c->Va = d->V + c->norm;
    c->s = c->norm ? 1.0f : (d->scale != 0.0f ? d->scale : 1.0f / sqrtf((float)d->K));
    c->nr = (size_t)d->B * d->T * d->H;
    return LINA_OK;
}

/* Reverse the time axis of a [B,T,H,D] tensor: dst row t = src row T-1-t. */
static void li_reverse(const li_ctx *c, const float *src, float *dst, int D)
{
    const int B = c->B, T = c->T, H = c->H;
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const int b = bt / T, t = bt % T;
        memcpy(LINA_ROW(dst, b, t, 0, T, H, D), LINA_ROW(src, b, T - 1 - t, 0, T, H, D),
               (size_t)H * D * sizeof(float));
    }
}

/* gates, reversed q, k, values with the ones column, reversed values */
static void li_prepare(const li_ctx *c, const lina_lion_in *in, li_buf *bf)
{
    const int B = c->B, T = c->T, H = c->H, V = c->V, Va = c->Va;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) {
                const size_t r = ((size_t)b * T + t) * H + h;
                bf->gf[r] = t > 0 ? in->g[r - H] : 0.0f;                            /* g_{t-1} */
                bf->gr[r] = t > 0 ? in->g[((size_t)b * T + (T - t)) * H + h] : 0.0f; /* g_{T-t} */
            }
        }
    }
    li_reverse(c, in->q, bf->qr, c->K);
    li_reverse(c, in->k, bf->kr, c->K);
    if (c->norm) {
        for (size_t r = 0; r < c->nr; r++) {
            memcpy(bf->va + r * Va, in->v + r * V, (size_t)V * sizeof(float));
            bf->va[r * Va + V] = 1.0f;
        }
    } else {
        memcpy(bf->va, in->v, c->nr * V * sizeof(float));
    }
    li_reverse(c, bf->va, bf->vr, Va);
}

static double li_dot(const float *a, const float *b, int n)
{
    double acc = 0.0;
    for (int x = 0; x < n; x++) {
        acc += (double)a[x] * b[x];
    }
    return acc;
}

/* The two scans: oF (forward) and oB (reversed time); their chunk-start
 * states go to stF, stB when those are set. */
static int li_scans_fwd(const li_ctx *c, const lina_mix_dims *d, const lina_lion_in *in,
                        li_buf *bf, lina_form form, lina_ws *ws)
{
    lina_mix_dims dd = li_engine_dims(c, d);
    lina_dd_in fin = {.q = in->q, .k = in->k, .v = bf->va, .gate = LINA_GATE_SCALAR, .g = bf->gf};
    lina_dd_out fout = {.o = bf->oF, .states = bf->stF};
    lina_dd_in rin = {.q = bf->qr, .k = bf->kr, .v = bf->vr, .gate = LINA_GATE_SCALAR, .g = bf->gr};
    lina_dd_out rout = {.o = bf->oB, .states = bf->stB};
    int rc = lina_dd_fwd(&dd, &fin, &fout, form, ws);
    return rc ? rc : lina_dd_fwd(&dd, &rin, &rout, form, ws);
}

/* num_r (in oF, in place) = oF_r + oB_{rev r} - s (q.k) va_r; o = num or num/den */
static void li_combine(const li_ctx *c, const lina_lion_in *in, li_buf *bf, float *o)
{
    const int B = c->B, T = c->T, H = c->H, K = c->K, V = c->V, Va = c->Va;
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const int b = bt / T, t = bt % T;
        for (int h = 0; h < H; h++) {
            const size_t r = ((size_t)b * T + t) * H + h;
            const size_t rr = ((size_t)b * T + (T - 1 - t)) * H + h;
            const float qk = (float)(c->s * li_dot(in->q + r * K, in->k + r * K, K));
            float *num = bf->oF + r * Va;
            const float *ob = bf->oB + rr * Va, *va = bf->va + r * Va;
            for (int x = 0; x < Va; x++) {
                num[x] = num[x] + ob[x] - qk * va[x];
            }
            float *orow = o + r * V;
            if (c->norm) {
                const float inv = 1.0f / num[V];
                for (int x = 0; x < V; x++) {
                    orow[x] = num[x] * inv;
                }
            } else {
                memcpy(orow, num, (size_t)V * sizeof(float));
            }
        }
    }
}

/* Open the workspace (the extra slot, which survives the engine calls), carve
 * the buffers of a forward (bwd = 0) or backward (bwd = 1) call and prepare
 * the scans' inputs. On success the caller closes *sc. */
static int li_begin(const li_ctx *c, const lina_mix_dims *d, const lina_lion_in *in, int bwd,
                    lina_ws *ws, lina_ws_scope *sc, li_buf *bf)
{
    const int slot = lina_ws_extra_slot();
    int rc = lina_ws_scope_open(sc, ws, slot + 1);
    if (rc) {
        return rc;
    }
    void *mem = lina_ws_get(sc->ws, slot, li_bytes(c, d, bwd));
    if (!mem) {
        lina_ws_scope_close(sc);
        return lina_set_error(LINA_ENOMEM, "lion: out of memory");
    }
    li_carve(c, d, mem, bwd, bf);
    li_prepare(c, in, bf);
    return LINA_OK;
}

int LINA_KFN(lina_lion_fwd)(const lina_mix_dims *d, const lina_lion_in *in, lina_lion_out *out,
                  lina_form form, lina_ws *ws)
{
    li_ctx c;
    int rc = li_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "lion: output o is NULL");
    }
    if (c.T == 0) {
        return LINA_OK;
    }
    lina_ws_scope sc;
    li_buf bf;
    if ((rc = li_begin(&c, d, in, 0, ws, &sc, &bf))) {
        return rc;
    }
    rc = li_scans_fwd(&c, d, in, &bf, form, sc.ws);
    if (!rc) {
        li_combine(&c, in, &bf, out->o);
    }
    lina_ws_scope_close(&sc);
    return rc;
}

int LINA_KFN(lina_lion_bwd)(const lina_mix_dims *d, const lina_lion_in *in, const lina_lion_grad_in *gin,
                  lina_lion_grad_out *gout, lina_form form, lina_ws *ws)
{
    li_ctx c;
    int rc = li_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gin->do_ || !gout || !gout->dq || !gout->dk || !gout->dv) {
        return lina_set_error(LINA_EINVAL, "lion: do and the outputs dq, dk, dv are required");
    }
    if (c.T == 0) {
        return LINA_OK;
    }
    const int B = c.B, T = c.T, H = c.H, K = c.K, V = c.V, Va = c.Va;
    lina_ws_scope sc;
    li_buf bf;
    if ((rc = li_begin(&c, d, in, 1, ws, &sc, &bf))) {
        return rc;
    }
    /* cotangent of the numerator (and of the denominator column) */
    if (c.norm) {
        if ((rc = li_scans_fwd(&c, d, in, &bf, form, sc.ws))) {
            lina_ws_scope_close(&sc);
            return rc;
        }
        /* num = oF + reversed oB - (q.k) va, den its last column; o = num / den */
#pragma omp parallel for schedule(static)
        for (int bt = 0; bt < B * T; bt++) {
            const int b = bt / T, t = bt % T;
            for (int h = 0; h < H; h++) {
                const size_t r = ((size_t)b * T + t) * H + h;
                const size_t rr = ((size_t)b * T + (T - 1 - t)) * H + h;
                const double qk = li_dot(in->q + r * K, in->k + r * K, K);
                const float *ob = bf.oB + rr * Va, *va = bf.va + r * Va, *num = bf.oF + r * Va;
                const float *dO = gin->do_ + r * V;
                const double den = (double)num[V] + ob[V] - qk;
                double dod = 0.0;
                float *dn = bf.dn + r * Va;
                for (int x = 0; x < V; x++) {
                    const double ox = ((double)num[x] + ob[x] - qk * va[x]) / den;
                    dod += (double)dO[x] * ox;
                    dn[x] = (float)(dO[x] / den);
                }
                dn[V] = (float)(-dod / den);
            }
        }
    } else {
        memcpy(bf.dn, gin->do_, c.nr * V * sizeof(float));
    }
    li_reverse(&c, bf.dn, bf.dnr, Va);
    {
        lina_mix_dims dd = li_engine_dims(&c, d);
        lina_dd_in fin = {.q = in->q, .k = in->k, .v = bf.va, .gate = LINA_GATE_SCALAR, .g = bf.gf};
        lina_dd_grad_in fgi = {.do_ = bf.dn, .states = bf.stF};
        lina_dd_grad_out fgo = {.dq = gout->dq, .dk = gout->dk, .dv = bf.dvF, .dg = bf.dgF};
        lina_dd_in rin = {.q = bf.qr, .k = bf.kr, .v = bf.vr, .gate = LINA_GATE_SCALAR, .g = bf.gr};
        lina_dd_grad_in rgi = {.do_ = bf.dnr, .states = bf.stB};
        lina_dd_grad_out rgo = {.dq = bf.dqB, .dk = bf.dkB, .dv = bf.dvB, .dg = bf.dgB};
        if ((rc = lina_dd_bwd(&dd, &fin, &fgi, &fgo, form, sc.ws)) ||
            (rc = lina_dd_bwd(&dd, &rin, &rgi, &rgo, form, sc.ws))) {
            lina_ws_scope_close(&sc);
            return rc;
        }
    }
    /* add the reversed scan and the diagonal term -s (q.k) v */
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const int b = bt / T, t = bt % T;
        for (int h = 0; h < H; h++) {
            const size_t r = ((size_t)b * T + t) * H + h;
            const size_t rr = ((size_t)b * T + (T - 1 - t)) * H + h;
            const float *q = in->q + r * K, *k = in->k + r * K;
            const float *va = bf.va + r * Va, *dn = bf.dn + r * Va;
            const float qk = (float)(c.s * li_dot(q, k, K));
            const float vd = (float)(c.s * li_dot(va, dn, Va));
            float *dq = gout->dq + r * K, *dk = gout->dk + r * K, *dv = gout->dv + r * V;
            const float *dqB = bf.dqB + rr * K, *dkB = bf.dkB + rr * K;
            const float *dvF = bf.dvF + r * Va, *dvB = bf.dvB + rr * Va;
            for (int x = 0; x < K; x++) {
                const float kx = k[x];
                dq[x] += dqB[x] - vd * kx;
                dk[x] += dkB[x] - vd * q[x];
            }
            for (int x = 0; x < V; x++) {
                dv[x] = dvF[x] + dvB[x] - qk * dn[x];
            }
            if (gout->dg) {
                float dg = 0.0f;
                if (t + 1 < T) {
                    dg += bf.dgF[r + H];
                }
                if (t >= 1) {
                    dg += bf.dgB[((size_t)b * T + (T - t)) * H + h];
                }
                gout->dg[r] = dg;
            }
        }
    }
    lina_ws_scope_close(&sc);
    return LINA_OK;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_lion_fwd,
                  (const lina_mix_dims *d, const lina_lion_in *in, lina_lion_out *out,
                   lina_form form, lina_ws *ws),
                  (d, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_lion_bwd,
                  (const lina_mix_dims *d, const lina_lion_in *in, const lina_lion_grad_in *gin,
                   lina_lion_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, in, gin, gout, form, ws))

/* ================================================ op for `lina op` / bench */

static int run_lion(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    lina_binds bd;
    const lina_tensor *q, *k, *v;
    int err = lina_op_qkv(in, &bd, &q, &k, &v);
    const lina_tensor *g = err ? NULL : lina_op_input(in, "g", "BTH", &bd, 0, &err);
    if (err) {
        return err;
    }
    if (lina_tset_cfind(in, "h0")) {
        return lina_set_error(LINA_EINVAL, "h0.npy given, but lion has no initial state");
    }
    int64_t n = lina_op_trusted() ? 0 : lina_tensor_numel(g);
    for (int64_t i = 0; i < n; i++) {
        if (g->data[i] > 0.0f) {
            return lina_set_error(LINA_EINVAL, "g.npy must hold log decays <= 0 (found %g at index %lld)",
                                  (double)g->data[i], (long long)i);
        }
    }
    const lina_tensor *dO = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTHV", &bd, 0, &err);
        if (err) {
            return err;
        }
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['H' - 'A'],
                       (int)bd.v['K' - 'A'], (int)bd.v['V' - 'A'], o->chunk, 0.0f};
    lina_lion_in lin = {q->data, k->data, v->data, g->data, o->normalize};
    lina_lion_out lo = {lina_op_output(out, "o", "BTHV", &bd)};
    if (!lo.o) {
        return LINA_ENOMEM;
    }
    int rc = lina_lion_fwd(&d, &lin, &lo, o->form, ws);
    if (rc || !o->backward) {
        return rc;
    }
    lina_lion_grad_out go = {lina_op_output(out, "dq", "BTHK", &bd),
                             lina_op_output(out, "dk", "BTHK", &bd),
                             lina_op_output(out, "dv", "BTHV", &bd),
                             lina_op_output(out, "dg", "BTH", &bd)};
    if (!go.dq || !go.dk || !go.dv || !go.dg) {
        return LINA_ENOMEM;
    }
    lina_lion_grad_in gi = {dO->data};
    return lina_lion_bwd(&d, &lin, &gi, &go, o->form, ws);
}

static int mk_lion(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V};
    /* positive features (as after LION's feature map) keep --normalize defined */
    int rc = lina_bench_tensor(in, "q", 4, sk, &rng, 0.0f, 1.0f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0.0f, 1.0f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "g", 3, sk, &rng, -0.5f, -0.01f, 0);
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, sv, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule): two simple_gla chunk scans plus the diagonal term,
 *   2*B*H*T*(2*C*K + 2*C*Va + 4*K*Va) + 2*B*H*T*(K + Va),
 * Va = V (+1 with --normalize: the denominator column), C the chunk size. */
static double lion_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    const double C = o->chunk > 0 ? o->chunk : 64, Va = d->V + (o->normalize ? 1.0 : 0.0);
    const double bht = (double)d->B * d->H * d->T;
    if (o->form == LINA_FORM_RECURRENT) {
        return 2.0 * bht * 4.0 * d->K * Va + 2.0 * bht * (d->K + Va); /* two 4*K*Va scans */
    }
    return 2.0 * bht * (2 * C * d->K + 2 * C * Va + 4.0 * d->K * Va) + 2.0 * bht * (d->K + Va);
}

const lina_op_info lina_op_lion = {
    "lion", "LION-S bidirectional decayed linear attention (two causal scans)",
    {"--normalize", NULL},
    run_lion, mk_lion, lion_flops};
#endif /* LINA_ISA_PRIMARY */
