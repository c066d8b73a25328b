/* tensor.c -- the dense float32 tensor (lina_tensor): element count, zeroed
 * 64-byte-aligned allocation, release. */
#include "lina.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int64_t lina_tensor_numel(const lina_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        n *= t->shape[i];
    }
    return n;
}

int lina_tensor_alloc(lina_tensor *t, int ndim, const int64_t *shape)
{
    memset(t, 0, sizeof *t);
    if (ndim < 0 || ndim > LINA_MAX_DIMS) {
        return lina_set_error(LINA_EINVAL, "tensor rank %d out of range", ndim);
    }
    t->ndim = ndim;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / 4 / shape[i])) {
            return lina_set_error(LINA_EINVAL, "tensor shape too large");
        }
        t->shape[i] = shape[i];
        n *= shape[i];
    }
    size_t bytes = ((size_t)n * sizeof(float) + 63) & ~(size_t)63;
    t->data = aligned_alloc(64, bytes ? bytes : 64);
    if (!t->data) {
        return lina_set_error(LINA_ENOMEM, "out of memory (%lld floats)", (long long)n);
    }
    memset(t->data, 0, bytes ? bytes : 64);
    return LINA_OK;
}

void lina_tensor_free(lina_tensor *t)
{
    if (t) {
        free(t->data);
        memset(t, 0, sizeof *t);
    }
}
