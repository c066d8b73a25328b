/* test_torch_ref.c -- lina's causal LMs against an independent PyTorch
 * implementation (dev/torch_ref.py, written from docs/mixers.md, float64 autograd).
 *
 * For every case directory tests/ref/torch/<case>/ (gla, gated_deltanet,
 * delta_net, transformer, hybrid_gla_attn, and the option variants
 * gated_deltanet_gva: num_v_heads > num_heads with allow_neg_eigval and
 * conv_size 3; gla_gqa_nogate: num_kv_heads < num_heads, no output gate,
 * clamp_min; delta_net_gate: use_gate, allow_neg_eigval, expand_k 0.5; mamba2: backbone names,
 * no MLP, conv bias, grouped gated RMSNorm; mamba: Mamba-1 with in/out biases, dt_rank 2,
 * tied embeddings; forgetting_transformer: grouped kv heads, qkv biases, qk_norm, output gate;
 * forgetting_transformer_window: window 5, tied embeddings; hgrn: 3 layers with model.lower_bounds,
 * short convs; rwkv7: RWKV-7 with value_dim != hidden_size, three layers for v_first; gsa: grouped
 * kv heads, 6 slots, the t2r feature map, short convs; transformer_conv: softmax attention with
 * lina's SiLU short convs on q, k, v, as the MQAR task builds it) the
 * model is loaded with
 * lina_model_load (config.json + model.safetensors written by the python
 * script, so the state-dict names and shapes are checked too) and compared
 * with the reference files:
 *   - logits of lina_model_forward_logits (chunk form) vs logits.npy,
 *   - the mean cross-entropy of lina_model_train_step (targets with -100) vs
 *     loss.npy, and lina_model_eval_loss vs the same,
 *   - every parameter gradient, by name and shape, vs grads.safetensors (a
 *     tied lm_head's gradient is folded into the embedding in both),
 *   - prefill (chunk form, crossing the 64-token chunk boundary) followed by
 *     single-token lina_model_decode steps, and decode token by token from
 *     position 0, vs logits.npy.
 * Errors are max |lina - ref| / max |ref| over the tensor (float32 lina vs a
 * float64 reference); tolerance 1e-4 (5e-4 per gradient tensor). A missing or unreadable case directory
 * is a FAIL: the reference files are committed. No python at test time.
 *
 * Regenerate the references (deterministic seeds) with
 *     /usr/bin/python3 dev/torch_ref.py
 * (add --check to also compare the chunkwise torch mixers of
 * bench/torch_train.py with the recurrent ones). LINA_TORCH_REF=DIR points the
 * test at another reference directory. */
#include "harness.h"
#include "lina.h"

#include <stdint.h>
#include <string.h>

#define TOL 1e-4      /* logits, loss */
#define GRAD_TOL 5e-4 /* per gradient tensor (docs/ops.md's gradient tolerance): a tensor whose gradient
                         is a small sum with cancellation (Gated DeltaNet's dt_bias) reaches
                         ~1e-4 from float32 round-off alone; torch's own float32 run gives 3e-5 */
#define PREFILL 66 /* > 64: the prefill itself crosses a chunk boundary */

static const char *const cases[] = {"gla",       "gated_deltanet",     "delta_net",      "transformer",
                                     "hybrid_gla_attn", "gated_deltanet_gva", "gla_gqa_nogate", "delta_net_gate", "mamba2",
                                     "mamba", "forgetting_transformer", "forgetting_transformer_window",
                                     "hgrn", "rwkv7", "gsa", "transformer_conv"};

static int read_npy(const char *dir, const char *name, lina_tensor *t)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (lina_npy_read(path, t) != 0) {
        printf("    %s\n", lina_last_error());
        return -1;
    }
    return 0;
}

/* float32 .npy of integer ids -> int32 */
static int32_t *to_ids(const lina_tensor *t)
{
    int64_t n = lina_tensor_numel(t);
    int32_t *ids = malloc((size_t)n * sizeof(*ids));
    if (!ids) {
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        ids[i] = (int32_t)lrintf(t->data[i]);
    }
    return ids;
}

