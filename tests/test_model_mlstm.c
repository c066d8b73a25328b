/* test_model_mlstm.c -- the mLSTM language model (model_type "mlstm",
 * src/nn/mlstm_layer.c): a double-precision reference of the layer written
 * here straight from docs/mixers.md section 5 (projections, soft-capped gates, the
 * stabilised recurrence token by token, per-head LayerNorm, sigmoid output
 * gate, out_proj) inside the shared reference LM (model_ref.h) checks the
 * float model's logits and loss, and central finite differences of it check
 * every gradient of lina_model_train_step (all parameters for the main
 * config, a random subset for the variants: no output gate, short convs,
 * T = 67 across chunk boundaries, a hybrid with a softmax-attention layer).
 * Also: tensor names, shapes, decay flags and initial values; chunk-form
 * against recurrent-form logits; prefill + decode steps against one forward;
 * save/load round trip; bad configs fail with a message. */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"
#include "../src/nn/nn.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define FD_H 1e-5
#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

#include "model_ref.h"

/* ------------------------------------------------------------ configs */

static lina_config tiny_mlstm(int output_gate, int short_conv)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_MLSTM);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.expand_k = 0.5;
    c.expand_v = 1.0;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    c.use_output_gate = output_gate;
    c.use_short_conv = short_conv;
    c.conv_size = 4;
    return c;
}

/* a hybrid: softmax attention on layer 1 (4 heads, 2 kv heads, window 3) */
static lina_config hybrid_mlstm(void)
{
    lina_config c = tiny_mlstm(1, 0);
    c.attn.enabled = 1;
    c.attn.n_layers = 1;
    c.attn.layers[0] = 1;
    c.attn.num_heads = 4;
    c.attn.num_kv_heads = 2;
    c.attn.qkv_bias = 0;
    c.attn.window_size = 3;
    c.attn.rope_theta = 10000.0;
    return c;
}

/* ---------------------------------------------- double reference mixer */

/* The mLSTM layer of docs/mixers.md 5 over a whole batch: out [B*T, D] from
 * xn [B*T, D]. Recurrent, stabilised, m_0 = 0, q scaled by K^-1/2. */
