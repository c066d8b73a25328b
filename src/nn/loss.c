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

/* logits [N,V]; targets [N]; lse [N] */
int lina_cross_entropy_forward(double *loss, int64_t *count, float *lse, const float *logits,
                               const int32_t *targets, int N, int V)
{
    if (N < 0 || V < 1) {
        return lina_set_error(LINA_EINVAL, "cross-entropy: bad sizes N=%d V=%d", N, V);
    }
    for (int n = 0; n < N; n++) {
        if (targets[n] != LINA_IGNORE_INDEX && (targets[n] < 0 || targets[n] >= V)) {
            return lina_set_error(LINA_EINVAL, "target %d at position %d is outside [0, %d)", (int)targets[n], n, V);
        }
    }
    int fail = 0;
#pragma omp parallel if ((size_t)N * (size_t)V >= 16384)
    {
        float *buf = malloc((size_t)V * sizeof(float)); /* one row of exp(x - max) */
        if (!buf) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for
        for (int n = 0; n < N; n++) {
            if (!buf) {
                continue;
            }
            const float *r = logits + (size_t)n * V;
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
            lse[n] = (float)((double)m + log(s));
        }
        free(buf);
    }
    if (fail) {
        return lina_set_error(LINA_ENOMEM, "cross-entropy: out of memory");
    }
    /* total in row order: the same bits for any thread count */
    double tot = 0.0;
    int64_t cnt = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] != LINA_IGNORE_INDEX) {
            tot += (double)lse[n] - (double)logits[(size_t)n * V + targets[n]];
            cnt++;
        }
    }
    *loss = cnt ? tot / (double)cnt : 0.0;
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
        const float *r = logits + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        int t = targets[n];
        if (t == LINA_IGNORE_INDEX || scale == 0.0f) {
            for (int v = 0; v < V; v++) {
                d[v] = 0.0f;
            }
            continue;
        }
        float l = lse[n];
        for (int v = 0; v < V; v++) {
            d[v] = r[v] - l;
        }
        lina_vexp(d, d, (size_t)V);
        for (int v = 0; v < V; v++) {
            d[v] *= scale;
        }
        d[t] -= scale;
    }
}
