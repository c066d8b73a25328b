/* test_fused_proj.c -- the fused input projections (src/nn/layer.c
 * lina_proj_*): a model's q/k/v (and Gated DeltaNet's a/b) projections run as
 * one product over their back-to-back weights, with the short convolutions
 * reading their column blocks. For each mixer the whole training step (loss
 * and every parameter gradient), the chunk-form logits and a prefill + decode
 * run are compared with the unfused path on the same model
 * (lina_proj_set_fused(0): every projection its own product); the fused path
 * must actually have run (lina_proj_fused_calls). The MLP's gate_proj and
 * up_proj run as one product the same way (every config here has the MLP;
 * one has no short convs, so only the MLP is fused). The fused path is also
 * checked against the double-precision reference and finite differences by
 * test_model (its models hold their weights back to back). The low-level
 * helpers are checked on their own against a plain double computation, with
 * gradient buffers that do not lie back to back and a part without a conv. */
#include "harness.h"
#include "lina.h"
#include "../src/nn/nn.h"

#include <string.h>

#define B_ 2
#define T_ 67 /* crosses a 64-row chunk boundary */

static double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        num = d > num ? d : num;
        den = fabs((double)b[i]) > den ? fabs((double)b[i]) : den;
    }
    return den > 0.0 ? num / den : num;
}

/* loss, gradients [nparams], logits [B,T,V] and decode logits [B,T,V] (prefill T-3, then 3 steps) */
static int run(const lina_config *c, int fused, double *loss, float *grads, float *logits, float *dec, long *calls)
{
    lina_proj_set_fused(fused);
    long c0 = lina_proj_fused_calls();
    lina_model *m = NULL;
    int rc = lina_model_create(c, 7, &m);
    if (rc) {
        return rc;
    }
    int32_t tok[B_ * T_], tgt[B_ * T_];
    uint64_t s = 12345;
    for (int i = 0; i < B_ * T_; i++) {
        tok[i] = (int32_t)(lina_splitmix64(&s) % (uint64_t)c->vocab_size);
        tgt[i] = (int32_t)(lina_splitmix64(&s) % (uint64_t)c->vocab_size);
    }
    rc = lina_model_train_step(m, tok, tgt, B_, T_, loss, NULL);
    if (!rc) {
        memcpy(grads, lina_model_grads(m), lina_model_num_params(m) * sizeof(float));
        rc = lina_model_forward_logits(m, tok, B_, T_, logits, NULL);
    }
    lina_model_state *st = NULL;
    if (!rc) {
        rc = lina_model_state_create(m, B_, T_, &st);
    }
    if (!rc) {
        const int V = c->vocab_size, P = T_ - 3;
        int32_t pre[B_ * T_], one[B_];
        for (int b = 0; b < B_; b++) {
            memcpy(pre + b * P, tok + b * T_, (size_t)P * sizeof(int32_t));
        }
        float *lp = malloc((size_t)B_ * P * V * sizeof(float)), lo[B_ * 1024];
        rc = lp ? lina_model_decode(m, st, pre, B_, P, lp, NULL) : LINA_ENOMEM;
        for (int b = 0; b < B_ && !rc; b++) {
            memcpy(dec + (size_t)b * T_ * V, lp + (size_t)b * P * V, (size_t)P * V * sizeof(float));
        }
        for (int t = P; t < T_ && !rc; t++) {
            for (int b = 0; b < B_; b++) {
                one[b] = tok[b * T_ + t];
            }
            rc = lina_model_decode(m, st, one, B_, 1, lo, NULL);
            for (int b = 0; b < B_ && !rc; b++) {
                memcpy(dec + ((size_t)b * T_ + t) * V, lo + (size_t)b * V, (size_t)V * sizeof(float));
            }
        }
        free(lp);
    }
    lina_model_state_free(st);
    lina_model_free(m);
    *calls = lina_proj_fused_calls() - c0;
    lina_proj_set_fused(1);
    return rc;
}

