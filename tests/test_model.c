/* test_model.c -- the causal LMs of src/model (gla, retnet, delta_net,
 * gated_deltanet, hgrn2, transformer, hybrids with softmax attention): a
 * double-precision reference model written here (token-by-token recurrences,
 * straight from docs/mixers.md sections 2, 3.4-4.2 and 9) checks the float
 * model's logits and loss, and central finite differences of that reference
 * (in double) check the parameter gradients of lina_model_train_step (every
 * parameter for the main configs, a random subset for the variants); a
 * planted gradient error shows that the check can fail. Also: tensor names,
 * shapes, offsets, decay flags and initialisation against FLA's state dict
 * (docs/checkpoints.md 2.2), gradient accumulation and repeatability, chunk-form
 * (prefill) logits against recurrent-form logits across chunk boundaries,
 * prefill + decode steps (lina_model_decode) against one forward, the layers'
 * decode paths, save/load round trips and error paths. */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"
#include "../src/nn/nn.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define FD_H 1e-5
#define FWD_TOL 1e-4  /* logits, float model vs double reference (typically ~1e-6; the
                         L2Norm of a q/k vector whose squared norm is near its 1e-6 eps
                         amplifies float rounding: one delta_net draw reaches 8e-5) */
#define GRAD_TOL 1e-3 /* per tensor: max |analytic - FD| / max |FD| */

#include "model_ref.h"

/* ------------------------------------------------------------ configs */

static lina_config tiny_gla(int tie, int output_gate)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = 11;
    c.intermediate_size = 32;
    c.tie_word_embeddings = tie;
    c.use_output_gate = output_gate;
    return c;
}

static lina_config tiny_gdn(int short_conv, int use_gate, int neg)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GATED_DELTANET);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.head_dim = 4;
    c.expand_v = 2.0;
    c.vocab_size = 11;
    c.intermediate_size = 32;
    c.use_short_conv = short_conv;
    c.use_gate = use_gate;
    c.allow_neg_eigval = neg;
    return c;
}

static lina_config tiny_deltanet(int use_beta, int use_gate, int short_conv)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_DELTA_NET);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = 11;
    c.intermediate_size = 32;
    c.use_beta = use_beta;
    c.use_gate = use_gate;
    c.use_short_conv = short_conv;
    return c;
}

static lina_config tiny_retnet(int output_gate)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_RETNET);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = 11;
    c.intermediate_size = 32;
    c.use_output_gate = output_gate;
    return c;
}

static lina_config tiny_hgrn2(int lower_bound)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_HGRN2);
    c.hidden_size = 16;
    c.num_hidden_layers = 3;
    c.num_heads = 2;
    c.expand_ratio = 8;
    c.vocab_size = 11;
    c.intermediate_size = 32;
    c.use_lower_bound = lower_bound;
    return c;
}

static lina_config tiny_transformer(int Hkv, int bias, int qk_norm, int window)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_TRANSFORMER);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.num_kv_heads = Hkv;
    c.qkv_bias = bias;
    snprintf(c.qk_norm, sizeof(c.qk_norm), "%s", qk_norm ? "rms" : "");
    c.window_size = window;
    c.vocab_size = 11;
    c.intermediate_size = 32;
    return c;
}

/* a hybrid: softmax attention on layer `al` (4 heads, 2 kv heads, window 3, biases) */
static lina_config hybrid(lina_config c, int al)
{
    c.attn.enabled = 1;
    c.attn.n_layers = 1;
    c.attn.layers[0] = al;
    c.attn.num_heads = 4;
    c.attn.num_kv_heads = 2;
    c.attn.qkv_bias = 1;
    c.attn.window_size = 3;
    c.attn.rope_theta = 500.0;
    return c;
}

static void rconv(double *y, const double *x, const double *w, int T, int C, int W);

/* GLA mixer over one sequence: out [T, D] from xn [T, D] (recurrent form) */
static void ref_gla(const ref_model *r, const double *P, int l, const double *xn, double *out, int T)
{
    const lina_model *m = r->m;
    int D = r->D, H = r->H, K = r->K, V = r->V, HK = H * K, HV = H * V, R = LINA_GLA_GATE_RANK;
    int Hkv = r->c->num_kv_heads ? r->c->num_kv_heads : H, G = H / Hkv; /* kv groups */
    const double *Wq = P + toff(m, "model.layers.%d.attn.q_proj.weight", l);
    const double *Wk = P + toff(m, "model.layers.%d.attn.k_proj.weight", l);
    const double *Wv = P + toff(m, "model.layers.%d.attn.v_proj.weight", l);
    const double *Wg = r->gate ? P + toff(m, "model.layers.%d.attn.g_proj.weight", l) : NULL;
    int ret = r->c->model_type == LINA_MODEL_RETNET;
    const double *W0 = ret ? NULL : P + toff(m, "model.layers.%d.attn.gk_proj.0.weight", l);
    const double *W1 = ret ? NULL : P + toff(m, "model.layers.%d.attn.gk_proj.1.weight", l);
    const double *b1 = ret ? NULL : P + toff(m, "model.layers.%d.attn.gk_proj.1.bias", l);
    const double *gw = P + toff(m, r->gate ? "model.layers.%d.attn.g_norm_swish_gate.weight"
                                           : "model.layers.%d.attn.g_norm.weight", l);
    const double *Wo = P + toff(m, "model.layers.%d.attn.o_proj.weight", l);
    double q[64], k[64], v[64], gr[16], gk[64], gt[64], o[64], y[64];
    double *S = calloc((size_t)HK * V, sizeof(double));
    /* short convs (SiLU) over the whole sequence of projections */
    int conv = r->c->use_short_conv, W = r->c->conv_size;
    double *qs = NULL, *ks = NULL, *vs = NULL;
    if (conv) {
        const double *cw[3] = {P + toff(m, "model.layers.%d.attn.q_conv1d.weight", l),
                               P + toff(m, "model.layers.%d.attn.k_conv1d.weight", l),
                               P + toff(m, "model.layers.%d.attn.v_conv1d.weight", l)};
        const double *Ws[3] = {Wq, Wk, Wv};
        int C[3] = {HK, Hkv * K, Hkv * V};
        double **dst[3] = {&qs, &ks, &vs};
        for (int j = 0; j < 3; j++) {
            double *pre = calloc((size_t)T * C[j], sizeof(double));
            *dst[j] = calloc((size_t)T * C[j], sizeof(double));
            for (int t = 0; t < T; t++) {
                rlin(pre + (size_t)t * C[j], Ws[j], NULL, xn + (size_t)t * D, D, C[j]);
            }
            rconv(*dst[j], pre, cw[j], T, C[j], W);
            free(pre);
        }
    }
    for (int t = 0; t < T; t++) {
        const double *x = xn + (size_t)t * D;
        if (conv) {
            memcpy(q, qs + (size_t)t * HK, (size_t)HK * sizeof(double));
            memcpy(k, ks + (size_t)t * Hkv * K, (size_t)Hkv * K * sizeof(double));
            memcpy(v, vs + (size_t)t * Hkv * V, (size_t)Hkv * V * sizeof(double));
        } else {
            rlin(q, Wq, NULL, x, D, HK);
            rlin(k, Wk, NULL, x, D, Hkv * K);
            rlin(v, Wv, NULL, x, D, Hkv * V);
        }
        if (ret) {
            /* RoPE (base 10000) on q and k at position t */
            for (int h = 0; h < H + Hkv; h++) {
                double *z = h < H ? q + h * K : k + (h - H) * K;
                for (int i = 0; i < K / 2; i++) {
                    double ang = t * pow(10000.0, -2.0 * i / K), x1 = z[i], x2 = z[i + K / 2];
                    z[i] = x1 * cos(ang) - x2 * sin(ang);
                    z[i + K / 2] = x2 * cos(ang) + x1 * sin(ang);
                }
            }
        } else {
            rlin(gr, W0, NULL, x, D, R);
            rlin(gk, W1, b1, gr, R, Hkv * K);
        }
        if (Wg) {
            rlin(gt, Wg, NULL, x, D, HV);
        }
        for (int h = 0; h < H; h++) {
            double *Sh = S + (size_t)h * K * V;
            for (int i = 0; i < K; i++) {
                int g = h / G;
                double al = ret ? 1.0 - pow(2.0, -5.0 - h) : exp(rlogsig(gk[g * K + i]) / 16.0);
                for (int j = 0; j < V; j++) {
                    Sh[i * V + j] = al * Sh[i * V + j] + k[g * K + i] * v[g * V + j];
                }
            }
            double s = 1.0 / sqrt((double)K);
            for (int j = 0; j < V; j++) {
                double acc = 0.0;
                for (int i = 0; i < K; i++) {
                    acc += s * q[h * K + i] * Sh[i * V + j];
                }
                o[h * V + j] = acc;
            }
            rrms(y + h * V, o + h * V, gw, V, r->eps);
            for (int j = 0; j < V && Wg; j++) {
                double g = gt[h * V + j];
                y[h * V + j] *= g * rsig(g);
            }
        }
        rlin(out + (size_t)t * D, Wo, NULL, y, HV, D);
    }
    free(S);
    free(qs);
    free(ks);
    free(vs);
}


