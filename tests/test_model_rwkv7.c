/* test_model_rwkv7.c -- the RWKV-7 LM (model_type "rwkv7", docs/mixers.md 14):
 * a double-precision reference of the whole model written here, token by
 * token (embedding, layer 0's pre_norm, per block LayerNorm, token shift and
 * the six mixes, r/k/v, the w/v/a/g LoRAs, v_first from layer 0, kk and the
 * k_a update, the DPLR state S = diag(exp w) S + b (a^T S) + k v^T, o = S^T r,
 * the per-head GroupNorm, the bonus term, the gate, o_proj, LayerNorm, the
 * token-shift relu^2 feed-forward; final LayerNorm, lm head); whole-model
 * logits, loss and finite-difference gradients, chunk vs recurrent form,
 * prefill + decode, packed documents, FLA's names, shapes and initial
 * values, the config keys and bad configs. */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"

#include <stdint.h>
#include <string.h>

#define FD_H 1e-5
#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

#include "model_ref.h"

/* ---------------------------------------------------- double reference */

static const double *rp(const ref_model *r, const double *P, int l, const char *suffix)
{
    char fmt[128];
    snprintf(fmt, sizeof(fmt), "model.layers.%%d.%s", suffix);
    return P + toff(r->m, fmt, l);
}

static const double *rp_opt(const ref_model *r, const double *P, int l, const char *suffix)
{
    char nm[128];
    snprintf(nm, sizeof(nm), "model.layers.%d.%s", l, suffix);
    return lina_model_find_tensor(r->m, nm) >= 0 ? rp(r, P, l, suffix) : NULL;
}

/* LayerNorm over groups of S of x [n] */
static void rln(double *y, const double *x, const double *w, const double *b, int n, int S, double eps)
{
    for (int g0 = 0; g0 < n; g0 += S) {
        double mu = 0.0, var = 0.0;
        for (int i = 0; i < S; i++) {
            mu += x[g0 + i];
        }
        mu /= S;
        for (int i = 0; i < S; i++) {
            var += (x[g0 + i] - mu) * (x[g0 + i] - mu);
        }
        var /= S;
        for (int i = 0; i < S; i++) {
            y[g0 + i] = (x[g0 + i] - mu) / sqrt(var + eps) * (w ? w[g0 + i] : 1.0) + (b ? b[g0 + i] : 0.0);
        }
    }
}

