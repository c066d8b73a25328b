/* model_ref.h -- the double-precision reference LM shared by the model
 * tests (test_model*.c): embedding, pre-norm blocks with RMSNorm, a mixer,
 * SwiGLU MLP, final norm, lm head, mean cross-entropy -- token by token in
 * double, straight from docs/mixers.md 2 -- plus the finite-difference gradient
 * check (test_fd), chunk-vs-recurrent (test_forms) and prefill+decode
 * (test_decode) checks of a whole model.
 *
 * A test file defines the mixer math it checks through the hooks below
 * (set them before calling test_fd / ref_forward):
 *   g_ref_seq    per-sequence mixer of a built-in kind (test_model.c)
 *   g_ref_mixer  whole-batch mixer: out [B*T, D] from xn [B*T, D]; returns the
 *                layer's auxiliary loss (0 if none)
 *   g_ref_ffn    whole-batch feed-forward block replacing the SwiGLU MLP
 *                (MoE); returns its auxiliary loss
 * Softmax-attention layers of hybrids are handled here (ref_attn).
 * Mamba2 and Mamba models use FLA's "backbone." names and have no MLP. */
#ifndef LINA_TEST_MODEL_REF_H
#define LINA_TEST_MODEL_REF_H

#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"

#include <stdint.h>
#include <string.h>

#ifndef FD_H
#define FD_H 1e-5
#endif
#ifndef FWD_TOL
#define FWD_TOL 1e-4
#endif
#ifndef GRAD_TOL
#define GRAD_TOL 1e-3
#endif

struct ref_model;
typedef void (*ref_seq_fn)(const struct ref_model *r, const double *P, int l, const double *xn, double *out, int T);
typedef double (*ref_batch_fn)(const struct ref_model *r, const double *P, int l, const double *xn, double *out,
                               int B, int T);
static ref_seq_fn g_ref_seq;
static ref_batch_fn g_ref_mixer;
static ref_batch_fn g_ref_ffn;
/* a whole-model reference replacing ref_forward's block composition (RWKV-7: LayerNorms, its own
   feed-forward, values handed from layer 0); returns the loss, logits as ref_forward */
typedef double (*ref_model_fn)(const struct ref_model *r, const double *P, const int32_t *tok, const int32_t *tgt,
                               int B, int T, double *logits_out);
static ref_model_fn g_ref_model;
static double g_ref_aux; /* auxiliary loss of the last ref_forward */

/* --------------------------------------------- double reference model */

typedef struct ref_model {
    const lina_model *m; /* for the tensor table */
    const lina_config *c;
    int L, D, H, K, V, I, vocab, gate;
    double eps;
} ref_model;

static __attribute__((unused)) size_t toff(const lina_model *m, const char *fmt, int l)
{
    char nm[128];
    snprintf(nm, sizeof(nm), fmt, l);
    int i = lina_model_find_tensor(m, nm);
    size_t off = 0;
    if (i < 0 || lina_model_tensor(m, i, NULL, NULL, NULL, &off, NULL)) {
        printf("FAIL reference: no tensor %s\n", nm);
        exit(1);
    }
    return off;
}

/* layer l's mixer tensor "model.layers.<l>.attn.<suffix>" inside the double parameters P */
static __attribute__((unused)) const double *ptens(const ref_model *r, const double *P, int l,
                                                   const char *suffix)
{
    char fmt[128];
    snprintf(fmt, sizeof(fmt), "model.layers.%%d.attn.%s", suffix);
    return P + toff(r->m, fmt, l);
}

/* y [out] = W [out, in] x [in] (+ b) */
static __attribute__((unused)) void rlin(double *y, const double *W, const double *b, const double *x, int in, int out)
{
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < in; i++) {
            s += W[(size_t)o * in + i] * x[i];
        }
        y[o] = s;
    }
}

