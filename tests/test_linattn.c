/* test_linattn.c -- LoRA-wrapped Linear (src/nn/lora.c) and linearized
 * attention (src/nn/linattn_layer.c: sliding-window softmax + linear attention
 * on hedgehog or softmax feature maps, LoLCATs' learned mix with a shared
 * normaliser or Liger's fixed mix, the optional key-pooled gate, LoRA on
 * q/k/v/o, the attention-transfer mode). A double-precision reference written
 * here token by token plugs into the reference LM (model_ref.h): logits, loss
 * and every parameter gradient against central finite differences, chunk form
 * against recurrent form, prefill + decode against one forward. */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"
#include "../src/nn/nn.h"
#include "../src/train/linearize.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FD_H 1e-5
#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

#include "model_ref.h"

/* ------------------------------------------------------------ LoRA */

static void test_lora(void)
{
    int N = 5, in = 7, out = 6, r = 3;
    float s = 1.7f;
    double x[35], W[42], A[21], Bm[18], dy[30];
    float xf[35], Wf[42], Af[21], Bf[18], dyf[30], y[30], t[15], u[15];
    double *all[5] = {x, W, A, Bm, dy};
    float *allf[5] = {xf, Wf, Af, Bf, dyf};
    int len[5] = {35, 42, 21, 18, 30};
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < len[k]; i++) {
            all[k][i] = th_normal();
            allf[k][i] = (float)all[k][i];
            all[k][i] = allf[k][i];
        }
    }
    /* reference forward and the loss sum(dy * y) */
    double *prm[4] = {x, W, A, Bm};
    double ry[30];
#define REF_FWD(Y)                                                                        \
    for (int n = 0; n < N; n++) {                                                         \
        double tt[3];                                                                     \
        for (int j = 0; j < r; j++) {                                                     \
            tt[j] = 0.0;                                                                  \
            for (int i = 0; i < in; i++) tt[j] += A[j * in + i] * x[n * in + i];          \
        }                                                                                 \
        for (int o = 0; o < out; o++) {                                                   \
            double v = 0.0;                                                               \
            for (int i = 0; i < in; i++) v += W[o * in + i] * x[n * in + i];              \
            for (int j = 0; j < r; j++) v += s * Bm[o * r + j] * tt[j];                   \
            (Y)[n * out + o] = v;                                                         \
        }                                                                                 \
    }
    REF_FWD(ry);
    lina_lora_forward(y, t, xf, Wf, Af, Bf, s, N, in, out, r);
    double e = th_relerr_fd(y, ry, 30);
    CHECK(e < 1e-5, "lora: forward vs double reference err %.2e", e);
    float dx[35] = {0}, dW[42] = {0}, dA[21] = {0}, dB[18] = {0};
    lina_lora_backward(dx, dW, dA, dB, u, dyf, xf, t, Wf, Af, Bf, s, N, in, out, r);
    float *g[4] = {dx, dW, dA, dB};
    const char *nm[4] = {"dx", "dW", "dA", "dB"};
    for (int k = 0; k < 4; k++) {
        double worst = 0.0, mx = 1e-9;
        for (int i = 0; i < len[k]; i++) {
            double p0 = prm[k][i], yp[30], ym[30], lp = 0.0, lm = 0.0;
            prm[k][i] = p0 + 1e-6;
            REF_FWD(yp);
            prm[k][i] = p0 - 1e-6;
            REF_FWD(ym);
            prm[k][i] = p0;
            for (int j = 0; j < 30; j++) {
                lp += dy[j] * yp[j];
                lm += dy[j] * ym[j];
            }
            double fd = (lp - lm) / 2e-6;
            worst = fabs(fd - g[k][i]) > worst ? fabs(fd - g[k][i]) : worst;
            mx = fabs(fd) > mx ? fabs(fd) : mx;
        }
        CHECK(worst / mx < 1e-4, "lora: %s vs finite differences err %.2e", nm[k], worst / mx);
    }
