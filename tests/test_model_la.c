/* test_model_la.c -- the linear_attn and gated_deltaproduct model types
 * (src/nn/la_layer.c, src/nn/delta_layer.c, their plug-in tables at the ends).
 * A double-precision reference of each layer written here token by token
 * from docs/mixers.md sections 3.3 and 4.3 (feature maps, sum normalisation,
 * normaliser, grouped kv heads, output RMSNorm; n_h Householder sub-steps with
 * the forget gate once per token, L2-normalised q and keys, beta in (0, 2),
 * gated output norm) plugs into the shared reference LM (model_ref.h), which
 * checks logits, loss and every (or a random share of) parameter gradient by
 * central finite differences, chunk-form against recurrent-form logits, and
 * prefill + decode against one forward. Also FLA tensor names and shapes, the
 * hedgehog identity init, and config errors. */
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

static lina_config tiny_la(const char *fmap)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_LINEAR_ATTN);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    snprintf(c.feature_map, sizeof(c.feature_map), "%s", fmap);
    return c;
}

static lina_config tiny_dp(int n, int forget, int neg, int conv)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GATED_DELTAPRODUCT);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.head_dim = 4;
    c.expand_v = 2.0;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    c.num_householder = n;
    c.use_forget_gate = forget;
    c.allow_neg_eigval = neg;
    c.use_short_conv = conv;
    return c;
}

/* ------------------------------------------ linear attention reference */

static int fmap_dim(const char *fm, int K)
{
    return strcmp(fm, "hedgehog") == 0 ? 2 * K : strcmp(fm, "dpfp") == 0 ? 8 * K : K;
}

/* the parameters of one feature map (NULL where the map has none) */
typedef struct ref_fm {
    const double *W1, *b1, *W2, *b2;
} ref_fm;

static const double *ptens_opt(const ref_model *r, const double *P, int l, const char *suffix)
{
    char nm[160];
    snprintf(nm, sizeof(nm), "model.layers.%d.attn.%s", l, suffix);
    return lina_model_find_tensor(r->m, nm) >= 0 ? ptens(r, P, l, suffix) : NULL;
}

static ref_fm ref_fm_of(const ref_model *r, const double *P, int l, char which)
{
    char qk = r->c->tie_feature_map_qk ? 'q' : which, nm[96];
    ref_fm f;
    const char *hh = strcmp(r->c->feature_map, "elementwise_product") == 0 ? "layer1" : "layer";
    snprintf(nm, sizeof(nm), "feature_map_%c.%s.weight", qk, hh);
    f.W1 = ptens_opt(r, P, l, nm);
    snprintf(nm, sizeof(nm), "feature_map_%c.%s.bias", qk, hh);
    f.b1 = ptens_opt(r, P, l, nm);
    snprintf(nm, sizeof(nm), "feature_map_%c.layer2.weight", qk);
    f.W2 = ptens_opt(r, P, l, nm);
    snprintf(nm, sizeof(nm), "feature_map_%c.layer2.bias", qk);
    f.b2 = ptens_opt(r, P, l, nm);
    return f;
}

/* phi [F] = feature map fm of x [K] (docs/mixers.md 3.3, FLA's versions) */
static void ref_fmap(const char *fm, const ref_fm *p, const double *x, double *phi, int K)
{
    if (strcmp(fm, "identity") == 0) {
        memcpy(phi, x, (size_t)K * sizeof(double));
    } else if (strcmp(fm, "elu") == 0) {
        for (int i = 0; i < K; i++) {
            phi[i] = x[i] > 0 ? x[i] + 1.0 : exp(x[i]); /* elu(x) + 1 */
        }
    } else if (strcmp(fm, "relu") == 0) {
        for (int i = 0; i < K; i++) {
            phi[i] = x[i] > 0 ? x[i] : 0.0;
        }
    } else if (strcmp(fm, "elementwise_product") == 0) {
        double a[64], b[64];
        rlin(a, p->W1, p->b1, x, K, K);
        rlin(b, p->W2, p->b2, x, K, K);
        for (int i = 0; i < K; i++) {
            phi[i] = a[i] * b[i];
        }
    } else if (strcmp(fm, "hedgehog") == 0) {
        double u[64], s = 0.0;
        rlin(u, p->W1, p->b1, x, K, K);
        /* one softmax over [2u, -2u] */
        for (int i = 0; i < K; i++) {
            phi[i] = exp(2 * u[i]);
            phi[K + i] = exp(-2 * u[i]);
            s += phi[i] + phi[K + i];
        }
        for (int i = 0; i < 2 * K; i++) {
            phi[i] /= s;
        }
    } else if (strcmp(fm, "t2r") == 0) {
        double u[64];
        rlin(u, p->W1, NULL, x, K, K);
        for (int i = 0; i < K; i++) {
            phi[i] = u[i] > 0 ? u[i] : 0.0;
        }
    } else if (strcmp(fm, "dpfp") == 0) {
        /* rr = [relu(x), -relu(x)]; phi = concat_j rr * roll(rr, j), roll(rr, j)[i] = rr[(i - j) mod 2K] */
        double rr[128];
        for (int i = 0; i < K; i++) {
            rr[i] = x[i] > 0 ? x[i] : 0.0;
            rr[K + i] = -rr[i];
        }
        for (int j = 1; j <= 4; j++) {
            for (int i = 0; i < 2 * K; i++) {
                phi[(j - 1) * 2 * K + i] = rr[i] * rr[((i - j) % (2 * K) + 2 * K) % (2 * K)];
            }
        }
    } else {
        printf("FAIL reference: feature map %s\n", fm);
        exit(1);
    }
}

