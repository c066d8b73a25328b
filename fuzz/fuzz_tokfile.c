/* fuzz_tokfile.c -- lina_tok_open on arbitrary bytes (through a file), then
 * reads, samples and evaluation batches of an accepted file. */
#include "fuzz.h"

static int fuzz_tokfile(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    lina_tokfile *f = NULL;
    if (!path || lina_tok_open(path, &f) != LINA_OK) {
        return 0;
    }
    uint64_t n = lina_tok_count(f);
    int32_t tok[64], tgt[64];
    if (lina_tok_read(f, 0, n < 64 ? (size_t)n : 64, tok) == LINA_OK) {
        for (uint64_t i = 0; i < (n < 64 ? n : 64); i++) {
            if (tok[i] < 0 || (uint32_t)tok[i] >= lina_tok_vocab(f)) {
                abort(); /* every token read is below the vocabulary */
            }
        }
    }
    (void)lina_tok_read(f, n, 1, tok); /* past the end: an error */
    uint64_t rng = 1;
    (void)lina_tok_sample(f, &rng, 2, 8, tok, tgt);
    (void)lina_tok_eval_batch(f, 3, 2, 8, tok, tgt);
    lina_tok_close(f);
    return 0;
}
LINA_FUZZ_ENTRY(fuzz_tokfile)