/* every parameter gradient against grads.safetensors, by name */
static void check_grads(lina_model *m, const char *dir, const char *cs)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/grads.safetensors", dir);
    lina_st_file *f = NULL;
    if (lina_st_open(path, &f) != 0) {
        CHECK(0, "%s: read grads.safetensors: %s", cs, lina_last_error());
        return;
    }
    const float *g = lina_model_grads(m);
    int nt = lina_model_num_tensors(m), nbad = 0;
    double worst = 0.0;
    const char *worst_name = "";
    CHECK(nt == lina_st_count(f), "%s: %d parameter tensors in lina, %d in the reference", cs, nt, lina_st_count(f));
    for (int i = 0; i < nt; i++) {
        const char *name;
        int ndim;
        const int64_t *shape;
        size_t off;
        lina_model_tensor(m, i, &name, &ndim, &shape, &off, NULL);
        int j = lina_st_find(f, name);
        int64_t rs[LINA_MAX_DIMS], n = 1;
        int rnd = j >= 0 ? lina_st_shape(f, j, rs) : -1;
        int same = rnd == ndim;
        for (int d = 0; same && d < ndim; d++) {
            same = rs[d] == shape[d];
            n *= shape[d];
        }
        if (!same) {
            CHECK(0, "%s: gradient %s: %s", cs, name, j < 0 ? "missing from the reference" : "shape differs");
            nbad++;
            continue;
        }
        float *ref = malloc((size_t)n * sizeof(*ref));
        if (!ref || lina_st_load(f, j, ref, n) != 0) {
            CHECK(0, "%s: gradient %s: load failed", cs, name);
            free(ref);
            nbad++;
            continue;
        }
        double e = th_relerr(g + off, ref, (size_t)n);
        if (!(e <= GRAD_TOL)) {
            CHECK(0, "%s: gradient %s rel err %.3e", cs, name, e);
            nbad++;
        }
        if (!(e <= worst)) {
            worst = e;
            worst_name = name;
        }
        free(ref);
    }
    CHECK(nbad == 0, "%s: all %d parameter gradients vs torch (worst %s: %.3e)", cs, nt, worst_name, worst);
    lina_st_close(f);
}

/* prefill of p tokens (p >= 1; p == 0: none) then single-token decode steps */
static double decode_err(lina_model *m, const int32_t *ids, const float *ref, int B, int T, int Vv, int p)
{
    lina_model_state *s = NULL;
    float *lg = malloc((size_t)B * T * Vv * sizeof(*lg));
    float *step = malloc((size_t)B * (p > 0 ? p : 1) * Vv * sizeof(*step));
    int32_t *tk = malloc((size_t)B * (p > 0 ? p : 1) * sizeof(*tk));
    double e = INFINITY;
    if (!lg || !step || !tk || lina_model_state_create(m, B, T, &s) != 0) {
        goto done;
    }
    if (p > 0) {
        for (int b = 0; b < B; b++) {
            memcpy(tk + (size_t)b * p, ids + (size_t)b * T, (size_t)p * sizeof(*tk));
        }
        if (lina_model_decode(m, s, tk, B, p, step, NULL) != 0) {
            printf("    %s\n", lina_last_error());
            goto done;
        }
        for (int b = 0; b < B; b++) {
            memcpy(lg + (size_t)b * T * Vv, step + (size_t)b * p * Vv, (size_t)p * Vv * sizeof(*lg));
        }
    }
    for (int t = p; t < T; t++) {
        for (int b = 0; b < B; b++) {
            tk[b] = ids[(size_t)b * T + t];
        }
        if (lina_model_decode(m, s, tk, B, 1, step, NULL) != 0) {
            printf("    %s\n", lina_last_error());
            goto done;
        }
        for (int b = 0; b < B; b++) {
            memcpy(lg + ((size_t)b * T + t) * Vv, step + (size_t)b * Vv, (size_t)Vv * sizeof(*lg));
        }
    }
    if (lina_model_state_pos(s) != T) {
        printf("    state position %lld, expected %d\n", (long long)lina_model_state_pos(s), T);
        goto done;
    }
    e = th_relerr(lg, ref, (size_t)B * T * Vv);
done:
    lina_model_state_free(s);
    free(lg);
    free(step);
    free(tk);
    return e;
}