static double ref_rwkv7(const ref_model *r, const double *P, const int32_t *tok, const int32_t *tgt, int B, int T,
                        double *logits_out)
{
    const lina_config *c = r->c;
    const lina_model *m = r->m;
    const int D = c->hidden_size, H = c->num_heads, K = c->head_dim, Vd = c->value_dim ? c->value_dim : D;
    const int Vh = Vd / H, I = lina_config_mlp_size(c), L = c->num_hidden_layers, NV = c->vocab_size;
    const int rw = c->decay_low_rank_dim, rv = c->v_low_rank_dim, ra = c->a_low_rank_dim, rg = c->gate_low_rank_dim;
    const double eps = c->norm_eps;
    const int N = B * T;
    double *x = calloc((size_t)N * D, sizeof(double)), *vfirst = calloc((size_t)N * Vd, sizeof(double));
    double *u = calloc((size_t)T * D, sizeof(double)), *f = calloc((size_t)T * D, sizeof(double));
    double *S = calloc((size_t)H * K * Vh, sizeof(double));
    double *mx = calloc((size_t)6 * D, sizeof(double)), *rr = calloc(D, sizeof(double)), *kk0 = calloc(D, sizeof(double));
    double *k = calloc(D, sizeof(double)), *v = calloc(Vd, sizeof(double)), *w = calloc(D, sizeof(double));
    double *ic = calloc(D, sizeof(double)), *g = calloc(Vd, sizeof(double)), *lo = calloc(256, sizeof(double));
    double *lo2 = calloc(Vd > D ? Vd : D, sizeof(double)), *o = calloc(Vd, sizeof(double));
    double *kk = calloc(D, sizeof(double)), *fm = calloc(D, sizeof(double)), *hk = calloc(I, sizeof(double));
    double *tmp = calloc(D > Vd ? D : Vd, sizeof(double)), *lg = calloc(NV, sizeof(double));
    const double *emb = P + toff(m, "model.embeddings.weight", 0);
    for (int n = 0; n < N; n++) {
        memcpy(x + (size_t)n * D, emb + (size_t)tok[n] * D, D * sizeof(double));
    }
    for (int l = 0; l < L; l++) {
        const double *pw = rp_opt(r, P, l, "pre_norm.weight"), *pb = rp_opt(r, P, l, "pre_norm.bias");
        const double *aw = rp(r, P, l, "attn_norm.weight"), *ab = rp_opt(r, P, l, "attn_norm.bias");
        const double *fw = rp(r, P, l, "ffn_norm.weight"), *fb = rp_opt(r, P, l, "ffn_norm.bias");
        static const char *const mn[6] = {"attn.x_r", "attn.x_w", "attn.x_k", "attn.x_v", "attn.x_a", "attn.x_g"};
        const double *mu[6];
        for (int j = 0; j < 6; j++) {
            mu[j] = rp(r, P, l, mn[j]);
        }
        const double *k_k = rp(r, P, l, "attn.k_k"), *k_a = rp(r, P, l, "attn.k_a"), *r_k = rp(r, P, l, "attn.r_k");
        const double *Wr = rp(r, P, l, "attn.r_proj.weight"), *Wk = rp(r, P, l, "attn.k_proj.weight");
        const double *Wv = rp(r, P, l, "attn.v_proj.weight"), *Wo = rp(r, P, l, "attn.o_proj.weight");
        const double *W1 = rp(r, P, l, "attn.w_lora.lora.0.weight"), *W2 = rp(r, P, l, "attn.w_lora.lora.2.weight");
        const double *Wb = rp(r, P, l, "attn.w_lora.lora.2.bias");
        const double *A1 = rp(r, P, l, "attn.a_lora.lora.0.weight"), *A2 = rp(r, P, l, "attn.a_lora.lora.2.weight");
        const double *Ab = rp(r, P, l, "attn.a_lora.lora.2.bias");
        const double *G1 = rp(r, P, l, "attn.g_lora.lora.0.weight"), *G2 = rp(r, P, l, "attn.g_lora.lora.2.weight");
        const double *V1 = l ? rp(r, P, l, "attn.v_lora.lora.0.weight") : NULL;
        const double *V2 = l ? rp(r, P, l, "attn.v_lora.lora.2.weight") : NULL;
        const double *Vb = l ? rp(r, P, l, "attn.v_lora.lora.2.bias") : NULL;
        const double *gnw = rp(r, P, l, "attn.g_norm.weight"), *gnb = rp(r, P, l, "attn.g_norm.bias");
        const double *fx = rp(r, P, l, "ffn.x_k"), *Wkey = rp(r, P, l, "ffn.key.weight");
        const double *Wval = rp(r, P, l, "ffn.value.weight");
        for (int b = 0; b < B; b++) {
            double *xb = x + (size_t)b * T * D;
            if (pw) {
                for (int t = 0; t < T; t++) {
                    rln(xb + (size_t)t * D, xb + (size_t)t * D, pw, pb, D, D, eps);
                }
            }
            for (int t = 0; t < T; t++) {
                rln(u + (size_t)t * D, xb + (size_t)t * D, aw, ab, D, D, eps);
            }
            memset(S, 0, sizeof(double) * (size_t)H * K * Vh);
            for (int t = 0; t < T; t++) {
                const double *ut = u + (size_t)t * D;
                for (int j = 0; j < 6; j++) {
                    for (int i = 0; i < D; i++) {
                        double prev = t ? ut[i - D] : 0.0;
                        mx[j * D + i] = ut[i] + (prev - ut[i]) * mu[j][i];
                    }
                }
                const double *xr = mx, *xw = mx + D, *xk = mx + 2 * D, *xv = mx + 3 * D, *xa = mx + 4 * D,
                             *xg = mx + 5 * D;
                rlin(rr, Wr, NULL, xr, D, D);
                rlin(k, Wk, NULL, xk, D, D);
                rlin(v, Wv, NULL, xv, D, Vd);
                rlin(lo, W1, NULL, xw, D, rw);
                for (int i = 0; i < rw; i++) {
                    lo[i] = tanh(lo[i]);
                }
                rlin(w, W2, Wb, lo, rw, D);
                for (int i = 0; i < D; i++) {
                    w[i] = -exp(-0.5) * rsig(w[i]);
                }
                double *vf = vfirst + ((size_t)b * T + t) * Vd;
                if (l == 0) {
                    memcpy(vf, v, Vd * sizeof(double));
                } else {
                    rlin(lo, V1, NULL, xv, D, rv);
                    rlin(lo2, V2, Vb, lo, rv, Vd);
                    for (int i = 0; i < Vd; i++) {
                        v[i] += (vf[i] - v[i]) * rsig(lo2[i]);
                    }
                }
                rlin(lo, A1, NULL, xa, D, ra);
                rlin(ic, A2, Ab, lo, ra, D);
                for (int i = 0; i < D; i++) {
                    ic[i] = rsig(ic[i]);
                }
                rlin(lo, G1, NULL, xg, D, rg);
                for (int i = 0; i < rg; i++) {
                    lo[i] = rsig(lo[i]);
                }
                rlin(g, G2, NULL, lo, rg, Vd);
                for (int i = 0; i < D; i++) {
                    kk0[i] = k[i] * k_k[i];
                }
                for (int h = 0; h < H; h++) {
                    memcpy(kk + h * K, kk0 + h * K, K * sizeof(double));
                    rl2(kk + h * K, K);
                }
                for (int i = 0; i < D; i++) {
                    k[i] *= 1.0 + (ic[i] - 1.0) * k_a[i];
                }
                for (int h = 0; h < H; h++) {
                    double *Sh = S + (size_t)h * K * Vh;
                    const double *kh = k + h * K, *ah = kk + h * K, *ich = ic + h * K, *wh = w + h * K;
                    const double *vh = v + h * Vh, *rh = rr + h * K;
                    for (int j = 0; j < Vh; j++) { /* column j: s = diag(e^w) s + b (a^T s) + k v_j */
                        double aS = 0.0;
                        for (int i = 0; i < K; i++) {
                            aS += -ah[i] * Sh[(size_t)i * Vh + j];
                        }
                        for (int i = 0; i < K; i++) {
                            double *s = Sh + (size_t)i * Vh + j;
                            *s = exp(wh[i]) * *s + ah[i] * ich[i] * aS + kh[i] * vh[j];
                        }
                    }
                    for (int j = 0; j < Vh; j++) {
                        double s = 0.0;
                        for (int i = 0; i < K; i++) {
                            s += Sh[(size_t)i * Vh + j] * rh[i];
                        }
                        o[h * Vh + j] = s;
                    }
                }
                rln(o, o, gnw, gnb, Vd, Vh, K * eps);
                for (int h = 0; h < H; h++) {
                    double s = 0.0;
                    for (int i = 0; i < K; i++) {
                        s += rr[h * K + i] * k[h * K + i] * r_k[h * K + i];
                    }
                    for (int j = 0; j < Vh; j++) {
                        o[h * Vh + j] = (o[h * Vh + j] + s * v[h * Vh + j]) * g[h * Vh + j];
                    }
                }
                rlin(tmp, Wo, NULL, o, Vd, D);
                for (int i = 0; i < D; i++) {
                    xb[(size_t)t * D + i] += tmp[i];
                }
            }
            for (int t = 0; t < T; t++) {
                rln(f + (size_t)t * D, xb + (size_t)t * D, fw, fb, D, D, eps);
            }
            for (int t = 0; t < T; t++) {
                for (int i = 0; i < D; i++) {
                    double prev = t ? f[(size_t)(t - 1) * D + i] : 0.0, cur = f[(size_t)t * D + i];
                    fm[i] = cur + (prev - cur) * fx[i];
                }
                rlin(hk, Wkey, NULL, fm, D, I);
                for (int i = 0; i < I; i++) {
                    hk[i] = hk[i] > 0 ? hk[i] * hk[i] : 0.0;
                }
                rlin(tmp, Wval, NULL, hk, I, D);
                for (int i = 0; i < D; i++) {
                    xb[(size_t)t * D + i] += tmp[i];
                }
            }
        }
    }
    const double *nw = P + toff(m, "model.norm.weight", 0);
    const double *nb = lina_model_find_tensor(m, "model.norm.bias") >= 0 ? P + toff(m, "model.norm.bias", 0) : NULL;
    const double *Wlm = P + toff(m, c->tie_word_embeddings ? "model.embeddings.weight" : "lm_head.weight", 0);
    double loss = 0.0;
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        rln(tmp, x + (size_t)n * D, nw, nb, D, D, eps);
        rlin(lg, Wlm, NULL, tmp, D, NV);
        if (logits_out) {
            memcpy(logits_out + (size_t)n * NV, lg, NV * sizeof(double));
        }
        if (tgt && tgt[n] != LINA_IGNORE_INDEX) {
            double mxl = lg[0], se = 0.0;
            for (int j = 1; j < NV; j++) {
                mxl = lg[j] > mxl ? lg[j] : mxl;
            }
            for (int j = 0; j < NV; j++) {
                se += exp(lg[j] - mxl);
            }
            loss += mxl + log(se) - lg[tgt[n]];
            cnt++;
        }
    }
    free(x); free(vfirst); free(u); free(f); free(S); free(mx); free(rr); free(kk0); free(k); free(v); free(w);
    free(ic); free(g); free(lo); free(lo2); free(o); free(kk); free(fm); free(hk); free(tmp); free(lg);
    return cnt ? loss / cnt : 0.0;
}

