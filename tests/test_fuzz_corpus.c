/* test_fuzz_corpus.c -- every input of the fuzzing corpus (fuzz/corpus/TARGET/,
 * seeds and the inputs of past crashes) through its fuzz target, built here
 * with the suite's compiler: under `make asan` a regression is a sanitizer
 * report, otherwise a crash or an abort of the target's own checks. */
#define LINA_FUZZ_NO_ENTRY
#include "../fuzz/fuzz_config.c"
#include "../fuzz/fuzz_npy.c"
#include "../fuzz/fuzz_safetensors.c"
#include "../fuzz/fuzz_tokenizer.c"
#include "../fuzz/fuzz_tokfile.c"
#include "../fuzz/fuzz_trainer.c"
#include "harness.h"

#include <dirent.h>

static void replay(const char *target, int (*fn)(const uint8_t *, size_t))
{
    char dir[256];
    snprintf(dir, sizeof dir, "fuzz/corpus/%s", target);
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) {
            continue;
        }
        uint8_t *buf = malloc(1 << 20);
        size_t len = buf ? fread(buf, 1, 1 << 20, f) : 0;
        fclose(f);
        /* an exact-size copy, so reads past the end are caught by ASan */
        uint8_t *exact = malloc(len ? len : 1);
        if (exact) {
            memcpy(exact, buf, len);
            fn(exact, len);
        }
        free(exact);
        free(buf);
        n++;
    }
    if (d) {
        closedir(d);
    }
    CHECK(n > 0, "fuzz corpus %s: %d inputs replayed", target, n);
}

int main(void)
{
    replay("npy", fuzz_npy);
    replay("safetensors", fuzz_safetensors);
    replay("config", fuzz_config);
    replay("tokenizer", fuzz_tokenizer);
    replay("tokfile", fuzz_tokfile);
    replay("trainer", fuzz_trainer);
    return th_exit();
}
