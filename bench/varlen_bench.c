/* varlen_bench.c -- packed-document training against the same documents padded to the
 * longest, in one process: tokens/s of real (non-padding) tokens, forward + backward.
 *
 *   cc ... bench/varlen_bench.c build/liblina.a ...   (bench/varlen_bench.sh builds and runs it)
 *   varlen_bench CONFIG [T] [NDOCS] [REPS]
 *   varlen_bench gen CONFIG B [NEW]      (batched generation, one table row)
 *
 * Documents: NDOCS lengths drawn log-uniformly from [8, T] (seed 1), random tokens.
 *   packed    the documents back to back in rows of T tokens (a document cut at a row end
 *             continues in the next row), each run on its own (lina_model_train_step_varlen)
 *   padded    one document per row, padded to the longest with ignored targets
 *             (lina_model_train_step, B = NDOCS)
 *   unpacked  the packed rows without boundaries (state runs across documents): the cost of
 *             the per-document mixer calls
 * Prints one markdown table row per mode. */
#include "lina.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double now_s(void)
{
    return lina_now();
}

/* peak resident memory of this process (VmHWM), MiB */
static double peak_rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = atof(line + 6);
        }
    }
    if (f) {
        fclose(f);
    }
    return kb / 1024.0;
}

/* gen CONFIG B [NEW]: B prompts of 8..64 tokens (log-uniform, seed 1) as one left-padded
 * batch (lina_model_decode_rows), then NEW greedy tokens per row; one table row:
 * decode tokens/s over the batch and the peak resident memory of the process */