/* Gated DeltaNet mixer over one sequence (docs/mixers.md 4.2, recurrent form) */
static void ref_gdn(const ref_model *r, const double *P, int l, const double *xn, double *out, int T)
{
    const lina_model *m = r->m;
    const lina_config *c = r->c;
    int gated = c->model_type == LINA_MODEL_GATED_DELTANET, use_beta = gated || c->use_beta;
    int H = r->H, NV = gated && c->num_v_heads ? c->num_v_heads : H, G = NV / H; /* GVA */
    int D = r->D, K = r->K, V = r->V, HK = H * K, HV = NV * V, W = c->conv_size;
    const double *Wq = P + toff(m, "model.layers.%d.attn.q_proj.weight", l);
    const double *Wk = P + toff(m, "model.layers.%d.attn.k_proj.weight", l);
    const double *Wv = P + toff(m, "model.layers.%d.attn.v_proj.weight", l);
    const double *Wa = gated ? P + toff(m, "model.layers.%d.attn.a_proj.weight", l) : NULL;
    const double *Wb = use_beta ? P + toff(m, "model.layers.%d.attn.b_proj.weight", l) : NULL;
    const double *Alog = gated ? P + toff(m, "model.layers.%d.attn.A_log", l) : NULL;
    const double *dtb = gated ? P + toff(m, "model.layers.%d.attn.dt_bias", l) : NULL;
    const double *cq = c->use_short_conv ? P + toff(m, "model.layers.%d.attn.q_conv1d.weight", l) : NULL;
    const double *ck = c->use_short_conv ? P + toff(m, "model.layers.%d.attn.k_conv1d.weight", l) : NULL;
    const double *cv = c->use_short_conv ? P + toff(m, "model.layers.%d.attn.v_conv1d.weight", l) : NULL;
    const double *Wg = c->use_gate ? P + toff(m, "model.layers.%d.attn.g_proj.weight", l) : NULL;
    const double *gw = P + toff(m, "model.layers.%d.attn.o_norm.weight", l);
    const double *Wo = P + toff(m, "model.layers.%d.attn.o_proj.weight", l);
    size_t tk = (size_t)T * HK, tv = (size_t)T * HV;
    double *qp = calloc(tk, 8), *kp = calloc(tk, 8), *vp = calloc(tv, 8);
    double *q = calloc(tk, 8), *k = calloc(tk, 8), *v = calloc(tv, 8);
    double *S = calloc((size_t)NV * K * V, sizeof(double));
    double a[16], b[16], gt[256], o[256], y[256], u[64];
    for (int t = 0; t < T; t++) {
        rlin(qp + (size_t)t * HK, Wq, NULL, xn + (size_t)t * D, D, HK);
        rlin(kp + (size_t)t * HK, Wk, NULL, xn + (size_t)t * D, D, HK);
        rlin(vp + (size_t)t * HV, Wv, NULL, xn + (size_t)t * D, D, HV);
    }
    /* DeltaNet qk_activation / qk_norm: the q/k convs without SiLU unless silu */
    int dn = c->model_type == LINA_MODEL_DELTA_NET;
    int qsilu = !dn || strcmp(c->qk_activation, "silu") == 0, qsum = dn && strcmp(c->qk_norm, "sum") == 0;
    int qrelu = dn && strcmp(c->qk_activation, "relu") == 0, qelu = dn && strcmp(c->qk_activation, "elu") == 0;
    rconv_act(q, qp, cq, T, HK, W, qsilu);
    rconv_act(k, kp, ck, T, HK, W, qsilu);
    rconv(v, vp, cv, T, HV, W);
    for (size_t i = 0; i < tk; i++) {
        if (qrelu) {
            q[i] = q[i] > 0.0 ? q[i] : 0.0;
            k[i] = k[i] > 0.0 ? k[i] : 0.0;
        } else if (qelu) {
            q[i] = q[i] > 0.0 ? q[i] + 1.0 : exp(q[i]);
            k[i] = k[i] > 0.0 ? k[i] + 1.0 : exp(k[i]);
        }
    }
    for (int t = 0; t < T; t++) {
        const double *x = xn + (size_t)t * D;
        if (Wa) {
            rlin(a, Wa, NULL, x, D, NV);
        }
        if (Wb) {
            rlin(b, Wb, NULL, x, D, NV);
        }
        if (Wg) {
            rlin(gt, Wg, NULL, x, D, HV);
        }
        for (int h = 0; h < H; h++) {
            double *qh = q + (size_t)t * HK + h * K, *kh = k + (size_t)t * HK + h * K;
            if (qsum) {
                double sq = 0.0, sk = 0.0;
                for (int i = 0; i < K; i++) {
                    sq += qh[i];
                    sk += kh[i];
                }
                for (int i = 0; i < K; i++) {
                    qh[i] /= sq;
                    kh[i] /= sk;
                }
            } else {
                rl2(qh, K);
                rl2(kh, K);
            }
        }
        for (int h = 0; h < NV; h++) {
            double *qt = q + (size_t)t * HK + (h / G) * K, *kt = k + (size_t)t * HK + (h / G) * K;
            double *vt = v + (size_t)t * HV + h * V;
            double g = gated ? -exp(Alog[h]) * rsoftplus(a[h] + dtb[h]) : 0.0;
            double beta = (c->allow_neg_eigval ? 2.0 : 1.0) * (Wb ? rsig(b[h]) : 1.0);
            double *Sh = S + (size_t)h * K * V;
            for (int i = 0; i < K * V; i++) {
                Sh[i] *= exp(g);
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
            double s = 1.0 / sqrt((double)K);
            for (int j = 0; j < V; j++) {
                double acc = 0.0;
                for (int i = 0; i < K; i++) {
                    acc += s * qt[i] * Sh[i * V + j];
                }
                o[h * V + j] = acc;
            }
            rrms(y + h * V, o + h * V, gw, V, r->eps);
            for (int j = 0; j < V && Wg; j++) {
                double gg = gt[h * V + j];
                y[h * V + j] *= gg * rsig(gg);
            }
        }
        rlin(out + (size_t)t * D, Wo, NULL, y, HV, D);
    }
    free(qp);
    free(kp);
    free(vp);
    free(q);
    free(k);
    free(v);
    free(S);
}

/* HGRN2 over one sequence (docs/mixers.md 3.6), lower bounds from model.lower_bounds */
static void ref_hgrn2(const ref_model *r, const double *P, int l, const double *xn, double *out, int T)
{
    const lina_model *m = r->m;
    const lina_config *c = r->c;
    int D = r->D, H = r->H, K = r->K, V = r->V, HK = H * K, HV = H * V, L = r->L;
    const double *Wq = P + toff(m, "model.layers.%d.attn.q_proj.weight", l);
    const double *Wf = P + toff(m, "model.layers.%d.attn.f_proj.weight", l);
    const double *Wi = P + toff(m, "model.layers.%d.attn.i_proj.weight", l);
    const double *gw = P + toff(m, "model.layers.%d.attn.g_norm.weight", l);
    const double *Wo = P + toff(m, "model.layers.%d.attn.o_proj.weight", l);
    double lam[64] = {0};
    if (c->use_lower_bound && l > 0) {
        const double *Lb = P + toff(m, "model.lower_bounds", 0);
        for (int i = 0; i < HK; i++) {
            double se = 0.0, cum = 0.0;
            for (int j = 0; j < L; j++) {
                se += exp(Lb[(size_t)j * D + i]);
            }
            for (int j = 1; j <= l; j++) {
                cum += exp(Lb[(size_t)j * D + i]) / se;
            }
            lam[i] = cum;
        }
    }
    double q[64], f[64], v[64], o[64], y[64];
    double *S = calloc((size_t)HK * V, sizeof(double));
    for (int t = 0; t < T; t++) {
        const double *x = xn + (size_t)t * D;
        rlin(q, Wq, NULL, x, D, HK);
        rlin(f, Wf, NULL, x, D, HK);
        rlin(v, Wi, NULL, x, D, HV);
        for (int h = 0; h < H; h++) {
            double *Sh = S + (size_t)h * K * V;
            for (int i = 0; i < K; i++) {
                int ii = h * K + i;
                double g = log(lam[ii] + (1.0 - lam[ii]) * rsig(f[ii]));
                double kk = 1.0 - exp(g);
                for (int j = 0; j < V; j++) {
                    Sh[i * V + j] = exp(g) * Sh[i * V + j] + kk * v[h * V + j];
                }
            }
            for (int j = 0; j < V; j++) {
                double acc = 0.0;
                for (int i = 0; i < K; i++) {
                    double qq = q[h * K + i];
                    acc += qq * rsig(qq) / sqrt((double)K) * Sh[i * V + j];
                }
                o[h * V + j] = acc;
            }
        }
        rrms(y, o, gw, HV, r->eps);
        rlin(out + (size_t)t * D, Wo, NULL, y, HV, D);
    }
    free(S);
}



/* names and shapes of FLA's GLA state dict (docs/checkpoints.md 2.2) */
static void test_names(void)
{
    lina_config c = tiny_gla(0, 1);
    c.hidden_size = 64;
    c.num_heads = 4;
    c.intermediate_size = 0; /* FLA's rule: 256 * ceil(floor(64*4*2/3)/256) = 256 */
    c.vocab_size = 50;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0, "names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    int D = 64, kd = 32, vd = 64, V = 16, I = 256, vocab = 50;
    struct {
        const char *name;
        int nd;
        int64_t s0, s1;
        int decay;
    } want[64];
    int nw = 0;
#define W(nm, n, a, b, dec)                \
    do {                                   \
        want[nw].name = nm;                \
        want[nw].nd = n;                   \
        want[nw].s0 = a;                   \
        want[nw].s1 = b;                   \
        want[nw].decay = dec;              \
        nw++;                              \
    } while (0)
    static char buf[64][96];
    W("model.embeddings.weight", 2, vocab, D, 0);
    const char *per[][2] = {{"attn_norm.weight", ""}, {"attn.q_proj.weight", ""}, {"attn.k_proj.weight", ""},
                            {"attn.v_proj.weight", ""}, {"attn.g_proj.weight", ""}, {"attn.gk_proj.0.weight", ""},
                            {"attn.gk_proj.1.weight", ""}, {"attn.gk_proj.1.bias", ""},
                            {"attn.g_norm_swish_gate.weight", ""}, {"attn.o_proj.weight", ""},
                            {"mlp_norm.weight", ""}, {"mlp.gate_proj.weight", ""}, {"mlp.up_proj.weight", ""},
                            {"mlp.down_proj.weight", ""}};
    int64_t shp[][3] = {{1, D, 0}, {2, kd, D}, {2, kd, D}, {2, vd, D}, {2, vd, D}, {2, 16, D}, {2, kd, 16},
                        {1, kd, 0}, {1, V, 0}, {2, D, vd}, {1, D, 0}, {2, I, D}, {2, I, D}, {2, D, I}};
    int nb = 0;
    for (int l = 0; l < 2; l++) {
        for (int j = 0; j < 14; j++) {
            snprintf(buf[nb], sizeof(buf[nb]), "model.layers.%d.%s", l, per[j][0]);
            W(buf[nb], (int)shp[j][0], shp[j][1], shp[j][2], shp[j][0] == 2 ? 1 : 0);
            nb++;
        }
    }
    W("model.norm.weight", 1, D, 0, 0);
    W("lm_head.weight", 2, vocab, D, 1);
#undef W
    int ok = lina_model_num_tensors(m) == nw;
    size_t expect_off = 0;
    for (int i = 0; ok && i < nw; i++) {
        const char *name;
        int nd, decay;
        const int64_t *sh;
        size_t off;
        lina_model_tensor(m, i, &name, &nd, &sh, &off, &decay);
        int same = strcmp(name, want[i].name) == 0 && nd == want[i].nd && sh[0] == want[i].s0 &&
                   (nd == 1 || sh[1] == want[i].s1) && decay == want[i].decay && off == expect_off;
        if (!same) {
            printf("    mismatch at %d: %s (want %s)\n", i, name, want[i].name);
            ok = 0;
        }
        expect_off += (size_t)sh[0] * (nd == 2 ? (size_t)sh[1] : 1);
    }
    CHECK(ok && expect_off == lina_model_num_params(m), "names: %d GLA tensors named and shaped as FLA, contiguous",
          nw);
    /* initialisation: norms 1, biases 0, weights N(0, 0.02) */
    const float *P = lina_model_params(m);
    size_t o1 = 0, o2 = 0, o3 = 0;
    lina_model_tensor(m, lina_model_find_tensor(m, "model.layers.1.mlp_norm.weight"), NULL, NULL, NULL, &o1, NULL);
    lina_model_tensor(m, lina_model_find_tensor(m, "model.layers.0.attn.gk_proj.1.bias"), NULL, NULL, NULL, &o2,
                      NULL);
    lina_model_tensor(m, lina_model_find_tensor(m, "model.layers.0.mlp.gate_proj.weight"), NULL, NULL, NULL, &o3,
                      NULL);
    double ss = 0.0;
    for (int i = 0; i < I * D; i++) {
        ss += (double)P[o3 + i] * P[o3 + i];
    }
    double sd = sqrt(ss / (I * D));
    CHECK(P[o1] == 1.0f && P[o1 + D - 1] == 1.0f && P[o2] == 0.0f && fabs(sd - 0.02) < 0.002,
          "names: init norms 1, biases 0, weights std %.4f (0.02)", sd);
    lina_model_free(m);
    /* tied: no lm_head */
    c.tie_word_embeddings = 1;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && lina_model_num_tensors(m) == nw - 1 && lina_model_find_tensor(m, "lm_head.weight") < 0,
          "names: tied embeddings have no lm_head.weight");
    lina_model_free(m);
    /* without the output gate: g_norm.weight, no g_proj */
    c.use_output_gate = 0;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "model.layers.0.attn.g_norm.weight") >= 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.g_proj.weight") < 0,
          "names: use_output_gate = false gives g_norm.weight and no g_proj");
    lina_model_free(m);
}