static __attribute__((unused)) void rrms(double *y, const double *x, const double *w, int D, double eps)
{
    double ss = 0.0;
    for (int i = 0; i < D; i++) {
        ss += x[i] * x[i];
    }
    double r = 1.0 / sqrt(ss / D + eps);
    for (int i = 0; i < D; i++) {
        y[i] = x[i] * r * w[i];
    }
}

static __attribute__((unused)) double rsig(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

static __attribute__((unused)) double rlogsig(double x)
{
    return x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x));
}


static __attribute__((unused)) double rsoftplus(double x)
{
    return x > 20 ? x : log1p(exp(x));
}

/* y [T, C] = causal depthwise conv of x [T, C] with w [C, W] (or x), then
 * SiLU when silu */
static __attribute__((unused)) void rconv_act(double *y, const double *x, const double *w, int T, int C, int W,
                                              int silu)
{
    for (int t = 0; t < T; t++) {
        for (int c = 0; c < C; c++) {
            double p = 0.0;
            if (!w) {
                p = x[(size_t)t * C + c];
            } else {
                for (int j = 0; j < W; j++) {
                    int tau = t - W + 1 + j;
                    p += tau >= 0 ? w[(size_t)c * W + j] * x[(size_t)tau * C + c] : 0.0;
                }
            }
            y[(size_t)t * C + c] = silu ? p * rsig(p) : p;
        }
    }
}

/* y [T, C] = silu(causal depthwise conv of x [T, C] with w [C, W]), or silu(x) */
static __attribute__((unused)) void rconv(double *y, const double *x, const double *w, int T, int C, int W)
{
    rconv_act(y, x, w, T, C, W, 1);
}

static __attribute__((unused)) void rl2(double *x, int n)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        ss += x[i] * x[i];
    }
    double r = 1.0 / sqrt(ss + 1e-6);
    for (int i = 0; i < n; i++) {
        x[i] *= r;
    }
}

