/* test_varlen_model.c -- packed-document training for every model type: the loss and
 * every parameter gradient of a packed batch (lina_model_train_step_varlen) equal those
 * of the documents run one by one (each a B = 1 sequence of its own), weighted by their
 * target counts; a packed batch differs from the same tokens run without boundaries;
 * bad offsets are refused. */
#include "harness.h"
#include "lina.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define LOSS_TOL 1e-5
#define GRAD_TOL 1e-4 /* max |packed - one by one| / max(1e-3, max |one by one|) */

/* tiny configs of every model type (auxiliary losses off here: g_aux has them) */
static const char *const g_cfgs[] = {
    "{\"model_type\":\"gla\",\"num_heads\":2}",
    "{\"model_type\":\"gla\",\"num_heads\":2,\"use_short_conv\":true,\"initializer_range\":0.2}",
    "{\"model_type\":\"gla\",\"num_heads\":2,\"attn\":{\"layers\":[1],\"num_heads\":2,\"window_size\":4}}",
    "{\"model_type\":\"gla\",\"num_heads\":2,\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":24,"
    "\"router_aux_loss_coef\":0}",
    "{\"model_type\":\"retnet\",\"num_heads\":2}",
    "{\"model_type\":\"hgrn2\",\"num_heads\":2,\"expand_ratio\":16}",
    "{\"model_type\":\"delta_net\",\"num_heads\":2}",
    "{\"model_type\":\"gated_deltanet\",\"num_heads\":2,\"head_dim\":16}",
    "{\"model_type\":\"gated_deltaproduct\",\"num_heads\":2,\"head_dim\":16,\"num_householder\":2,"
    "\"use_forget_gate\":true,\"allow_neg_eigval\":true}",
    "{\"model_type\":\"gated_deltanet\",\"num_heads\":2,\"head_dim\":8,\"num_v_heads\":4}",
    "{\"model_type\":\"kda\",\"num_heads\":2,\"head_dim\":16}",
    "{\"model_type\":\"linear_attn\",\"num_heads\":2,\"feature_map\":\"hedgehog\",\"expand_k\":0.5}",
    "{\"model_type\":\"mamba2\",\"head_dim\":16,\"state_size\":16,\"expand\":2}",
    "{\"model_type\":\"mlstm\",\"num_heads\":2}",
    "{\"model_type\":\"mom\",\"num_heads\":2,\"head_dim\":16,\"num_memories\":4,\"topk\":2,\"aux_loss_scale\":0}",
    "{\"model_type\":\"transformer\",\"num_heads\":2}",
    "{\"model_type\":\"gsa\",\"num_heads\":2,\"num_kv_heads\":1,\"num_slots\":8,\"use_short_conv\":true}",
};

/* with their auxiliary losses (summed per document), and the same without */
static const char *const g_aux[][2] = {
    {"{\"model_type\":\"gla\",\"num_heads\":2,\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":24,"
     "\"router_aux_loss_coef\":0.5}",
     "{\"model_type\":\"gla\",\"num_heads\":2,\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":24,"
     "\"router_aux_loss_coef\":0}"},
    {"{\"model_type\":\"mom\",\"num_heads\":2,\"head_dim\":16,\"num_memories\":4,\"topk\":2,\"aux_loss_scale\":0.5}",
     "{\"model_type\":\"mom\",\"num_heads\":2,\"head_dim\":16,\"num_memories\":4,\"topk\":2,\"aux_loss_scale\":0}"},
};

enum { B = 2, T = 40, VOCAB = 37 };

static int make_model_v(const char *json, int vocab, lina_model **m)
{
    char buf[1024];
    /* the shared small sizes, then the type's own keys */
    snprintf(buf, sizeof buf,
             "{\"hidden_size\":32,\"num_hidden_layers\":2,\"vocab_size\":%d,\"intermediate_size\":48,%s", vocab,
             json + 1);
    lina_config c;
    int rc = lina_config_parse(buf, strlen(buf), "test config", &c);
    rc = rc ? rc : lina_model_create(&c, 7, m);
    if (rc) {
        printf("# %s: %s\n", json, lina_last_error());
    }
    return rc;
}