/* ------------------------------------------------------------ configs */

static lina_config tiny(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_RWKV7);
    c.hidden_size = 8;
    c.head_dim = 4;
    c.num_heads = 2;
    c.num_hidden_layers = 3;
    c.vocab_size = 20;
    c.decay_low_rank_dim = 3;
    c.gate_low_rank_dim = 4;
    c.a_low_rank_dim = 2;
    c.v_low_rank_dim = 2;
    c.intermediate_size = 16;
    return c;
}

static void test_names(void)
{
    lina_config c = tiny();
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 5, &m);
    CHECK(rc == 0, "names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    const int D = 8, H = 2, K = 4, I = 16, V = 20;
    check_tensor(m, "model.embeddings.weight", 2, V, D, 0, 0);
    check_tensor(m, "model.layers.0.pre_norm.weight", 1, D, 0, 0, 0);
    check_tensor(m, "model.layers.0.pre_norm.bias", 1, D, 0, 0, 0);
    CHECK(lina_model_find_tensor(m, "model.layers.1.pre_norm.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.v_lora.lora.0.weight") < 0,
          "names: pre_norm only in layer 0, v_lora only after it");
    for (int l = 0; l < 3; l++) {
        char nm[128];
#define NM(s) (snprintf(nm, sizeof(nm), "model.layers.%d.%s", l, s), nm)
        check_tensor(m, NM("attn_norm.weight"), 1, D, 0, 0, 0);
        check_tensor(m, NM("attn_norm.bias"), 1, D, 0, 0, 0);
        check_tensor(m, NM("attn.x_r"), 3, 1, 1, D, 0);
        check_tensor(m, NM("attn.x_g"), 3, 1, 1, D, 0);
        check_tensor(m, NM("attn.k_k"), 1, D, 0, 0, 0);
        check_tensor(m, NM("attn.k_a"), 1, D, 0, 0, 0);
        check_tensor(m, NM("attn.r_k"), 2, H, K, 0, 0);
        check_tensor(m, NM("attn.r_proj.weight"), 2, D, D, 0, 1);
        check_tensor(m, NM("attn.k_proj.weight"), 2, D, D, 0, 1);
        check_tensor(m, NM("attn.v_proj.weight"), 2, D, D, 0, 1);
        check_tensor(m, NM("attn.o_proj.weight"), 2, D, D, 0, 1);
        check_tensor(m, NM("attn.w_lora.lora.0.weight"), 2, 3, D, 0, 1);
        check_tensor(m, NM("attn.w_lora.lora.2.weight"), 2, D, 3, 0, 1);
        check_tensor(m, NM("attn.w_lora.lora.2.bias"), 1, D, 0, 0, 0);
        check_tensor(m, NM("attn.a_lora.lora.0.weight"), 2, 2, D, 0, 1);
        check_tensor(m, NM("attn.a_lora.lora.2.bias"), 1, D, 0, 0, 0);
        check_tensor(m, NM("attn.g_lora.lora.0.weight"), 2, 4, D, 0, 1);
        check_tensor(m, NM("attn.g_lora.lora.2.weight"), 2, D, 4, 0, 1);
        check_tensor(m, NM("attn.g_norm.weight"), 1, D, 0, 0, 0);
        check_tensor(m, NM("attn.g_norm.bias"), 1, D, 0, 0, 0);
        check_tensor(m, NM("ffn_norm.weight"), 1, D, 0, 0, 0);
        check_tensor(m, NM("ffn_norm.bias"), 1, D, 0, 0, 0);
        check_tensor(m, NM("ffn.x_k"), 1, D, 0, 0, 0);
        check_tensor(m, NM("ffn.key.weight"), 2, I, D, 0, 1);
        check_tensor(m, NM("ffn.value.weight"), 2, D, I, 0, 1);
        if (l) {
            check_tensor(m, NM("attn.v_lora.lora.0.weight"), 2, 2, D, 0, 1);
            check_tensor(m, NM("attn.v_lora.lora.2.weight"), 2, D, 2, 0, 1);
            check_tensor(m, NM("attn.v_lora.lora.2.bias"), 1, D, 0, 0, 0);
        }
#undef NM
    }
    check_tensor(m, "model.norm.weight", 1, D, 0, 0, 0);
    check_tensor(m, "model.norm.bias", 1, D, 0, 0, 0);
    check_tensor(m, "lm_head.weight", 2, V, D, 0, 1);
    int stray = 0;
    for (int i = 0; i < lina_model_num_tensors(m); i++) {
        const char *name;
        lina_model_tensor(m, i, &name, NULL, NULL, NULL, NULL);
        stray += strstr(name, "mlp") != NULL || strstr(name, "g_norm_swish") != NULL;
    }
    CHECK(stray == 0 && lina_model_num_tensors(m) == 1 + 2 + 3 * 30 + 2 * 3 + 2 + 1,
          "names: %d tensors, no mlp", lina_model_num_tensors(m));
    /* FLA's initial values (layer 1 of 3: ratio_0_to_1 = 0.5, ratio_1_to_almost0 = 2/3) */
    size_t n;
    const float *p = tensor_data(m, "model.layers.1.attn.x_r", &n);
    int ok = p && n == (size_t)D;
    for (size_t i = 0; ok && i < n; i++) {
        ok = fabs(p[i] - (1.0 - pow((double)i / D, 0.2 * (2.0 / 3.0)))) < 1e-6;
    }
    CHECK(ok, "init: x_r = 1 - (i/D)^(0.2 (1 - l/L))");
    p = tensor_data(m, "model.layers.1.attn.w_lora.lora.2.bias", &n);
    double zz = ((5 % K) - 1.5) / 1.5;
    zz *= fabs(zz);
    double want = -6.0 + 6.0 * pow(5.0 / 7.0, 1.0 + pow(0.5, 0.3)) + 0.5 + 2.5 * zz;
    CHECK(p && fabs(p[5] - want) < 1e-5, "init: w_lora bias[5] %.5f (FLA's %.5f)", p ? p[5] : 0.0, want);
    p = tensor_data(m, "model.layers.2.attn.g_norm.weight", &n);
    CHECK(p && fabsf(p[0] - 1.0f) < 1e-6f, "init: g_norm.weight of the last layer = 1");
    const float *o = tensor_data(m, "model.layers.0.attn.o_proj.weight", &n);
    const float *fv = tensor_data(m, "model.layers.0.ffn.value.weight", &n);
    const float *a0 = tensor_data(m, "model.layers.0.attn.a_lora.lora.0.weight", &n);
    const float *kk = tensor_data(m, "model.layers.0.attn.k_k", &n);
    const float *ra = tensor_data(m, "model.layers.0.attn.r_k", &n);
    CHECK(o && fv && a0 && o[3] == 0.0f && fv[7] == 0.0f && a0[1] == 0.0f && fabsf(kk[0] - 0.76f) < 1e-6f &&
              ra[0] == -0.04f,
          "init: o_proj, ffn.value and LoRA down-projections zero; k_k = 0.71 - 0.1 linear; r_k = -0.04");
    lina_model_free(m);
    c = tiny();
    c.norm_bias = 0;
    c.norm_first = 0;
    rc = lina_model_create(&c, 5, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "model.layers.0.pre_norm.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.1.attn_norm.bias") < 0 &&
              lina_model_find_tensor(m, "model.norm.bias") < 0 &&
              lina_model_find_tensor(m, "model.layers.1.attn.g_norm.bias") >= 0,
          "names: no pre_norm without norm_first, no LayerNorm biases without norm_bias (g_norm keeps its own)");
    lina_model_free(m);
}