static int gen_bench(const char *config, int B, int NEW)
{
    lina_config cfg;
    lina_model *m;
    if (lina_config_read(config, &cfg) || lina_model_create(&cfg, 1, &m)) {
        fprintf(stderr, "varlen_bench: %s\n", lina_last_error());
        return 1;
    }
    uint64_t rng = 1;
    int P = 64, *len = malloc((size_t)B * sizeof(int));
    size_t V = (size_t)cfg.vocab_size;
    int32_t *tok = calloc((size_t)B * P, 4);
    float *lg = malloc((size_t)B * P * V * sizeof(float));
    lina_model_state **st = calloc((size_t)B, sizeof *st);
    lina_ws ws;
    lina_ws_init(&ws);
    long prompt = 0;
    for (int b = 0; b < B; b++) {
        double u = (double)(lina_splitmix64(&rng) >> 11) / 9007199254740992.0;
        len[b] = (int)floor(exp(log(8.0) + u * (log((double)P) - log(8.0))));
        prompt += len[b];
        for (int t = 0; t < P; t++) {
            tok[b * P + t] = (int32_t)(lina_splitmix64(&rng) % V);
        }
        if (lina_model_state_create(m, 1, P + NEW + 1, &st[b])) {
            fprintf(stderr, "varlen_bench: %s\n", lina_last_error());
            return 1;
        }
    }
    double t0 = now_s();
    int rc = lina_model_decode_rows(m, st, tok, len, B, P, lg, &ws);
    double t_pre = now_s() - t0;
    for (int b = 0; b < B; b++) {
        len[b] = 1;
        tok[b] = 0;
    }
    t0 = now_s();
    for (int s = 0; s < NEW && !rc; s++) {
        for (int b = 0; b < B; b++) { /* greedy */
            const float *l = lg + (s == 0 ? ((size_t)b * P + P - 1) * V : (size_t)b * V);
            int32_t g = 0;
            for (size_t i = 1; i < V; i++) {
                g = l[i] > l[g] ? (int32_t)i : g;
            }
            tok[b] = g;
        }
        rc = lina_model_decode_rows(m, st, tok, len, B, 1, lg, &ws);
    }
    double t_dec = now_s() - t0;
    if (rc) {
        fprintf(stderr, "varlen_bench: %s\n", lina_last_error());
        return 1;
    }
    printf("| %s | %d | %ld | %.0f | %.1f | %.0f |\n", config, B, prompt, (double)prompt / t_pre,
           (double)B * NEW / t_dec, peak_rss_mib());
    for (int b = 0; b < B; b++) {
        lina_model_state_free(st[b]);
    }
    lina_ws_free(&ws);
    lina_model_free(m);
    free(len);
    free(tok);
    free(lg);
    free(st);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "gen") == 0) {
        return gen_bench(argv[2], atoi(argv[3]), argc > 4 ? atoi(argv[4]) : 32);
    }
    if (argc < 2) {
        fprintf(stderr, "usage: varlen_bench CONFIG [T] [NDOCS] [REPS] | gen CONFIG B [NEW]\n");
        return 2;
    }
    int T = argc > 2 ? atoi(argv[2]) : 512, ND = argc > 3 ? atoi(argv[3]) : 32, REPS = argc > 4 ? atoi(argv[4]) : 3;
    lina_config cfg;
    lina_model *m;
    if (lina_config_read(argv[1], &cfg) || lina_model_create(&cfg, 1, &m)) {
        fprintf(stderr, "varlen_bench: %s\n", lina_last_error());
        return 1;
    }
    uint64_t rng = 1;
    int *len = malloc((size_t)ND * sizeof(int)), Lmax = 0;
    int64_t total = 0;
    for (int d = 0; d < ND; d++) {
        double u = (double)(lina_splitmix64(&rng) >> 11) / 9007199254740992.0;
        len[d] = (int)floor(exp(log(8.0) + u * (log((double)T) - log(8.0))));
        Lmax = len[d] > Lmax ? len[d] : Lmax;
        total += len[d];
    }
    int rows = (int)((total + T - 1) / T);
    int64_t NP = (int64_t)rows * T, NQ = (int64_t)ND * Lmax;
    int32_t *pt = calloc((size_t)NP, 4), *pg = calloc((size_t)NP, 4), *qt = calloc((size_t)NQ, 4),
            *qg = calloc((size_t)NQ, 4);
    int64_t *cu = malloc((size_t)(ND + 2) * sizeof(int64_t)), ncu = 0, p = 0;
    cu[ncu++] = 0;
    for (int d = 0; d < ND; d++) {
        for (int i = 0; i < len[d]; i++, p++) {
            int32_t tk = (int32_t)(lina_splitmix64(&rng) % (uint64_t)cfg.vocab_size);
            pt[p] = tk;
            qt[(int64_t)d * Lmax + i] = tk;
        }
        cu[ncu++] = p;
    }
    if (p < NP) { /* the last row's tail: one more document of ignored targets */
        cu[ncu++] = NP;
    }
    for (int64_t i = 0; i < NP; i++) {
        int last = 0;
        for (int64_t j = 1; j < ncu; j++) {
            last |= cu[j] == i + 1;
        }
        pg[i] = i >= total || last ? LINA_IGNORE_INDEX : pt[i + 1];
    }
    for (int d = 0; d < ND; d++) {
        for (int i = 0; i < Lmax; i++) {
            int64_t k = (int64_t)d * Lmax + i;
            qg[k] = i + 1 < len[d] ? qt[k + 1] : LINA_IGNORE_INDEX;
        }
    }
    lina_ws ws;
    lina_ws_init(&ws);
    double best[3] = {1e30, 1e30, 1e30}, loss;
    for (int r = 0; r <= REPS; r++) { /* the first round warms up */
        for (int mode = 0; mode < 3; mode++) {
            lina_model_zero_grad(m);
            double t0 = now_s();
            int rc = mode == 0 ? lina_model_train_step_varlen(m, pt, pg, rows, T, cu, ncu, &loss, &ws)
                     : mode == 1 ? lina_model_train_step(m, qt, qg, ND, Lmax, &loss, &ws)
                                 : lina_model_train_step(m, pt, pg, rows, T, &loss, &ws);
            double dt = now_s() - t0;
            if (rc) {
                fprintf(stderr, "varlen_bench: %s\n", lina_last_error());
                return 1;
            }
            if (r > 0 && dt < best[mode]) {
                best[mode] = dt;
            }
        }
    }
    const char *name[3] = {"packed (boundaries exact)", "padded to the longest", "unpacked (no boundaries)"};
    int64_t slots[3] = {NP, NQ, NP};
    printf("config %s, %d threads, %d documents of 8..%d tokens (mean %.0f, longest %d), %lld real tokens\n\n",
           argv[1], lina_get_threads(), ND, T, (double)total / ND, Lmax, (long long)total);
    printf("| mode | rows x T | token slots | step (best of %d) | real tokens/s | vs padded |\n|---|---|---|---|---|---|\n",
           REPS);
    for (int mode = 0; mode < 3; mode++) {
        printf("| %s | %d x %d | %lld | %.3f s | %.0f | %.2fx |\n", name[mode], mode == 1 ? ND : rows,
               mode == 1 ? Lmax : T, (long long)slots[mode], best[mode], (double)total / best[mode],
               best[1] / best[mode]);
    }
    lina_ws_free(&ws);
    lina_model_free(m);
    free(len);
    free(pt);
    free(pg);
    free(qt);
    free(qg);
    free(cu);
    return 0;
}
