/* test_model_mom.c -- the MoM mixer (model_type "mom", docs/mixers.md 7) and the
 * top-k mixture-of-experts feed-forward block (num_experts > 0). Double
 * references written here from docs/mixers.md 2, 3.5, 4.2 and 7 (token-by-token
 * recurrences over each memory's routed sub-sequence; the router, top-k,
 * renormalised weights and load-balancing losses in double) check the float
 * model's logits, loss (with the auxiliary losses) and, by central finite
 * differences of the reference, every parameter gradient. Also: prefill
 * (chunk) vs recurrent logits, prefill + decode steps vs one forward, FLA
 * tensor names and shapes, routing properties of the router helpers, and bad
 * configs. FD through top-k routing is valid only away from ties, so the
 * smallest margin between the k-th and (k+1)-th router probability met by
 * the reference is checked too. */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"
#include "../src/nn/moe_mlp.h"
#include "../src/nn/mom_layer.h"

#include <stdint.h>
#include <string.h>

#define FD_H 1e-5
#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

#include "model_ref.h"

static double g_min_gap = 1e300; /* smallest p_(k) - p_(k+1) the reference routed with */

/* ------------------------------------------------------------ configs */

static lina_config tiny_mom(int M, int topk, int shared, int single_kv)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_MOM);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.head_dim = 8;
    c.expand_v = 1.0;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    c.num_memories = M;
    c.topk = topk;
    c.shared_mem = shared;
    c.single_kv_proj = single_kv;
    c.aux_loss_scale = 0.3; /* large, so that FD sees the aux gradient */
    return c;
}

static lina_config with_moe(lina_config c, int E, int k, int I)
{
    c.num_experts = E;
    c.num_experts_per_tok = k;
    c.moe_intermediate_size = I;
    c.router_aux_loss_coef = 0.2;
    return c;
}

static lina_config tiny_gla_moe(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    return with_moe(c, 4, 2, 10);
}

static lina_config tiny_gdn_moe(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GATED_DELTANET);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.head_dim = 4;
    c.expand_v = 2.0;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    return with_moe(c, 3, 1, 0); /* width 0: the dense MLP's (intermediate_size 32) */
}

/* ------------------------------------------------------ reference pieces */

static size_t toff_m(const lina_model *m, const char *what, int l, int mem)
{
    char fmt[128];
    snprintf(fmt, sizeof(fmt), "model.layers.%%d.%s.%d.weight", what, mem);
    return toff(m, fmt, l);
}

/* router: p = softmax(Wr x) [E], the k largest (ties: lower index), w renormalised */
static void ref_route(const double *Wr, const double *x, int D, int E, int k, double *p, int *sel, double *w)
{
    rlin(p, Wr, NULL, x, D, E);
    double mx = p[0], se = 0.0, sum = 0.0;
    for (int e = 1; e < E; e++) {
        mx = p[e] > mx ? p[e] : mx;
    }
    for (int e = 0; e < E; e++) {
        p[e] = exp(p[e] - mx);
        se += p[e];
    }
    for (int e = 0; e < E; e++) {
        p[e] /= se;
    }
    int used[64] = {0};
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            if (!used[e] && (best < 0 || p[e] > p[best])) {
                best = e;
            }
        }
        used[best] = 1;
        sel[j] = best;
        sum += p[best];
    }
    for (int j = 0; j < k; j++) {
        w[j] = p[sel[j]] / sum;
    }
    if (k < E) {
        double next = -1.0;
        for (int e = 0; e < E; e++) {
            next = !used[e] && p[e] > next ? p[e] : next;
        }
        double gap = p[sel[k - 1]] - next;
        g_min_gap = gap < g_min_gap ? gap : g_min_gap;
    }
}

/* Gated DeltaNet (docs/mixers.md 4.2) over one sequence xs [T, D]: o [T, H*V] is
 * the rule's readout (before the output norm). Weights: q, k [HK, D];
 * v [HV, D]; a, b [H, D]; A_log, dt_bias [H]; convs [C, W] or NULL (then SiLU). */
typedef struct ref_gdn_w {
    const double *q, *k, *v, *a, *b, *Alog, *dtb, *cq, *ck, *cv;
} ref_gdn_w;

