/* optim.c -- AdamW over a flat buffer, global gradient norm and clipping,
 * warmup + cosine learning-rate schedule. */
#include "../kern/isa.h"
#include "lina.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#define NORM_BLOCK 65536 /* elements per partial sum of lina_grad_norm */
#define ADAMW_BLOCK 32768 /* elements per task of lina_adamw_step (a multiple of 16) */

typedef struct adamw_consts {
    float gs, b1, c1, b2, c2, shrink, step_size, inv_bc2_sqrt, eps;
} adamw_consts;

#if defined(__AVX512F__)
/* 16 parameters: one fused pass over params, grads, m, v and the decay flags */
static inline void adamw16(float *p, const float *g, float *m, float *v, const uint8_t *dec, const adamw_consts *k)
{
    __m512 gv = _mm512_mul_ps(_mm512_loadu_ps(g), _mm512_set1_ps(k->gs));
    __m512 mi = _mm512_fmadd_ps(_mm512_set1_ps(k->c1), gv, _mm512_mul_ps(_mm512_set1_ps(k->b1), _mm512_loadu_ps(m)));
    __m512 vi = _mm512_fmadd_ps(_mm512_set1_ps(k->c2), _mm512_mul_ps(gv, gv),
                                _mm512_mul_ps(_mm512_set1_ps(k->b2), _mm512_loadu_ps(v)));
    _mm512_storeu_ps(m, mi);
    _mm512_storeu_ps(v, vi);
    __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)dec));
    __m512 pv = _mm512_loadu_ps(p);
    pv = _mm512_mask_mul_ps(pv, _mm512_test_epi32_mask(d, d), pv, _mm512_set1_ps(k->shrink));
    __m512 den = _mm512_fmadd_ps(_mm512_sqrt_ps(vi), _mm512_set1_ps(k->inv_bc2_sqrt), _mm512_set1_ps(k->eps));
    _mm512_storeu_ps(p, _mm512_fnmadd_ps(_mm512_set1_ps(k->step_size), _mm512_div_ps(mi, den), pv));
}
#endif

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
/* the same for 8 parameters */
static inline void adamw8(float *p, const float *g, float *m, float *v, const uint8_t *dec, const adamw_consts *k)
{
    __m256 gv = _mm256_mul_ps(_mm256_loadu_ps(g), _mm256_set1_ps(k->gs));
    __m256 mi = _mm256_fmadd_ps(_mm256_set1_ps(k->c1), gv, _mm256_mul_ps(_mm256_set1_ps(k->b1), _mm256_loadu_ps(m)));
    __m256 vi = _mm256_fmadd_ps(_mm256_set1_ps(k->c2), _mm256_mul_ps(gv, gv),
                                _mm256_mul_ps(_mm256_set1_ps(k->b2), _mm256_loadu_ps(v)));
    _mm256_storeu_ps(m, mi);
    _mm256_storeu_ps(v, vi);
    uint64_t d8;
    memcpy(&d8, dec, 8);
    __m256i d = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)d8));
    __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(d, _mm256_setzero_si256())); /* no decay */
    __m256 pv = _mm256_loadu_ps(p);
    pv = _mm256_blendv_ps(_mm256_mul_ps(pv, _mm256_set1_ps(k->shrink)), pv, keep);
    __m256 den = _mm256_fmadd_ps(_mm256_sqrt_ps(vi), _mm256_set1_ps(k->inv_bc2_sqrt), _mm256_set1_ps(k->eps));
    _mm256_storeu_ps(p, _mm256_fnmadd_ps(_mm256_set1_ps(k->step_size), _mm256_div_ps(mi, den), pv));
}
#endif

#if defined(__AVX512F__)
#define ADAMW_VEC 16
#define adamw_vec adamw16
#elif defined(__AVX2__) && defined(__FMA__)
#define ADAMW_VEC 8
#define adamw_vec adamw8
#endif