static int make_model(const char *json, lina_model **m)
{
    return make_model_v(json, VOCAB, m);
}

/* documents over the B*T flattened tokens; the row start T is not listed (the model adds
 * it), so the document [33, 47) runs as [33, 40) and [40, 47) */
static const int64_t g_cu[] = {0, 1, 9, 16, 17, 33, 47, 48, 64, 65, 80};
#define NCU ((int64_t)(sizeof g_cu / sizeof g_cu[0]))
static const int64_t g_docs[] = {0, 1, 9, 16, 17, 33, 40, 47, 48, 64, 65, 80}; /* with the row start */
#define NDOCS ((int)(sizeof g_docs / sizeof g_docs[0]) - 1)

/* json0: NULL, or json with its auxiliary loss off (then the packed loss is the
 * documents' cross-entropy weighted by their target counts plus each document's
 * auxiliary loss, summed; json0's model gives the cross-entropy part) */
static void test_type(const char *json, const char *json0, lina_ws *ws)
{
    lina_model *m, *m0 = NULL;
    if (make_model(json, &m) != 0 || (json0 && make_model(json0, &m0) != 0)) {
        CHECK(0, "varlen model %s: created", json);
        return;
    }
    if (m0) {
        memcpy(lina_model_params(m0), lina_model_params(m), lina_model_num_params(m) * sizeof(float));
    }
    char type[64];
    snprintf(type, sizeof type, "%s%s%s%s", lina_model_type_name(lina_model_config(m)->model_type),
             strstr(json, "short_conv") ? " (short conv)" : "", strstr(json, "\"attn\"") ? " + attention layer" : "",
             strstr(json, "experts") ? " (MoE)" : "");
    if (m0) {
        snprintf(type + strlen(type), sizeof type - strlen(type), " with its auxiliary loss");
    }
    int32_t tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int32_t)th_uniform(0, VOCAB - 0.001);
    }
    /* next token within a document; a document's last position is ignored */
    for (int d = 0; d < NDOCS; d++) {
        for (int64_t i = g_docs[d]; i < g_docs[d + 1]; i++) {
            tgt[i] = i + 1 < g_docs[d + 1] ? tok[i + 1] : LINA_IGNORE_INDEX;
        }
    }
    size_t np = lina_model_num_params(m);
    float *gp = malloc(np * sizeof(float));
    double *gref = calloc(np, sizeof(double)), *gaux = calloc(np, sizeof(double));
    double lp = 0, lref = 0, lplain = 0, leval = 0, laux = 0;
    int64_t count = 0;
    lina_model_zero_grad(m);
    int rc = lina_model_train_step_varlen(m, tok, tgt, B, T, g_cu, NCU, &lp, ws);
    memcpy(gp, lina_model_grads(m), np * sizeof(float));
    rc = rc ? rc : lina_model_eval_loss_varlen(m, tok, tgt, B, T, g_cu, NCU, &leval, ws);
    for (int d = 0; d < NDOCS && !rc; d++) {
        int64_t a = g_docs[d], len = g_docs[d + 1] - a, cd = 0;
        for (int64_t i = a; i < a + len; i++) {
            cd += tgt[i] != LINA_IGNORE_INDEX;
        }
        double l = 0, l0 = 0;
        lina_model_zero_grad(m);
        rc = lina_model_train_step(m, tok + a, tgt + a, 1, (int)len, &l, ws);
        const float *g = lina_model_grads(m);
        if (m0) { /* cross-entropy l0 (weighted below) + the document's auxiliary loss l - l0 */
            lina_model_zero_grad(m0);
            rc = rc ? rc : lina_model_train_step(m0, tok + a, tgt + a, 1, (int)len, &l0, ws);
            const float *g0 = lina_model_grads(m0);
            for (size_t i = 0; i < np; i++) {
                gaux[i] += (double)g[i] - (double)g0[i];
                gref[i] += cd ? (double)g0[i] * (double)cd : 0;
            }
            laux += l - l0;
            l = l0;
        } else {
            for (size_t i = 0; i < np && cd; i++) {
                gref[i] += (double)g[i] * (double)cd;
            }
        }
        lref += cd ? l * (double)cd : 0;
        count += cd;
    }
    lref = lref / (double)count + laux;
    double gmax = 1e-3, gerr = 0;
    for (size_t i = 0; i < np; i++) {
        gref[i] = gref[i] / (double)count + gaux[i];
        gmax = fabs(gref[i]) > gmax ? fabs(gref[i]) : gmax;
    }
    for (size_t i = 0; i < np; i++) {
        double e = fabs((double)gp[i] - gref[i]);
        gerr = !(e <= gerr) ? e : gerr;
    }
    CHECK(rc == 0 && fabs(lp - lref) <= LOSS_TOL * fabs(lref) && fabs(leval - (lref - laux)) <= LOSS_TOL * fabs(lref),
          "varlen model %s: packed loss %.7f == documents one by one %.7f (eval %.7f; auxiliary %.7f)", type, lp,
          lref, leval, laux);
    CHECK(rc == 0 && gerr <= GRAD_TOL * gmax, "varlen model %s: packed gradients == one by one (max err %.2e, "
          "max |g| %.2e)", type, gerr, gmax);
    /* without the boundaries the same tokens give another loss: the test sees them */
    lina_model_zero_grad(m);
    rc = lina_model_train_step(m, tok, tgt, B, T, &lplain, ws);
    double gdiff = 0;
    for (size_t i = 0; i < np; i++) {
        double e = fabs((double)lina_model_grads(m)[i] - gp[i]);
        gdiff = e > gdiff ? e : gdiff;
    }
    CHECK(rc == 0 && gdiff > 10 * GRAD_TOL * gmax,
          "varlen model %s: boundaries matter (gradients differ by %.2e unpacked; loss %.6f vs %.6f)", type, gdiff,
          lplain, lp);
    free(gp);
    free(gref);
    free(gaux);
    lina_model_free(m);
    lina_model_free(m0);
}