static void run_case(const char *root, const char *cs)
{
    char dir[768];
    snprintf(dir, sizeof(dir), "%s/%s", root, cs);
    lina_model *m = NULL;
    lina_tensor tok = {0}, tgt = {0}, lref = {0}, loss = {0};
    int32_t *ids = NULL, *tids = NULL;
    float *lg = NULL;
    if (lina_model_load(dir, &m) != 0) {
        CHECK(0, "%s: lina_model_load(%s): %s", cs, dir, lina_last_error());
        return;
    }
    CHECK(1, "%s: lina_model_load of the torch-written config.json + model.safetensors", cs);
    if (read_npy(dir, "tokens.npy", &tok) || read_npy(dir, "targets.npy", &tgt) ||
        read_npy(dir, "logits.npy", &lref) || read_npy(dir, "loss.npy", &loss)) {
        CHECK(0, "%s: reference files", cs);
        goto done;
    }
    const lina_config *c = lina_model_config(m);
    int Vv = c->vocab_size;
    int B = (int)tok.shape[0], T = (int)tok.shape[1];
    if (tok.ndim != 2 || tgt.ndim != 2 || tgt.shape[0] != B || tgt.shape[1] != T || lref.ndim != 3 ||
        lref.shape[0] != B || lref.shape[1] != T || lref.shape[2] != Vv || lina_tensor_numel(&loss) != 1) {
        CHECK(0, "%s: reference shapes (tokens, targets, logits [B,T,vocab], loss [1])", cs);
        goto done;
    }
    ids = to_ids(&tok);
    tids = to_ids(&tgt);
    lg = malloc((size_t)B * T * Vv * sizeof(*lg));
    if (!ids || !tids || !lg) {
        CHECK(0, "%s: out of memory", cs);
        goto done;
    }

    /* logits, one forward (chunk form) */
    double e = INFINITY;
    if (lina_model_forward_logits(m, ids, B, T, lg, NULL) == 0) {
        e = th_relerr(lg, lref.data, (size_t)B * T * Vv);
    } else {
        printf("    %s\n", lina_last_error());
    }
    CHECK(e <= TOL, "%s: logits [%d,%d,%d] vs torch float64: rel err %.3e", cs, B, T, Vv, e);

    /* loss and gradients */
    double ref_loss = loss.data[0], l = NAN, le = NAN;
    lina_model_zero_grad(m);
    int rc = lina_model_train_step(m, ids, tids, B, T, &l, NULL);
    if (rc != 0) {
        printf("    %s\n", lina_last_error());
    }
    CHECK(rc == 0 && fabs(l - ref_loss) <= TOL * fabs(ref_loss), "%s: train_step loss %.7f vs torch %.7f", cs, l,
          ref_loss);
    if (rc == 0) {
        check_grads(m, dir, cs);
    }
    rc = lina_model_eval_loss(m, ids, tids, B, T, &le, NULL);
    CHECK(rc == 0 && fabs(le - ref_loss) <= TOL * fabs(ref_loss), "%s: eval_loss %.7f vs torch %.7f", cs, le,
          ref_loss);

    /* incremental inference */
    int p = T > PREFILL ? PREFILL : T / 2;
    e = decode_err(m, ids, lref.data, B, T, Vv, p);
    CHECK(e <= TOL, "%s: prefill %d + %d decode steps vs torch logits: rel err %.3e", cs, p, T - p, e);
    e = decode_err(m, ids, lref.data, B, T, Vv, 0);
    CHECK(e <= TOL, "%s: %d single-token decode steps from position 0 vs torch logits: rel err %.3e", cs, T, e);
done:
    free(ids);
    free(tids);
    free(lg);
    lina_tensor_free(&tok);
    lina_tensor_free(&tgt);
    lina_tensor_free(&lref);
    lina_tensor_free(&loss);
    lina_model_free(m);
}

int main(void)
{
    const char *root = getenv("LINA_TORCH_REF");
    if (!root || !*root) {
        root = "tests/ref/torch";
    }
    lina_set_threads(2);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_case(root, cases[i]);
    }
    return th_exit();
}
