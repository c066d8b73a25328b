/* generate.c -- sampling from logits (temperature, top-k, top-p) and the
 * generation loop over lina_model_decode: the prompt is prefilled in pieces of
 * at most LINA_PREFILL_CHUNK tokens with the chunk form (memory flat in the
 * prompt length), then tokens are drawn one at a time with the recurrent form. */
#include "lina.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float logit;
    int id;
} cand;

struct lina_sampler {
    int vocab;
    float temperature, top_p;
    int top_k;
    uint64_t rng;
    cand *c; /* [vocab] */
};

int lina_sampler_create(int vocab, float temperature, int top_k, float top_p, uint64_t seed, lina_sampler **out)
{
    if (!out) {
        return lina_set_error(LINA_EINVAL, "sampler: NULL argument");
    }
    *out = NULL;
    if (vocab < 1 || !(temperature >= 0.0f) || !isfinite(temperature) || top_k < 0 || !(top_p > 0.0f && top_p <= 1.0f)) {
        return lina_set_error(LINA_EINVAL,
                              "sampler: need vocab >= 1 (got %d), temperature >= 0 (%g), top_k >= 0 (%d), "
                              "0 < top_p <= 1 (%g)",
                              vocab, (double)temperature, top_k, (double)top_p);
    }
    lina_sampler *s = calloc(1, sizeof *s);
    if (!s || !(s->c = malloc((size_t)vocab * sizeof *s->c))) {
        free(s);
        return lina_set_error(LINA_ENOMEM, "sampler: out of memory (vocabulary %d)", vocab);
    }
    s->vocab = vocab;
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng = seed;
    *out = s;
    return LINA_OK;
}

void lina_sampler_free(lina_sampler *s)
{
    if (s) {
        free(s->c);
        free(s);
    }
}

/* higher logit first; ties: lower id first */
static int before(const cand *x, const cand *y)
{
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return before(x, y) ? -1 : before(y, x) ? 1 : 0;
}

/* Move the n first candidates (in `before` order) to c[0..n) (unsorted):
 * quickselect, O(V) on average, instead of sorting the whole vocabulary. */
static void select_top(cand *c, int V, int n)
{
    int lo = 0, hi = V - 1;
    while (lo < hi) {
        cand pv = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(&c[i], &pv)) {
                i++;
            }
            while (before(&pv, &c[j])) {
                j--;
            }
            if (i <= j) {
                cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (n - 1 <= j) {
            hi = j;
        } else if (n - 1 >= i) {
            lo = i;
        } else {
            break;
        }
    }
}

int32_t lina_sampler_sample(lina_sampler *s, const float *logits)
{
    const int V = s->vocab;
    int best = 0;
    for (int i = 1; i < V; i++) {
        best = logits[i] > logits[best] ? i : best;
    }
    if (s->temperature <= 0.0f) {
        return best;
    }
    cand *c = s->c;
    for (int i = 0; i < V; i++) {
        c[i].logit = logits[i] / s->temperature;
        c[i].id = i;
    }
    int n = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    if (n < V) {
        select_top(c, V, n);
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    double z = 0.0;
    for (int i = 0; i < n; i++) {
        z += exp((double)c[i].logit - c[0].logit);
    }
    double cum = 0.0;
    int m = n;
    for (int i = 0; i < n; i++) {
        cum += exp((double)c[i].logit - c[0].logit) / z;
        if (cum >= s->top_p) {
            m = i + 1;
            break;
        }
    }
    double zm = 0.0;
    for (int i = 0; i < m; i++) {
        zm += exp((double)c[i].logit - c[0].logit);
    }
    uint64_t x = lina_splitmix64(&s->rng);
    double u = (double)(x >> 11) * (1.0 / 9007199254740992.0) * zm, acc = 0.0;
    for (int i = 0; i < m; i++) {
        acc += exp((double)c[i].logit - c[0].logit);
        if (u < acc) {
            return c[i].id;
        }
    }
    return c[m - 1].id;
}

int lina_generate(lina_model *m, lina_model_state *st, const int32_t *prompt, int n_prompt, int max_new,
                  int stop_token, lina_sampler *smp, lina_token_cb on_token, void *user, int32_t *out, int *n_out)
{
    if (n_out) {
        *n_out = 0;
    }
    if (!m || !st || !prompt || !smp || n_prompt < 1 || max_new < 0) {
        return lina_set_error(LINA_EINVAL, "generate: bad arguments (a model, a state, a sampler and a prompt of "
                                           ">= 1 token are needed; got %d tokens)", n_prompt);
    }
    const int V = lina_model_config(m)->vocab_size;
    if (smp->vocab != V) {
        return lina_set_error(LINA_EINVAL, "generate: the sampler is for %d tokens, the model has %d", smp->vocab,
                              V);
    }
    for (int i = 0; i < n_prompt; i++) {
        if (prompt[i] < 0 || prompt[i] >= V) {
            return lina_set_error(LINA_EINVAL, "generate: prompt token %d is %d, outside the vocabulary [0, %d)", i,
                                  (int)prompt[i], V);
        }
    }
    int chunk = n_prompt < LINA_PREFILL_CHUNK ? n_prompt : LINA_PREFILL_CHUNK;
    float *logits = malloc((size_t)chunk * (size_t)V * sizeof(float));
    if (!logits) {
        return lina_set_error(LINA_ENOMEM, "generate: out of memory (logits for %d tokens)", chunk);
    }
    lina_ws ws;
    lina_ws_init(&ws);
    int rc = LINA_OK, T = 0;
    for (int p = 0; p < n_prompt && !rc; p += T) {
        T = n_prompt - p < chunk ? n_prompt - p : chunk;
        rc = lina_model_decode(m, st, prompt + p, 1, T, logits, &ws);
    }
    const float *last = logits + (size_t)(T - 1) * V;
    int produced = 0;
    for (int s = 0; !rc && s < max_new; s++) {
        int32_t tok = lina_sampler_sample(smp, last);
        if (tok == stop_token) {
            break;
        }
        if (out) {
            out[produced] = tok;
        }
        produced++;
        if ((on_token && on_token(tok, user)) || s + 1 == max_new) {
            break;
        }
        rc = lina_model_decode(m, st, &tok, 1, 1, logits, &ws);
        last = logits;
    }
    lina_ws_free(&ws);
    free(logits);
    if (n_out) {
        *n_out = produced;
    }
    return rc;
}