static void compare(const char *name, lina_config c)
{
    lina_model *m = NULL;
    if (lina_model_create(&c, 7, &m)) {
        CHECK(0, "%s: model: %s", name, lina_last_error());
        return;
    }
    size_t np = lina_model_num_params(m), nl = (size_t)B_ * T_ * c.vocab_size;
    lina_model_free(m);
    float *g1 = malloc(np * sizeof(float)), *g0 = malloc(np * sizeof(float));
    float *l1 = malloc(nl * sizeof(float)), *l0 = malloc(nl * sizeof(float));
    float *d1 = malloc(nl * sizeof(float)), *d0 = malloc(nl * sizeof(float));
    double loss1 = 0, loss0 = 0;
    long calls1 = 0, calls0 = 0;
    int rc1 = run(&c, 1, &loss1, g1, l1, d1, &calls1);
    int rc0 = run(&c, 0, &loss0, g0, l0, d0, &calls0);
    CHECK(rc1 == 0 && rc0 == 0, "%s: runs (%s)", name, lina_last_error());
    if (rc1 == 0 && rc0 == 0) {
        CHECK(calls1 > 0 && calls0 == 0, "%s: the fused path ran (%ld fused forwards; %ld with fusion off)", name,
              calls1, calls0);
        CHECK(fabs(loss1 - loss0) <= 1e-6 * fabs(loss0), "%s: loss fused %.9f unfused %.9f", name, loss1, loss0);
        /* per tensor: the products sum in another order */
        lina_model *mm = NULL;
        lina_model_create(&c, 7, &mm);
        double worst = 0.0;
        const char *wn = "";
        for (int i = 0; i < lina_model_num_tensors(mm); i++) {
            const char *tn;
            const int64_t *sh;
            int nd;
            size_t off;
            lina_model_tensor(mm, i, &tn, &nd, &sh, &off, NULL);
            size_t n = 1;
            for (int k = 0; k < nd; k++) {
                n *= (size_t)sh[k];
            }
            double e = rel_err(g1 + off, g0 + off, n);
            if (e > worst) {
                worst = e;
                wn = tn;
            }
        }
        CHECK(worst <= 2e-5, "%s: every gradient fused = unfused (worst %.2e, %s)", name, worst, wn);
        lina_model_free(mm);
        double el = rel_err(l1, l0, nl), ed = rel_err(d1, d0, nl), edl = rel_err(d1, l1, nl);
        CHECK(el <= 1e-5, "%s: logits fused = unfused (%.2e)", name, el);
        CHECK(ed <= 1e-5 && edl <= 1e-4, "%s: prefill + decode fused = unfused (%.2e), = one forward (%.2e)", name,
              ed, edl);
    }
    free(g1);
    free(g0);
    free(l1);
    free(l0);
    free(d1);
    free(d0);
}

/* lina_proj_forward / lina_proj_backward against double sums: parts q (conv,
 * SiLU), k (conv, none), g (no conv); gradient buffers apart */