/* softmax attention over one sequence (docs/mixers.md 9): RoPE, GQA, window */
static __attribute__((unused)) void ref_attn(const ref_model *r, const double *P, int l, const double *xn, double *out, int T)
{
    const lina_model *m = r->m;
    const lina_config *c = r->c;
    int tr = c->model_type == LINA_MODEL_TRANSFORMER;
    int D = r->D, H = tr ? c->num_heads : c->attn.num_heads;
    int Hkv = tr ? (c->num_kv_heads ? c->num_kv_heads : H) : (c->attn.num_kv_heads ? c->attn.num_kv_heads : H);
    int bias = tr ? c->qkv_bias : c->attn.qkv_bias, qkn = tr && c->qk_norm[0];
    int win = tr ? c->window_size : c->attn.window_size;
    double base = tr ? (c->rope_theta > 0 ? c->rope_theta : 10000.0) : c->attn.rope_theta;
    int d = D / H, HQ = H * d, HKV = Hkv * d, G = H / Hkv;
    const double *Wq = P + toff(m, "model.layers.%d.attn.q_proj.weight", l);
    const double *Wk = P + toff(m, "model.layers.%d.attn.k_proj.weight", l);
    const double *Wv = P + toff(m, "model.layers.%d.attn.v_proj.weight", l);
    const double *Wo = P + toff(m, "model.layers.%d.attn.o_proj.weight", l);
    const double *bq = bias ? P + toff(m, "model.layers.%d.attn.q_proj.bias", l) : NULL;
    const double *bk = bias ? P + toff(m, "model.layers.%d.attn.k_proj.bias", l) : NULL;
    const double *bv = bias ? P + toff(m, "model.layers.%d.attn.v_proj.bias", l) : NULL;
    const double *wqn = qkn ? P + toff(m, "model.layers.%d.attn.q_norm.weight", l) : NULL;
    const double *wkn = qkn ? P + toff(m, "model.layers.%d.attn.k_norm.weight", l) : NULL;
    double *q = calloc((size_t)T * HQ, 8), *k = calloc((size_t)T * HKV, 8), *v = calloc((size_t)T * HKV, 8);
    double o[256], sc[512], tmp[64];
    for (int t = 0; t < T; t++) {
        rlin(q + (size_t)t * HQ, Wq, bq, xn + (size_t)t * D, D, HQ);
        rlin(k + (size_t)t * HKV, Wk, bk, xn + (size_t)t * D, D, HKV);
        rlin(v + (size_t)t * HKV, Wv, bv, xn + (size_t)t * D, D, HKV);
    }
    if (tr && c->use_short_conv) { /* SiLU short convs on the projections */
        double *y = calloc((size_t)T * HQ, 8);
        const char *nm[3] = {"model.layers.%d.attn.q_conv1d.weight", "model.layers.%d.attn.k_conv1d.weight",
                             "model.layers.%d.attn.v_conv1d.weight"};
        double *xs[3] = {q, k, v};
        for (int j = 0; j < 3; j++) {
            int C = j ? HKV : HQ;
            rconv(y, xs[j], P + toff(m, nm[j], l), T, C, c->conv_size);
            memcpy(xs[j], y, (size_t)T * C * sizeof(double));
        }
        free(y);
    }
    for (int t = 0; t < T; t++) {
        double *qt = q + (size_t)t * HQ, *kt = k + (size_t)t * HKV;
        for (int h = 0; h < H + Hkv; h++) {
            double *x = h < H ? qt + h * d : kt + (h - H) * d;
            if (qkn) {
                rrms(tmp, x, h < H ? wqn : wkn, d, 1e-5);
                memcpy(x, tmp, (size_t)d * sizeof(double));
            }
            for (int i = 0; i < d / 2; i++) {
                double ang = t * pow(base, -2.0 * i / d), x1 = x[i], x2 = x[i + d / 2];
                x[i] = x1 * cos(ang) - x2 * sin(ang);
                x[i + d / 2] = x2 * cos(ang) + x1 * sin(ang);
            }
        }
    }
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < H; h++) {
            int g = h / G, j0 = win > 0 && t - win + 1 > 0 ? t - win + 1 : 0;
            double mx = -1e300, se = 0.0;
            for (int j = j0; j <= t; j++) {
                double dot = 0.0;
                for (int i = 0; i < d; i++) {
                    dot += q[(size_t)t * HQ + h * d + i] * k[(size_t)j * HKV + g * d + i];
                }
                sc[j] = dot / sqrt((double)d);
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int j = j0; j <= t; j++) {
                se += exp(sc[j] - mx);
            }
            for (int i = 0; i < d; i++) {
                double acc = 0.0;
                for (int j = j0; j <= t; j++) {
                    acc += exp(sc[j] - mx) / se * v[(size_t)j * HKV + g * d + i];
                }
                o[h * d + i] = acc;
            }
        }
        rlin(out + (size_t)t * D, Wo, NULL, o, HQ, D);
    }
    free(q);
    free(k);
    free(v);
}

