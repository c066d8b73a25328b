/* checked.h -- size arithmetic that cannot wrap.
 *
 * Every size derived from outside input (a config, a file header, B and T)
 * is computed with these: a product or sum that does not fit in size_t
 * saturates to LINA_SZ_OVF (SIZE_MAX), and LINA_SZ_OVF stays LINA_SZ_OVF
 * through later products and sums, so one test of the final value catches an
 * overflow anywhere in the expression:
 *
 *     size_t n = lina_szmul3(B, H, lina_szmul(K, V));
 *     if (n == LINA_SZ_OVF) ... refuse ...
 *
 * An allocation of LINA_SZ_OVF elements always fails. */
#ifndef LINA_CHECKED_H
#define LINA_CHECKED_H

#include <stddef.h>
#include <stdint.h>

#define LINA_SZ_OVF SIZE_MAX

static inline size_t lina_szmul(size_t a, size_t b)
{
    size_t r;
    if (a == 0 || b == 0) {
        return 0;
    }
    if (a == LINA_SZ_OVF || b == LINA_SZ_OVF || __builtin_mul_overflow(a, b, &r)) {
        return LINA_SZ_OVF;
    }
    return r;
}

static inline size_t lina_szmul3(size_t a, size_t b, size_t c)
{
    return lina_szmul(lina_szmul(a, b), c);
}

static inline size_t lina_szadd(size_t a, size_t b)
{
    size_t r;
    if (a == LINA_SZ_OVF || b == LINA_SZ_OVF || __builtin_add_overflow(a, b, &r)) {
        return LINA_SZ_OVF;
    }
    return r;
}

/* a non-negative int64 dimension as size_t (negative: LINA_SZ_OVF) */
static inline size_t lina_szdim(int64_t d)
{
    return d < 0 || (uint64_t)d >= (uint64_t)LINA_SZ_OVF ? LINA_SZ_OVF : (size_t)d;
}

#endif