/* GLA layer: T decode steps equal one forward (and prefill + continue) */
static void test_gla_step(void)
{
    lina_gla_dims d = {.D = 24, .H = 3, .K = 4, .V = 8, .output_gate = 1, .norm_eps = 1e-6f};
    int B = 2, T = 11, N = B * T, D = d.D, HK = d.H * d.K, HV = d.H * d.V, R = LINA_GLA_GATE_RANK;
    size_t sizes[9] = {(size_t)HK * D, (size_t)HK * D, (size_t)HV * D, (size_t)HV * D, (size_t)R * D,
                       (size_t)HK * R, (size_t)HK, (size_t)d.V, (size_t)D * HV};
    size_t tot = 0;
    for (int i = 0; i < 9; i++) {
        tot += sizes[i];
    }
    float *pb = malloc(tot * sizeof(float));
    for (size_t i = 0; i < tot; i++) {
        pb[i] = (float)(0.3 * th_normal());
    }
    float *ptrs[9];
    size_t o = 0;
    for (int i = 0; i < 9; i++) {
        ptrs[i] = pb + o;
        o += sizes[i];
    }
    lina_gla_params p = {ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8], NULL, NULL, NULL};
    float *x = malloc((size_t)N * D * sizeof(float));
    for (int i = 0; i < N * D; i++) {
        x[i] = (float)th_normal();
    }
    float *acts = malloc(lina_gla_acts_floats(&d, N) * sizeof(float));
    lina_gla_acts a;
    lina_gla_acts_carve(&a, acts, &d, N);
    float *y = malloc((size_t)N * D * sizeof(float));
    size_t sz = (size_t)B * HK * d.V;
    float *ht = malloc(sz * sizeof(float)), *st = calloc(sz, sizeof(float));
    int rc = lina_gla_forward(y, &a, x, &d, &p, B, T, NULL, ht, LINA_FORM_CHUNK, NULL);
    float *scr = malloc(lina_gla_step_floats(&d, B) * sizeof(float));
    float *xs = malloc((size_t)B * D * sizeof(float)), *ys = malloc((size_t)B * D * sizeof(float));
    double e = 0.0;
    for (int t = 0; !rc && t < T; t++) {
        for (int b = 0; b < B; b++) {
            memcpy(xs + (size_t)b * D, x + ((size_t)b * T + t) * D, (size_t)D * sizeof(float));
        }
        rc = lina_gla_step(ys, xs, &d, &p, B, st, scr, NULL);
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < D; i++) {
                double dd = fabs((double)ys[b * D + i] - y[((size_t)b * T + t) * D + i]);
                e = dd > e ? dd : e;
            }
        }
    }
    double es = 0.0;
    for (size_t i = 0; i < sz; i++) {
        double dd = fabs((double)st[i] - ht[i]);
        es = dd > es ? dd : es;
    }
    CHECK(rc == 0 && e < 1e-4 && es < 1e-4, "gla layer: %d decode steps = forward (out err %.2e, state err %.2e)", T,
          e, es);
    free(pb);
    free(x);
    free(acts);
    free(y);
    free(ht);
    free(st);
    free(scr);
    free(xs);
    free(ys);
}

