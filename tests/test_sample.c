/* test_sample.c -- the public sampler (temperature, top-k, top-p) against the
 * exact distributions it should draw from, and lina_generate (piecewise
 * prefill, recurrent decode, stop token, callback) against a one-piece
 * prefill followed by single-token decode calls. */
#include "harness.h"
#include "lina.h"

#include <string.h>

#define NDRAW 40000

/* frequencies of NDRAW draws vs the expected probabilities p[V] */
static double draw_err(lina_sampler *s, const float *logits, const double *p, int V)
{
    int cnt[8] = {0};
    for (int i = 0; i < NDRAW; i++) {
        int32_t t = lina_sampler_sample(s, logits);
        if (t < 0 || t >= V) {
            return 1.0;
        }
        cnt[t]++;
    }
    double e = 0.0;
    for (int i = 0; i < V; i++) {
        double d = fabs((double)cnt[i] / NDRAW - p[i]);
        e = d > e ? d : e;
    }
    return e;
}

static void test_sampler(void)
{
    const int V = 4;
    float lg[4] = {(float)log(0.4), (float)log(0.3), (float)log(0.2), (float)log(0.1)};
    lina_sampler *s = NULL;
    int rc = lina_sampler_create(V, 0.0f, 0, 1.0f, 1, &s);
    float tie[4] = {1.0f, 3.0f, 3.0f, 2.0f};
    CHECK(rc == 0 && lina_sampler_sample(s, lg) == 0 && lina_sampler_sample(s, tie) == 1,
          "temperature 0: the arg max, lowest id on ties");
    lina_sampler_free(s);

    struct {
        const char *what;
        float temp, top_p;
        int top_k;
        double p[4];
    } cases[] = {
        {"temperature 1: the softmax", 1.0f, 1.0f, 0, {0.4, 0.3, 0.2, 0.1}},
        {"top_k 2", 1.0f, 1.0f, 2, {0.4 / 0.7, 0.3 / 0.7, 0, 0}},
        {"top_p 0.65: the two most likely", 1.0f, 0.65f, 0, {0.4 / 0.7, 0.3 / 0.7, 0, 0}},
        {"top_p 0.35: only the first", 1.0f, 0.35f, 0, {1, 0, 0, 0}},
        {"top_k 1 at temperature 5", 5.0f, 1.0f, 1, {1, 0, 0, 0}},
        {"temperature 2: p^(1/2) renormalised", 2.0f, 1.0f, 0, {0}},
    };
    double z = sqrt(0.4) + sqrt(0.3) + sqrt(0.2) + sqrt(0.1);
    double ps[4] = {sqrt(0.4) / z, sqrt(0.3) / z, sqrt(0.2) / z, sqrt(0.1) / z};
    memcpy(cases[5].p, ps, sizeof ps);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rc = lina_sampler_create(V, cases[i].temp, cases[i].top_k, cases[i].top_p, 7 + i, &s);
        double e = rc ? 1.0 : draw_err(s, lg, cases[i].p, V);
        CHECK(e < 0.012, "sampler %s: max frequency error %.4f over %d draws", cases[i].what, e, NDRAW);
        lina_sampler_free(s);
    }
    lina_sampler *a = NULL, *b = NULL;
    lina_sampler_create(V, 1.0f, 0, 1.0f, 42, &a);
    lina_sampler_create(V, 1.0f, 0, 1.0f, 42, &b);
    int same = 1;
    for (int i = 0; i < 200; i++) {
        same &= lina_sampler_sample(a, lg) == lina_sampler_sample(b, lg);
    }
    CHECK(same, "the same seed gives the same tokens");
    lina_sampler_free(a);
    lina_sampler_free(b);
    rc = lina_sampler_create(V, -1.0f, 0, 1.0f, 1, &s);
    CHECK(rc == LINA_EINVAL && s == NULL, "a negative temperature is refused: %s", lina_last_error());
    rc = lina_sampler_create(V, 1.0f, 0, 0.0f, 1, &s);
    CHECK(rc == LINA_EINVAL && s == NULL, "top_p 0 is refused: %s", lina_last_error());
}