/* loss (mean CE over counted targets) and optionally logits [B*T, vocab] */
static __attribute__((unused)) double ref_forward(const ref_model *r, const double *P, const int32_t *tok, const int32_t *tgt, int B,
                          int T, double *logits_out)
{
    if (g_ref_model) {
        g_ref_aux = 0.0;
        return g_ref_model(r, P, tok, tgt, B, T, logits_out);
    }
    const lina_model *m = r->m;
    int D = r->D, I = r->I;
    int N = B * T;
    int bb = r->c->model_type == LINA_MODEL_MAMBA2 || r->c->model_type == LINA_MODEL_MAMBA; /* backbone.* names, no MLP */
    double *x = calloc((size_t)N * D, sizeof(double));
    double *xn = calloc((size_t)N * D, sizeof(double)), *out = calloc((size_t)N * D, sizeof(double));
    double *a = calloc((size_t)I, sizeof(double)), *u = calloc((size_t)I, sizeof(double));
    double *xn2 = calloc((size_t)N * D, sizeof(double)), *o2 = calloc((size_t)D > 256 ? D : 256, sizeof(double));
    double aux = 0.0;
    const double *emb = P + toff(m, bb ? "backbone.embeddings.weight" : "model.embeddings.weight", 0);
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < D; i++) {
            x[(size_t)n * D + i] = emb[(size_t)tok[n] * D + i];
        }
    }
    for (int l = 0; l < r->L; l++) {
        const double *wan = P + toff(m, bb ? "backbone.layers.%d.norm.weight" : "model.layers.%d.attn_norm.weight", l);
        for (int n = 0; n < N; n++) {
            rrms(xn + (size_t)n * D, x + (size_t)n * D, wan, D, r->eps);
        }
        if (lina_config_is_attn_layer(r->c, l) || !g_ref_mixer) {
            for (int b = 0; b < B; b++) {
                size_t o = (size_t)b * T * D;
                if (lina_config_is_attn_layer(r->c, l)) {
                    ref_attn(r, P, l, xn + o, out + o, T);
                } else {
                    g_ref_seq(r, P, l, xn + o, out + o, T);
                }
            }
        } else {
            aux += g_ref_mixer(r, P, l, xn, out, B, T);
        }
        for (size_t i = 0; i < (size_t)N * D; i++) {
            x[i] += out[i];
        }
        if (bb) {
            continue;
        }
        const double *wmn = P + toff(m, "model.layers.%d.mlp_norm.weight", l);
        for (int n = 0; n < N; n++) {
            rrms(xn2 + (size_t)n * D, x + (size_t)n * D, wmn, D, r->eps);
        }
        if (g_ref_ffn) {
            aux += g_ref_ffn(r, P, l, xn2, out, B, T);
            for (size_t i = 0; i < (size_t)N * D; i++) {
                x[i] += out[i];
            }
            continue;
        }
        const double *Wgp = P + toff(m, "model.layers.%d.mlp.gate_proj.weight", l);
        const double *Wup = P + toff(m, "model.layers.%d.mlp.up_proj.weight", l);
        const double *Wdn = P + toff(m, "model.layers.%d.mlp.down_proj.weight", l);
        for (int n = 0; n < N; n++) {
            double *xt = x + (size_t)n * D;
            rlin(a, Wgp, NULL, xn2 + (size_t)n * D, D, I);
            rlin(u, Wup, NULL, xn2 + (size_t)n * D, D, I);
            for (int j = 0; j < I; j++) {
                a[j] = a[j] * rsig(a[j]) * u[j];
            }
            rlin(o2, Wdn, NULL, a, I, D);
            for (int i = 0; i < D; i++) {
                xt[i] += o2[i];
            }
        }
    }
    const double *wf = P + toff(m, bb ? "backbone.norm_f.weight" : "model.norm.weight", 0);
    const double *Wlm = P + toff(m, !r->c->tie_word_embeddings ? "lm_head.weight" : bb ? "backbone.embeddings.weight" : "model.embeddings.weight", 0);
    double loss = 0.0;
    int cnt = 0;
    double *lg = calloc((size_t)r->vocab, sizeof(double));
    for (int n = 0; n < N; n++) {
        rrms(o2, x + (size_t)n * D, wf, D, r->eps);
        rlin(lg, Wlm, NULL, o2, D, r->vocab);
        if (logits_out) {
            memcpy(logits_out + (size_t)n * r->vocab, lg, (size_t)r->vocab * sizeof(double));
        }
        if (tgt && tgt[n] != LINA_IGNORE_INDEX) {
            double mx = lg[0], se = 0.0;
            for (int j = 1; j < r->vocab; j++) {
                mx = lg[j] > mx ? lg[j] : mx;
            }
            for (int j = 0; j < r->vocab; j++) {
                se += exp(lg[j] - mx);
            }
            loss += mx + log(se) - lg[tgt[n]];
            cnt++;
        }
    }
    free(lg);
    free(x);
    free(xn);
    free(out);
    free(a);
    free(u);
    free(xn2);
    free(o2);
    g_ref_aux = aux;
    return (cnt ? loss / cnt : 0.0) + aux;
}