/* Gated DeltaNet names and shapes (docs/checkpoints.md 2.2; 1.3B pattern scaled down) */
static void test_gdn_names(void)
{
    lina_config c = tiny_gdn(1, 1, 0);
    c.hidden_size = 32;
    c.num_heads = 3;
    c.head_dim = 8;
    c.expand_v = 2.0;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0, "gdn names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    int D = 32, HK = 24, HV = 48, H = 3, V = 16;
    struct {
        const char *suffix;
        int nd;
        int64_t s0, s1, s2;
        int decay;
    } want[] = {
        {"q_proj.weight", 2, HK, D, 0, 1},   {"k_proj.weight", 2, HK, D, 0, 1}, {"v_proj.weight", 2, HV, D, 0, 1},
        {"a_proj.weight", 2, H, D, 0, 1},    {"b_proj.weight", 2, H, D, 0, 1},  {"A_log", 1, H, 0, 0, 0},
        {"dt_bias", 1, H, 0, 0, 0},          {"q_conv1d.weight", 3, HK, 1, 4, 1},
        {"k_conv1d.weight", 3, HK, 1, 4, 1}, {"v_conv1d.weight", 3, HV, 1, 4, 1},
        {"g_proj.weight", 2, HV, D, 0, 1},   {"o_norm.weight", 1, V, 0, 0, 0},  {"o_proj.weight", 2, D, HV, 0, 1},
    };
    int ok = 1, nw = (int)(sizeof(want) / sizeof(want[0]));
    for (int l = 0; l < 2; l++) {
        for (int j = 0; j < nw; j++) {
            char nm[96];
            snprintf(nm, sizeof(nm), "model.layers.%d.attn.%s", l, want[j].suffix);
            int i = lina_model_find_tensor(m, nm);
            int nd = 0, decay = -1;
            const int64_t *sh = NULL;
            if (i < 0 || lina_model_tensor(m, i, NULL, &nd, &sh, NULL, &decay) || nd != want[j].nd ||
                sh[0] != want[j].s0 || (nd > 1 && sh[1] != want[j].s1) || (nd > 2 && sh[2] != want[j].s2) ||
                decay != want[j].decay) {
                printf("    mismatch: %s\n", nm);
                ok = 0;
            }
        }
    }
    /* 2 * (13 mixer + 2 norms + 3 MLP) + embeddings + norm + lm_head */
    CHECK(ok && lina_model_num_tensors(m) == 2 * (nw + 5) + 3, "gdn names: %d tensors named and shaped as FLA",
          lina_model_num_tensors(m));
    /* A_log = ln U(0,16], dt_bias = softplus^-1(dt), dt in [1e-3, 0.1] */
    const float *P = lina_model_params(m);
    size_t oa = 0, od = 0;
    lina_model_tensor(m, lina_model_find_tensor(m, "model.layers.0.attn.A_log"), NULL, NULL, NULL, &oa, NULL);
    lina_model_tensor(m, lina_model_find_tensor(m, "model.layers.0.attn.dt_bias"), NULL, NULL, NULL, &od, NULL);
    int iok = 1;
    for (int h = 0; h < H; h++) {
        double A = exp(P[oa + h]), dt = log1p(exp(P[od + h]));
        iok &= A > 0 && A <= 16.0001 && dt >= 0.999e-3 && dt <= 0.1001;
    }
    CHECK(iok, "gdn names: A_log and dt_bias initialised as FLA");
    lina_model_free(m);
    c.use_short_conv = 0;
    c.use_gate = 0;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "model.layers.0.attn.q_conv1d.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.g_proj.weight") < 0 &&
              lina_model_num_tensors(m) == 2 * (nw - 4 + 5) + 3,
          "gdn names: no convs / no gate drop q,k,v_conv1d and g_proj");
    lina_model_free(m);
}