static void test_errors(lina_ws *ws)
{
    lina_model *m;
    if (make_model(g_cfgs[0], &m) != 0) {
        CHECK(0, "varlen model errors: created");
        return;
    }
    int32_t tok[B * T] = {0}, tgt[B * T] = {0};
    double l;
    static const int64_t bad0[] = {1, 40, 80}, bad1[] = {0, 40, 40, 80}, bad2[] = {0, 40, 79};
    CHECK(lina_model_train_step_varlen(m, tok, tgt, B, T, bad0, 3, &l, ws) != 0 &&
              strstr(lina_last_error(), "start at 0"),
          "varlen model: offsets not from 0 refused: %s", lina_last_error());
    CHECK(lina_model_train_step_varlen(m, tok, tgt, B, T, bad1, 4, &l, ws) != 0 &&
              strstr(lina_last_error(), "strictly increasing"),
          "varlen model: an empty document refused: %s", lina_last_error());
    CHECK(lina_model_eval_loss_varlen(m, tok, tgt, B, T, bad2, 3, &l, ws) != 0 &&
              strstr(lina_last_error(), "end at T = 80"),
          "varlen model: offsets not ending at B*T refused: %s", lina_last_error());
    /* a failed call leaves the model in its ordinary mode */
    double a = 0.0, b2 = 0.0;
    static const int64_t whole[] = {0, 80};
    int rc = lina_model_eval_loss(m, tok, tgt, B, T, &a, ws);
    rc = rc ? rc : lina_model_eval_loss_varlen(m, tok, tgt, B, T, whole, 2, &b2, ws);
    CHECK(rc == 0 && fabs(a - b2) <= 1e-6 * fabs(a), "varlen model: [0, B*T] (rows only) == the plain call (%.7f, %.7f)",
          a, b2);
    lina_model_free(m);
}

