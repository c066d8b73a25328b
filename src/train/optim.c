/* optim.c -- AdamW over a flat buffer, global gradient norm and clipping,
 * warmup + cosine learning-rate schedule. */
#include "lina.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NORM_BLOCK 65536 /* elements per partial sum of lina_grad_norm */

int lina_adamw_init(lina_adamw *o, size_t n)
{
    memset(o, 0, sizeof *o);
    if (n == 0) {
        return lina_set_error(LINA_EINVAL, "adamw: empty parameter buffer");
    }
    o->m = calloc(n, sizeof(float));
    o->v = calloc(n, sizeof(float));
    o->decay = malloc(n);
    if (!o->m || !o->v || !o->decay) {
        lina_adamw_free(o);
        return lina_set_error(LINA_ENOMEM, "adamw: out of memory for %zu parameters", n);
    }
    memset(o->decay, 1, n);
    o->n = n;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->eps = 1e-8;
    o->weight_decay = 0.1;
    return LINA_OK;
}

void lina_adamw_free(lina_adamw *o)
{
    if (!o) {
        return;
    }
    free(o->m);
    free(o->v);
    free(o->decay);
    memset(o, 0, sizeof *o);
}

int lina_adamw_set_decay(lina_adamw *o, size_t offset, size_t count, int decay)
{
    if (offset > o->n || count > o->n - offset) {
        return lina_set_error(LINA_EINVAL, "adamw: decay range [%zu, %zu) outside %zu parameters",
                              offset, offset + count, o->n);
    }
    memset(o->decay + offset, decay ? 1 : 0, count);
    return LINA_OK;
}

int lina_adamw_step(lina_adamw *o, float *params, const float *grads, double lr,
                    double grad_scale)
{
    if (!o->m || !params || !grads) {
        return lina_set_error(LINA_EINVAL, "adamw: missing buffer");
    }
    if (!(o->beta1 >= 0.0 && o->beta1 < 1.0 && o->beta2 >= 0.0 && o->beta2 < 1.0 &&
          o->eps >= 0.0 && o->weight_decay >= 0.0 && isfinite(lr) && lr >= 0.0 &&
          isfinite(grad_scale))) {
        return lina_set_error(LINA_EINVAL,
                              "adamw: bad hyper-parameters (lr %g, betas %g %g, eps %g, wd %g, "
                              "scale %g)",
                              lr, o->beta1, o->beta2, o->eps, o->weight_decay, grad_scale);
    }
    o->step++;
    const double t = (double)o->step;
    const double bc1 = 1.0 - pow(o->beta1, t);
    const double bc2 = 1.0 - pow(o->beta2, t);
    const float step_size = (float)(lr / bc1);
    const float inv_bc2_sqrt = (float)(1.0 / sqrt(bc2));
    const float b1 = (float)o->beta1, b2 = (float)o->beta2;
    const float c1 = (float)(1.0 - o->beta1), c2 = (float)(1.0 - o->beta2);
    const float eps = (float)o->eps;
    const float shrink = (float)(1.0 - lr * o->weight_decay);
    const float gs = (float)grad_scale;
    float *m = o->m, *v = o->v;
    const uint8_t *dec = o->decay;
    const long long n = (long long)o->n;
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < n; i++) {
        float g = grads[i] * gs;
        float mi = b1 * m[i] + c1 * g;
        float vi = b2 * v[i] + c2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        float p = dec[i] ? params[i] * shrink : params[i];
        params[i] = p - step_size * (mi / (sqrtf(vi) * inv_bc2_sqrt + eps));
    }
    return LINA_OK;
}

double lina_grad_norm(const float *g, size_t n)
{
    const long long nb = (long long)((n + NORM_BLOCK - 1) / NORM_BLOCK);
    double stack[64];
    double *part = nb <= 64 ? stack : malloc((size_t)nb * sizeof(double));
    if (!part) {
        /* serial fallback: same blocks, same order */
        double s = 0.0;
        for (long long b = 0; b < nb; b++) {
            double ps = 0.0;
            size_t end = (size_t)(b + 1) * NORM_BLOCK < n ? (size_t)(b + 1) * NORM_BLOCK : n;
            for (size_t i = (size_t)b * NORM_BLOCK; i < end; i++) {
                ps += (double)g[i] * (double)g[i];
            }
            s += ps;
        }
        return sqrt(s);
    }
#pragma omp parallel for schedule(static)
    for (long long b = 0; b < nb; b++) {
        double ps = 0.0;
        size_t end = (size_t)(b + 1) * NORM_BLOCK < n ? (size_t)(b + 1) * NORM_BLOCK : n;
        for (size_t i = (size_t)b * NORM_BLOCK; i < end; i++) {
            ps += (double)g[i] * (double)g[i];
        }
        part[b] = ps;
    }
    double s = 0.0;
    for (long long b = 0; b < nb; b++) {
        s += part[b];
    }
    if (part != stack) {
        free(part);
    }
    return sqrt(s);
}

double lina_clip_factor(double norm, double max_norm)
{
    if (!(max_norm > 0.0)) {
        return 1.0;
    }
    double c = max_norm / (norm + 1e-6);
    return c < 1.0 ? c : 1.0;
}

double lina_lr_at(const lina_lr_sched *s, int64_t step)
{
    if (step < 0) {
        step = 0;
    }
    if (step < s->warmup) {
        return s->lr * (double)(step + 1) / (double)s->warmup;
    }
    int64_t span = s->total - 1 - s->warmup;
    double floor_lr = s->lr * s->min_lr_ratio;
    if (span <= 0) {
        return s->lr; /* no room to decay */
    }
    double p = (double)(step - s->warmup) / (double)span;
    if (p > 1.0) {
        p = 1.0;
    }
    return floor_lr + (s->lr - floor_lr) * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
}