/* Gated DeltaNet layer: prefill (chunk, with cache) + one-token steps = one forward */
static void test_gdn_cache(void)
{
    lina_gdn_dims d = {.D = 20, .H = 2, .K = 8, .V = 12, .use_gate = 1, .use_short_conv = 1, .conv_size = 4,
                       .allow_neg_eigval = 0, .norm_eps = 1e-6f, .gated = 1, .use_beta = 1};
    int B = 2, T = 13, T0 = 5, N = B * T, D = d.D, H = d.H, HK = H * d.K, HV = H * d.V, W = d.conv_size;
    size_t sizes[13] = {(size_t)HK * D, (size_t)HK * D, (size_t)HV * D, (size_t)H * D, (size_t)H * D, (size_t)H,
                        (size_t)H, (size_t)HK * W, (size_t)HK * W, (size_t)HV * W, (size_t)HV * D, (size_t)d.V,
                        (size_t)D * HV};
    size_t tot = 0;
    for (int i = 0; i < 13; i++) {
        tot += sizes[i];
    }
    float *pb = malloc(tot * sizeof(float)), *ptr[13];
    for (size_t i = 0; i < tot; i++) {
        pb[i] = (float)(0.3 * th_normal());
    }
    size_t o = 0;
    for (int i = 0; i < 13; i++) {
        ptr[i] = pb + o;
        o += sizes[i];
    }
    lina_gdn_params p = {.q_proj = ptr[0], .k_proj = ptr[1], .v_proj = ptr[2], .a_proj = ptr[3], .b_proj = ptr[4],
                         .A_log = ptr[5], .dt_bias = ptr[6], .q_conv = ptr[7], .k_conv = ptr[8], .v_conv = ptr[9],
                         .g_proj = ptr[10], .o_norm = ptr[11], .o_proj = ptr[12]};
    float *x = malloc((size_t)N * D * sizeof(float)), *y = malloc((size_t)N * D * sizeof(float));
    for (int i = 0; i < N * D; i++) {
        x[i] = (float)th_normal();
    }
    float *acts = malloc(lina_gdn_acts_floats(&d, N) * sizeof(float));
    lina_gdn_acts a;
    lina_gdn_acts_carve(&a, acts, &d, N);
    size_t cs = lina_gdn_cache_floats(&d, B);
    float *full = calloc(cs, sizeof(float)), *cache = calloc(cs, sizeof(float));
    int rc = lina_gdn_forward(y, &a, x, &d, &p, B, T, full, LINA_FORM_CHUNK, NULL);
    /* prefill T0 tokens (chunk form), then single steps (recurrent) */
    float *xs = malloc((size_t)B * T * D * sizeof(float)), *ys = malloc((size_t)B * T * D * sizeof(float));
    double e = 0.0;
    for (int t0 = 0; !rc && t0 < T;) {
        int len = t0 == 0 ? T0 : 1;
        for (int b = 0; b < B; b++) {
            memcpy(xs + (size_t)b * len * D, x + ((size_t)b * T + t0) * D, (size_t)len * D * sizeof(float));
        }
        rc = lina_gdn_forward(ys, &a, xs, &d, &p, B, len, cache, len == 1 ? LINA_FORM_RECURRENT : LINA_FORM_CHUNK,
                              NULL);
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < len; t++) {
                for (int i = 0; i < D; i++) {
                    double dd = fabs((double)ys[((size_t)b * len + t) * D + i] - y[((size_t)b * T + t0 + t) * D + i]);
                    e = dd > e ? dd : e;
                }
            }
        }
        t0 += len;
    }
    double es = 0.0;
    for (size_t i = 0; i < cs; i++) {
        double dd = fabs((double)cache[i] - full[i]);
        es = dd > es ? dd : es;
    }
    CHECK(rc == 0 && e < 1e-4 && es < 1e-4,
          "gdn layer: prefill %d + %d decode steps = one forward (out err %.2e, cache err %.2e)", T0, T - T0, e, es);
    free(pb);
    free(x);
    free(y);
    free(acts);
    free(full);
    free(cache);
    free(xs);
    free(ys);
}

/* one tensor's rank and shape */
static int has_shape(const lina_model *m, const char *name, int nd, int64_t s0, int64_t s1)
{
    int i = lina_model_find_tensor(m, name), n = 0;
    const int64_t *sh = NULL;
    if (i < 0 || lina_model_tensor(m, i, NULL, &n, &sh, NULL, NULL) || n != nd) {
        printf("    missing or wrong rank: %s\n", name);
        return 0;
    }
    if (sh[0] != s0 || (nd > 1 && sh[1] != s1)) {
        printf("    wrong shape: %s\n", name);
        return 0;
    }
    return 1;
}

/* transformer and hybrid attention names (docs/checkpoints.md 2.2: attn.{q,k,v,o}_proj,
 * biases with qkv_bias, q_norm/k_norm [d] with qk_norm) */
static void test_attn_names(void)
{
    lina_config c = tiny_transformer(1, 1, 1, 0); /* D 16, H 2, Hkv 1, d 8 */
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    int ok = rc == 0;
    for (int l = 0; ok && l < 2; l++) {
        char nm[96];
        const char *sfx[] = {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight",
                             "v_proj.bias", "q_norm.weight", "k_norm.weight", "o_proj.weight"};
        int64_t sh[][3] = {{2, 16, 16}, {1, 16, 0}, {2, 8, 16}, {1, 8, 0}, {2, 8, 16},
                           {1, 8, 0},   {1, 8, 0},  {1, 8, 0},  {2, 16, 16}};
        for (int j = 0; j < 9; j++) {
            snprintf(nm, sizeof(nm), "model.layers.%d.attn.%s", l, sfx[j]);
            ok &= has_shape(m, nm, (int)sh[j][0], sh[j][1], sh[j][2]);
        }
    }
    CHECK(ok && lina_model_num_tensors(m) == 2 * (9 + 5) + 3, "attn names: transformer (GQA, qkv_bias, qk_norm)");
    int i = lina_model_find_tensor(m, "model.layers.0.attn.q_proj.bias"), decay = -1;
    lina_model_tensor(m, i, NULL, NULL, NULL, NULL, &decay);
    CHECK(decay == 0, "attn names: biases are not decayed");
    lina_model_free(m);
    c = hybrid(tiny_gla(0, 1), 1);
    rc = lina_model_create(&c, 1, &m);
    ok = rc == 0 && has_shape(m, "model.layers.0.attn.gk_proj.0.weight", 2, 16, 16) &&
         has_shape(m, "model.layers.1.attn.q_proj.weight", 2, 16, 16) &&
         has_shape(m, "model.layers.1.attn.k_proj.weight", 2, 8, 16) &&
         has_shape(m, "model.layers.1.attn.k_proj.bias", 1, 8, 0) &&
         has_shape(m, "model.layers.1.attn.o_proj.weight", 2, 16, 16) &&
         lina_model_find_tensor(m, "model.layers.1.attn.gk_proj.0.weight") < 0;
    CHECK(ok, "attn names: GLA hybrid with attention on layer 1");
    lina_model_free(m);
}