/* AdamW on n consecutive parameters: one pass over params, grads, m, v and the decay flags */
static void adamw_block(float *params, const float *grads, float *m, float *v, const uint8_t *dec, size_t n,
                        const adamw_consts *k)
{
#if defined(ADAMW_VEC)
    size_t i = 0;
    for (; i + ADAMW_VEC <= n; i += ADAMW_VEC) {
        adamw_vec(params + i, grads + i, m + i, v + i, dec + i, k);
    }
    if (i < n) {
        /* the tail through the same vector arithmetic, padded */
        float tp[ADAMW_VEC] = {0}, tg[ADAMW_VEC] = {0}, tm[ADAMW_VEC] = {0}, tv[ADAMW_VEC] = {0};
        uint8_t td[ADAMW_VEC] = {0};
        size_t r = n - i;
        memcpy(tp, params + i, r * sizeof(float));
        memcpy(tg, grads + i, r * sizeof(float));
        memcpy(tm, m + i, r * sizeof(float));
        memcpy(tv, v + i, r * sizeof(float));
        memcpy(td, dec + i, r);
        adamw_vec(tp, tg, tm, tv, td, k);
        memcpy(params + i, tp, r * sizeof(float));
        memcpy(m + i, tm, r * sizeof(float));
        memcpy(v + i, tv, r * sizeof(float));
    }
#else
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * k->gs;
        float mi = k->c1 * g + k->b1 * m[i];
        float vi = k->c2 * (g * g) + k->b2 * v[i];
        m[i] = mi;
        v[i] = vi;
        float p = dec[i] ? params[i] * k->shrink : params[i];
        params[i] = p - k->step_size * (mi / (sqrtf(vi) * k->inv_bc2_sqrt + k->eps));
    }
#endif
}

/* sum of squares of g[0..n) in double: NORM_LANES running sums, element i into lane i mod
 * NORM_LANES (independent chains the compiler vectorises), then the lanes in order. The
 * squares of floats are exact in double, so every path gives the same bits. */
#define NORM_LANES 8
static double sumsq(const float *g, size_t n)
{
    double acc[NORM_LANES] = {0};
    size_t i = 0;
    for (; i + NORM_LANES <= n; i += NORM_LANES) {
        for (int j = 0; j < NORM_LANES; j++) {
            acc[j] += (double)g[i + j] * (double)g[i + j];
        }
    }
    for (int j = 0; i < n; i++, j++) {
        acc[j] += (double)g[i] * (double)g[i];
    }
    double s = 0.0;
    for (int j = 0; j < NORM_LANES; j++) {
        s += acc[j];
    }
    return s;
}

#if LINA_ISA_PRIMARY
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

#endif

int LINA_KFN(lina_adamw_step)(lina_adamw *o, float *params, const float *grads, double lr,
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
    const adamw_consts k = {gs, b1, c1, b2, c2, shrink, step_size, inv_bc2_sqrt, eps};
    const size_t n = o->n;
    const long long nb = (long long)((n + ADAMW_BLOCK - 1) / ADAMW_BLOCK);
#pragma omp parallel for schedule(static) if (nb > 1)
    for (long long b = 0; b < nb; b++) {
        size_t i0 = (size_t)b * ADAMW_BLOCK, i1 = i0 + ADAMW_BLOCK < n ? i0 + ADAMW_BLOCK : n;
        adamw_block(params + i0, grads + i0, o->m + i0, o->v + i0, o->decay + i0, i1 - i0, &k);
    }
    return LINA_OK;
}

double LINA_KFN(lina_grad_norm)(const float *g, size_t n)
{
    const long long nb = (long long)((n + NORM_BLOCK - 1) / NORM_BLOCK);
    double stack[64];
    double *part = nb <= 64 ? stack : malloc((size_t)nb * sizeof(double));
    if (!part) {
        /* serial fallback: same blocks, same order */
        double s = 0.0;
        for (long long b = 0; b < nb; b++) {
            size_t i0 = (size_t)b * NORM_BLOCK, end = i0 + NORM_BLOCK < n ? i0 + NORM_BLOCK : n;
            s += sumsq(g + i0, end - i0);
        }
        return sqrt(s);
    }
#pragma omp parallel for schedule(static) if (nb > 1)
    for (long long b = 0; b < nb; b++) {
        size_t i0 = (size_t)b * NORM_BLOCK, end = i0 + NORM_BLOCK < n ? i0 + NORM_BLOCK : n;
        part[b] = sumsq(g + i0, end - i0);
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

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_adamw_step,
                  (lina_adamw *o, float *params, const float *grads, double lr, double grad_scale),
                  (o, params, grads, lr, grad_scale))
LINA_ISA_DISPATCH(double, lina_grad_norm, (const float *g, size_t n), (g, n))

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
#endif /* LINA_ISA_PRIMARY */