static __attribute__((unused)) ref_model ref_of(const lina_model *m)
{
    const lina_config *c = lina_model_config(m);
    ref_model r;
    r.m = m;
    r.c = c;
    r.L = c->num_hidden_layers;
    r.D = c->hidden_size;
    r.H = c->num_heads;
    if (c->model_type == LINA_MODEL_HGRN2) {
        r.K = c->expand_ratio;
        r.V = r.D / r.H;
    } else if (c->model_type == LINA_MODEL_GATED_DELTANET) {
        r.K = c->head_dim;
        r.V = (int)(c->head_dim * c->expand_v);
    } else {
        r.K = (int)(r.D * c->expand_k) / r.H;
        r.V = (int)(r.D * c->expand_v) / r.H;
    }
    r.I = lina_config_mlp_size(c);
    r.vocab = c->vocab_size;
    r.gate = c->use_output_gate;
    r.eps = c->norm_eps;
    return r;
}

/* ---------------------------------------------------------- utilities */

/* parameters of a "trained-looking" model: larger weights than the init so
 * that every path carries gradient; norms around 1, gate biases around 0 */
static __attribute__((unused)) void randomize(lina_model *m)
{
    float *P = lina_model_params(m);
    for (int i = 0; i < lina_model_num_tensors(m); i++) {
        const char *name;
        int nd, decay;
        const int64_t *sh;
        size_t off;
        lina_model_tensor(m, i, &name, &nd, &sh, &off, &decay);
        size_t n = 1;
        for (int j = 0; j < nd; j++) {
            n *= (size_t)sh[j];
        }
        int is_norm = strstr(name, "norm") != NULL;
        for (size_t j = 0; j < n; j++) {
            double z = th_normal();
            P[off + j] = (float)(is_norm ? 1.0 + 0.2 * z : nd == 1 ? 0.5 * z : 0.35 * z);
        }
    }
}

static __attribute__((unused)) void rand_tokens(int32_t *tok, int32_t *tgt, int n, int vocab)
{
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)th_uniform(0, vocab);
        if (tgt) {
            tgt[i] = th_uniform(0, 1) < 0.15 ? LINA_IGNORE_INDEX : (int32_t)th_uniform(0, vocab);
        }
    }
}

/* max over tensors of max|a - fd| / max(max|fd|, 1e-6) over the checked
 * entries (fd not NaN); names the worst */
static __attribute__((unused)) double grad_error(const lina_model *m, const float *a, const double *fd, const char **worst)
{
    double e = 0.0;
    for (int i = 0; i < lina_model_num_tensors(m); i++) {
        const char *name;
        int nd;
        const int64_t *sh;
        size_t off;
        lina_model_tensor(m, i, &name, &nd, &sh, &off, NULL);
        size_t n = 1;
        for (int j = 0; j < nd; j++) {
            n *= (size_t)sh[j];
        }
        double mx = 1e-6, d = 0.0;
        for (size_t j = 0; j < n; j++) {
            if (isnan(fd[off + j])) {
                continue;
            }
            mx = fabs(fd[off + j]) > mx ? fabs(fd[off + j]) : mx;
            double x = fabs((double)a[off + j] - fd[off + j]);
            if (!(x <= d)) {
                d = x;
            }
        }
        if (!(d / mx <= e)) {
            e = d / mx;
            *worst = name;
        }
    }
    return e;
}