#undef REF_FWD
    /* merged: the plain Linear with W + s B A gives the same output */
    float Wm[42], y2[30];
    memcpy(Wm, Wf, sizeof Wm);
    lina_lora_merge(Wm, Af, Bf, s, in, out, r);
    lina_linear_forward(y2, xf, Wm, NULL, N, in, out);
    CHECK(th_relerr(y2, y, 30) < 1e-5, "lora: merged weight = adapter output (err %.2e)", th_relerr(y2, y, 30));
    /* rank 0 is the plain Linear */
    lina_lora_forward(y2, t, xf, Wf, NULL, NULL, s, N, in, out, 0);
    lina_linear_forward(y, xf, Wf, NULL, N, in, out);
    CHECK(memcmp(y, y2, sizeof y) == 0, "lora: rank 0 is the plain Linear");
}

/* ------------------------------------------------------------ layer reference */

static void rsoftmax(double *y, const double *u, int n, double sign)
{
    double mx = -1e300, s = 0.0;
    for (int i = 0; i < n; i++) {
        mx = sign * u[i] > mx ? sign * u[i] : mx;
    }
    for (int i = 0; i < n; i++) {
        y[i] = exp(sign * u[i] - mx);
        s += y[i];
    }
    for (int i = 0; i < n; i++) {
        y[i] /= s;
    }
}

static void rphi(double *phi, const double *x, const double *Wf, int d)
{
    if (!Wf) {
        rsoftmax(phi, x, d, 1.0);
        return;
    }
    double u[64];
    rlin(u, Wf, NULL, x, d, d);
    rsoftmax(phi, u, d, 1.0);
    rsoftmax(phi + d, u, d, -1.0);
}

/* a projection with its LoRA adapter (rank from the config) */
static void rproj(double *y, const ref_model *r, const double *P, int l, const char *nm, const double *x, int in,
                  int out)
{
    char f[96];
    snprintf(f, sizeof f, "model.layers.%%d.attn.%s.weight", nm);
    rlin(y, P + toff(r->m, f, l), NULL, x, in, out);
    int rk = r->c->lora_rank;
    if (rk > 0) {
        double t[16], z[256];
        snprintf(f, sizeof f, "model.layers.%%d.attn.%s.lora_A.weight", nm);
        rlin(t, P + toff(r->m, f, l), NULL, x, in, rk);
        snprintf(f, sizeof f, "model.layers.%%d.attn.%s.lora_B.weight", nm);
        rlin(z, P + toff(r->m, f, l), NULL, t, rk, out);
        for (int o = 0; o < out; o++) {
            y[o] += r->c->lora_alpha / rk * z[o];
        }
    }
}