static void ref_gdn_core(const ref_gdn_w *wt, const double *xs, double *o, int T, int D, int H, int K, int V,
                         int W, int neg)
{
    int HK = H * K, HV = H * V;
    double *qp = calloc((size_t)T * HK + 1, 8), *kp = calloc((size_t)T * HK + 1, 8), *vp = calloc((size_t)T * HV + 1, 8);
    double *q = calloc((size_t)T * HK + 1, 8), *k = calloc((size_t)T * HK + 1, 8), *v = calloc((size_t)T * HV + 1, 8);
    double *S = calloc((size_t)H * K * V, 8);
    double a[64], b[64], u[256];
    for (int t = 0; t < T; t++) {
        rlin(qp + (size_t)t * HK, wt->q, NULL, xs + (size_t)t * D, D, HK);
        rlin(kp + (size_t)t * HK, wt->k, NULL, xs + (size_t)t * D, D, HK);
        rlin(vp + (size_t)t * HV, wt->v, NULL, xs + (size_t)t * D, D, HV);
    }
    rconv(q, qp, wt->cq, T, HK, W);
    rconv(k, kp, wt->ck, T, HK, W);
    rconv(v, vp, wt->cv, T, HV, W);
    for (int t = 0; t < T; t++) {
        rlin(a, wt->a, NULL, xs + (size_t)t * D, D, H);
        rlin(b, wt->b, NULL, xs + (size_t)t * D, D, H);
        for (int h = 0; h < H; h++) {
            double *qt = q + (size_t)t * HK + h * K, *kt = k + (size_t)t * HK + h * K, *vt = v + (size_t)t * HV + h * V;
            rl2(qt, K);
            rl2(kt, K);
            double g = -exp(wt->Alog[h]) * rsoftplus(a[h] + wt->dtb[h]);
            double beta = (neg ? 2.0 : 1.0) * rsig(b[h]);
            double *Sh = S + (size_t)h * K * V;
            for (int i = 0; i < K * V; i++) {
                Sh[i] *= exp(g); /* decay first */
            }
            for (int j = 0; j < V; j++) {
                double acc = 0.0;
                for (int i = 0; i < K; i++) {
                    acc += Sh[i * V + j] * kt[i];
                }
                u[j] = vt[j] - acc;
            }
            for (int i = 0; i < K; i++) {
                for (int j = 0; j < V; j++) {
                    Sh[i * V + j] += beta * kt[i] * u[j];
                }
            }
            for (int j = 0; j < V; j++) {
                double acc = 0.0;
                for (int i = 0; i < K; i++) {
                    acc += qt[i] / sqrt((double)K) * Sh[i * V + j];
                }
                o[(size_t)t * HV + h * V + j] = acc;
            }
        }
    }
    free(qp);
    free(kp);
    free(vp);
    free(q);
    free(k);
    free(v);
    free(S);
}

/* out [T, D] = o_proj(norm(O) per head, gated by SiLU(g_proj x)) */
static void ref_out(const ref_model *r, const double *P, int l, const double *xn, const double *O, double *out, int T,
                    int H, int V, int gate, const char *norm_name)
{
    const lina_model *m = r->m;
    int D = r->D, HV = H * V;
    const double *Wg = gate ? P + toff(m, "model.layers.%d.attn.g_proj.weight", l) : NULL;
    const double *gw = P + toff(m, norm_name, l);
    const double *Wo = P + toff(m, "model.layers.%d.attn.o_proj.weight", l);
    double gt[256], y[256];
    for (int t = 0; t < T; t++) {
        if (Wg) {
            rlin(gt, Wg, NULL, xn + (size_t)t * D, D, HV);
        }
        for (int h = 0; h < H; h++) {
            rrms(y + h * V, O + (size_t)t * HV + h * V, gw, V, r->eps);
            for (int j = 0; j < V && Wg; j++) {
                double g = gt[h * V + j];
                y[h * V + j] *= g * rsig(g);
            }
        }
        rlin(out + (size_t)t * D, Wo, NULL, y, HV, D);
    }
}

