/* fuzz_tokenizer.c -- lina_tokenizer_parse on arbitrary bytes; an accepted
 * tokenizer encodes a fixed text and the input itself and decodes the ids. */
#include "fuzz.h"

static void round_trip(lina_tokenizer *t, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (lina_tokenizer_encode(t, text, len, &ids, &n) == LINA_OK) {
        char *back = NULL;
        size_t blen = 0;
        if (lina_tokenizer_decode(t, ids, n, &back, &blen) == LINA_OK) {
            free(back);
        }
        free(ids);
    }
}

static int fuzz_tokenizer(const uint8_t *data, size_t size)
{
    lina_tokenizer *t = NULL;
    if (lina_tokenizer_parse((const char *)data, size, "fuzz.json", &t) != LINA_OK) {
        return 0;
    }
    static const char text[] = "In the beginning God created the heaven and the earth. \xe2\x80\x94 caf\xc3\xa9 \x01\xff";
    round_trip(t, text, sizeof text - 1);
    round_trip(t, (const char *)data, size < 4096 ? size : 4096);
    lina_tokenizer_free(t);
    return 0;
}
LINA_FUZZ_ENTRY(fuzz_tokenizer)