static double ref_mlstm(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_model *m = r->m;
    const lina_config *c = r->c;
    int D = r->D, H = r->H, K = r->K, V = r->V, HK = H * K, HV = H * V, W = c->conv_size;
    int conv = c->use_short_conv, gate = c->use_output_gate;
    const double *Wq = P + toff(m, "model.layers.%d.attn.q.weight", l);
    const double *Wk = P + toff(m, "model.layers.%d.attn.k.weight", l);
    const double *Wv = P + toff(m, "model.layers.%d.attn.v.weight", l);
    const double *Wi = P + toff(m, "model.layers.%d.attn.igate_preact.weight", l);
    const double *bi = P + toff(m, "model.layers.%d.attn.igate_preact.bias", l);
    const double *Wf = P + toff(m, "model.layers.%d.attn.fgate_preact.weight", l);
    const double *bf = P + toff(m, "model.layers.%d.attn.fgate_preact.bias", l);
    const double *Wog = gate ? P + toff(m, "model.layers.%d.attn.ogate_preact.weight", l) : NULL;
    const double *wn = P + toff(m, "model.layers.%d.attn.multihead_norm.weight", l);
    const double *Wo = P + toff(m, "model.layers.%d.attn.out_proj.weight", l);
    const double *cq = conv ? P + toff(m, "model.layers.%d.attn.q_conv1d.weight", l) : NULL;
    const double *ck = conv ? P + toff(m, "model.layers.%d.attn.k_conv1d.weight", l) : NULL;
    const double *cv = conv ? P + toff(m, "model.layers.%d.attn.v_conv1d.weight", l) : NULL;
    double *qp = calloc((size_t)T * HK, 8), *kp = calloc((size_t)T * HK, 8), *vp = calloc((size_t)T * HV, 8);
    double *q = calloc((size_t)T * HK, 8), *k = calloc((size_t)T * HK, 8), *v = calloc((size_t)T * HV, 8);
    double *ig = calloc((size_t)T * H, 8), *fg = calloc((size_t)T * H, 8);
    double *C = calloc((size_t)H * K * V, 8), *n = calloc((size_t)HK, 8), *mst = calloc((size_t)H, 8);
    double *h = calloc((size_t)HV, 8), *y = calloc((size_t)HV, 8), *og = calloc((size_t)HV, 8);
    for (int b = 0; b < B; b++) {
        const double *xb = xn + (size_t)b * T * D;
        for (int t = 0; t < T; t++) {
            const double *xt = xb + (size_t)t * D;
            rlin(qp + (size_t)t * HK, Wq, NULL, xt, D, HK);
            rlin(kp + (size_t)t * HK, Wk, NULL, xt, D, HK);
            rlin(vp + (size_t)t * HV, Wv, NULL, xt, D, HV);
            rlin(ig + (size_t)t * H, Wi, bi, xt, D, H);
            rlin(fg + (size_t)t * H, Wf, bf, xt, D, H);
            for (int j = 0; j < H; j++) {
                ig[(size_t)t * H + j] = 15.0 * tanh(ig[(size_t)t * H + j] / 15.0);
                fg[(size_t)t * H + j] = 15.0 * tanh(fg[(size_t)t * H + j] / 15.0);
            }
        }
        if (conv) {
            rconv(q, qp, cq, T, HK, W);
            rconv(k, kp, ck, T, HK, W);
            rconv(v, vp, cv, T, HV, W);
        } else {
            memcpy(q, qp, (size_t)T * HK * 8);
            memcpy(k, kp, (size_t)T * HK * 8);
            memcpy(v, vp, (size_t)T * HV * 8);
        }
        memset(C, 0, (size_t)H * K * V * 8);
        memset(n, 0, (size_t)HK * 8);
        memset(mst, 0, (size_t)H * 8);
        for (int t = 0; t < T; t++) {
            for (int hh = 0; hh < H; hh++) {
                double it = ig[(size_t)t * H + hh], lf = rlogsig(fg[(size_t)t * H + hh]);
                double mn = lf + mst[hh] > it ? lf + mst[hh] : it;
                double fp = exp(lf + mst[hh] - mn), ip = exp(it - mn);
                mst[hh] = mn;
                const double *kt = k + (size_t)t * HK + hh * K, *vt = v + (size_t)t * HV + hh * V;
                const double *qt = q + (size_t)t * HK + hh * K;
                double *Ch = C + (size_t)hh * K * V, *nh = n + (size_t)hh * K;
                double qn = 0.0;
                for (int a = 0; a < K; a++) {
                    for (int j = 0; j < V; j++) {
                        Ch[(size_t)a * V + j] = fp * Ch[(size_t)a * V + j] + ip * kt[a] * vt[j];
                    }
                    nh[a] = fp * nh[a] + ip * kt[a];
                    qn += qt[a] / sqrt((double)K) * nh[a];
                }
                double den = fabs(qn) > exp(-mn) ? fabs(qn) : exp(-mn);
                den += 1e-6;
                /* h = C^T q^ / den, then LayerNorm over V */
                double mu = 0.0, var = 0.0;
                for (int j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int a = 0; a < K; a++) {
                        s += qt[a] / sqrt((double)K) * Ch[(size_t)a * V + j];
                    }
                    h[hh * V + j] = s / den;
                    mu += h[hh * V + j];
                }
                mu /= V;
                for (int j = 0; j < V; j++) {
                    var += (h[hh * V + j] - mu) * (h[hh * V + j] - mu);
                }
                var /= V;
                for (int j = 0; j < V; j++) {
                    y[hh * V + j] = (h[hh * V + j] - mu) / sqrt(var + r->eps) * wn[hh * V + j];
                }
            }
            if (gate) {
                rlin(og, Wog, NULL, xb + (size_t)t * D, D, HV);
                for (int j = 0; j < HV; j++) {
                    y[j] *= rsig(og[j]);
                }
            }
            rlin(out + ((size_t)b * T + t) * D, Wo, NULL, y, HV, D);
        }
    }
    free(qp);
    free(kp);
    free(vp);
    free(q);
    free(k);
    free(v);
    free(ig);
    free(fg);
    free(C);
    free(n);
    free(mst);
    free(h);
    free(y);
    free(og);
    return 0.0;
}

/* ---------------------------------------------------------- the tests */