static double ref_la(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_config *c = r->c;
    int D = c->hidden_size, H = c->num_heads, Hkv = c->num_kv_heads ? c->num_kv_heads : H;
    int K = (int)(D * c->expand_k) / H, V = (int)(D * c->expand_v) / H, F = fmap_dim(c->feature_map, K);
    int G = H / Hkv;
    double s = 1.0 / sqrt((double)F);
    const double *Wq = ptens(r, P, l, "q_proj.weight"), *Wk = ptens(r, P, l, "k_proj.weight");
    const double *Wv = ptens(r, P, l, "v_proj.weight"), *Wo = ptens(r, P, l, "o_proj.weight");
    double *ones = calloc((size_t)V, sizeof(double));
    for (int i = 0; i < V; i++) {
        ones[i] = 1.0;
    }
    const double *wn = c->elementwise_affine ? ptens(r, P, l, "norm.weight") : ones;
    double *S = calloc((size_t)H * F * V, sizeof(double)), *z = calloc((size_t)H * F, sizeof(double));
    double q[256], k[256], v[256], qf[512], kf[512], o[256], y[256];
    ref_fm fq = ref_fm_of(r, P, l, 'q'), fk = ref_fm_of(r, P, l, 'k');
    /* projections of the whole sequence, then (use_short_conv) the SiLU short convs */
    int CQ = H * K, CK = Hkv * K, CV = Hkv * V;
    double *pq = calloc((size_t)T * CQ, 8), *pk = calloc((size_t)T * CK, 8), *pv = calloc((size_t)T * CV, 8);
    double *cy = calloc((size_t)T * (CQ > CV ? (CQ > CK ? CQ : CK) : (CV > CK ? CV : CK)), 8);
    for (int b = 0; b < B; b++) {
        memset(S, 0, (size_t)H * F * V * sizeof(double));
        memset(z, 0, (size_t)H * F * sizeof(double));
        for (int t = 0; t < T; t++) {
            const double *xt = xn + ((size_t)b * T + t) * D;
            rlin(pq + (size_t)t * CQ, Wq, NULL, xt, D, CQ);
            rlin(pk + (size_t)t * CK, Wk, NULL, xt, D, CK);
            rlin(pv + (size_t)t * CV, Wv, NULL, xt, D, CV);
        }
        if (c->use_short_conv) {
            double *xs[3] = {pq, pk, pv};
            int Cs[3] = {CQ, CK, CV};
            const char *nm[3] = {"q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight"};
            for (int j = 0; j < 3; j++) {
                rconv(cy, xs[j], ptens(r, P, l, nm[j]), T, Cs[j], c->conv_size);
                memcpy(xs[j], cy, (size_t)T * Cs[j] * sizeof(double));
            }
        }
        for (int t = 0; t < T; t++) {
            memcpy(q, pq + (size_t)t * CQ, (size_t)CQ * sizeof(double));
            memcpy(k, pk + (size_t)t * CK, (size_t)CK * sizeof(double));
            memcpy(v, pv + (size_t)t * CV, (size_t)CV * sizeof(double));
            for (int h = 0; h < H; h++) {
                int g = h / G;
                ref_fmap(c->feature_map, &fq, q + h * K, qf, K);
                ref_fmap(c->feature_map, &fk, k + g * K, kf, K);
                for (int pass = 0; pass < 2; pass++) {
                    double *f = pass ? kf : qf, sum = 1e-4;
                    if (pass ? c->norm_k : c->norm_q) {
                        for (int i = 0; i < F; i++) {
                            sum += f[i];
                        }
                        for (int i = 0; i < F; i++) {
                            f[i] /= sum;
                        }
                    }
                }
                /* S_t = S_{t-1} + k v^T; o = s S^T q (update, then read) */
                double *Sh = S + (size_t)h * F * V, *zh = z + (size_t)h * F, den = 0.0;
                for (int i = 0; i < F; i++) {
                    for (int j = 0; j < V; j++) {
                        Sh[i * V + j] += kf[i] * v[g * V + j];
                    }
                    zh[i] += kf[i];
                    den += s * qf[i] * zh[i];
                }
                for (int j = 0; j < V; j++) {
                    double acc = 0.0;
                    for (int i = 0; i < F; i++) {
                        acc += s * qf[i] * Sh[i * V + j];
                    }
                    o[j] = c->norm_feature_map ? acc / (den + 1e-10) : acc;
                }
                rrms(y + h * V, o, wn, V, r->eps);
            }
            rlin(out + ((size_t)b * T + t) * D, Wo, NULL, y, H * V, D);
        }
    }
    free(S);
    free(z);
    free(ones);
    free(pq);
    free(pk);
    free(pv);
    free(cy);
    return 0.0;
}

