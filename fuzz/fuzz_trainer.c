/* fuzz_trainer.c -- trainer.json (the training state of a checkpoint) on
 * arbitrary bytes, into a state with room for 4096 steps. */
#include "fuzz.h"
#include "../src/train/train_internal.h"

static int fuzz_trainer(const uint8_t *data, size_t size)
{
    lina_train_state s;
    if (lina_train_state_alloc(&s, 4096) != LINA_OK) {
        return 0;
    }
    (void)lina_trainer_json_parse((const char *)data, size, "trainer.json", &s);
    lina_train_state_free(&s);
    return 0;
}
LINA_FUZZ_ENTRY(fuzz_trainer)