/* lina_tok_docs: offsets after every separator and at every row start, separator targets ignored */
static void test_tok_docs(void)
{
    enum { RB = 2, RT = 6, SEP = 9 };
    const int32_t tok[RB * RT] = {1, 9, 2, 3, 9, 9, /* row 1 */ 4, 5, 9, 6, 7, 8};
    int32_t tgt[RB * RT];
    for (int i = 0; i < RB * RT; i++) {
        tgt[i] = 100 + i;
    }
    int64_t cu[RB * RT + 1], n = 0;
    lina_tok_docs(tok, tgt, RB, RT, SEP, cu, &n);
    static const int64_t want[] = {0, 2, 5, 6, 9, 12};
    int ok = n == 6 && memcmp(cu, want, sizeof want) == 0;
    for (int i = 0; i < RB * RT; i++) {
        ok &= tgt[i] == (tok[i] == SEP ? LINA_IGNORE_INDEX : 100 + i);
    }
    CHECK(ok, "lina_tok_docs: boundaries after separators and at row starts, separator targets ignored (%lld offsets)",
          (long long)n);
}

/* lina_train with pack: the first update's loss is the packed loss of the batch it samples */
static void test_train_pack(lina_ws *ws)
{
    char dir[64], path[128];
    snprintf(dir, sizeof dir, "/tmp/lina_vlm_XXXXXX");
    if (!mkdtemp(dir)) {
        CHECK(0, "train --pack: temporary directory");
        return;
    }
    uint32_t ids[3000];
    int n = 0;
    while (n < 2990) {
        int len = 1 + (int)th_uniform(0, 50);
        for (int i = 0; i < len && n < 2989; i++) {
            ids[n++] = (uint32_t)th_uniform(0, VOCAB - 1.001);
        }
        ids[n++] = VOCAB - 1; /* the separator */
    }
    snprintf(path, sizeof path, "%s/t.tok", dir);
    lina_tok_write(path, ids, (uint64_t)n, VOCAB, 0);
    double loss[2][1];
    for (int pack = 0; pack < 2; pack++) {
        lina_model *m;
        lina_trainable t;
        if (make_model(g_cfgs[0], &m) != 0 || lina_trainable_from_model(m, &t) != 0) {
            CHECK(0, "train --pack: model");
            return;
        }
        lina_train_opts o;
        lina_train_opts_default(&o);
        char out[96];
        snprintf(out, sizeof out, "%s/run%d", dir, pack);
        o.data_path = path;
        o.out_dir = out;
        o.steps = 1;
        o.batch = 2;
        o.seq_len = 48;
        o.save_every = 0;
        o.save_minutes = 0;
        o.progress = 0;
        o.seed = 5;
        o.pack = pack;
        o.doc_sep = VOCAB - 1;
        o.losses = loss[pack];
        int rc = lina_train(&t, &o);
        lina_model_free(m);
        if (rc) {
            CHECK(0, "train --pack: lina_train: %s", lina_last_error());
            return;
        }
    }
    /* the same batch by hand */
    lina_model *m;
    lina_tokfile *f;
    int32_t tok[2 * 48], tgt[2 * 48];
    int64_t cu[2 * 48 + 1], ncu;
    uint64_t rng = 5;
    double want = NAN;
    if (make_model(g_cfgs[0], &m) == 0 && lina_tok_open(path, &f) == 0) {
        if (lina_tok_sample(f, &rng, 2, 48, tok, tgt) == 0) {
            lina_tok_docs(tok, tgt, 2, 48, VOCAB - 1, cu, &ncu);
            lina_model_train_step_varlen(m, tok, tgt, 2, 48, cu, ncu, &want, ws);
        }
        lina_tok_close(f);
        lina_model_free(m);
    }
    CHECK(fabs(loss[1][0] - want) <= 1e-6 * fabs(want) && fabs(loss[0][0] - want) > 1e-6,
          "lina_train pack: first loss %.7f == the packed batch's %.7f (unpacked %.7f)", loss[1][0], want, loss[0][0]);
    /* --resume: trainer.json records --pack; resuming the other way is refused, the same way continues */
    char tj[128], text[8192] = "";
    snprintf(tj, sizeof tj, "%s/run1/checkpoint/trainer.json", dir);
    FILE *jf = fopen(tj, "r");
    size_t got = jf ? fread(text, 1, sizeof text - 1, jf) : 0;
    text[got] = '\0';
    if (jf) {
        fclose(jf);
    }
    CHECK(strstr(text, "\"pack\":\ttrue") || strstr(text, "\"pack\": true") || strstr(text, "\"pack\":true"),
          "lina_train pack: trainer.json records pack: true");
    for (int run = 0; run < 2; run++) {
        for (int pack = 0; pack < 2; pack++) {
            lina_trainable t;
            double l2[2] = {0, 0};
            if (make_model(g_cfgs[0], &m) != 0 || lina_trainable_from_model(m, &t) != 0) {
                CHECK(0, "train --pack resume: model");
                return;
            }
            lina_train_opts o;
            lina_train_opts_default(&o);
            char out[96];
            snprintf(out, sizeof out, "%s/run%d", dir, run);
            o.data_path = path;
            o.out_dir = out;
            o.steps = run == pack ? 2 : 1;
            o.batch = 2;
            o.seq_len = 48;
            o.save_every = 0;
            o.save_minutes = 0;
            o.progress = 0;
            o.seed = 5;
            o.pack = pack;
            o.doc_sep = VOCAB - 1;
            o.resume = 1;
            o.losses = l2;
            int rc = lina_train(&t, &o);
            lina_model_free(m);
            if (run == pack) {
                CHECK(rc == 0, "lina_train %s: resumes %s --pack (%s)", run ? "packed" : "unpacked",
                      pack ? "with" : "without", rc ? lina_last_error() : "ok");
            } else {
                CHECK(rc != 0 && strstr(lina_last_error(), pack ? "trained without --pack" : "trained with --pack"),
                      "lina_train %s: resuming %s --pack is refused: %s", run ? "packed" : "unpacked",
                      pack ? "with" : "without", lina_last_error());
            }
        }
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", dir);
    }
}

