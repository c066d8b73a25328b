/* fuzz_config.c -- lina_config_parse on arbitrary bytes; an accepted config is
 * written back and read again (it must give the same config), and its model is
 * built when it is small (parameters from the checked sizes). */
#include "fuzz.h"

static int fuzz_config(const uint8_t *data, size_t size)
{
    lina_config c, d;
    if (lina_config_parse((const char *)data, size, "fuzz.json", &c) != LINA_OK) {
        return 0;
    }
    char *js = lina_config_json(&c);
    if (!js) {
        return 0;
    }
    if (lina_config_parse(js, strlen(js), "fuzz.json (written back)", &d) != LINA_OK) {
        abort(); /* what the writer writes, the reader reads */
    }
    free(js);
    /* tiny models only (fast enough to build on every input) */
    if (c.hidden_size <= 64 && c.vocab_size <= 256 && c.num_hidden_layers <= 2 && lina_config_mlp_size(&c) <= 256 &&
        c.num_experts <= 4 && c.moe_intermediate_size <= 256 && c.head_dim <= 64 && c.state_size <= 64) {
        lina_model *m = NULL;
        (void)lina_model_create(&c, 1, &m);
        lina_model_free(m);
    }
    return 0;
}
LINA_FUZZ_ENTRY(fuzz_config)