static void test_names(void)
{
    lina_config c = tiny_mlstm(1, 1);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0, "names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    int D = 16, HK = 8, HV = 16, H = 2, W = 4, I = 32, vocab = 40;
    struct {
        const char *suf;
        int nd;
        int64_t s0, s1, s2;
        int decay;
        int init; /* 0 normal, 1 ones, 2 zeros */
    } per[] = {
        {"attn_norm.weight", 1, D, 0, 0, 0, 1},
        {"attn.q.weight", 2, HK, D, 0, 1, 0},
        {"attn.k.weight", 2, HK, D, 0, 1, 0},
        {"attn.v.weight", 2, HV, D, 0, 1, 0},
        {"attn.ogate_preact.weight", 2, HV, D, 0, 1, 0},
        {"attn.igate_preact.weight", 2, H, D, 0, 1, 0},
        {"attn.igate_preact.bias", 1, H, 0, 0, 0, -1},
        {"attn.fgate_preact.weight", 2, H, D, 0, 1, 0},
        {"attn.fgate_preact.bias", 1, H, 0, 0, 0, -1},
        {"attn.multihead_norm.weight", 1, HV, 0, 0, 0, 1},
        {"attn.out_proj.weight", 2, D, HV, 0, 1, 0},
        {"attn.q_conv1d.weight", 3, HK, 1, W, 1, 0},
        {"attn.k_conv1d.weight", 3, HK, 1, W, 1, 0},
        {"attn.v_conv1d.weight", 3, HV, 1, W, 1, 0},
        {"mlp_norm.weight", 1, D, 0, 0, 0, 1},
        {"mlp.gate_proj.weight", 2, I, D, 0, 1, 0},
        {"mlp.up_proj.weight", 2, I, D, 0, 1, 0},
        {"mlp.down_proj.weight", 2, D, I, 0, 1, 0},
    };
    int np = (int)(sizeof(per) / sizeof(per[0]));
    int ok = lina_model_num_tensors(m) == 2 * np + 3, idx = 1;
    const float *P = lina_model_params(m);
    size_t expect_off = (size_t)vocab * D;
    for (int l = 0; ok && l < 2; l++) {
        for (int j = 0; ok && j < np; j++, idx++) {
            char want[96];
            snprintf(want, sizeof(want), "model.layers.%d.%s", l, per[j].suf);
            const char *name;
            int nd, decay;
            const int64_t *sh;
            size_t off;
            lina_model_tensor(m, idx, &name, &nd, &sh, &off, &decay);
            ok = strcmp(name, want) == 0 && nd == per[j].nd && sh[0] == per[j].s0 && (nd < 2 || sh[1] == per[j].s1) &&
                 (nd < 3 || sh[2] == per[j].s2) && decay == per[j].decay && off == expect_off;
            size_t numel = (size_t)sh[0] * (nd > 1 ? (size_t)sh[1] : 1) * (nd > 2 ? (size_t)sh[2] : 1);
            if (ok && per[j].init >= 1) {
                for (size_t e = 0; ok && e < numel; e++) {
                    ok = P[off + e] == (per[j].init == 1 ? 1.0f : 0.0f);
                }
            }
            if (ok && per[j].init == 0) {
                double ss = 0.0;
                for (size_t e = 0; e < numel; e++) {
                    ss += (double)P[off + e] * P[off + e];
                }
                ok = ss > 0.0 && sqrt(ss / numel) < 0.05; /* N(0, 0.02) */
            }
            if (ok && per[j].init == -1) {
                for (size_t e = 0; ok && e < numel; e++) {
                    ok = isfinite(P[off + e]) && fabsf(P[off + e]) <= 10.0f; /* gate biases: finite, moderate */
                }
            }
            if (!ok) {
                printf("    tensor %d: %s (want %s)\n", idx, name, want);
            }
            expect_off += numel;
        }
    }
    ok = ok && lina_model_find_tensor(m, "model.norm.weight") == 2 * np + 1 &&
         lina_model_find_tensor(m, "lm_head.weight") == 2 * np + 2;
    CHECK(ok, "names: %d tensors, xLSTM suffixes under model.layers.{i}.attn., shapes, offsets, decay, init",
          lina_model_num_tensors(m));
    lina_model_free(m);

    /* without output gate / short convs those tensors are absent */
    c = tiny_mlstm(0, 0);
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "model.layers.0.attn.ogate_preact.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.1.attn.q_conv1d.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.1.attn.out_proj.weight") >= 0,
          "names: no ogate_preact / conv tensors without use_output_gate / use_short_conv");
    lina_model_free(m);
}