static void test_config(void)
{
    const char *js = "{\"model_type\": \"rwkv7\", \"hidden_size\": 128, \"vocab_size\": 30, "
                     "\"num_hidden_layers\": 2}";
    lina_config c;
    int rc = lina_config_parse(js, strlen(js), "config.json", &c);
    CHECK(rc == 0 && c.num_heads == 2 && c.head_dim == 64 && c.decay_low_rank_dim == 64 &&
              c.gate_low_rank_dim == 128 && c.a_low_rank_dim == 64 && c.v_low_rank_dim == 16 &&
              !strcmp(c.hidden_act, "sqrelu") && c.norm_first && c.norm_bias && c.norm_eps == 1e-5 &&
              lina_config_mlp_size(&c) == 512 && c.value_dim == 0,
          "config: FLA's RWKV7Config defaults; num_heads = 128 / 64, FFN width 512 (%s)",
          rc ? lina_last_error() : "ok");
    char *out = rc ? NULL : lina_config_json(&c);
    lina_config c2;
    rc = out ? lina_config_parse(out, strlen(out), "written", &c2) : 1;
    CHECK(rc == 0 && c2.num_heads == 2 && strstr(out, "\"RWKV7ForCausalLM\"") && strstr(out, "\"norm_first\"") &&
              !strstr(out, "use_short_conv"),
          "config: written and read back");
    free(out);
    js = "{\"model_type\": \"rwkv7\", \"hidden_size\": 100, \"hidden_ratio\": 3.5}";
    rc = lina_config_parse(js, strlen(js), "config.json", &c);
    CHECK(rc != 0, "config: hidden_size 100 with head_dim 64 refused: %s", lina_last_error());
    js = "{\"model_type\": \"rwkv7\", \"hidden_size\": 96, \"head_dim\": 32, \"hidden_ratio\": 3.5}";
    rc = lina_config_parse(js, strlen(js), "config.json", &c);
    CHECK(rc == 0 && lina_config_mlp_size(&c) == 352, "config: FFN width 32 * ceil(96 * 3.5 / 32) = 352 (got %d)",
          lina_config_mlp_size(&c));
    const char *bad[] = {
        "{\"model_type\": \"rwkv7\", \"hidden_act\": \"swish\"}",
        "{\"model_type\": \"rwkv7\", \"value_dim\": 1000}",
        "{\"model_type\": \"rwkv7\", \"decay_low_rank_dim\": 0}",
        "{\"model_type\": \"rwkv7\", \"num_experts\": 4}",
        "{\"model_type\": \"rwkv7\", \"attn\": {\"layers\": [0], \"num_heads\": 4}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = lina_config_parse(bad[i], strlen(bad[i]), "config.json", &c);
        CHECK(rc != 0, "config: bad rwkv7 config refused: %s", lina_last_error());
    }
}