/* ------------------------------------------ gated deltaproduct reference */

static double ref_dp(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_config *c = r->c;
    int D = c->hidden_size, H = c->num_heads, HV = c->num_v_heads ? c->num_v_heads : H, K = c->head_dim;
    int V = (int)(c->head_dim * c->expand_v), n = c->num_householder, G = HV / H, W = c->conv_size;
    int HK = H * K, VV = HV * V;
    double s = 1.0 / sqrt((double)K), bs = c->allow_neg_eigval ? 2.0 : 1.0;
    int fg = c->use_forget_gate, conv = c->use_short_conv, og = c->use_output_gate;
    const double *Wq = ptens(r, P, l, "q_proj.weight"), *Wk = ptens(r, P, l, "k_proj.weight");
    const double *Wv = ptens(r, P, l, "v_proj.weight"), *Wb = ptens(r, P, l, "b_proj.weight");
    const double *Wo = ptens(r, P, l, "o_proj.weight"), *wn = ptens(r, P, l, "o_norm.weight");
    const double *Wa = fg ? ptens(r, P, l, "a_proj.weight") : NULL, *Alog = fg ? ptens(r, P, l, "A_log") : NULL;
    const double *dtb = fg ? ptens(r, P, l, "dt_bias") : NULL, *Wg = og ? ptens(r, P, l, "g_proj.weight") : NULL;
    const double *cq = conv ? ptens(r, P, l, "q_conv1d.weight") : NULL;
    const double *ck = conv ? ptens(r, P, l, "k_conv1d.weight") : NULL;
    const double *cv = conv ? ptens(r, P, l, "v_conv1d.weight") : NULL;
    double *qp = calloc((size_t)T * HK, 8), *kp = calloc((size_t)T * n * HK, 8), *vp = calloc((size_t)T * n * VV, 8);
    double *qc = calloc((size_t)T * HK, 8), *kc = calloc((size_t)T * n * HK, 8), *vc = calloc((size_t)T * n * VV, 8);
    double *S = calloc((size_t)HV * K * V, 8);
    double beta[64], a[16], gate[256], o[256], y[256], u[64];
    for (int b = 0; b < B; b++) {
        const double *xb = xn + (size_t)b * T * D;
        for (int t = 0; t < T; t++) {
            rlin(qp + (size_t)t * HK, Wq, NULL, xb + (size_t)t * D, D, HK);
            rlin(kp + (size_t)t * n * HK, Wk, NULL, xb + (size_t)t * D, D, n * HK);
            rlin(vp + (size_t)t * n * VV, Wv, NULL, xb + (size_t)t * D, D, n * VV);
        }
        /* short convs over all channels (SiLU), or SiLU alone */
        rconv(qc, qp, cq, T, HK, W);
        rconv(kc, kp, ck, T, n * HK, W);
        rconv(vc, vp, cv, T, n * VV, W);
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) {
                rl2(qc + (size_t)t * HK + h * K, K);
            }
            for (int i = 0; i < n * H; i++) {
                rl2(kc + (size_t)t * n * HK + i * K, K); /* every key of every sub-step */
            }
        }
        memset(S, 0, (size_t)HV * K * V * sizeof(double));
        for (int t = 0; t < T; t++) {
            const double *xt = xb + (size_t)t * D;
            rlin(beta, Wb, NULL, xt, D, n * HV);
            for (int i = 0; i < n * HV; i++) {
                beta[i] = bs * rsig(beta[i]);
            }
            if (fg) {
                rlin(a, Wa, NULL, xt, D, HV);
            }
            if (og) {
                rlin(gate, Wg, NULL, xt, D, VV);
            }
            for (int hv = 0; hv < HV; hv++) {
                int hq = hv / G;
                double *Sh = S + (size_t)hv * K * V;
                if (fg) {
                    double g = -exp(Alog[hv]) * rsoftplus(a[hv] + dtb[hv]);
                    for (int i = 0; i < K * V; i++) {
                        Sh[i] *= exp(g); /* forget gate once per token, before the first step */
                    }
                }
                for (int j = 0; j < n; j++) {
                    /* features ordered (j, h, d) */
                    const double *kk = kc + (size_t)t * n * HK + (size_t)j * HK + hq * K;
                    const double *vv = vc + (size_t)t * n * VV + (size_t)j * VV + hv * V;
                    double bt = beta[j * HV + hv];
                    for (int e = 0; e < V; e++) {
                        double acc = 0.0;
                        for (int i = 0; i < K; i++) {
                            acc += Sh[i * V + e] * kk[i];
                        }
                        u[e] = vv[e] - acc;
                    }
                    for (int i = 0; i < K; i++) {
                        for (int e = 0; e < V; e++) {
                            Sh[i * V + e] += bt * kk[i] * u[e];
                        }
                    }
                }
                const double *qq = qc + (size_t)t * HK + hq * K;
                for (int e = 0; e < V; e++) {
                    double acc = 0.0;
                    for (int i = 0; i < K; i++) {
                        acc += s * qq[i] * Sh[i * V + e];
                    }
                    o[e] = acc;
                }
                rrms(y + hv * V, o, wn, V, r->eps);
                for (int e = 0; og && e < V; e++) {
                    double gg = gate[hv * V + e];
                    y[hv * V + e] *= gg * rsig(gg);
                }
            }
            rlin(out + ((size_t)b * T + t) * D, Wo, NULL, y, VV, D);
        }
    }
    free(qp);
    free(kp);
    free(vp);
    free(qc);
    free(kc);
    free(vc);
    free(S);
    return 0.0;
}

