/* task_data.c -- generators of the synthetic tasks: MQAR, parity, modular arithmetic,
 * symmetric-group word problems (see tasks.h and docs/tasks.md). */
#include "tasks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* =============================================================== random */

double lina_task_uniform(uint64_t *rng)
{
    return (double)(lina_splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0);
}

int lina_task_randint(uint64_t *rng, int n)
{
    int v = (int)(lina_task_uniform(rng) * (double)n);
    return v < n ? v : n - 1;
}

/* ================================================================= MQAR */

int lina_mqar_check(const lina_mqar_spec *s)
{
    if (!s) {
        return lina_set_error(LINA_EINVAL, "mqar: no spec");
    }
    if (s->seq_len < 4 || s->seq_len % 2) {
        return lina_set_error(LINA_EINVAL, "mqar: --seq-len must be even and >= 4 (got %d)", s->seq_len);
    }
    if (s->vocab <= s->seq_len) {
        return lina_set_error(LINA_EINVAL, "mqar: --vocab must be larger than --seq-len (got %d <= %d)",
                              s->vocab, s->seq_len);
    }
    if (s->num_kv < 1 || 4 * s->num_kv > s->seq_len) {
        return lina_set_error(LINA_EINVAL, "mqar: --num-kv must be in [1, seq_len/4] = [1, %d] (got %d)",
                              s->seq_len / 4, s->num_kv);
    }
    if (s->num_kv > s->vocab / 2 - 1) {
        return lina_set_error(LINA_EINVAL, "mqar: --num-kv %d exceeds the %d key ids of vocab %d", s->num_kv,
                              s->vocab / 2 - 1, s->vocab);
    }
    if (!(s->power_a > 0.0) || !isfinite(s->power_a)) {
        return lina_set_error(LINA_EINVAL, "mqar: power_a must be positive (got %g)", s->power_a);
    }
    return LINA_OK;
}

/* k distinct values from pool[0..n-1] by a partial Fisher-Yates shuffle (pool is permuted). */
static void draw_distinct(uint64_t *rng, int *pool, int n, int k, int *out)
{
    for (int i = 0; i < k; i++) {
        int j = i + lina_task_randint(rng, n - i);
        int t = pool[i];
        pool[i] = pool[j];
        pool[j] = t;
        out[i] = pool[i];
    }
}

int lina_mqar_example(const lina_mqar_spec *s, uint64_t *rng, int32_t *tokens, int32_t *targets)
{
    int rc = lina_mqar_check(s);
    if (rc) {
        return rc;
    }
    const int V = s->vocab, L = s->seq_len, N = s->num_kv;
    const int half = V / 2, S = (L - 2 * N) / 2;
    const int nkeys = half - 1, nvals = V - half;
    int *buf = malloc(sizeof(int) * ((size_t)nkeys + nvals + 3 * (size_t)N + S));
    double *w = malloc(sizeof(double) * (size_t)S);
    if (!buf || !w) {
        free(buf);
        free(w);
        return lina_set_error(LINA_ENOMEM, "mqar: out of memory");
    }
    int *kpool = buf, *vpool = kpool + nkeys, *keys = vpool + nvals, *vals = keys + N, *gaps = vals + N;
    int *slot_used = gaps + N;
    for (int i = 0; i < nkeys; i++) {
        kpool[i] = 1 + i;
    }
    for (int i = 0; i < nvals; i++) {
        vpool[i] = half + i;
    }
    draw_distinct(rng, kpool, nkeys, N, keys);
    draw_distinct(rng, vpool, nvals, N, vals);
    /* N distinct slots, p(g) ~ a (g+1)^(a-1), drawn one after another from the
     * renormalised remaining mass (sampling without replacement) */
    const double a = s->power_a;
    for (int g = 0; g < S; g++) {
        w[g] = a * pow((double)(g + 1), a - 1.0);
        slot_used[g] = 0;
    }
    for (int j = 0; j < N; j++) {
        double tot = 0.0;
        for (int g = 0; g < S; g++) {
            tot += slot_used[g] ? 0.0 : w[g];
        }
        double u = lina_task_uniform(rng) * tot, acc = 0.0;
        int pick = -1;
        for (int g = 0; g < S; g++) {
            if (slot_used[g]) {
                continue;
            }
            pick = g; /* the last free slot absorbs round-off */
            acc += w[g];
            if (u < acc) {
                break;
            }
        }
        slot_used[pick] = 1;
        gaps[j] = pick;
    }
    for (int t = 0; t < L; t++) {
        tokens[t] = 0;
        targets[t] = LINA_TASK_IGNORE;
    }
    for (int j = 0; j < N; j++) {
        tokens[2 * j] = keys[j];
        tokens[2 * j + 1] = vals[j];
    }
    for (int j = 0; j < N; j++) {
        int p = 2 * N + 2 * gaps[j];
        tokens[p] = keys[j];
        targets[p] = vals[j];
    }
    if (s->random_non_queries) {
        for (int t = 2 * N; t < L; t++) {
            if (targets[t] == LINA_TASK_IGNORE) {
                tokens[t] = lina_task_randint(rng, V);
            }
        }
    }
    free(buf);
    free(w);
    return LINA_OK;
}