/* packed documents: each document's logits equal its own forward */
static void test_packed(void)
{
    lina_config c = tiny();
    lina_model *m = NULL;
    if (lina_model_create(&c, 4, &m)) {
        CHECK(0, "packed: create (%s)", lina_last_error());
        return;
    }
    randomize(m);
    const int T = 13, vocab = c.vocab_size;
    const int64_t cu[3] = {0, 5, 13};
    int32_t tok[13], tgt[13];
    rand_tokens(tok, tgt, T, vocab);
    for (int i = 0; i < T; i++) {
        tgt[i] = tgt[i] == LINA_IGNORE_INDEX ? 1 : tgt[i];
    }
    double lp = 0.0, l0 = 0.0, l1 = 0.0;
    int rc = lina_model_eval_loss_varlen(m, tok, tgt, 1, T, cu, 3, &lp, NULL);
    rc = rc ? rc : lina_model_eval_loss(m, tok, tgt, 1, 5, &l0, NULL);
    rc = rc ? rc : lina_model_eval_loss(m, tok + 5, tgt + 5, 1, 8, &l1, NULL);
    double want = (5 * l0 + 8 * l1) / 13;
    CHECK(rc == 0 && fabs(lp - want) < 1e-5 * (1 + fabs(want)),
          "packed documents: loss %.7f = the documents' own %.7f (%s)", lp, want, rc ? lina_last_error() : "ok");
    lina_model_free(m);
}

int main(void)
{
    g_ref_model = ref_rwkv7;
    (void)rconv;
    (void)rlogsig;
    (void)rsoftplus;
    (void)rrms;
    lina_set_threads(1);
    test_names();
    test_config();
    test_fd("rwkv7", tiny(), 2, 7, 1.0);
    lina_config v = tiny();
    v.norm_bias = 0;
    v.norm_first = 0;
    v.value_dim = 12;
    v.tie_word_embeddings = 1;
    test_fd("rwkv7 value_dim 12, no biases, no pre_norm, tied", v, 2, 5, 0.5);
    test_fd("rwkv7 long (T = 70)", tiny(), 1, 70, 0.05);
    lina_set_threads(2);
    test_forms("rwkv7 forms", tiny());
    test_decode("rwkv7 decode", tiny());
    test_decode("rwkv7 decode, value_dim 12", v);
    test_packed();
    return th_exit();
}