/* tensor `name` exists with this shape (nd dims of d0, d1, d2) and weight-decay flag */
static __attribute__((unused)) void check_tensor(const lina_model *m, const char *name, int nd, int64_t d0, int64_t d1, int64_t d2,
                         int decay)
{
    int i = lina_model_find_tensor(m, name);
    const int64_t *sh = NULL;
    int ndim = 0, dec = -1;
    if (i >= 0) {
        lina_model_tensor(m, i, NULL, &ndim, &sh, NULL, &dec);
    }
    int64_t want[3] = {d0, d1, d2};
    int ok = i >= 0 && ndim == nd && dec == decay;
    for (int j = 0; ok && j < nd; j++) {
        ok = sh[j] == want[j];
    }
    char shp[96];
    int k = snprintf(shp, sizeof(shp), "%lld", (long long)d0);
    for (int j = 1; j < nd && k > 0 && (size_t)k < sizeof(shp); j++) {
        k += snprintf(shp + k, sizeof(shp) - (size_t)k, ", %lld", (long long)want[j]);
    }
    CHECK(ok, "names: %s [%s] decay %d", name, shp, decay);
}

/* the parameters of tensor `name` and their count (NULL, 0 when absent) */
static __attribute__((unused)) const float *tensor_data(lina_model *m, const char *name, size_t *n)
{
    int i = lina_model_find_tensor(m, name);
    const int64_t *sh;
    int nd;
    size_t off;
    if (i < 0 || lina_model_tensor(m, i, NULL, &nd, &sh, &off, NULL)) {
        *n = 0;
        return NULL;
    }
    *n = 1;
    for (int j = 0; j < nd; j++) {
        *n *= (size_t)sh[j];
    }
    return lina_model_params(m) + off;
}

/* ----------------------------------------------------------- the tests */

/* frac: the share of parameters checked by FD (1: all; the others are a
 * random subset that always includes every tensor's first element and all of
 * the small tensors: numel <= 256, or <= 16 when frac < 0.1) */