static double ref_mixer(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    if (r->c->model_type == LINA_MODEL_LINEAR_ATTN) {
        return ref_la(r, P, l, xn, out, B, T);
    }
    return ref_dp(r, P, l, xn, out, B, T);
}

/* ---------------------------------------------------------- names, errors */

static int has_shape(const lina_model *m, const char *name, int nd, int64_t s0, int64_t s1, int64_t s2)
{
    int i = lina_model_find_tensor(m, name), k = 0;
    const int64_t *sh = NULL;
    if (i < 0 || lina_model_tensor(m, i, NULL, &k, &sh, NULL, NULL) || k != nd) {
        printf("    missing or wrong rank: %s\n", name);
        return 0;
    }
    if (sh[0] != s0 || (nd > 1 && sh[1] != s1) || (nd > 2 && sh[2] != s2)) {
        printf("    wrong shape: %s\n", name);
        return 0;
    }
    return 1;
}

static int absent(const lina_model *m, const char *name)
{
    if (lina_model_find_tensor(m, name) >= 0) {
        printf("    unexpected tensor: %s\n", name);
        return 0;
    }
    return 1;
}

static int decay_of(const lina_model *m, const char *name)
{
    int i = lina_model_find_tensor(m, name), dec = -1;
    if (i >= 0) {
        lina_model_tensor(m, i, NULL, NULL, NULL, NULL, &dec);
    }
    return dec;
}