/* DeltaNet (docs/checkpoints.md 2.2): q,k,v_proj, b_proj [H, D], q,k,v_conv1d, o_norm [V], o_proj */
static void test_deltanet_names(void)
{
    lina_config c = tiny_deltanet(1, 0, 1); /* D 16, H 2, K = V = 8 */
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    int ok = rc == 0 && has_shape(m, "model.layers.0.attn.q_proj.weight", 2, 16, 16) &&
             has_shape(m, "model.layers.0.attn.b_proj.weight", 2, 2, 16) &&
             has_shape(m, "model.layers.1.attn.q_conv1d.weight", 3, 16, 1) &&
             has_shape(m, "model.layers.1.attn.v_conv1d.weight", 3, 16, 1) &&
             has_shape(m, "model.layers.1.attn.o_norm.weight", 1, 8, 0) &&
             has_shape(m, "model.layers.1.attn.o_proj.weight", 2, 16, 16) &&
             lina_model_find_tensor(m, "model.layers.0.attn.A_log") < 0 &&
             lina_model_find_tensor(m, "model.layers.0.attn.a_proj.weight") < 0 &&
             lina_model_find_tensor(m, "model.layers.0.attn.g_proj.weight") < 0 &&
             lina_model_num_tensors(m) == 2 * (9 + 5) + 3;
    CHECK(ok, "delta_net names: %d tensors named and shaped as FLA", lina_model_num_tensors(m));
    lina_model_free(m);
    snprintf(c.qk_activation, sizeof(c.qk_activation), "gelu");
    m = NULL;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && m == NULL && strstr(lina_last_error(), "gelu"),
          "delta_net: an unknown qk_activation is refused naming it: %s", lina_last_error());
}

/* DeltaNet with qk_activation act and qk_norm norm; with the sum norm K = 32
 * (expand_k 4): relu zeroes a whole head of 8 now and then, and x / sum x is
 * then 0 / 0, as in FLA */
static lina_config deltanet_qk(const char *act, const char *norm, int short_conv)
{
    lina_config c = tiny_deltanet(1, 0, short_conv);
    c.expand_k = strcmp(norm, "sum") == 0 ? 4.0 : c.expand_k;
    snprintf(c.qk_activation, sizeof(c.qk_activation), "%s", act);
    snprintf(c.qk_norm, sizeof(c.qk_norm), "%s", norm);
    return c;
}

/* RetNet (docs/checkpoints.md 2.2): q_proj [Kd, D], k_proj, v_proj [Vd, D], g_proj,
 * g_norm_swish_gate [V], o_proj [D, Vd]; no gate projections */
static void test_retnet_names(void)
{
    lina_config c = tiny_retnet(1); /* D 16, H 2, Kd 16, Vd 32, V 16 */
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    int ok = rc == 0 && has_shape(m, "model.layers.0.attn.q_proj.weight", 2, 16, 16) &&
             has_shape(m, "model.layers.0.attn.k_proj.weight", 2, 16, 16) &&
             has_shape(m, "model.layers.0.attn.v_proj.weight", 2, 32, 16) &&
             has_shape(m, "model.layers.1.attn.g_proj.weight", 2, 32, 16) &&
             has_shape(m, "model.layers.1.attn.g_norm_swish_gate.weight", 1, 16, 0) &&
             has_shape(m, "model.layers.1.attn.o_proj.weight", 2, 16, 32) &&
             lina_model_find_tensor(m, "model.layers.0.attn.gk_proj.0.weight") < 0 &&
             lina_model_num_tensors(m) == 2 * (6 + 5) + 3;
    CHECK(ok, "retnet names: %d tensors named and shaped as FLA", lina_model_num_tensors(m));
    lina_model_free(m);
}

static void test_save_load(int tie)
{
    lina_config c = tie ? tiny_gla(1, 1) : hybrid(tiny_gdn(1, 1, 0), 1);
    lina_model *m = NULL, *m2 = NULL;
    if (lina_model_create(&c, 5, &m)) {
        CHECK(0, "save/load: create (%s)", lina_last_error());
        return;
    }
    randomize(m);
    char dir[] = "/tmp/lina_model_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "save/load: mkdtemp");
        lina_model_free(m);
        return;
    }
    char sub[64];
    snprintf(sub, sizeof(sub), "%s/ckpt", dir);
    int rc = lina_model_save(m, sub);
    CHECK(rc == 0, "save/load (tie=%d): save (%s)", tie, rc ? lina_last_error() : "");
    rc = rc ? rc : lina_model_load(sub, &m2);
    CHECK(rc == 0, "save/load (tie=%d): load (%s)", tie, rc ? lina_last_error() : "");
    if (!rc) {
        int B = 2, T = 9, N = B * T, vocab = c.vocab_size;
        int32_t tok[18];
        rand_tokens(tok, NULL, N, vocab);
        float a[18 * 11], b[18 * 11];
        rc = lina_model_forward_logits(m, tok, B, T, a, NULL);
        rc = rc ? rc : lina_model_forward_logits(m2, tok, B, T, b, NULL);
        CHECK(rc == 0 && memcmp(a, b, sizeof(a)) == 0 && lina_model_num_params(m) == lina_model_num_params(m2) &&
                  memcmp(lina_model_params(m), lina_model_params(m2),
                         lina_model_num_params(m) * sizeof(float)) == 0 &&
                  lina_model_config(m2)->tie_word_embeddings == tie,
              "save/load (%s): identical parameters and logits", tie ? "gla tied" : "gated_deltanet hybrid");
        /* the file holds FLA's names */
        lina_st_file *f = NULL;
        char stp[96];
        snprintf(stp, sizeof(stp), "%s/model.safetensors", sub);
        rc = lina_st_open(stp, &f);
        CHECK(rc == 0 && lina_st_count(f) == lina_model_num_tensors(m) &&
                  lina_st_find(f, tie ? "model.layers.1.attn.gk_proj.1.bias" : "model.layers.1.attn.k_proj.bias") >= 0 &&
                  (lina_st_find(f, "lm_head.weight") >= 0) == !tie,
              "save/load (tie=%d): model.safetensors has %d FLA-named tensors", tie, lina_model_num_tensors(m));
        lina_st_close(f);
        /* a missing tensor is an error, not a silent default */
        lina_tdict td;
        rc = lina_st_read(stp, &td, 0);
        if (!rc) {
            lina_tdict d2;
            lina_tdict_init(&d2);
            for (int i = 0; i < td.n; i++) {
                if (strcmp(td.names[i], "model.layers.0.mlp.up_proj.weight") != 0) {
                    lina_tdict_add(&d2, td.names[i], &td.t[i]);
                }
            }
            lina_st_write_dict(stp, &d2, LINA_ST_F32);
            lina_tdict_free(&d2);
            lina_tdict_free(&td);
            lina_model *m3 = NULL;
            rc = lina_model_load(sub, &m3);
            CHECK(rc == LINA_EFORMAT && m3 == NULL && strstr(lina_last_error(), "up_proj"),
                  "save/load (tie=%d): a missing tensor fails: %s", tie, lina_last_error());
        }
        char p[96];
        snprintf(p, sizeof(p), "%s/config.json", sub);
        unlink(p);
        unlink(stp);
        rmdir(sub);
    }
    rmdir(dir);
    lina_model_free(m);
    lina_model_free(m2);
}