static double ref_linattn(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_config *c = r->c;
    int D = r->D, H = c->num_heads, d = D / H, HQ = H * d, W = c->window_size;
    int hh = !strcmp(c->linear_feature_map, "hedgehog"), F = hh ? 2 * d : d, lol = !strcmp(c->linear_method, "lolcats");
    int Vx = d + lol, gate = c->linear_gate;
    double base = c->rope_theta > 0 ? c->rope_theta : 10000.0, aux = 0.0;
    const double *Fq = hh ? P + toff(r->m, "model.layers.%d.attn.feature_map_q.weight", l) : NULL;
    const double *Fk = hh ? P + toff(r->m, "model.layers.%d.attn.feature_map_k.weight", l) : NULL;
    const double *wfac = lol ? P + toff(r->m, "model.layers.%d.attn.window_factors", l) : NULL;
    size_t NT = (size_t)T;
    double *q = calloc(NT * HQ, 8), *k = calloc(NT * HQ, 8), *v = calloc(NT * HQ, 8), *kp = calloc(NT * HQ, 8);
    double *y = calloc(NT * HQ, 8), *yt = calloc(NT * HQ, 8), *S = calloc((size_t)F * Vx, 8);
    for (int b = 0; b < B; b++) {
        const double *xb = xn + (size_t)b * T * D;
        for (int t = 0; t < T; t++) {
            rproj(q + t * HQ, r, P, l, "q_proj", xb + (size_t)t * D, D, HQ);
            rproj(kp + t * HQ, r, P, l, "k_proj", xb + (size_t)t * D, D, HQ);
            rproj(v + t * HQ, r, P, l, "v_proj", xb + (size_t)t * D, D, HQ);
            memcpy(k + t * HQ, kp + t * HQ, (size_t)HQ * 8);
            for (int h = 0; h < 2 * H; h++) {
                double *x = h < H ? q + t * HQ + h * d : k + t * HQ + (h - H) * d;
                for (int i = 0; i < d / 2; i++) {
                    double ang = t * pow(base, -2.0 * i / d), x1 = x[i], x2 = x[i + d / 2];
                    x[i] = x1 * cos(ang) - x2 * sin(ang);
                    x[i + d / 2] = x2 * cos(ang) + x1 * sin(ang);
                }
            }
        }
        for (int h = 0; h < H; h++) {
            double f = lol ? rsig(wfac[h]) : c->window_factor;
            memset(S, 0, (size_t)F * Vx * 8);
            for (int t = 0; t < T; t++) {
                /* the linear state: token t (liger) or t - W (lolcats) joins */
                int j = lol ? t - W : t;
                if (j >= 0) {
                    double phk[128];
                    rphi(phk, k + j * HQ + h * d, Fk ? Fk + (size_t)h * d * d : NULL, d);
                    for (int cc = 0; cc < F; cc++) {
                        double dec = gate ? exp(rlogsig(kp[j * HQ + h * d + cc % d]) / 16.0) : 1.0;
                        for (int i = 0; i < Vx; i++) {
                            S[cc * Vx + i] = dec * S[cc * Vx + i] + phk[cc] * (i < d ? v[j * HQ + h * d + i] : 1.0);
                        }
                    }
                }
                double phq[128], lo[65], sc[512], mx = -1e300, den = 0.0, num[64];
                rphi(phq, q + t * HQ + h * d, Fq ? Fq + (size_t)h * d * d : NULL, d);
                for (int i = 0; i < Vx; i++) {
                    lo[i] = 0.0;
                    for (int cc = 0; cc < F; cc++) {
                        lo[i] += phq[cc] * S[cc * Vx + i];
                    }
                }
                int j0 = t - W + 1 > 0 ? t - W + 1 : 0;
                for (int jj = j0; jj <= t; jj++) {
                    double dot = 0.0;
                    for (int i = 0; i < d; i++) {
                        dot += q[t * HQ + h * d + i] * k[jj * HQ + h * d + i];
                    }
                    sc[jj] = dot / sqrt((double)d);
                    mx = sc[jj] > mx ? sc[jj] : mx;
                }
                for (int i = 0; i < d; i++) {
                    num[i] = 0.0;
                }
                for (int jj = j0; jj <= t; jj++) {
                    double e = exp(sc[jj] - mx);
                    den += e;
                    for (int i = 0; i < d; i++) {
                        num[i] += e * v[jj * HQ + h * d + i];
                    }
                }
                for (int i = 0; i < d; i++) {
                    y[t * HQ + h * d + i] = lol ? (f * num[i] + lo[i]) / (f * den + lo[d])
                                                : f * num[i] / den + (1.0 - f) * lo[i];
                }
                if (c->attn_transfer) { /* full causal softmax attention */
                    double m2 = -1e300, se = 0.0;
                    for (int jj = 0; jj <= t; jj++) {
                        double dot = 0.0;
                        for (int i = 0; i < d; i++) {
                            dot += q[t * HQ + h * d + i] * k[jj * HQ + h * d + i];
                        }
                        sc[jj] = dot / sqrt((double)d);
                        m2 = sc[jj] > m2 ? sc[jj] : m2;
                    }
                    for (int i = 0; i < d; i++) {
                        num[i] = 0.0;
                    }
                    for (int jj = 0; jj <= t; jj++) {
                        double e = exp(sc[jj] - m2);
                        se += e;
                        for (int i = 0; i < d; i++) {
                            num[i] += e * v[jj * HQ + h * d + i];
                        }
                    }
                    for (int i = 0; i < d; i++) {
                        yt[t * HQ + h * d + i] = num[i] / se;
                        double e = y[t * HQ + h * d + i] - yt[t * HQ + h * d + i];
                        aux += e * e / ((double)B * T * HQ);
                    }
                }
            }
        }
        for (int t = 0; t < T; t++) {
            rproj(out + ((size_t)b * T + t) * D, r, P, l, "o_proj", (c->attn_transfer ? yt : y) + t * HQ, HQ, D);
        }
    }
    free(q);
    free(k);
    free(v);
    free(kp);
    free(y);
    free(yt);
    free(S);
    return aux;
}