/* lina_model_decode_rows: a left-padded batch of unequal prompts, then greedy steps (row 2
 * skipped at one step), each row against its prompt run alone on its own state */
static void test_rows(const char *json, lina_ws *ws)
{
    enum { RB = 4, RT = 9, STEPS = 6 };
    static const int plen[RB] = {5, 1, 9, 3};
    lina_model *m;
    if (make_model(json, &m) != 0) {
        CHECK(0, "decode rows %s: created", json);
        return;
    }
    char type[64];
    snprintf(type, sizeof type, "%s%s%s%s", lina_model_type_name(lina_model_config(m)->model_type),
             strstr(json, "short_conv") ? " (short conv)" : "", strstr(json, "\"attn\"") ? " + attention layer" : "",
             strstr(json, "experts") ? " (MoE)" : "");
    const size_t V = VOCAB;
    int32_t tok[RB * RT] = {0};
    int len[RB];
    lina_model_state *rs[RB], *alone[RB];
    float *lg = malloc(RB * RT * V * sizeof(float)), *ref = malloc(RT * V * sizeof(float));
    int rc = 0;
    for (int b = 0; b < RB; b++) {
        for (int t = RT - plen[b]; t < RT; t++) {
            tok[b * RT + t] = (int32_t)th_uniform(0, VOCAB - 0.001);
        }
        for (int t = 0; t < RT - plen[b]; t++) {
            tok[b * RT + t] = (int32_t)th_uniform(0, VOCAB - 0.001); /* padding: any token, ignored */
        }
        len[b] = plen[b];
        rc |= lina_model_state_create(m, 1, RT + STEPS, &rs[b]);
        rc |= lina_model_state_create(m, 1, RT + STEPS, &alone[b]);
    }
    double err = 0, lmax = 0, padmax = 0;
    int same_tokens = 1;
    rc = rc ? rc : lina_model_decode_rows(m, rs, tok, len, RB, RT, lg, ws);
    int32_t next[RB];
    for (int b = 0; b < RB && !rc; b++) {
        rc = lina_model_decode(m, alone[b], tok + b * RT + (RT - plen[b]), 1, plen[b], ref, ws);
        for (size_t i = 0; i < (size_t)plen[b] * V && !rc; i++) {
            double e = fabs((double)lg[((size_t)b * RT + (RT - plen[b])) * V + i] - ref[i]);
            err = e > err ? e : err;
            lmax = fabs(ref[i]) > lmax ? fabs(ref[i]) : lmax;
        }
        for (size_t i = 0; i < (size_t)(RT - plen[b]) * V; i++) {
            padmax = fabs(lg[(size_t)b * RT * V + i]) > padmax ? fabs(lg[(size_t)b * RT * V + i]) : padmax;
        }
        next[b] = 0;
        for (size_t i = 1; i < V; i++) { /* greedy from the alone run */
            next[b] = ref[(plen[b] - 1) * V + i] > ref[(plen[b] - 1) * V + next[b]] ? (int32_t)i : next[b];
        }
    }
    for (int s = 0; s < STEPS && !rc; s++) {
        int32_t st[RB];
        for (int b = 0; b < RB; b++) {
            st[b] = next[b];
            len[b] = s == 2 && b == 2 ? 0 : 1; /* row 2 pauses once: its state must not move */
        }
        rc = lina_model_decode_rows(m, rs, st, len, RB, 1, lg, ws);
        for (int b = 0; b < RB && !rc; b++) {
            if (!len[b]) {
                for (size_t i = 0; i < V; i++) {
                    padmax = fabs(lg[b * V + i]) > padmax ? fabs(lg[b * V + i]) : padmax;
                }
                continue;
            }
            rc = lina_model_decode(m, alone[b], &st[b], 1, 1, ref, ws);
            int32_t g = 0, ga = 0;
            for (size_t i = 0; i < V; i++) {
                double e = fabs((double)lg[b * V + i] - ref[i]);
                err = e > err ? e : err;
                g = lg[b * V + i] > lg[b * V + g] ? (int32_t)i : g;
                ga = ref[i] > ref[ga] ? (int32_t)i : ga;
            }
            same_tokens &= g == ga;
            next[b] = ga;
        }
    }
    int pos_ok = 1;
    for (int b = 0; b < RB; b++) {
        pos_ok &= lina_model_state_pos(rs[b]) == lina_model_state_pos(alone[b]);
        lina_model_state_free(rs[b]);
        lina_model_state_free(alone[b]);
    }
    CHECK(rc == 0 && err <= 1e-5 * (lmax > 1 ? lmax : 1) && padmax == 0 && same_tokens && pos_ok,
          "decode rows %s: left-padded batch == each prompt alone (logits max err %.1e, padding logits %g, greedy "
          "tokens %s)%s%s",
          type, err, padmax, same_tokens ? "same" : "DIFFER", rc ? ": " : "", rc ? lina_last_error() : "");
    free(lg);
    free(ref);
    lina_model_free(m);
}