/* MoM (docs/mixers.md 7) over the whole batch; returns the layer's aux loss */
static double ref_mom(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_model *m = r->m;
    const lina_config *c = r->c;
    int D = r->D, H = c->num_heads, K = c->head_dim, V = (int)(c->head_dim * c->expand_v), HV = H * V;
    int M = c->num_memories, k = c->topk, W = c->conv_size, N = B * T;
    const double *Wr = P + toff(m, "model.layers.%d.attn.gate.weight", l);
    ref_gdn_w base = {0};
    base.q = P + toff(m, "model.layers.%d.attn.q_proj.weight", l);
    base.Alog = P + toff(m, "model.layers.%d.attn.A_log", l);
    base.dtb = P + toff(m, "model.layers.%d.attn.dt_bias", l);
    int conv = c->use_short_conv;
    base.cq = conv ? P + toff(m, "model.layers.%d.attn.q_conv1d.weight", l) : NULL;
    base.ck = conv ? P + toff(m, "model.layers.%d.attn.k_conv1d.weight", l) : NULL;
    base.cv = conv ? P + toff(m, "model.layers.%d.attn.v_conv1d.weight", l) : NULL;
    ref_gdn_w shw = base;
    if (c->shared_mem || c->single_kv_proj) {
        shw.k = P + toff(m, "model.layers.%d.attn.shared_k.weight", l);
        shw.v = P + toff(m, "model.layers.%d.attn.shared_v.weight", l);
        shw.b = P + toff(m, "model.layers.%d.attn.shared_b.weight", l);
        shw.a = P + toff(m, "model.layers.%d.attn.shared_a.weight", l);
    }
    double *p = calloc((size_t)N * M, 8), *w = calloc((size_t)N * k, 8);
    int *sel = calloc((size_t)N * k, sizeof(int));
    for (int n = 0; n < N; n++) {
        ref_route(Wr, xn + (size_t)n * D, D, M, k, p + (size_t)n * M, sel + (size_t)n * k, w + (size_t)n * k);
    }
    double *O = calloc((size_t)T * HV, 8), *xs = calloc((size_t)T * D, 8), *os = calloc((size_t)T * HV, 8);
    int *idx = calloc((size_t)T, sizeof(int));
    for (int b = 0; b < B; b++) {
        const double *xb = xn + (size_t)b * T * D;
        memset(O, 0, (size_t)T * HV * 8);
        for (int mem = 0; mem <= M; mem++) {
            ref_gdn_w wt = shw;
            int len = 0;
            if (mem < M) {
                if (!c->single_kv_proj) {
                    wt = base;
                    wt.k = P + toff_m(m, "attn.k_proj", l, mem);
                    wt.v = P + toff_m(m, "attn.v_proj", l, mem);
                    wt.b = P + toff_m(m, "attn.b_proj", l, mem);
                    wt.a = P + toff_m(m, "attn.a_proj", l, mem);
                }
                for (int t = 0; t < T; t++) {
                    for (int j = 0; j < k; j++) {
                        if (sel[((size_t)b * T + t) * k + j] == mem) {
                            idx[len++] = t;
                        }
                    }
                }
            } else if (c->shared_mem) {
                for (int t = 0; t < T; t++) {
                    idx[len++] = t;
                }
            }
            if (len == 0) {
                continue;
            }
            for (int i = 0; i < len; i++) {
                memcpy(xs + (size_t)i * D, xb + (size_t)idx[i] * D, (size_t)D * 8);
            }
            ref_gdn_core(&wt, xs, os, len, D, H, K, V, W, c->allow_neg_eigval);
            for (int i = 0; i < len; i++) {
                int t = idx[i];
                double wt_ = 1.0;
                for (int j = 0; j < k && mem < M; j++) {
                    if (sel[((size_t)b * T + t) * k + j] == mem) {
                        wt_ = w[((size_t)b * T + t) * k + j];
                    }
                }
                for (int q = 0; q < HV; q++) {
                    O[(size_t)t * HV + q] += wt_ * os[(size_t)i * HV + q];
                }
            }
        }
        ref_out(r, P, l, xb, O, out + (size_t)b * T * D, T, H, V, c->use_output_gate, "model.layers.%d.attn.o_norm.weight");
    }
    /* aux: scale / (MoM layers) * M * sum_m f_m P_m */
    int nl = 0;
    for (int i = 0; i < r->L; i++) {
        nl += !lina_config_is_attn_layer(c, i);
    }
    double aux = 0.0;
    for (int mem = 0; mem < M; mem++) {
        double f = 0.0, Pm = 0.0;
        for (int n = 0; n < N; n++) {
            Pm += p[(size_t)n * M + mem] / N;
            for (int j = 0; j < k; j++) {
                f += sel[(size_t)n * k + j] == mem ? 1.0 / N : 0.0;
            }
        }
        aux += f * Pm;
    }
    free(p);
    free(w);
    free(sel);
    free(O);
    free(xs);
    free(os);
    free(idx);
    return c->aux_loss_scale / nl * M * aux;
}