static void test_bad_config(void)
{
    lina_config c = tiny_mlstm(1, 0);
    c.num_heads = 3; /* 16 * 0.5 = 8 key features do not split into 3 heads */
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && m == NULL && lina_last_error()[0] != '\0', "bad config: 3 heads over 8 key features fails (%s)",
          lina_last_error());
    c = tiny_mlstm(1, 1);
    c.conv_size = 0;
    m = NULL;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && m == NULL, "bad config: short conv with conv_size 0 fails (%s)", lina_last_error());
    lina_model_free(m);
}

/* save + load gives the same logits */
static void test_save_load(void)
{
    lina_config c = tiny_mlstm(1, 1);
    lina_model *m = NULL, *m2 = NULL;
    int rc = lina_model_create(&c, 5, &m);
    char dir[] = "/tmp/lina_mlstm_XXXXXX";
    if (rc || !mkdtemp(dir)) {
        CHECK(0, "save/load: setup (%s)", lina_last_error());
        lina_model_free(m);
        return;
    }
    randomize(m);
    int B = 1, T = 11, vocab = c.vocab_size;
    int32_t tok[11];
    rand_tokens(tok, NULL, B * T, vocab);
    float a[11 * 40], b[11 * 40];
    rc = lina_model_forward_logits(m, tok, B, T, a, NULL);
    rc = rc ? rc : lina_model_save(m, dir);
    rc = rc ? rc : lina_model_load(dir, &m2);
    rc = rc ? rc : lina_model_forward_logits(m2, tok, B, T, b, NULL);
    CHECK(rc == 0 && memcmp(a, b, sizeof(a)) == 0 && lina_model_config(m2)->model_type == LINA_MODEL_MLSTM,
          "save/load: config.json + model.safetensors round trip, identical logits (%s)",
          rc ? lina_last_error() : "ok");
    char path[600];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
    lina_model_free(m);
    lina_model_free(m2);
}

/* xLSTM's gate-bias init: forget gate linspace(3, 6) over heads, input gate -10 */
static void test_gate_init(void)
{
    lina_config c = tiny_mlstm(1, 0);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 5, &m);
    int ok = rc == 0;
    for (int l = 0; ok && l < c.num_hidden_layers; l++) {
        char nf[96], ni[96];
        snprintf(nf, sizeof nf, "model.layers.%d.attn.fgate_preact.bias", l);
        snprintf(ni, sizeof ni, "model.layers.%d.attn.igate_preact.bias", l);
        int tf = lina_model_find_tensor(m, nf), ti = lina_model_find_tensor(m, ni);
        size_t of = 0, oi = 0;
        ok = tf >= 0 && ti >= 0 && !lina_model_tensor(m, tf, NULL, NULL, NULL, &of, NULL) &&
             !lina_model_tensor(m, ti, NULL, NULL, NULL, &oi, NULL);
        const float *P = lina_model_params(m);
        int H = c.num_heads;
        for (int h = 0; ok && h < H; h++) {
            double want = H > 1 ? 3.0 + 3.0 * h / (H - 1) : 3.0;
            ok = fabs(P[of + h] - want) < 1e-6 && P[oi + h] == -10.0f;
        }
    }
    CHECK(ok, "mlstm gate biases start as xLSTM's: forget linspace(3, 6), input -10");
    lina_model_free(m);
}

int main(void)
{
    (void)rl2; /* shared reference helpers this mixer does not use */
    (void)rsoftplus;
    lina_set_threads(2);
    g_ref_mixer = ref_mlstm;
    test_names();
    test_gate_init();
    test_bad_config();
    test_fd("mlstm", tiny_mlstm(1, 0), 2, 9, 1.0);
    test_fd("mlstm no output gate", tiny_mlstm(0, 0), 2, 9, 0.12);
    test_fd("mlstm short conv", tiny_mlstm(1, 1), 2, 9, 0.12);
    test_fd("mlstm T=67 (chunks)", tiny_mlstm(1, 1), 1, 67, 0.12);
    test_fd("mlstm + attention hybrid", hybrid_mlstm(), 2, 9, 0.12);
    test_forms("mlstm", tiny_mlstm(1, 0));
    test_forms("mlstm short conv", tiny_mlstm(1, 1));
    test_decode("mlstm", tiny_mlstm(1, 0));
    test_decode("mlstm short conv", tiny_mlstm(0, 1));
    test_decode("mlstm + attention hybrid", hybrid_mlstm());
    test_save_load();
    return th_exit();
}