static void test_la_names(void)
{
    const char *A = "model.layers.1.attn.";
    char nm[128];
#define NM(s) (snprintf(nm, sizeof(nm), "%s%s", A, s), nm)
    /* elementwise_product, 4 heads, 2 kv heads: K = V = 4 */
    lina_config c = tiny_la("elementwise_product");
    c.num_heads = 4;
    c.num_kv_heads = 2;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    int ok = rc == 0 && has_shape(m, NM("q_proj.weight"), 2, 16, 16, 0) && has_shape(m, NM("k_proj.weight"), 2, 8, 16, 0) &&
             has_shape(m, NM("v_proj.weight"), 2, 8, 16, 0) && has_shape(m, NM("o_proj.weight"), 2, 16, 16, 0) &&
             has_shape(m, NM("norm.weight"), 1, 4, 0, 0) &&
             has_shape(m, NM("feature_map_q.layer1.weight"), 2, 4, 4, 0) &&
             has_shape(m, NM("feature_map_q.layer1.bias"), 1, 4, 0, 0) &&
             has_shape(m, NM("feature_map_q.layer2.weight"), 2, 4, 4, 0) &&
             has_shape(m, NM("feature_map_q.layer2.bias"), 1, 4, 0, 0) &&
             has_shape(m, NM("feature_map_k.layer1.weight"), 2, 4, 4, 0) &&
             has_shape(m, NM("feature_map_k.layer2.bias"), 1, 4, 0, 0) && decay_of(m, NM("norm.weight")) == 0 &&
             decay_of(m, NM("feature_map_k.layer1.bias")) == 0 && decay_of(m, NM("feature_map_k.layer1.weight")) == 1;
    CHECK(ok, "linear_attn names: q/k/v/o_proj, feature_map_q/k.layer1/2.{weight,bias}, norm.weight [V]; decay flags");
    lina_model_free(m);
    m = NULL;
    c = tiny_la("elementwise_product");
    c.tie_feature_map_qk = 1;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && has_shape(m, NM("feature_map_q.layer1.weight"), 2, 8, 8, 0) &&
              absent(m, NM("feature_map_k.layer1.weight")) && absent(m, NM("feature_map_k.layer2.bias")),
          "linear_attn tie_feature_map_qk: one map (feature_map_q.*)");
    lina_model_free(m);
    m = NULL;
    c = tiny_la("elu");
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.use_short_conv = 1;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && has_shape(m, NM("q_conv1d.weight"), 3, 16, 1, 4) && has_shape(m, NM("k_conv1d.weight"), 3, 8, 1, 4) &&
              has_shape(m, NM("v_conv1d.weight"), 3, 8, 1, 4),
          "linear_attn use_short_conv: q/k/v_conv1d.weight [C, 1, 4]");
    lina_model_free(m);
    m = NULL;
    c.use_short_conv = 0;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && absent(m, NM("q_conv1d.weight")) && absent(m, NM("v_conv1d.weight")),
          "linear_attn without use_short_conv: no conv tensors");
    lina_model_free(m);
    m = NULL;
    c = tiny_la("hedgehog");
    rc = lina_model_create(&c, 1, &m);
    ok = rc == 0 && has_shape(m, NM("feature_map_q.layer.weight"), 2, 8, 8, 0) &&
         has_shape(m, NM("feature_map_k.layer.bias"), 1, 8, 0, 0);
    if (ok) {
        /* FLA's HedgehogFeatureMap starts at the identity, bias 0 */
        size_t off = 0, offb = 0;
        lina_model_tensor(m, lina_model_find_tensor(m, NM("feature_map_k.layer.weight")), NULL, NULL, NULL, &off, NULL);
        lina_model_tensor(m, lina_model_find_tensor(m, NM("feature_map_k.layer.bias")), NULL, NULL, NULL, &offb, NULL);
        const float *P = lina_model_params(m);
        for (int i = 0; i < 8; i++) {
            ok &= P[offb + i] == 0.0f;
            for (int j = 0; j < 8; j++) {
                ok &= P[off + i * 8 + j] == (i == j ? 1.0f : 0.0f);
            }
        }
    }
    CHECK(ok, "linear_attn hedgehog: feature_map_q/k.layer.{weight,bias} [K,K], [K], weight initialised to I");
    lina_model_free(m);
    m = NULL;
    c = tiny_la("t2r");
    c.elementwise_affine = 0;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && has_shape(m, NM("feature_map_k.layer.weight"), 2, 8, 8, 0) &&
              absent(m, NM("feature_map_k.layer.bias")) && absent(m, NM("norm.weight")),
          "linear_attn t2r: layer.weight without bias; no norm.weight without elementwise_affine");
    lina_model_free(m);
    m = NULL;
    const char *plain[] = {"identity", "elu", "relu", "dpfp"};
    ok = 1;
    for (int i = 0; i < 4; i++) {
        c = tiny_la(plain[i]);
        rc = lina_model_create(&c, 1, &m);
        int nt = rc ? -1 : lina_model_num_tensors(m);
        /* emb, 2 x (attn_norm, q, k, v, norm, o, mlp_norm, gate, up, down), norm, lm_head */
        ok &= nt == 1 + 2 * 10 + 2;
        lina_model_free(m);
        m = NULL;
    }
    CHECK(ok, "linear_attn identity/elu/relu/dpfp: no feature-map tensors");