static void test_helpers(void)
{
    enum { B = 2, T = 9, D = 5, W = 3, NP = 3, N = B * T, TOT = 9 };
    const int cols[NP] = {4, 3, 2}, tot = TOT;

    uint64_t s = 99;
    float x[N * D], Wt[TOT * D], cw[7 * W], dys[N * TOT];
    for (int i = 0; i < N * D; i++) x[i] = (float)((double)(lina_splitmix64(&s) >> 11) / 9007199254740992.0 - 0.5);
    for (int i = 0; i < tot * D; i++) Wt[i] = (float)((double)(lina_splitmix64(&s) >> 11) / 9007199254740992.0 - 0.5);
    for (int i = 0; i < 7 * W; i++) cw[i] = (float)((double)(lina_splitmix64(&s) >> 11) / 9007199254740992.0 - 0.5);
    for (int i = 0; i < N * tot; i++) dys[i] = (float)((double)(lina_splitmix64(&s) >> 11) / 9007199254740992.0 - 0.5);
    float y0[N * 4], y1[N * 3], y2[N * 2], pre[N * (TOT + LINA_PROJ_PAD)], dpre[N * (TOT + LINA_PROJ_PAD)], dx[N * D] = {0};
    float gw0[4 * D] = {0}, gw1[3 * D] = {0}, gw2[2 * D] = {0}, gc0[4 * W] = {0}, gc1[3 * W] = {0};
    const float *dy[NP] = {dys, dys + N * 4, dys + N * 7};
    lina_proj_part pt[NP] = {
        {.w = Wt, .gw = gw0, .cols = 4, .conv = cw, .gconv = gc0, .act = LINA_ACT_SILU, .y = y0, .dy = dy[0]},
        {.w = Wt + 4 * D, .gw = gw1, .cols = 3, .conv = cw + 4 * W, .gconv = gc1, .act = LINA_ACT_NONE, .y = y1,
         .dy = dy[1]},
        {.w = Wt + 7 * D, .gw = gw2, .cols = 2, .y = y2, .dy = dy[2]},
    };
    CHECK(lina_proj_fusable(pt, NP, D), "proj helpers: back-to-back weights are fusable");
    lina_proj_part gap[NP];
    memcpy(gap, pt, sizeof(gap));
    gap[2].w = Wt + 8 * D;
    CHECK(!lina_proj_fusable(gap, NP, D), "proj helpers: a gap between weights is not fusable");
    lina_proj_forward(pre, pt, NP, x, B, T, D, W);
    lina_proj_backward(dx, dpre, pt, NP, pre, x, B, T, D, W);
    /* double reference: z = x W^T per part, conv (causal, zero history), act */
    double ey = 0, edx = 0, egw = 0, egc = 0;
    double z[N * 9], dz[N * 9] = {0}, rdx[N * D] = {0}, rgw[9 * D] = {0}, rgc[7 * W] = {0};
    for (int n = 0; n < N; n++)
        for (int o = 0; o < tot; o++) {
            double a = 0;
            for (int i = 0; i < D; i++) a += (double)x[n * D + i] * Wt[o * D + i];
            z[n * tot + o] = a;
        }
    float *ys[NP] = {y0, y1, y2};
    for (int p = 0, off = 0; p < NP; off += cols[p], p++) {
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int c = 0; c < cols[p]; c++) {
                    size_t r = (size_t)b * T + t;
                    double u, du = dy[p][r * cols[p] + c];
                    if (p < 2) {
                        u = 0;
                        for (int j = 0; j < W; j++) {
                            int ts = t - W + 1 + j;
                            if (ts >= 0) u += cw[(off + c) * W + j] * z[((size_t)b * T + ts) * tot + off + c];
                        }
                        double yv = u, dudy = 1;
                        if (p == 0) {
                            double sg = 1 / (1 + exp(-u));
                            yv = u * sg;
                            dudy = sg * (1 + u * (1 - sg));
                        }
                        ey = fmax(ey, fabs(yv - ys[p][r * cols[p] + c]));
                        double g = du * dudy;
                        for (int j = 0; j < W; j++) {
                            int ts = t - W + 1 + j;
                            if (ts >= 0) {
                                rgc[(off + c) * W + j] += g * z[((size_t)b * T + ts) * tot + off + c];
                                dz[((size_t)b * T + ts) * tot + off + c] += g * cw[(off + c) * W + j];
                            }
                        }
                    } else {
                        ey = fmax(ey, fabs(z[r * tot + off + c] - ys[p][r * cols[p] + c]));
                        dz[r * tot + off + c] += du;
                    }
                }
    }
    for (int n = 0; n < N; n++)
        for (int o = 0; o < tot; o++)
            for (int i = 0; i < D; i++) {
                rdx[n * D + i] += dz[n * tot + o] * Wt[o * D + i];
                rgw[o * D + i] += dz[n * tot + o] * x[n * D + i];
            }
    float *gws[NP] = {gw0, gw1, gw2};
    for (int i = 0; i < N * D; i++) edx = fmax(edx, fabs(rdx[i] - dx[i]));
    for (int p = 0, off = 0; p < NP; off += cols[p], p++)
        for (int i = 0; i < cols[p] * D; i++) egw = fmax(egw, fabs(rgw[off * D + i] - gws[p][i]));
    for (int i = 0; i < 4 * W; i++) egc = fmax(egc, fabs(rgc[i] - gc0[i]));
    for (int i = 0; i < 3 * W; i++) egc = fmax(egc, fabs(rgc[4 * W + i] - gc1[i]));
    CHECK(ey < 1e-5, "proj helpers: outputs against double (%.2e)", ey);
    CHECK(edx < 1e-5 && egw < 1e-5 && egc < 1e-5, "proj helpers: dx %.2e, weight %.2e, conv %.2e gradients", edx,
          egw, egc);
}

static lina_config base(lina_model_type t)
{
    lina_config c;
    lina_config_default(&c, t);
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = 23;
    c.intermediate_size = 48;
    c.use_short_conv = 1;
    return c;
}

int main(void)
{
    test_helpers();
    lina_config c = base(LINA_MODEL_GLA);
    compare("gla", c);
    c.num_kv_heads = 1;
    c.use_output_gate = 0;
    compare("gla grouped kv heads, no output gate", c);
    c = base(LINA_MODEL_GATED_DELTANET);
    c.head_dim = 8;
    compare("gated_deltanet", c);
    c.num_v_heads = 4;
    compare("gated_deltanet grouped value heads", c);
    c = base(LINA_MODEL_DELTA_NET);
    compare("delta_net", c);
    c = base(LINA_MODEL_GATED_DELTAPRODUCT);
    c.head_dim = 8;
    compare("gated_deltaproduct (b_proj before a_proj)", c);
    c = base(LINA_MODEL_GLA);
    c.use_short_conv = 0;
    compare("gla without short convs (the MLP's gate + up only)", c);
    c = base(LINA_MODEL_TRANSFORMER);
    compare("transformer short conv", c);
    c.num_kv_heads = 1;
    compare("transformer short conv, grouped kv heads", c);
    return th_exit();
}