/* Gated DeltaNet layer (docs/mixers.md 4.2) of a gated_deltanet model, per sequence */
static double ref_gdn_model(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_model *m = r->m;
    const lina_config *c = r->c;
    int D = r->D, H = c->num_heads, K = c->head_dim, V = (int)(c->head_dim * c->expand_v), HV = H * V;
    ref_gdn_w wt;
    wt.q = P + toff(m, "model.layers.%d.attn.q_proj.weight", l);
    wt.k = P + toff(m, "model.layers.%d.attn.k_proj.weight", l);
    wt.v = P + toff(m, "model.layers.%d.attn.v_proj.weight", l);
    wt.a = P + toff(m, "model.layers.%d.attn.a_proj.weight", l);
    wt.b = P + toff(m, "model.layers.%d.attn.b_proj.weight", l);
    wt.Alog = P + toff(m, "model.layers.%d.attn.A_log", l);
    wt.dtb = P + toff(m, "model.layers.%d.attn.dt_bias", l);
    wt.cq = P + toff(m, "model.layers.%d.attn.q_conv1d.weight", l);
    wt.ck = P + toff(m, "model.layers.%d.attn.k_conv1d.weight", l);
    wt.cv = P + toff(m, "model.layers.%d.attn.v_conv1d.weight", l);
    double *O = calloc((size_t)T * HV, 8);
    for (int b = 0; b < B; b++) {
        ref_gdn_core(&wt, xn + (size_t)b * T * D, O, T, D, H, K, V, c->conv_size, 0);
        ref_out(r, P, l, xn + (size_t)b * T * D, O, out + (size_t)b * T * D, T, H, V, 1,
                "model.layers.%d.attn.o_norm.weight");
    }
    free(O);
    return 0.0;
}

/* GLA layer (docs/mixers.md 3.5) of a gla model with the class defaults (no conv,
 * output gate, gate rank 16, logsigmoid / 16), per sequence */
static double ref_gla_model(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_model *m = r->m;
    int D = r->D, H = r->H, K = r->K, V = r->V, HK = H * K, HV = H * V;
    const double *Wq = P + toff(m, "model.layers.%d.attn.q_proj.weight", l);
    const double *Wk = P + toff(m, "model.layers.%d.attn.k_proj.weight", l);
    const double *Wv = P + toff(m, "model.layers.%d.attn.v_proj.weight", l);
    const double *W0 = P + toff(m, "model.layers.%d.attn.gk_proj.0.weight", l);
    const double *W1 = P + toff(m, "model.layers.%d.attn.gk_proj.1.weight", l);
    const double *b1 = P + toff(m, "model.layers.%d.attn.gk_proj.1.bias", l);
    double *O = calloc((size_t)T * HV, 8), *S = calloc((size_t)HK * V, 8);
    double q[64], k[64], v[64], gr[16], gk[64];
    for (int b = 0; b < B; b++) {
        const double *xb = xn + (size_t)b * T * D;
        memset(S, 0, (size_t)HK * V * 8);
        for (int t = 0; t < T; t++) {
            const double *x = xb + (size_t)t * D;
            rlin(q, Wq, NULL, x, D, HK);
            rlin(k, Wk, NULL, x, D, HK);
            rlin(v, Wv, NULL, x, D, HV);
            rlin(gr, W0, NULL, x, D, 16);
            rlin(gk, W1, b1, gr, 16, HK);
            for (int h = 0; h < H; h++) {
                double *Sh = S + (size_t)h * K * V;
                for (int i = 0; i < K; i++) {
                    double al = exp(rlogsig(gk[h * K + i]) / 16.0);
                    for (int j = 0; j < V; j++) {
                        Sh[i * V + j] = al * Sh[i * V + j] + k[h * K + i] * v[h * V + j];
                    }
                }
                for (int j = 0; j < V; j++) {
                    double acc = 0.0;
                    for (int i = 0; i < K; i++) {
                        acc += q[h * K + i] / sqrt((double)K) * Sh[i * V + j];
                    }
                    O[(size_t)t * HV + h * V + j] = acc;
                }
            }
        }
        ref_out(r, P, l, xb, O, out + (size_t)b * T * D, T, H, V, 1, "model.layers.%d.attn.g_norm_swish_gate.weight");
    }
    free(O);
    free(S);
    return 0.0;
}