#undef NM
}

static void test_dp_names(void)
{
    char nm[128];
#define NM(s) (snprintf(nm, sizeof(nm), "model.layers.0.attn.%s", s), nm)
    /* n = 3, H = 2, K = 4, HV = 4 (GVA), V = 8, W = 4 */
    lina_config c = tiny_dp(3, 1, 1, 1);
    c.num_v_heads = 4;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    int ok = rc == 0 && has_shape(m, NM("q_proj.weight"), 2, 8, 16, 0) && has_shape(m, NM("k_proj.weight"), 2, 24, 16, 0) &&
             has_shape(m, NM("v_proj.weight"), 2, 96, 16, 0) && has_shape(m, NM("b_proj.weight"), 2, 12, 16, 0) &&
             has_shape(m, NM("a_proj.weight"), 2, 4, 16, 0) && has_shape(m, NM("A_log"), 1, 4, 0, 0) &&
             has_shape(m, NM("dt_bias"), 1, 4, 0, 0) && has_shape(m, NM("q_conv1d.weight"), 3, 8, 1, 4) &&
             has_shape(m, NM("k_conv1d.weight"), 3, 24, 1, 4) && has_shape(m, NM("v_conv1d.weight"), 3, 96, 1, 4) &&
             has_shape(m, NM("g_proj.weight"), 2, 32, 16, 0) && has_shape(m, NM("o_norm.weight"), 1, 8, 0, 0) &&
             has_shape(m, NM("o_proj.weight"), 2, 16, 32, 0) && decay_of(m, NM("A_log")) == 0 &&
             decay_of(m, NM("dt_bias")) == 0 && decay_of(m, NM("o_norm.weight")) == 0;
    if (ok) {
        size_t off = 0;
        lina_model_tensor(m, lina_model_find_tensor(m, NM("A_log")), NULL, NULL, NULL, &off, NULL);
        const float *P = lina_model_params(m);
        for (int i = 0; i < 4; i++) {
            ok &= P[off + i] <= (float)log(16.0) + 1e-6f; /* ln U(0, 16) */
        }
    }
    CHECK(ok, "gated_deltaproduct names and shapes (n_h 3, GVA): docs/checkpoints.md 2.2");
    lina_model_free(m);
    m = NULL;
    c = tiny_dp(2, 0, 0, 0);
    c.use_output_gate = 0;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && absent(m, NM("a_proj.weight")) && absent(m, NM("A_log")) && absent(m, NM("dt_bias")) &&
              absent(m, NM("q_conv1d.weight")) && absent(m, NM("g_proj.weight")) &&
              has_shape(m, NM("o_norm.weight"), 1, 8, 0, 0) && has_shape(m, NM("k_proj.weight"), 2, 16, 16, 0),
          "gated_deltaproduct without forget gate, convs, output gate: no a_proj/A_log/dt_bias/convs/g_proj");
    lina_model_free(m);
#undef NM
}

static void test_errors(void)
{
    lina_config c = tiny_la("cosine");
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc == LINA_EINVAL && m == NULL && strstr(lina_last_error(), "feature_map") &&
              strstr(lina_last_error(), "cosine"),
          "linear_attn unknown feature_map fails: %s", lina_last_error());
    lina_model_free(m);
    m = NULL;
    c = tiny_la("");
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == LINA_EINVAL && m == NULL && strstr(lina_last_error(), "null"), "linear_attn feature_map null fails: %s",
          lina_last_error());
    lina_model_free(m);
    m = NULL;
    c = tiny_la("elu");
    c.expand_k = 0.5; /* key dim 8 over 3 heads */
    c.num_heads = 3;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && m == NULL, "linear_attn key dim not a multiple of num_heads fails: %s", lina_last_error());
    lina_model_free(m);
    m = NULL;
    c = tiny_dp(2, 1, 0, 1);
    c.num_v_heads = 3;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && m == NULL, "gated_deltaproduct num_v_heads not a multiple of num_heads fails: %s",
          lina_last_error());
    lina_model_free(m);
    m = NULL;
    c = tiny_dp(0, 1, 0, 1);
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && m == NULL, "gated_deltaproduct num_householder 0 fails: %s", lina_last_error());
    lina_model_free(m);
}