static __attribute__((unused)) void test_fd(const char *label, lina_config c, int B, int T, double frac)
{
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 7, &m);
    CHECK(rc == 0, "%s: create (%s)", label, rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    randomize(m);
    ref_model r = ref_of(m);
    int N = B * T, vocab = c.vocab_size;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t)), *tgt = malloc((size_t)N * sizeof(int32_t));
    rand_tokens(tok, tgt, N, vocab);
    size_t np = lina_model_num_params(m);
    double *P = malloc(np * sizeof(double)), *fd = calloc(np, sizeof(double));
    double *rlog = malloc((size_t)N * vocab * sizeof(double));
    float *logits = malloc((size_t)N * vocab * sizeof(float));
    const float *Pf = lina_model_params(m);
    for (size_t i = 0; i < np; i++) {
        P[i] = Pf[i];
    }
    /* forward: logits and loss */
    double rloss = ref_forward(&r, P, tok, tgt, B, T, rlog);
    lina_ws ws;
    lina_ws_init(&ws);
    rc = lina_model_forward_logits(m, tok, B, T, logits, &ws);
    double e = rc ? 1e30 : th_relerr_fd(logits, rlog, (size_t)N * vocab);
    CHECK(rc == 0 && e < FWD_TOL, "%s: logits vs double reference (B=%d T=%d) err %.2e", label, B, T, e);
    double loss = 0.0;
    lina_model_zero_grad(m);
    rc = lina_model_train_step(m, tok, tgt, B, T, &loss, &ws);
    CHECK(rc == 0 && fabs(loss - rloss) < 1e-5 * (1 + fabs(rloss)), "%s: loss %.8f vs reference %.8f", label, loss,
          rloss);
    /* central differences of the double reference, every parameter */
    size_t nchk = 0;
    for (size_t i = 0; i < np; i++) {
        int first = 0; /* first element of a tensor, or in a small tensor (<= 256) */
        for (int t = 0; t < lina_model_num_tensors(m); t++) {
            size_t off;
            int nd;
            const int64_t *sh;
            lina_model_tensor(m, t, NULL, &nd, &sh, &off, NULL);
            size_t n = 1;
            for (int q = 0; q < nd; q++) {
                n *= (size_t)sh[q];
            }
            first |= off == i || (i >= off && i < off + n && n <= (frac >= 0.1 ? 256u : 16u));
        }
        if (frac < 1.0 && !first && th_uniform(0, 1) >= frac) {
            fd[i] = NAN;
            continue;
        }
        nchk++;
        double p0 = P[i];
        P[i] = p0 + FD_H;
        double lp = ref_forward(&r, P, tok, tgt, B, T, NULL);
        P[i] = p0 - FD_H;
        double lm = ref_forward(&r, P, tok, tgt, B, T, NULL);
        P[i] = p0;
        fd[i] = (lp - lm) / (2 * FD_H);
    }
    const float *G = lina_model_grads(m);
    const char *worst = "";
    e = grad_error(m, G, fd, &worst);
    CHECK(rc == 0 && e < GRAD_TOL, "%s: %zu of %zu gradients vs FD of the double reference: worst %.2e (%s)", label,
          nchk, np, e, worst);
    /* the check can fail: a gradient off by 1% of its tensor's scale is caught */
    float *bad = malloc(np * sizeof(float));
    memcpy(bad, G, np * sizeof(float));
    size_t j = np / 2;
    double fmax = 0.0;
    for (size_t i = 0; i < np; i++) {
        fmax = fabs(fd[i]) > fmax ? fabs(fd[i]) : fmax;
    }
    while (isnan(fd[j])) {
        j++;
    }
    bad[j] += (float)(0.01 * fmax);
    const char *w2 = "";
    double e2 = grad_error(m, bad, fd, &w2);
    CHECK(e2 > GRAD_TOL, "%s: the FD check flags a planted gradient error (err %.2e)", label, e2);
    /* accumulation: a second step doubles the gradients (to float rounding:
     * the GEMMs add into the kept values, so the error scales with them) */
    memcpy(bad, G, np * sizeof(float));
    rc = lina_model_train_step(m, tok, tgt, B, T, &loss, &ws);
    double acc = 0.0;
    for (size_t i = 0; i < np; i++) {
        const double ref2 = fabs(2.0 * bad[i]), x = fabs((double)G[i] - 2.0 * bad[i]) / (ref2 > 1.0 ? ref2 : 1.0);
        acc = x > acc ? x : acc;
    }
    CHECK(rc == 0 && acc < 1e-5, "%s: gradients accumulate over two steps (err %.2e)", label, acc);
    /* repeatable: the same step from zero gradients gives bit-identical gradients */
    lina_model_zero_grad(m);
    rc = lina_model_train_step(m, tok, tgt, B, T, &loss, &ws);
    memcpy(bad, G, np * sizeof(float));
    lina_model_zero_grad(m);
    rc = rc ? rc : lina_model_train_step(m, tok, tgt, B, T, &loss, &ws);
    CHECK(rc == 0 && memcmp(bad, G, np * sizeof(float)) == 0, "%s: repeated steps give bit-identical gradients",
          label);
    /* eval_loss equals the train loss and leaves the gradients alone */
    double el = 0.0;
    memcpy(bad, G, np * sizeof(float));
    rc = lina_model_eval_loss(m, tok, tgt, B, T, &el, &ws);
    double aux = g_ref_aux; /* eval_loss is the cross-entropy alone */
    CHECK(rc == 0 && (aux == 0.0 ? el == loss : fabs(el + aux - loss) < 1e-5 * (1 + fabs(loss))) &&
              memcmp(bad, G, np * sizeof(float)) == 0,
          "%s: eval_loss %.8f", label, el);
    free(bad);
    lina_ws_free(&ws);
    free(tok);
    free(tgt);
    free(P);
    free(fd);
    free(rlog);
    free(logits);
    lina_model_free(m);
}