/* MoE feed-forward block over the whole batch; returns its aux loss */
static double ref_moe(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_model *m = r->m;
    const lina_config *c = r->c;
    int D = r->D, E = c->num_experts, k = c->num_experts_per_tok, N = B * T;
    int I = c->moe_intermediate_size > 0 ? c->moe_intermediate_size : lina_config_mlp_size(c);
    const double *Wr = P + toff(m, "model.layers.%d.mlp.gate.weight", l);
    double *p = calloc((size_t)N * E, 8), w[64], a[256], u[256], y[256];
    int *sel = calloc((size_t)N * k, sizeof(int));
    for (int n = 0; n < N; n++) {
        const double *x = xn + (size_t)n * D;
        ref_route(Wr, x, D, E, k, p + (size_t)n * E, sel + (size_t)n * k, w);
        memset(out + (size_t)n * D, 0, (size_t)D * 8);
        for (int j = 0; j < k; j++) {
            int e = sel[(size_t)n * k + j];
            char f1[96], f2[96], f3[96];
            snprintf(f1, sizeof(f1), "model.layers.%%d.mlp.experts.%d.gate_proj.weight", e);
            snprintf(f2, sizeof(f2), "model.layers.%%d.mlp.experts.%d.up_proj.weight", e);
            snprintf(f3, sizeof(f3), "model.layers.%%d.mlp.experts.%d.down_proj.weight", e);
            rlin(a, P + toff(m, f1, l), NULL, x, D, I);
            rlin(u, P + toff(m, f2, l), NULL, x, D, I);
            for (int i = 0; i < I; i++) {
                a[i] = a[i] * rsig(a[i]) * u[i];
            }
            rlin(y, P + toff(m, f3, l), NULL, a, I, D);
            for (int i = 0; i < D; i++) {
                out[(size_t)n * D + i] += w[j] * y[i];
            }
        }
    }
    double aux = 0.0;
    for (int e = 0; e < E; e++) {
        double f = 0.0, Pe = 0.0;
        for (int n = 0; n < N; n++) {
            Pe += p[(size_t)n * E + e] / N;
            for (int j = 0; j < k; j++) {
                f += sel[(size_t)n * k + j] == e ? 1.0 / N : 0.0;
            }
        }
        aux += f * Pe;
    }
    free(p);
    free(sel);
    return c->router_aux_loss_coef / r->L * E * aux;
}

/* ------------------------------------------------------------ the tests */

static int has_shape(const lina_model *m, const char *name, int nd, int64_t s0, int64_t s1, int64_t s2, int decay)
{
    int i = lina_model_find_tensor(m, name);
    int n = 0, dec = -1;
    const int64_t *sh = NULL;
    if (i < 0 || lina_model_tensor(m, i, NULL, &n, &sh, NULL, &dec)) {
        return 0;
    }
    return n == nd && sh[0] == s0 && (nd < 2 || sh[1] == s1) && (nd < 3 || sh[2] == s2) && dec == decay;
}

