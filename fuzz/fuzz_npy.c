/* fuzz_npy.c -- lina_npy_parse on arbitrary bytes. */
#include "fuzz.h"

static int fuzz_npy(const uint8_t *data, size_t size)
{
    lina_tensor t;
    if (lina_npy_parse(data, size, "fuzz.npy", &t) == LINA_OK) {
        volatile float s = 0.0f;
        for (int64_t i = 0; i < lina_tensor_numel(&t); i++) {
            s += t.data[i];
        }
        (void)s;
        lina_tensor_free(&t);
    }
    return 0;
}
LINA_FUZZ_ENTRY(fuzz_npy)