/* ------------------------------------------------------------ configs */

static lina_config tiny(const char *method, const char *fmap, int gate, int W, int lora)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_TRANSFORMER);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    snprintf(c.linear_method, sizeof c.linear_method, "%s", method);
    snprintf(c.linear_feature_map, sizeof c.linear_feature_map, "%s", fmap);
    c.linear_gate = gate;
    c.window_size = W;
    c.window_factor = strcmp(method, "liger") ? 0.0 : 0.5;
    c.lora_rank = lora;
    c.lora_alpha = 4.0;
    return c;
}

static void test_names(void)
{
    lina_config c = tiny("lolcats", "hedgehog", 0, 4, 2);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0, "names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    check_tensor(m, "model.layers.1.attn.q_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.layers.1.attn.feature_map_q.weight", 3, 2, 8, 8, 0);
    check_tensor(m, "model.layers.0.attn.window_factors", 1, 2, 0, 0, 0);
    check_tensor(m, "model.layers.0.attn.q_proj.lora_A.weight", 2, 2, 16, 0, 0);
    check_tensor(m, "model.layers.0.attn.o_proj.lora_B.weight", 2, 16, 2, 0, 0);
    size_t n = 0;
    const float *fm = tensor_data(m, "model.layers.0.attn.feature_map_k.weight", &n);
    int eye = n == 128;
    for (size_t i = 0; eye && i < n; i++) {
        eye = fm[i] == ((i % 8) == ((i / 8) % 8) ? 1.0f : 0.0f);
    }
    const float *lb = tensor_data(m, "model.layers.0.attn.v_proj.lora_B.weight", &n);
    int zero = n == 32;
    for (size_t i = 0; zero && i < n; i++) {
        zero = lb[i] == 0.0f;
    }
    CHECK(eye && zero, "names: hedgehog maps start at identity blocks, lora_B at zero");
    /* the state does not grow with max_len */
    lina_model_state *s1 = NULL, *s2 = NULL;
    rc = lina_model_state_create(m, 1, 64, &s1);
    rc = rc ? rc : lina_model_state_create(m, 1, 4096, &s2);
    CHECK(rc == 0 && lina_model_state_layer_floats(s1, 0) == lina_model_state_layer_floats(s2, 0),
          "decode state is constant in max_len (%zu floats per layer)", rc ? 0 : lina_model_state_layer_floats(s1, 0));
    lina_model_state_free(s1);
    lina_model_state_free(s2);
    lina_model_free(m);
    /* config round trip and errors */
    char *js = lina_config_json(&c);
    lina_config c2;
    rc = js ? lina_config_parse(js, strlen(js), "rt", &c2) : -1;
    CHECK(rc == 0 && !strcmp(c2.linear_method, "lolcats") && c2.lora_rank == 2 && c2.lora_alpha == 4.0 &&
              c2.window_size == 4 && !strcmp(c2.linear_feature_map, "hedgehog"),
          "config: linear_method / lora keys round-trip through config.json");
    free(js);
    lina_config plain;
    lina_config_default(&plain, LINA_MODEL_TRANSFORMER);
    js = lina_config_json(&plain);
    CHECK(js && !strstr(js, "linear_method") && !strstr(js, "lora_rank"),
          "config: a plain transformer's config.json has no linear / lora keys");
    free(js);
    const char *bad[] = {
        "{\"model_type\":\"transformer\",\"linear_method\":\"nope\",\"window_size\":4}",
        "{\"model_type\":\"transformer\",\"linear_method\":\"lolcats\"}",
        "{\"model_type\":\"transformer\",\"lora_rank\":4}",
        "{\"model_type\":\"transformer\",\"linear_method\":\"liger\",\"window_size\":4,\"window_factor\":2}",
        "{\"model_type\":\"transformer\",\"linear_method\":\"liger\",\"window_size\":4,\"linear_feature_map\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = lina_config_parse(bad[i], strlen(bad[i]), "bad", &c2);
        CHECK(rc == LINA_EFORMAT, "config: rejected: %s (%s)", bad[i], rc ? lina_last_error() : "accepted");
    }
}