/* ============================================== parity, modular arithmetic */

int lina_parity_example(uint64_t *rng, int len, int T, int32_t *tokens, int32_t *targets)
{
    int ones = 0;
    for (int t = 0; t < T; t++) {
        targets[t] = LINA_TASK_IGNORE;
        if (t < len) {
            tokens[t] = 1 + lina_task_randint(rng, 2);
            ones += tokens[t] == 2;
        } else {
            tokens[t] = 0;
        }
    }
    targets[len - 1] = 1 + (ones & 1);
    return targets[len - 1];
}

int lina_modarith_value(const int32_t *tokens, int n)
{
    const int M = LINA_MODARITH_MOD;
    int total = 0, term = tokens[0] - 5;
    for (int i = 1; i + 1 < n; i += 2) {
        int op = tokens[i], d = tokens[i + 1] - 5;
        if (op == 3) {
            term = term * d % M;
        } else {
            total = (total + term) % M;
            term = op == 1 ? d : (M - d) % M;
        }
    }
    return (total + term) % M;
}

int lina_modarith_example(uint64_t *rng, int len, int T, int32_t *tokens, int32_t *targets)
{
    for (int t = 0; t < T; t++) {
        targets[t] = LINA_TASK_IGNORE;
        tokens[t] = 0;
    }
    for (int t = 0; t < len - 1; t++) {
        tokens[t] = t % 2 == 0 ? 5 + lina_task_randint(rng, LINA_MODARITH_MOD) : 1 + lina_task_randint(rng, 3);
    }
    tokens[len - 1] = 4;
    targets[len - 1] = 5 + lina_modarith_value(tokens, len - 1);
    return targets[len - 1];
}

/* ======================================================= group word problems */

static int perm_code(const int *p, int n)
{
    int c = 0;
    for (int i = 0; i < n; i++) {
        c = c * n + p[i];
    }
    return c;
}

/* next permutation in lexicographic order; 0 after the last one */
static int next_perm(int *p, int n)
{
    int i = n - 2;
    while (i >= 0 && p[i] > p[i + 1]) {
        i--;
    }
    if (i < 0) {
        return 0;
    }
    int j = n - 1;
    while (p[j] < p[i]) {
        j--;
    }
    int t = p[i];
    p[i] = p[j];
    p[j] = t;
    for (int a = i + 1, b = n - 1; a < b; a++, b--) {
        t = p[a];
        p[a] = p[b];
        p[b] = t;
    }
    return 1;
}

int lina_group_init_sym(lina_group *g, int n)
{
    memset(g, 0, sizeof *g);
    if (n < 2 || n > 6) {
        return lina_set_error(LINA_EINVAL, "group: S_%d is not supported (n in 2..6)", n);
    }
    int order = 1, codes = 1;
    for (int i = 2; i <= n; i++) {
        order *= i;
    }
    for (int i = 0; i < n; i++) {
        codes *= n;
    }
    g->n = n;
    g->order = order;
    g->perm = malloc(sizeof(int) * (size_t)order * n);
    g->mul = malloc(sizeof(int) * (size_t)order * order);
    int *index = malloc(sizeof(int) * (size_t)codes);
    if (!g->perm || !g->mul || !index) {
        free(index);
        lina_group_free(g);
        return lina_set_error(LINA_ENOMEM, "group: out of memory");
    }
    int p[6];
    for (int i = 0; i < n; i++) {
        p[i] = i;
    }
    int k = 0;
    do {
        memcpy(g->perm + (size_t)k * n, p, sizeof(int) * (size_t)n);
        index[perm_code(p, n)] = k;
        k++;
    } while (next_perm(p, n));
    for (int a = 0; a < order; a++) {
        const int *pa = g->perm + (size_t)a * n;
        for (int b = 0; b < order; b++) {
            const int *pb = g->perm + (size_t)b * n;
            int c[6];
            for (int i = 0; i < n; i++) {
                c[i] = pa[pb[i]];
            }
            g->mul[(size_t)a * order + b] = index[perm_code(c, n)];
        }
    }
    free(index);
    return LINA_OK;
}

void lina_group_free(lina_group *g)
{
    if (!g) {
        return;
    }
    free(g->perm);
    free(g->mul);
    g->perm = g->mul = NULL;
    g->order = g->n = 0;
}

void lina_group_example(const lina_group *g, uint64_t *rng, int T, int32_t *tokens, int32_t *targets)
{
    int r = 0; /* identity */
    for (int t = 0; t < T; t++) {
        int x = lina_task_randint(rng, g->order);
        r = g->mul[(size_t)r * g->order + x];
        tokens[t] = x;
        targets[t] = r;
    }
}