/* FLA's MomAttention names and shapes (docs/checkpoints.md 2.2), and the MoE block's */
static void test_names(void)
{
    lina_config c = tiny_mom(3, 2, 1, 0);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0, "mom names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    int ok = has_shape(m, "model.layers.1.attn.q_proj.weight", 2, 16, 16, 0, 1) &&
             has_shape(m, "model.layers.1.attn.gate.weight", 2, 3, 16, 0, 1) &&
             has_shape(m, "model.layers.1.attn.k_proj.2.weight", 2, 16, 16, 0, 1) &&
             has_shape(m, "model.layers.1.attn.v_proj.0.weight", 2, 16, 16, 0, 1) &&
             has_shape(m, "model.layers.1.attn.b_proj.1.weight", 2, 2, 16, 0, 1) &&
             has_shape(m, "model.layers.1.attn.a_proj.2.weight", 2, 2, 16, 0, 1) &&
             has_shape(m, "model.layers.0.attn.shared_k.weight", 2, 16, 16, 0, 1) &&
             has_shape(m, "model.layers.0.attn.shared_v.weight", 2, 16, 16, 0, 1) &&
             has_shape(m, "model.layers.0.attn.shared_b.weight", 2, 2, 16, 0, 1) &&
             has_shape(m, "model.layers.0.attn.shared_a.weight", 2, 2, 16, 0, 1) &&
             has_shape(m, "model.layers.0.attn.A_log", 1, 2, 0, 0, 0) &&
             has_shape(m, "model.layers.0.attn.dt_bias", 1, 2, 0, 0, 0) &&
             has_shape(m, "model.layers.0.attn.q_conv1d.weight", 3, 16, 1, 4, 1) &&
             has_shape(m, "model.layers.0.attn.k_conv1d.weight", 3, 16, 1, 4, 1) &&
             has_shape(m, "model.layers.0.attn.v_conv1d.weight", 3, 16, 1, 4, 1) &&
             has_shape(m, "model.layers.0.attn.g_proj.weight", 2, 16, 16, 0, 1) &&
             has_shape(m, "model.layers.0.attn.o_norm.weight", 1, 8, 0, 0, 0) &&
             has_shape(m, "model.layers.0.attn.o_proj.weight", 2, 16, 16, 0, 1) &&
             lina_model_find_tensor(m, "model.layers.0.attn.k_proj.3.weight") < 0 &&
             has_shape(m, "model.layers.0.mlp.gate_proj.weight", 2, 32, 16, 0, 1);
    /* per layer: 5 block tensors + q, gate, 4*3 memory projections, 4 shared, A_log, dt_bias, 3 convs, g, o_norm, o */
    int nt = lina_model_num_tensors(m);
    CHECK(ok && nt == 1 + 2 * (5 + 26) + 2, "mom names and shapes (FLA MomAttention), %d tensors", nt);
    lina_model_free(m);
    c = tiny_mom(3, 2, 0, 1); /* single_kv_proj: only the shared projections */
    rc = lina_model_create(&c, 1, &m);
    ok = rc == 0 && has_shape(m, "model.layers.0.attn.shared_k.weight", 2, 16, 16, 0, 1) &&
         lina_model_find_tensor(m, "model.layers.0.attn.k_proj.0.weight") < 0;
    CHECK(ok, "mom single_kv_proj: shared_k/v/b/a only");
    lina_model_free(m);
    c = tiny_mom(3, 2, 0, 0);
    c.use_short_conv = 0;
    c.use_output_gate = 0;
    rc = lina_model_create(&c, 1, &m);
    ok = rc == 0 && lina_model_find_tensor(m, "model.layers.0.attn.shared_k.weight") < 0 &&
         lina_model_find_tensor(m, "model.layers.0.attn.q_conv1d.weight") < 0 &&
         lina_model_find_tensor(m, "model.layers.0.attn.g_proj.weight") < 0;
    CHECK(ok, "mom without shared memory, convs, gate: no such tensors");
    lina_model_free(m);
    c = tiny_gla_moe();
    rc = lina_model_create(&c, 1, &m);
    ok = rc == 0 && has_shape(m, "model.layers.1.mlp.gate.weight", 2, 4, 16, 0, 1) &&
         has_shape(m, "model.layers.1.mlp.experts.3.gate_proj.weight", 2, 10, 16, 0, 1) &&
         has_shape(m, "model.layers.1.mlp.experts.0.up_proj.weight", 2, 10, 16, 0, 1) &&
         has_shape(m, "model.layers.0.mlp.experts.2.down_proj.weight", 2, 16, 10, 0, 1) &&
         has_shape(m, "model.layers.0.mlp_norm.weight", 1, 16, 0, 0, 0) &&
         lina_model_find_tensor(m, "model.layers.0.mlp.gate_proj.weight") < 0 &&
         lina_model_find_tensor(m, "model.layers.0.mlp.experts.4.up_proj.weight") < 0;
    CHECK(ok, "moe names and shapes: mlp.gate.weight [E, D], mlp.experts.{e}.gate/up/down_proj.weight");
    lina_model_free(m);
    c = tiny_gdn_moe();
    rc = lina_model_create(&c, 1, &m);
    ok = rc == 0 && has_shape(m, "model.layers.0.mlp.experts.2.down_proj.weight", 2, 16, 32, 0, 1);
    CHECK(ok, "moe width 0 = the dense MLP's width (32)");
    lina_model_free(m);
}

/* the router helpers: k distinct choices per token, weights sum to 1, the
 * first is the argmax; slot rows: each token exactly k times, blocks in time
 * order; the balance term at perfect balance */