/* `lina generate --prompts`: the batch prints, for every prompt, what `lina generate -p` prints
 * for it alone (greedy) */
static void test_generate_prompts(void)
{
    const char *bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    char dir[64], cmd[1024], out[1024], one[1024], err[1024];
    snprintf(dir, sizeof dir, "/tmp/lina_vlg_XXXXXX");
    if (!mkdtemp(dir) || access(bin, X_OK) != 0) {
        CHECK(0, "generate --prompts: need %s and a temporary directory", bin);
        return;
    }
    static const char text[] = "the apple tree stood in the orchard and the old man picked the apples in autumn. "
                               "the pears were ripe, the plums were sweet, and the birds sang in the trees.";
    static const char *const prompts[] = {"the old man", "", "the birds sang in the", "a"};
    lina_tokenizer *tk = NULL;
    lina_model *m = NULL;
    const char *spec[] = {"<|endoftext|>"};
    char path[128];
    int rc = lina_tokenizer_train(text, sizeof text - 1, 300, spec, 1, &tk);
    rc = rc ? rc : make_model_v(g_cfgs[1], 300, &m);
    rc = rc ? rc : lina_model_save(m, dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    rc = rc ? rc : lina_tokenizer_save(tk, path);
    snprintf(path, sizeof path, "%s/p.txt", dir);
    FILE *f = rc ? NULL : fopen(path, "w");
    for (size_t i = 0; f && i < sizeof prompts / sizeof prompts[0]; i++) {
        fprintf(f, "%s\n", prompts[i]);
    }
    if (f) {
        fclose(f);
    }
    lina_tokenizer_free(tk);
    lina_model_free(m);
    for (size_t i = 0; !rc && i < sizeof prompts / sizeof prompts[0]; i++) {
        /* compared as files: an untrained model's bytes may include NUL */
        snprintf(cmd, sizeof cmd, "%s generate -m %s -p '%s' -n 8 --temp 0 -t 1 >>%s/alone.bin", bin, dir, prompts[i],
                 dir);
        rc = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    }
    snprintf(cmd, sizeof cmd, "%s generate -m %s --prompts %s -n 8 --temp 0 -t 1 >%s/batch.bin", bin, dir, path, dir);
    int rc2 = rc ? rc : th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    snprintf(cmd, sizeof cmd, "cmp %s/alone.bin %s/batch.bin", dir, dir);
    int same = rc2 == 0 && th_sh_capture(cmd, dir, out, sizeof out, one, sizeof one) == 0;
    CHECK(rc == 0 && rc2 == 0 && same && strstr(err, "4 prompts as one batch") && strstr(err, "one by one"),
          "lina generate --prompts: every completion as the prompt alone, tokens/s against one by one (%s)",
          rc ? lina_last_error() : err);
    snprintf(cmd, sizeof cmd, "%s generate -m %s --prompts %s/none.txt 2>&1", bin, dir, dir);
    rc2 = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    CHECK(rc2 != 0 && strstr(out, "none.txt: cannot open") && strchr(out, '\n') == out + strlen(out) - 1,
          "lina generate --prompts with a missing file: one error line (%s)", out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", dir);
    }
}

int main(void)
{
    lina_set_threads(2);
    lina_ws ws;
    lina_ws_init(&ws);
    for (size_t i = 0; i < sizeof g_cfgs / sizeof g_cfgs[0]; i++) {
        test_type(g_cfgs[i], NULL, &ws);
    }
    for (size_t i = 0; i < sizeof g_aux / sizeof g_aux[0]; i++) {
        test_type(g_aux[i][0], g_aux[i][1], &ws);
    }
    test_errors(&ws);
    for (size_t i = 0; i < sizeof g_cfgs / sizeof g_cfgs[0]; i++) {
        test_rows(g_cfgs[i], &ws);
    }
    test_tok_docs();
    test_train_pack(&ws);
    test_generate_prompts();
    lina_ws_free(&ws);
    return th_exit();
}