static void test_errors(void)
{
    lina_config c = tiny_gla(0, 1);
    lina_model *m = NULL;
    lina_model_create(&c, 1, &m);
    int32_t tok[4] = {1, 2, 11, 0}, tgt[4] = {1, 2, 3, 4};
    double loss;
    int rc = lina_model_train_step(m, tok, tgt, 1, 4, &loss, NULL);
    CHECK(rc == LINA_EINVAL, "errors: token id out of range fails: %s", lina_last_error());
    tok[2] = 3;
    tgt[1] = 11;
    rc = lina_model_train_step(m, tok, tgt, 1, 4, &loss, NULL);
    CHECK(rc == LINA_EINVAL, "errors: target out of range fails: %s", lina_last_error());
    for (int i = 0; i < 4; i++) {
        tgt[i] = LINA_IGNORE_INDEX;
    }
    lina_model_zero_grad(m);
    rc = lina_model_train_step(m, tok, tgt, 1, 4, &loss, NULL);
    int zero = 1;
    for (size_t i = 0; i < lina_model_num_params(m); i++) {
        zero &= lina_model_grads(m)[i] == 0.0f;
    }
    CHECK(rc == 0 && loss == 0.0 && zero, "errors: all targets ignored: loss 0, no gradient");
    rc = lina_model_train_step(m, tok, tgt, 0, 4, &loss, NULL);
    CHECK(rc == LINA_EINVAL, "errors: B = 0 fails");
    lina_model_free(m);
    lina_model *m2 = NULL;
    rc = lina_model_load("/nonexistent/lina", &m2);
    CHECK(rc != 0 && m2 == NULL, "errors: load from a missing directory fails: %s", lina_last_error());
}

/* GVA (docs/mixers.md 4.2, 1): q/k per q/k head, everything else per value head */
static void test_gva_names(lina_config c)
{
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m); /* D 16, H 2, HV 4, K 4, V 8 */
    int ok = rc == 0 && has_shape(m, "model.layers.0.attn.q_proj.weight", 2, 8, 16) &&
             has_shape(m, "model.layers.0.attn.k_conv1d.weight", 3, 8, 1) &&
             has_shape(m, "model.layers.0.attn.v_proj.weight", 2, 32, 16) &&
             has_shape(m, "model.layers.0.attn.v_conv1d.weight", 3, 32, 1) &&
             has_shape(m, "model.layers.0.attn.a_proj.weight", 2, 4, 16) &&
             has_shape(m, "model.layers.0.attn.b_proj.weight", 2, 4, 16) &&
             has_shape(m, "model.layers.0.attn.A_log", 1, 4, 0) &&
             has_shape(m, "model.layers.0.attn.dt_bias", 1, 4, 0) &&
             has_shape(m, "model.layers.0.attn.g_proj.weight", 2, 32, 16) &&
             has_shape(m, "model.layers.0.attn.o_norm.weight", 1, 8, 0) &&
             has_shape(m, "model.layers.0.attn.o_proj.weight", 2, 16, 32);
    CHECK(ok, "gdn GVA names: value-head tensors sized by num_v_heads");
    lina_model_free(m);
}

/* GLA kv groups: k_proj, v_proj, gk_proj.1 sized key_dim / G, value_dim / G */
static void test_group_names(lina_config c)
{
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m); /* D 16, H 4, Hkv 2: key 8, value 16 */
    int ok = rc == 0 && has_shape(m, "model.layers.0.attn.q_proj.weight", 2, 8, 16) &&
             has_shape(m, "model.layers.0.attn.k_proj.weight", 2, 4, 16) &&
             has_shape(m, "model.layers.0.attn.v_proj.weight", 2, 8, 16) &&
             has_shape(m, "model.layers.0.attn.g_proj.weight", 2, 16, 16) &&
             has_shape(m, "model.layers.0.attn.gk_proj.1.weight", 2, 4, 16) &&
             has_shape(m, "model.layers.0.attn.gk_proj.1.bias", 1, 4, 0) &&
             has_shape(m, "model.layers.0.attn.g_norm_swish_gate.weight", 1, 4, 0) &&
             has_shape(m, "model.layers.0.attn.o_proj.weight", 2, 16, 16);
    CHECK(ok, "gla kv-group names: k_proj, v_proj, gk_proj.1 sized by num_kv_heads");
    lina_model_free(m);
}

/* HGRN2 (docs/checkpoints.md 2.2): q_proj, f_proj, i_proj [D, D], g_norm.weight [D],
 * o_proj [D, D]; model.lower_bounds [layers, D] */
static void test_hgrn2_names(void)
{
    lina_config c = tiny_hgrn2(1);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    int ok = rc == 0 && has_shape(m, "model.lower_bounds", 2, 3, 16) &&
             has_shape(m, "model.layers.2.attn.q_proj.weight", 2, 16, 16) &&
             has_shape(m, "model.layers.2.attn.f_proj.weight", 2, 16, 16) &&
             has_shape(m, "model.layers.2.attn.i_proj.weight", 2, 16, 16) &&
             has_shape(m, "model.layers.2.attn.g_norm.weight", 1, 16, 0) &&
             has_shape(m, "model.layers.2.attn.o_proj.weight", 2, 16, 16) &&
             lina_model_num_tensors(m) == 3 * (5 + 5) + 4;
    CHECK(ok, "hgrn2 names: %d tensors named and shaped as FLA", lina_model_num_tensors(m));
    lina_model_free(m);
}

/* the built-in mixers' references, by model type */
static void builtin_seq(const ref_model *r, const double *P, int l, const double *xn, double *out, int T)
{
    if (r->c->model_type == LINA_MODEL_HGRN2) {
        ref_hgrn2(r, P, l, xn, out, T);
    } else if (r->c->model_type == LINA_MODEL_GATED_DELTANET || r->c->model_type == LINA_MODEL_DELTA_NET) {
        ref_gdn(r, P, l, xn, out, T);
    } else {
        ref_gla(r, P, l, xn, out, T);
    }
}