/* ------------------------------------------------------------ conversion pieces */

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double e = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        e = d > e || d != d ? d : e;
    }
    return e;
}

static void test_convert(void)
{
    /* a softmax teacher -> lolcats: the teacher's tensors copied by name */
    lina_config tc;
    lina_config_default(&tc, LINA_MODEL_TRANSFORMER);
    tc.hidden_size = 16;
    tc.num_hidden_layers = 2;
    tc.num_heads = 2;
    tc.vocab_size = 40;
    tc.intermediate_size = 32;
    lina_model *t = NULL, *s = NULL, *l = NULL, *mg = NULL;
    int rc = lina_model_create(&tc, 5, &t);
    lina_config c = tiny("lolcats", "hedgehog", 0, 3, 0);
    rc = rc ? rc : lina_model_reconfigure(t, &c, 1, &s);
    size_t n = 0, n2 = 0;
    const float *a = rc ? NULL : tensor_data(t, "model.layers.1.attn.k_proj.weight", &n);
    const float *b = rc ? NULL : tensor_data(s, "model.layers.1.attn.k_proj.weight", &n2);
    CHECK(rc == 0 && n == n2 && memcmp(a, b, n * sizeof(float)) == 0,
          "convert: the teacher's tensors reach the linearized model by name");
    lina_model *back = NULL;
    CHECK(rc == 0 && lina_model_reconfigure(s, &tc, 1, &back) == LINA_EINVAL,
          "convert: a tensor with no place in the new model is an error (%s)", lina_last_error());
    lina_model_free(back);
    /* LoRA added (B random here), then merged: the same logits without adapters */
    c.lora_rank = 2;
    rc = rc ? rc : lina_model_reconfigure(s, &c, 2, &l);
    if (!rc) {
        randomize(l);
    }
    rc = rc ? rc : lina_model_merge_lora(l, &mg);
    int B = 2, T = 11, N = B * T;
    int32_t tok[22];
    rand_tokens(tok, NULL, N, 40);
    float *y1 = malloc((size_t)N * 40 * sizeof(float)), *y2 = malloc((size_t)N * 40 * sizeof(float));
    rc = rc ? rc : lina_model_forward_logits(l, tok, B, T, y1, NULL);
    rc = rc ? rc : lina_model_forward_logits(mg, tok, B, T, y2, NULL);
    double e = rc ? 1e30 : max_abs_diff(y1, y2, (size_t)N * 40);
    CHECK(rc == 0 && e < 1e-4 && lina_model_config(mg)->lora_rank == 0 &&
              lina_model_find_tensor(mg, "model.layers.0.attn.q_proj.lora_A.weight") < 0,
          "merge: adapters folded into q/k/v/o_proj give the same logits (err %.2e), none left", e);
    lina_model *none = NULL;
    CHECK(lina_model_merge_lora(s, &none) == LINA_EINVAL, "merge: a model without LoRA is refused");
    /* frozen view: only the named tensors move in a training step */
    lina_frozen *fz = NULL;
    lina_trainable tr;
    size_t ntrain = 0;
    static const char *const pats[] = {".lora_", NULL};
    rc = rc ? rc : lina_frozen_create(l, pats, &fz, &tr, &ntrain);
    CHECK(rc == 0 && ntrain == 2 * 4 * (2 * 16 + 16 * 2), "frozen: %zu trainable parameters (the adapters)",
          ntrain);
    int32_t tgt[22];
    rand_tokens(tok, tgt, N, 40);
    double loss = 0.0;
    tr.zero_grad(tr.self);
    rc = rc ? rc : tr.train_step(tr.self, tok, tgt, B, T, &loss, NULL);
    int ok = rc == 0, moved = 0;
    for (int i = 0; ok && i < tr.num_tensors(tr.self); i++) {
        const char *name;
        int nd, decay;
        const int64_t *sh;
        size_t off;
        tr.tensor(tr.self, i, &name, &nd, &sh, &off, &decay);
        size_t cnt = 1;
        for (int k = 0; k < nd; k++) {
            cnt *= (size_t)sh[k];
        }
        int train = strstr(name, ".lora_") != NULL;
        for (size_t j = 0; j < cnt; j++) {
            float g = tr.grads(tr.self)[off + j];
            ok &= train || g == 0.0f;
            moved |= train && g != 0.0f;
        }
        ok &= train || !decay;
    }
    CHECK(ok && moved, "frozen: gradients and weight decay only on the named tensors");
    static const char *const nothing[] = {"no such tensor", NULL};
    lina_frozen *f2 = NULL;
    CHECK(lina_frozen_create(l, nothing, &f2, &tr, &ntrain) == LINA_EINVAL, "frozen: nothing trainable is an error");
    lina_frozen_free(fz);
    free(y1);
    free(y2);
    lina_model_free(t);
    lina_model_free(s);
    lina_model_free(l);
    lina_model_free(mg);
}