static void test_router(void)
{
    enum { B = 3, T = 17, N = B * T, E = 5, K = 2 };
    float z[N * E], p[N * E], w[N * K], wr[N * K];
    int32_t sel[N * K], perm[N * K], pos[N * K], off[E * B + 1];
    for (int i = 0; i < N * E; i++) {
        z[i] = (float)(2.0 * th_normal());
    }
    lina_router_topk(p, w, sel, z, N, E, K);
    int ok = 1;
    double werr = 0.0;
    for (int n = 0; n < N; n++) {
        double ps = 0.0;
        int am = 0;
        for (int e = 0; e < E; e++) {
            ps += p[n * E + e];
            am = p[n * E + e] > p[n * E + am] ? e : am;
        }
        ok &= fabs(ps - 1.0) < 1e-6 && sel[n * K] == am && sel[n * K] != sel[n * K + 1] && sel[n * K + 1] >= 0 &&
              sel[n * K + 1] < E && w[n * K] >= w[n * K + 1] && w[n * K + 1] > 0.0f;
        werr = fmax(werr, fabs((double)w[n * K] + w[n * K + 1] - 1.0));
        for (int e = 0; e < E; e++) { /* the second choice beats every unchosen one */
            ok &= e == sel[n * K] || e == sel[n * K + 1] || p[n * E + e] <= p[n * E + sel[n * K + 1]];
        }
    }
    CHECK(ok && werr < 1e-6, "router: softmax rows sum to 1, k distinct top choices, weights sum to 1 (err %.1e)",
          werr);
    lina_router_layout(perm, pos, wr, off, sel, w, B, T, E, K);
    int cnt[N] = {0};
    ok = off[0] == 0 && off[E * B] == N * K;
    for (int i = 0; i < E * B; i++) {
        ok &= off[i] <= off[i + 1];
        for (int r = off[i]; r < off[i + 1]; r++) {
            int n = perm[r], e = i / B, b = i % B;
            ok &= n / T == b && (r == off[i] || perm[r - 1] < n) && (sel[n * K] == e || sel[n * K + 1] == e);
            cnt[n]++;
        }
    }
    for (int n = 0; n < N; n++) {
        ok &= cnt[n] == K && perm[pos[n * K]] == n && perm[pos[n * K + 1]] == n && wr[pos[n * K]] == w[n * K];
    }
    CHECK(ok, "router layout: each token in exactly k slot rows, blocks by (expert, sequence), time order kept");
    /* perfect balance: E tokens, token n prefers n, then n+1 */
    float pb[E * E], zb[E * E], wb[E * K];
    int32_t sb[E * K];
    for (int n = 0; n < E; n++) {
        for (int e = 0; e < E; e++) {
            zb[n * E + e] = e == n ? 3.0f : e == (n + 1) % E ? 2.0f : 0.0f;
        }
    }
    lina_router_topk(pb, wb, sb, zb, E, E, K);
    double bal = lina_router_balance(pb, sb, E, E, K);
    CHECK(fabs(bal - K) < 1e-6, "balance term E sum f P = k at perfect balance (%.6f)", bal);
    /* collapse: every token to expert 0 -> larger */
    for (int n = 0; n < E; n++) {
        for (int e = 0; e < E; e++) {
            zb[n * E + e] = e == 0 ? 3.0f : e == 1 ? 2.0f : 0.0f;
        }
    }
    lina_router_topk(pb, wb, sb, zb, E, E, K);
    double col = lina_router_balance(pb, sb, E, E, K);
    CHECK(col > bal + 0.5, "balance term grows when routing collapses (%.3f > %.3f)", col, bal);
}

static void expect_fail(const char *what, lina_config c)
{
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && m == NULL && lina_last_error()[0], "bad config rejected: %s (%s)", what,
          rc ? lina_last_error() : "accepted");
    lina_model_free(m);
}

static void test_errors(void)
{
    lina_config c = tiny_mom(3, 4, 1, 0);
    expect_fail("mom topk > num_memories", c);
    c = tiny_mom(3, 0, 1, 0);
    expect_fail("mom topk 0", c);
    c = tiny_mom(LINA_MOM_MAX_MEMORIES + 1, 2, 1, 0);
    expect_fail("mom num_memories above the limit", c);
    c = tiny_mom(3, 2, 1, 0);
    snprintf(c.mom_backend, sizeof(c.mom_backend), "gla");
    expect_fail("mom_backend gla", c);
    c = tiny_mom(3, 2, 1, 0);
    c.capacity = 0.0;
    expect_fail("mom capacity 0", c);
    c = tiny_mom(3, 2, 1, 0);
    c.aux_loss_scale = -1.0;
    expect_fail("mom aux_loss_scale < 0", c);
    c = tiny_mom(3, 2, 1, 0);
    c.expand_v = 0.3;
    expect_fail("mom head_dim * expand_v not an integer", c);
    c = tiny_gla_moe();
    c.num_experts_per_tok = 5;
    expect_fail("moe num_experts_per_tok > num_experts", c);
    c = tiny_gla_moe();
    c.num_experts = LINA_MOE_MAX_EXPERTS + 1;
    expect_fail("moe num_experts above the limit", c);
    c = tiny_gla_moe();
    c.router_aux_loss_coef = NAN;
    expect_fail("moe router_aux_loss_coef NaN", c);
    /* a bad token id through a MoM model fails cleanly */
    c = tiny_mom(3, 2, 1, 0);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    int32_t tok[4] = {1, 2, 99, 3};
    float lg[4 * 40];
    rc = rc ? rc : lina_model_forward_logits(m, tok, 1, 4, lg, NULL);
    CHECK(rc == LINA_EINVAL, "mom: out-of-vocabulary token rejected (%s)", rc ? lina_last_error() : "accepted");
    lina_model_free(m);
}