/* chunk form (prefill) against the recurrent form, across chunk boundaries */
static __attribute__((unused)) void test_forms(const char *label, lina_config c)
{
    lina_model *m = NULL;
    if (lina_model_create(&c, 3, &m)) {
        CHECK(0, "forms: create (%s)", lina_last_error());
        return;
    }
    randomize(m);
    int B = 2, T = 150, N = B * T, vocab = c.vocab_size;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t));
    rand_tokens(tok, NULL, N, vocab);
    float *a = malloc((size_t)N * vocab * sizeof(float)), *b = malloc((size_t)N * vocab * sizeof(float));
    int rc = lina_model_forward_logits_form(m, tok, B, T, a, LINA_FORM_CHUNK, NULL);
    rc = rc ? rc : lina_model_forward_logits_form(m, tok, B, T, b, LINA_FORM_RECURRENT, NULL);
    double e = 0.0, mx = 1.0;
    for (size_t i = 0; i < (size_t)N * vocab; i++) {
        double d = fabs((double)a[i] - b[i]);
        e = d > e || d != d ? d : e;
        mx = fabs(b[i]) > mx ? fabs(b[i]) : mx;
    }
    CHECK(rc == 0 && e / mx < 1e-4, "%s: prefill (chunk) logits = recurrent logits, B=%d T=%d, err %.2e", label, B,
          T, e / mx);
    free(tok);
    free(a);
    free(b);
    lina_model_free(m);
}

/* prefill + one-token decode steps = one forward pass (lina_model_decode), B sequences */
static __attribute__((unused)) void test_decode_batch(const char *label, lina_config c, int B)
{
    lina_model *m = NULL;
    if (lina_model_create(&c, 9, &m)) {
        CHECK(0, "%s: create (%s)", label, lina_last_error());
        return;
    }
    randomize(m);
    int T = 20, T0 = 7, N = B * T, vocab = c.vocab_size;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t)), *part = malloc((size_t)N * sizeof(int32_t));
    rand_tokens(tok, NULL, N, vocab);
    float *full = malloc((size_t)N * vocab * sizeof(float)), *lg = malloc((size_t)N * vocab * sizeof(float));
    lina_model_state *st = NULL;
    int rc = lina_model_forward_logits(m, tok, B, T, full, NULL);
    rc = rc ? rc : lina_model_state_create(m, B, T, &st);
    double e = 0.0, mx = 1.0;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        lina_model_state_reset(st);
        for (int t0 = 0; !rc && t0 < T;) {
            int len = t0 == 0 ? T0 : 1;
            for (int b = 0; b < B; b++) {
                memcpy(part + b * len, tok + b * T + t0, (size_t)len * sizeof(int32_t));
            }
            rc = lina_model_decode(m, st, part, B, len, lg, NULL);
            for (int b = 0; !rc && b < B; b++) {
                for (int t = 0; t < len; t++) {
                    for (int v = 0; v < vocab; v++) {
                        double x = full[((size_t)b * T + t0 + t) * vocab + v];
                        double dd = fabs((double)lg[((size_t)b * len + t) * vocab + v] - x);
                        e = dd > e || dd != dd ? dd : e;
                        mx = fabs(x) > mx ? fabs(x) : mx;
                    }
                }
            }
            t0 += len;
        }
    }
    CHECK(rc == 0 && e / mx < 1e-4 && lina_model_state_pos(st) == T,
          "%s: B %d, prefill %d + %d decode steps = one forward, twice with reset (err %.2e)", label, B, T0, T - T0,
          e / mx);
    if (!rc) {
        rc = lina_model_decode(m, st, part, B, 1, lg, NULL);
        int has_attn = 0;
        for (int l = 0; l < c.num_hidden_layers; l++) {
            has_attn |= (lina_kind_of_layer(&c, l)->flags & LINA_KIND_KV_CACHE) != 0;
        }
        CHECK(has_attn ? rc == LINA_EINVAL : rc == 0, "%s: decoding past max_len %s", label,
              has_attn ? "fails (KV cache full)" : "is fine (no KV cache)");
    }
    lina_model_state_free(st);
    free(tok);
    free(part);
    free(full);
    free(lg);
    lina_model_free(m);
}

static __attribute__((unused)) void test_decode(const char *label, lina_config c)
{
    test_decode_batch(label, c, 2);
}

#endif