/* lina linearize end to end on a tiny teacher: a checkpoint eval and generate load */
static void test_cli(void)
{
    const char *bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    char dir[] = "/tmp/lina_linattn_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "cli: temp dir");
        return;
    }
    lina_config tc;
    lina_config_default(&tc, LINA_MODEL_TRANSFORMER);
    tc.hidden_size = 16;
    tc.num_hidden_layers = 2;
    tc.num_heads = 2;
    tc.vocab_size = 40;
    tc.intermediate_size = 32;
    lina_model *t = NULL;
    char p[512], cmd[2048], out[8192], err[8192];
    snprintf(p, sizeof p, "%s/teacher", dir);
    int rc = lina_model_create(&tc, 5, &t);
    rc = rc ? rc : lina_model_save(t, p);
    uint32_t toks[3000];
    for (int i = 0; i < 3000; i++) {
        toks[i] = (uint32_t)((i * 7 + i / 5) % 40);
    }
    snprintf(p, sizeof p, "%s/train.tok", dir);
    rc = rc ? rc : lina_tok_write(p, toks, 3000, 40, 0);
    snprintf(p, sizeof p, "%s/val.tok", dir);
    rc = rc ? rc : lina_tok_write(p, toks, 600, 40, 0);
    CHECK(rc == 0, "cli: teacher and token files");
    snprintf(cmd, sizeof cmd,
             "%s linearize --teacher %s/teacher --out %s/lz --method lolcats --window 4 --data %s/train.tok --val "
             "%s/val.tok --stage1-steps 3 --stage2-steps 3 --lora-rank 2 --batch 2 --seq-len 16 --quiet --threads 1",
             bin, dir, dir, dir, dir);
    int st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    CHECK(st == 0 && strstr(out, "stage 1 (attention transfer): 3 updates") && strstr(out, "stage 2 (LoRA r=2"),
          "cli: lina linearize lolcats runs both stages (exit %d: %.300s)", st, err);
    snprintf(cmd, sizeof cmd, "%s eval --model %s/lz --data %s/val.tok --seq-len 16", bin, dir, dir);
    st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    CHECK(st == 0 && strstr(out, "perplexity"), "cli: lina eval loads the linearized checkpoint (%.200s)", err);
    snprintf(p, sizeof p, "%s/lz/linearize.json", dir);
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && sb.st_size > 100, "cli: linearize.json written");
    lina_model *lm = NULL;
    snprintf(p, sizeof p, "%s/lz", dir);
    rc = lina_model_load(p, &lm);
    CHECK(rc == 0 && !strcmp(lina_model_config(lm)->linear_method, "lolcats") &&
              lina_model_config(lm)->lora_rank == 2,
          "cli: the output is a transformer with linear_method lolcats and its LoRA adapters");
    lina_model_free(lm);
    snprintf(cmd, sizeof cmd,
             "%s linearize --teacher %s/teacher --out %s/lg --method liger --window 4 --data %s/train.tok --val "
             "%s/val.tok --stage2-steps 2 --lora-rank 2 --batch 2 --seq-len 16 --quiet --merge-lora --threads 1",
             bin, dir, dir, dir, dir);
    st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    snprintf(p, sizeof p, "%s/lg", dir);
    rc = st == 0 ? lina_model_load(p, &lm) : -1;
    CHECK(rc == 0 && !strcmp(lina_model_config(lm)->linear_method, "liger") && lina_model_config(lm)->lora_rank == 0 &&
              strstr(out, "LoRA merged"),
          "cli: liger with --merge-lora writes a checkpoint without adapters (exit %d: %.200s)", st, err);
    lina_model_free(lm);
    snprintf(cmd, sizeof cmd, "%s linearize --teacher %s/lg --out %s/x --method lolcats --quiet --data %s/train.tok "
             "--val %s/val.tok", bin, dir, dir, dir, dir);
    st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    CHECK(st == 1 && strstr(err, "not a softmax transformer") && !strchr(strchr(err, '\n') + 1, '\n'),
          "cli: a linearized model as teacher is refused with one line (%s)", err);
    snprintf(cmd, sizeof cmd, "%s linearize --teacher %s/teacher --out %s/y --method liger --stage1-steps 5 "
             "--quiet --data %s/train.tok --val %s/val.tok", bin, dir, dir, dir, dir);
    st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    CHECK(st == 2 && strstr(err, "no parameters for stage 1"), "cli: liger stage 1 without parameters refused (%s)",
          err);
    lina_model_free(t);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "cli: cleanup");
}