/* config.json round trip: the model types parse from FLA-style JSON */
static void test_config_json(void)
{
    const char *js = "{\"model_type\": \"linear_attn\", \"hidden_size\": 16, \"num_hidden_layers\": 1, "
                     "\"num_heads\": 2, \"vocab_size\": 40, \"feature_map\": \"hedgehog\", "
                     "\"tie_feature_map_qk\": true, \"norm_feature_map\": true, \"intermediate_size\": 32}";
    lina_config c;
    lina_model *m = NULL;
    int rc = lina_config_parse(js, strlen(js), "la.json", &c);
    rc = rc ? rc : lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && has_shape(m, "model.layers.0.attn.feature_map_q.layer.weight", 2, 8, 8, 0) &&
              absent(m, "model.layers.0.attn.feature_map_k.layer.weight"),
          "linear_attn from config.json (hedgehog, tied, normalised) (%s)", rc ? lina_last_error() : "ok");
    lina_model_free(m);
    m = NULL;
    js = "{\"model_type\": \"gated_deltaproduct\", \"hidden_size\": 16, \"num_hidden_layers\": 1, "
         "\"num_heads\": 2, \"head_dim\": 4, \"vocab_size\": 40, \"num_householder\": 2, "
         "\"use_forget_gate\": true, \"allow_neg_eigval\": true, \"intermediate_size\": 32}";
    rc = lina_config_parse(js, strlen(js), "dp.json", &c);
    rc = rc ? rc : lina_model_create(&c, 1, &m);
    CHECK(rc == 0 && has_shape(m, "model.layers.0.attn.k_proj.weight", 2, 16, 16, 0) &&
              has_shape(m, "model.layers.0.attn.A_log", 1, 2, 0, 0),
          "gated_deltaproduct from config.json (n_h 2, forget gate) (%s)", rc ? lina_last_error() : "ok");
    lina_model_free(m);
}

/* save + load (config.json + model.safetensors) gives the same logits */
static void test_save_load(const char *label, lina_config c)
{
    lina_model *m = NULL, *m2 = NULL;
    char dir[] = "/tmp/lina_test_la_XXXXXX";
    int rc = mkdtemp(dir) ? 0 : -1;
    rc = rc ? rc : lina_model_create(&c, 5, &m);
    if (!rc) {
        randomize(m);
    }
    rc = rc ? rc : lina_model_save(m, dir);
    rc = rc ? rc : lina_model_load(dir, &m2);
    int B = 1, T = 5, V = c.vocab_size;
    int32_t tok[5] = {1, 7, 3, 9, 2};
    float *a = malloc((size_t)B * T * V * sizeof(float)), *b = malloc((size_t)B * T * V * sizeof(float));
    rc = rc ? rc : lina_model_forward_logits(m, tok, B, T, a, NULL);
    rc = rc ? rc : lina_model_forward_logits(m2, tok, B, T, b, NULL);
    CHECK(rc == 0 && memcmp(a, b, (size_t)B * T * V * sizeof(float)) == 0, "%s: save + load gives identical logits (%s)",
          label, rc ? lina_last_error() : "ok");
    char path[512];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    remove(path);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    remove(path);
    rmdir(dir);
    free(a);
    free(b);
    lina_model_free(m);
    lina_model_free(m2);
}

