/* loss.c -- softmax cross-entropy (mean over counted tokens), forward and backward. */
#include "nn.h"

#include <math.h>
#include <stdlib.h>

/* the largest of x[0..n) (n >= 1): 16 running maxima, lane by lane (vectorised), then
 * their maximum; the same value as one running maximum */
static float row_max(const float *x, int n)
{
    float m = x[0];
    int v = 0;
    if (n >= 16) {
        float l[16];
        for (int j = 0; j < 16; j++) {
            l[j] = x[j];
        }
        for (v = 16; v + 16 <= n; v += 16) {
            for (int j = 0; j < 16; j++) {
                l[j] = x[v + j] > l[j] ? x[v + j] : l[j];
            }
        }
        for (int j = 0; j < 16; j++) {
            m = l[j] > m ? l[j] : m;
        }
    }
    for (; v < n; v++) {
        m = x[v] > m ? x[v] : m;
    }
    return m;
}

#define ROW_STACK 4096 /* widest row whose exp buffer a task keeps on the stack */

/* check the targets; the number of counted ones */
static int check_targets(const int32_t *targets, int N, int V, int64_t *cnt)
{
    int64_t c = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] == LINA_IGNORE_INDEX) {
            continue;
        }
        if (targets[n] < 0 || targets[n] >= V) {
            return lina_set_error(LINA_EINVAL, "target %d at position %d is outside [0, %d)", (int)targets[n], n, V);
        }
        c++;
    }
    *cnt = c;
    return LINA_OK;
}

/* lse of one row r [V], buf [V] scratch */
static float row_lse(const float *r, float *buf, int V)
{
    float m = row_max(r, V);
    for (int v = 0; v < V; v++) {
        buf[v] = r[v] - m;
    }
    lina_vexp(buf, buf, (size_t)V);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int v = 0; v < V; v++) {
        s += (double)buf[v];
    }
    return (float)((double)m + log(s));
}

/* d [V] = scale (softmax(r) - onehot(t)) with l = lse(r); d may alias r; t ignored or
 * scale 0: zeros */
static void row_grad(float *d, const float *r, float l, int t, float scale, int V)
{
    if (t == LINA_IGNORE_INDEX || scale == 0.0f) {
        for (int v = 0; v < V; v++) {
            d[v] = 0.0f;
        }
        return;
    }
    for (int v = 0; v < V; v++) {
        d[v] = r[v] - l;
    }
    lina_vexp(d, d, (size_t)V);
    for (int v = 0; v < V; v++) {
        d[v] *= scale;
    }
    d[t] -= scale;
}

/* the rows' lse (and with grad, the rows' dlogits written over the logits and the target
 * logits into tl); LINA_ENOMEM when a wide row's buffer cannot be had */
static int ce_rows(float *lse, float *tl, float *logits, const int32_t *targets, int N, int V, int grad, float scale)
{
    int fail = 0;
#pragma omp parallel if ((size_t)N * (size_t)V >= 16384)
    {
        float stackb[ROW_STACK];
        float *buf = V <= ROW_STACK ? stackb : malloc((size_t)V * sizeof(float)); /* one row of exp(x - max) */
        if (!buf) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for
        for (int n = 0; n < N; n++) {
            if (!buf) {
                continue;
            }
            float *r = logits + (size_t)n * V;
            const float l = row_lse(r, buf, V);
            lse[n] = l;
            if (grad) {
                const int t = targets[n];
                tl[n] = t != LINA_IGNORE_INDEX ? r[t] : 0.0f;
                row_grad(r, r, l, t, scale, V);
            }
        }
        if (buf != stackb) {
            free(buf);
        }
    }
    return fail ? lina_set_error(LINA_ENOMEM, "cross-entropy: out of memory") : LINA_OK;
}

/* the mean over the counted rows, in row order: the same bits for any thread count */
static double ce_total(const float *lse, const float *logits, const float *tl, const int32_t *targets, int N, int V,
                       int64_t cnt)
{
    double tot = 0.0;
    for (int n = 0; n < N; n++) {
        if (targets[n] != LINA_IGNORE_INDEX) {
            tot += (double)lse[n] - (double)(tl ? tl[n] : logits[(size_t)n * V + targets[n]]);
        }
    }
    return cnt ? tot / (double)cnt : 0.0;
}

/* logits [N,V]; targets [N]; lse [N] */
int lina_cross_entropy_forward(double *loss, int64_t *count, float *lse, const float *logits,
                               const int32_t *targets, int N, int V)
{
    if (N < 0 || V < 1) {
        return lina_set_error(LINA_EINVAL, "cross-entropy: bad sizes N=%d V=%d", N, V);
    }
    int64_t cnt = 0;
    int rc = check_targets(targets, N, V, &cnt);
    if (rc || (rc = ce_rows(lse, NULL, (float *)logits, targets, N, V, 0, 0.0f))) { /* grad 0: logits only read */
        return rc;
    }
    *loss = ce_total(lse, logits, NULL, targets, N, V, cnt);
    if (count) {
        *count = cnt;
    }
    return LINA_OK;
}

/* dlogits [N,V] = dloss/count (softmax - onehot); written, may alias logits */
void lina_cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                 int N, int V, float dloss, int64_t count)
{
    float scale = count > 0 ? (float)((double)dloss / (double)count) : 0.0f;
#pragma omp parallel for if ((size_t)N * (size_t)V >= 16384)
    for (int n = 0; n < N; n++) {
        row_grad(dlogits + (size_t)n * V, logits + (size_t)n * V, lse[n], targets[n], scale, V);
    }
}

int lina_cross_entropy_fused(double *loss, int64_t *count, float *lse, float *tl, float *logits,
                             const int32_t *targets, int N, int V, float dloss)
{
    if (N < 0 || V < 1) {
        return lina_set_error(LINA_EINVAL, "cross-entropy: bad sizes N=%d V=%d", N, V);
    }
    int64_t cnt = 0;
    int rc = check_targets(targets, N, V, &cnt);
    const float scale = cnt > 0 ? (float)((double)dloss / (double)cnt) : 0.0f;
    if (rc || (rc = ce_rows(lse, tl, logits, targets, N, V, 1, scale))) {
        return rc;
    }
    *loss = ce_total(lse, NULL, tl, targets, N, V, cnt);
    if (count) {
        *count = cnt;
    }
    return LINA_OK;
}