int main(void)
{
    test_lora();
    test_names();
    test_convert();
    test_cli();
    g_ref_mixer = ref_linattn;
    struct {
        const char *label, *method, *fmap;
        int gate, W, lora;
    } cs[] = {
        {"lolcats hedgehog W=3", "lolcats", "hedgehog", 0, 3, 0},
        {"liger softmax gated W=3", "liger", "softmax", 1, 3, 0},
        {"lolcats softmax gated W=2", "lolcats", "softmax", 1, 2, 0},
        {"lolcats hedgehog W=3 LoRA r=2", "lolcats", "hedgehog", 0, 3, 2},
        {"liger hedgehog W=4 LoRA r=3", "liger", "hedgehog", 1, 4, 3},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        lina_config c = tiny(cs[i].method, cs[i].fmap, cs[i].gate, cs[i].W, cs[i].lora);
        test_fd(cs[i].label, c, 2, 9, 1.0);
        test_forms(cs[i].label, c);
        test_decode(cs[i].label, c);
    }
    /* attention transfer: softmax output, the MSE as the auxiliary loss */
    lina_config c = tiny("lolcats", "hedgehog", 0, 3, 0);
    c.attn_transfer = 1;
    test_fd("lolcats attention transfer", c, 2, 9, 1.0);
    return th_exit();
}