static int stop_after_3(int32_t tok, void *user)
{
    (void)tok;
    return ++*(int *)user >= 3;
}

static void test_generate(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = 32;
    c.num_heads = 2;
    c.num_hidden_layers = 2;
    c.vocab_size = 64;
    c.initializer_range = 0.5; /* peaked logits: greedy choices far from ties */
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0, "model %s", rc ? lina_last_error() : "");
    if (rc) {
        return;
    }
    const int V = 64, NP = 2 * LINA_PREFILL_CHUNK + 37, NG = 12;
    int32_t *prompt = malloc(NP * sizeof *prompt), out[16];
    for (int i = 0; i < NP; i++) {
        prompt[i] = (int32_t)((i * 13 + 5) % V);
    }
    lina_model_state *st = NULL, *ref = NULL;
    lina_sampler *g = NULL;
    rc = lina_model_state_create(m, 1, NP + NG, &st);
    rc = rc ? rc : lina_model_state_create(m, 1, NP + NG, &ref);
    rc = rc ? rc : lina_sampler_create(V, 0.0f, 0, 1.0f, 1, &g);
    int n = -1;
    rc = rc ? rc : lina_generate(m, st, prompt, NP, NG, -1, g, NULL, NULL, out, &n);
    CHECK(rc == 0 && n == NG && lina_model_state_pos(st) == NP + NG - 1,
          "greedy generation: %d tokens after a %d-token prompt prefilled in pieces (state at %lld)", n, NP,
          (long long)lina_model_state_pos(st));
    /* reference: the whole prompt in one call, then one token at a time; each
     * generated token must be the arg max there (to float round-off) */
    float *lg = malloc((size_t)NP * V * sizeof(float));
    rc = lina_model_decode(m, ref, prompt, 1, NP, lg, NULL);
    const float *last = lg + (size_t)(NP - 1) * V;
    double worst = 0.0;
    for (int i = 0; !rc && i < n; i++) {
        float mx = last[0];
        for (int v = 1; v < V; v++) {
            mx = last[v] > mx ? last[v] : mx;
        }
        double gap = mx - last[out[i]];
        worst = gap > worst ? gap : worst;
        rc = lina_model_decode(m, ref, &out[i], 1, 1, lg, NULL);
        last = lg;
    }
    CHECK(rc == 0 && worst < 1e-4, "each generated token is the reference's arg max (worst logit gap %.2e)", worst);
    /* stop token: the first greedy token stops at once */
    lina_model_state_reset(st);
    int n2 = -1;
    rc = lina_generate(m, st, prompt, NP, NG, out[0], g, NULL, NULL, NULL, &n2);
    CHECK(rc == 0 && n2 == 0, "stop_token: generation stops before emitting it (%d tokens)", n2);
    lina_model_state_reset(st);
    int calls = 0;
    rc = lina_generate(m, st, prompt, 5, NG, -1, g, stop_after_3, &calls, out, &n2);
    CHECK(rc == 0 && n2 == 3 && calls == 3, "a callback returning non-zero stops generation (%d tokens)", n2);
    lina_model_state_reset(st);
    int32_t bad = V;
    rc = lina_generate(m, st, &bad, 1, NG, -1, g, NULL, NULL, out, &n2);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "outside the vocabulary"),
          "a prompt token outside the vocabulary is refused: %s", lina_last_error());
    lina_sampler *g2 = NULL;
    lina_sampler_create(V + 1, 0.0f, 0, 1.0f, 1, &g2);
    rc = lina_generate(m, st, prompt, 5, NG, -1, g2, NULL, NULL, out, &n2);
    CHECK(rc == LINA_EINVAL, "a sampler for another vocabulary is refused: %s", lina_last_error());
    lina_sampler_free(g2);
    free(lg);
    free(prompt);
    lina_sampler_free(g);
    lina_model_state_free(st);
    lina_model_state_free(ref);
    lina_model_free(m);
}

int main(void)
{
    test_sampler();
    test_generate();
    return th_exit();
}