int main(void)
{
    g_ref_seq = builtin_seq;
    test_names();
    test_fd("gla", tiny_gla(0, 1), 2, 9, 1.0);
    test_fd("gla across chunks", tiny_gla(0, 1), 1, 67, 0.03);
    test_fd("gated_deltanet across chunks", tiny_gdn(1, 1, 0), 1, 67, 0.03);
    test_fd("gla tied", tiny_gla(1, 1), 2, 9, 0.12);
    test_fd("gla no output gate", tiny_gla(0, 0), 1, 7, 0.12);
    test_fd("gated_deltanet", tiny_gdn(1, 1, 0), 2, 9, 1.0);
    test_fd("gated_deltanet no conv, no gate, neg eigval", tiny_gdn(0, 0, 1), 2, 7, 0.12);
    lina_config gva = tiny_gdn(1, 1, 0);
    gva.num_v_heads = 4;
    test_fd("gated_deltanet GVA (4 value heads, 2 q/k heads)", gva, 2, 9, 0.12);
    test_decode("gated_deltanet GVA decode", gva);
    /* batch decode: every row count the few-row product treats apart (one row; tails of its
     * 4- and 2-row tiles; past 16; past 32, where the AVX2 path hands over to OpenBLAS) */
    static const int batches[] = {1, 5, 17, 40};
    for (int i = 0; i < 4; i++) {
        test_decode_batch("gla batch decode", tiny_gla(0, 1), batches[i]);
        test_decode_batch("gated_deltanet batch decode", tiny_gdn(1, 1, 0), batches[i]);
    }
    test_gva_names(gva);
    lina_config grp = tiny_gla(0, 1);
    grp.num_heads = 4;
    grp.num_kv_heads = 2;
    test_fd("gla kv groups (4 heads, 2 kv heads)", grp, 2, 9, 0.12);
    test_decode("gla kv groups decode", grp);
    lina_config rgrp = tiny_retnet(1);
    rgrp.num_heads = 4;
    rgrp.num_kv_heads = 2;
    test_fd("retnet kv groups (4 heads, 2 kv heads)", rgrp, 2, 9, 0.12);
    test_decode("retnet kv groups decode", rgrp);
    test_group_names(grp);
    test_fd("hgrn2 (lower bounds)", tiny_hgrn2(1), 2, 9, 0.12);
    test_fd("hgrn2 no lower bound", tiny_hgrn2(0), 1, 7, 0.12);
    test_fd("hgrn2 across chunks", tiny_hgrn2(1), 1, 67, 0.02);
    test_decode("hgrn2 decode", tiny_hgrn2(1));
    test_forms("hgrn2 forms", tiny_hgrn2(1));
    test_hgrn2_names();
    lina_config gconv = tiny_gla(0, 1);
    gconv.use_short_conv = 1;
    gconv.num_heads = 4;
    gconv.num_kv_heads = 2;
    test_fd("gla short conv + kv groups", gconv, 2, 9, 0.12);
    test_decode("gla short conv + kv groups decode", gconv);
    lina_config rconvc = tiny_retnet(1);
    rconvc.use_short_conv = 1;
    test_fd("retnet short conv", rconvc, 1, 9, 0.12);
    test_decode("retnet short conv decode", rconvc);
    {
        lina_model *mc = NULL;
        int rcc = lina_model_create(&gconv, 1, &mc);
        CHECK(rcc == 0 && has_shape(mc, "model.layers.1.attn.q_conv1d.weight", 3, 8, 1) &&
                  has_shape(mc, "model.layers.1.attn.k_conv1d.weight", 3, 4, 1) &&
                  has_shape(mc, "model.layers.1.attn.v_conv1d.weight", 3, 8, 1),
              "gla short conv names: q/k/v_conv1d.weight [C, 1, 4]");
        lina_model_free(mc);
    }
    test_fd("retnet", tiny_retnet(1), 2, 9, 0.12);
    test_fd("retnet no output gate", tiny_retnet(0), 1, 7, 0.12);
    test_fd("delta_net", tiny_deltanet(1, 0, 1), 2, 9, 0.12);
    test_fd("delta_net no beta, gate, no conv", tiny_deltanet(0, 1, 0), 2, 7, 0.12);
    test_fd("delta_net relu + sum norm", deltanet_qk("relu", "sum", 1), 2, 9, 0.12);
    test_fd("delta_net identity + l2", deltanet_qk("identity", "l2", 1), 2, 9, 0.12);
    test_fd("delta_net elu + l2", deltanet_qk("elu", "l2", 1), 2, 9, 0.12);
    test_fd("delta_net elu + sum norm, no conv", deltanet_qk("elu", "sum", 0), 2, 7, 0.12);
    test_fd("delta_net relu + l2, no conv", deltanet_qk("relu", "l2", 0), 2, 7, 0.12);
    test_fd("delta_net elu + sum norm across chunks", deltanet_qk("elu", "sum", 1), 1, 67, 0.03);
    test_forms("delta_net relu + sum forms", deltanet_qk("relu", "sum", 1));
    test_forms("delta_net identity + l2 forms", deltanet_qk("identity", "l2", 1));
    test_forms("delta_net elu forms", deltanet_qk("elu", "l2", 1));
    test_decode("delta_net relu + sum decode", deltanet_qk("relu", "sum", 1));
    test_decode("delta_net identity + l2 decode", deltanet_qk("identity", "l2", 1));
    test_decode("delta_net elu + sum decode", deltanet_qk("elu", "sum", 1));
    test_fd("transformer gqa bias qk_norm", tiny_transformer(1, 1, 1, 0), 2, 9, 1.0);
    test_fd("transformer window", tiny_transformer(2, 0, 0, 4), 2, 9, 0.12);
    test_fd("gla + attn hybrid", hybrid(tiny_gla(0, 1), 1), 2, 9, 0.12);
    test_fd("gated_deltanet + attn hybrid", hybrid(tiny_gdn(1, 1, 0), 0), 2, 9, 0.12);
    test_forms("gla forms", tiny_gla(0, 1));
    test_forms("gated_deltanet forms", tiny_gdn(1, 1, 0));
    test_forms("retnet forms", tiny_retnet(1));
    test_decode("gla decode", tiny_gla(0, 1));
    test_decode("gated_deltanet decode", tiny_gdn(1, 1, 0));
    test_decode("delta_net decode", tiny_deltanet(1, 0, 1));
    test_decode("retnet decode", tiny_retnet(1));
    test_decode("transformer decode", tiny_transformer(1, 1, 1, 0));
    test_decode("transformer window decode", tiny_transformer(2, 0, 0, 4));
    {
        /* the short convolution on q, k, v (a lina option for the synthetic-task models) */
        lina_config tc = tiny_transformer(1, 1, 1, 0);
        tc.use_short_conv = 1;
        test_fd("transformer short conv, gqa bias qk_norm", tc, 2, 9, 0.3);
        test_decode("transformer short conv decode", tc);
        /* without biases the q/k/v weights lie back to back: the fused projections */
        lina_config tf = tiny_transformer(1, 0, 0, 0);
        tf.use_short_conv = 1;
        test_fd("transformer short conv, gqa (fused q/k/v)", tf, 2, 9, 1.0);
        lina_model *mc = NULL;
        int rc = lina_model_create(&tc, 1, &mc);
        CHECK(rc == 0 && lina_model_find_tensor(mc, "model.layers.0.attn.q_conv1d.weight") >= 0 &&
                  lina_model_find_tensor(mc, "model.layers.1.attn.v_conv1d.weight") >= 0,
              "transformer use_short_conv: {q,k,v}_conv1d.weight per layer");
        lina_model_free(mc);
    }
    test_decode("gla hybrid decode", hybrid(tiny_gla(0, 1), 1));
    test_gdn_names();
    test_attn_names();
    test_deltanet_names();
    test_retnet_names();
    test_gdn_cache();
    test_gla_step();
    test_save_load(0);
    test_save_load(1);
    test_errors();
    return th_exit();
}
