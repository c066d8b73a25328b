/* test_configs.c -- every config shipped in configs/ parses, builds a model,
 * takes a training step with a finite loss near ln(vocab) (random init) and
 * trains: six AdamW steps on one repeated batch lower the loss by > 0.5. */
#include "harness.h"
#include "lina.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_config(const char *path)
{
    lina_config c;
    int rc = lina_config_read(path, &c);
    CHECK(rc == 0, "%s parses (%s)", path, rc ? lina_last_error() : lina_model_type_name(c.model_type));
    if (rc) {
        return;
    }
    lina_model *m = NULL;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0, "%s: model builds (%s, %zu parameters)", path, rc ? lina_last_error() : "ok",
          m ? lina_model_num_params(m) : (size_t)0);
    if (rc) {
        return;
    }
    int B = 1, T = 24, N = B * T;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t)), *tgt = malloc((size_t)N * sizeof(int32_t));
    uint64_t s = 42;
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)(lina_splitmix64(&s) % 64); /* a small sub-vocabulary: learnable quickly */
    }
    for (int i = 0; i < N; i++) {
        tgt[i] = (i + 1) % T ? tok[i + 1] : LINA_IGNORE_INDEX;
    }
    lina_adamw opt;
    size_t np = lina_model_num_params(m);
    rc = lina_adamw_init(&opt, np);
    for (int i = 0; !rc && i < lina_model_num_tensors(m); i++) {
        size_t off;
        int nd, decay;
        const int64_t *sh;
        lina_model_tensor(m, i, NULL, &nd, &sh, &off, &decay);
        size_t n = 1;
        for (int j = 0; j < nd; j++) {
            n *= (size_t)sh[j];
        }
        rc = lina_adamw_set_decay(&opt, off, n, decay);
    }
    double first = NAN, last = NAN;
    for (int step = 0; !rc && step < 6; step++) {
        double loss = 0.0;
        lina_model_zero_grad(m);
        rc = lina_model_train_step(m, tok, tgt, B, T, &loss, NULL);
        if (!rc) {
            rc = lina_adamw_step(&opt, lina_model_params(m), lina_model_grads(m), 3e-3, 1.0);
        }
        first = step == 0 ? loss : first;
        last = loss;
    }
    double lnv = log((double)c.vocab_size);
    CHECK(rc == 0 && isfinite(first) && fabs(first - lnv) < 0.5, "%s: first loss %.3f ~ ln(vocab) %.3f (%s)", path,
          first, lnv, rc ? lina_last_error() : "ok");
    CHECK(rc == 0 && last < first - 0.5, "%s: 6 AdamW steps on one batch: loss %.3f -> %.3f", path, first, last);
    lina_adamw_free(&opt);
    free(tok);
    free(tgt);
    lina_model_free(m);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    lina_set_threads(1);
    DIR *d = opendir("configs");
    CHECK(d != NULL, "configs/ exists (run from the repository root)");
    if (!d) {
        return th_exit();
    }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".json")) {
            names[n] = malloc(len + 16);
            snprintf(names[n], len + 16, "configs/%s", e->d_name);
            n++;
        }
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    CHECK(n >= 12, "configs/ holds %d configs", n);
    for (int i = 0; i < n; i++) {
        check_config(names[i]);
        free(names[i]);
    }
    return th_exit();
}