int main(void)
{
    (void)rlogsig;
    g_ref_mixer = ref_mixer;
    test_la_names();
    test_dp_names();
    test_errors();
    test_config_json();
    /* linear attention: every feature map */
    const char *fmaps[] = {"identity", "elu", "relu", "elementwise_product", "hedgehog", "t2r", "dpfp"};
    char label[128];
    for (int i = 0; i < 7; i++) {
        lina_config c = tiny_la(fmaps[i]);
        snprintf(label, sizeof(label), "linear_attn %s", fmaps[i]);
        test_fd(label, c, 2, 9, i == 3 ? 1.0 : 0.08);
        snprintf(label, sizeof(label), "linear_attn %s forms", fmaps[i]);
        test_forms(label, c);
        snprintf(label, sizeof(label), "linear_attn %s decode", fmaps[i]);
        test_decode(label, c);
    }
    lina_config c = tiny_la("elementwise_product");
    c.tie_feature_map_qk = 1;
    test_fd("linear_attn elementwise_product tied", c, 2, 9, 0.05);
    c = tiny_la("hedgehog");
    c.tie_feature_map_qk = 1;
    c.norm_feature_map = 1;
    test_fd("linear_attn hedgehog tied + normaliser", c, 2, 9, 0.05);
    test_decode("linear_attn hedgehog normaliser decode", c);
    test_forms("linear_attn hedgehog normaliser forms", c);
    c = tiny_la("elu");
    c.norm_q = 1;
    c.norm_k = 1;
    c.norm_feature_map = 1;
    test_fd("linear_attn elu norm_q norm_k normaliser", c, 2, 9, 0.05);
    test_decode("linear_attn elu norm_q norm_k normaliser decode", c);
    c = tiny_la("t2r");
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.elementwise_affine = 0;
    test_fd("linear_attn t2r kv groups (4 heads, 2 kv heads), no norm weight", c, 2, 9, 0.05);
    test_decode("linear_attn t2r kv groups decode", c);
    c = tiny_la("dpfp");
    c.num_heads = 4;
    c.num_kv_heads = 1;
    test_fd("linear_attn dpfp 4 heads, 1 kv head", c, 2, 9, 0.05);
    test_fd("linear_attn elementwise_product across chunks", tiny_la("elementwise_product"), 1, 67, 0.03);
    /* the short convolution (a lina option): names, gradients, forms, decode with the conv tails */
    c = tiny_la("elu");
    c.use_short_conv = 1;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    test_fd("linear_attn elu short conv, kv groups", c, 2, 9, 0.1);
    test_forms("linear_attn elu short conv forms", c);
    test_decode("linear_attn elu short conv decode", c);
    c = tiny_la("hedgehog");
    c.use_short_conv = 1;
    c.conv_size = 3;
    c.norm_feature_map = 1;
    test_fd("linear_attn hedgehog short conv (W 3), normaliser", c, 2, 9, 0.1);
    test_decode("linear_attn hedgehog short conv normaliser decode", c);
    c = tiny_la("elu");
    c.attn.enabled = 1; /* hybrid: layer 1 is softmax attention */
    c.attn.n_layers = 1;
    c.attn.layers[0] = 1;
    c.attn.num_heads = 4;
    c.attn.num_kv_heads = 2;
    c.attn.rope_theta = 10000.0;
    test_fd("linear_attn + attn hybrid", c, 2, 9, 0.05);
    test_decode("linear_attn + attn hybrid decode", c);
    /* gated deltaproduct */
    test_fd("gated_deltaproduct n_h 1, forget gate, conv", tiny_dp(1, 1, 0, 1), 2, 8, 0.08);
    test_fd("gated_deltaproduct n_h 2, forget gate, neg eigval, conv", tiny_dp(2, 1, 1, 1), 2, 9, 1.0);
    test_fd("gated_deltaproduct n_h 3, no forget gate, neg eigval, no conv", tiny_dp(3, 0, 1, 0), 2, 9, 0.05);
    c = tiny_dp(2, 1, 0, 1);
    c.use_output_gate = 0;
    test_fd("gated_deltaproduct n_h 2, no output gate", c, 2, 7, 0.05);
    c = tiny_dp(2, 1, 1, 1);
    c.num_v_heads = 4;
    test_fd("gated_deltaproduct n_h 2 GVA (4 value heads, 2 q/k heads)", c, 2, 9, 0.05);
    test_decode("gated_deltaproduct GVA decode", c);
    test_fd("gated_deltaproduct n_h 2 across chunks (T=67: 134 sub-steps)", tiny_dp(2, 1, 1, 1), 1, 67, 0.03);
    test_fd("gated_deltaproduct n_h 3 across chunks, no forget gate", tiny_dp(3, 0, 0, 1), 1, 67, 0.03);
    test_forms("gated_deltaproduct n_h 2 forms", tiny_dp(2, 1, 1, 1));
    test_forms("gated_deltaproduct n_h 3 no forget gate, no conv forms", tiny_dp(3, 0, 1, 0));
    test_forms("gated_deltaproduct n_h 1 forms", tiny_dp(1, 1, 0, 1));
    test_decode("gated_deltaproduct n_h 1 decode", tiny_dp(1, 1, 0, 1));
    test_decode("gated_deltaproduct n_h 2 decode", tiny_dp(2, 1, 1, 1));
    test_decode("gated_deltaproduct n_h 3 no conv decode", tiny_dp(3, 0, 1, 0));
    lina_config sl = tiny_la("hedgehog");
    sl.tie_feature_map_qk = 1;
    sl.norm_feature_map = 1;
    test_save_load("linear_attn hedgehog tied normalised", sl);
    sl = tiny_dp(3, 1, 1, 1);
    sl.num_v_heads = 4;
    test_save_load("gated_deltaproduct n_h 3 GVA", sl);
    return th_exit();
}