/* test_fd, then the router margin of the point it checked: the same model
 * (seed 7, randomize) and tokens, rebuilt from the same test RNG state */
static void fd(const char *label, lina_config c, int B, int T, double frac)
{
    unsigned long long rng0 = th_rng;
    test_fd(label, c, B, T, frac);
    unsigned long long rng1 = th_rng;
    th_rng = rng0;
    lina_model *m = NULL;
    if (lina_model_create(&c, 7, &m)) {
        CHECK(0, "%s: create (%s)", label, lina_last_error());
        th_rng = rng1;
        return;
    }
    randomize(m);
    int N = B * T;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t)), *tgt = malloc((size_t)N * sizeof(int32_t));
    rand_tokens(tok, tgt, N, c.vocab_size);
    size_t np = lina_model_num_params(m);
    double *P = malloc(np * sizeof(double));
    for (size_t i = 0; i < np; i++) {
        P[i] = lina_model_params(m)[i];
    }
    ref_model r = ref_of(m);
    g_min_gap = 1e300;
    ref_forward(&r, P, tok, tgt, B, T, NULL);
    CHECK(g_min_gap > 1e-4, "%s: router margin p_(k) - p_(k+1) = %.1e > 1e-4 (FD valid away from top-k ties)",
          label, g_min_gap);
    free(tok);
    free(tgt);
    free(P);
    lina_model_free(m);
    th_rng = rng1;
}

int main(void)
{
    test_names();
    test_router();
    test_errors();
    /* MoM models */
    g_ref_mixer = ref_mom;
    g_ref_ffn = NULL;
    fd("mom M=4 top-2 shared memory", tiny_mom(4, 2, 1, 0), 2, 9, 0.25);
    fd("mom M=3 top-1 no shared memory", tiny_mom(3, 1, 0, 0), 2, 9, 0.08);
    fd("mom M=3 top-2 single_kv_proj + shared", tiny_mom(3, 2, 1, 1), 2, 9, 0.08);
    lina_config nc = tiny_mom(4, 2, 1, 0);
    nc.use_short_conv = 0;
    nc.use_output_gate = 0;
    nc.allow_neg_eigval = 1;
    fd("mom no conv, no gate, neg eigval", nc, 2, 9, 0.08);
    lina_config hy = tiny_mom(4, 2, 1, 0);
    hy.num_hidden_layers = 3;
    hy.attn.enabled = 1;
    hy.attn.n_layers = 1;
    hy.attn.layers[0] = 1;
    hy.attn.num_heads = 2;
    hy.attn.num_kv_heads = 2;
    hy.attn.rope_theta = 10000.0;
    fd("mom + attn hybrid", hy, 2, 9, 0.05);
    fd("mom across chunks", tiny_mom(3, 2, 1, 0), 1, 150, 0.005);
    test_forms("mom forms", tiny_mom(4, 2, 1, 0));
    test_forms("mom top-1 forms", tiny_mom(3, 1, 0, 0));
    test_decode("mom decode", tiny_mom(4, 2, 1, 0));
    test_decode("mom top-1 no shared decode", tiny_mom(3, 1, 0, 0));
    test_decode("mom + attn hybrid decode", hy);
    /* MoE feed-forward blocks */
    g_ref_ffn = ref_moe;
    fd("mom + moe", with_moe(tiny_mom(3, 2, 1, 0), 3, 2, 8), 2, 9, 0.08);
    g_ref_mixer = ref_gla_model;
    fd("gla + moe (E=4, k=2)", tiny_gla_moe(), 2, 9, 0.3);
    test_decode("gla + moe decode", tiny_gla_moe());
    g_ref_mixer = ref_gdn_model;
    fd("gated_deltanet + moe (E=3, k=1)", tiny_gdn_moe(), 2, 9, 0.08);
    test_forms("gated_deltanet + moe forms", tiny_gdn_moe());
    return th_exit();
}
