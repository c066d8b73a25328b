/* fuzz_safetensors.c -- lina_st_open_mem on arbitrary bytes, then every
 * accessor and lina_st_load of every tensor (up to 1M elements). */
#include "fuzz.h"

static int fuzz_safetensors(const uint8_t *data, size_t size)
{
    lina_st_file *f = NULL;
    if (lina_st_open_mem(data, size, "fuzz.safetensors", &f) != LINA_OK) {
        return 0;
    }
    for (int i = 0; i < lina_st_count(f); i++) {
        int64_t sh[LINA_MAX_DIMS];
        const char *name = lina_st_name(f, i);
        (void)lina_st_dtype_name(f, i);
        (void)lina_st_shape(f, i, sh);
        if (name && lina_st_find(f, name) < 0) {
            abort(); /* a listed tensor must be found by its name */
        }
        int64_t n = lina_st_numel(f, i);
        if (n >= 0 && n <= (1 << 20)) {
            float *buf = malloc((size_t)(n ? n : 1) * sizeof(float));
            if (buf) {
                (void)lina_st_load(f, i, buf, n);
                free(buf);
            }
        }
    }
    for (int i = 0; i < lina_st_meta_count(f); i++) {
        const char *k = lina_st_meta_key(f, i);
        (void)lina_st_meta(f, k ? k : "");
    }
    lina_st_close(f);
    return 0;
}
LINA_FUZZ_ENTRY(fuzz_safetensors)
