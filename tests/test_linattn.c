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

#include <math.h>
#include <stdint.h>
#include <string.h>

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

int main(void)
{
    test_lora();
    test_names();
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
