/* kind.c -- tensor declaration for the plug-in kinds (kind.h): the name and
 * shape checks, then the model's declare callback. */
#include "kind.h"

#include <stdio.h>

int lina_mixer_add_init(lina_mixer_builder *b, int slot, const char *suffix, int ndim, int64_t d0, int64_t d1,
                        int64_t d2, int decay, lina_init init, const double args[3])
{
    if (!b || !b->declare || !suffix || slot < 0 || slot >= LINA_MIXER_MAX_SLOTS || ndim < 1 || ndim > 3 ||
        d0 < 1 || (ndim > 1 && d1 < 1) || (ndim > 2 && d2 < 1)) {
        return lina_set_error(LINA_EINVAL, "model: bad tensor declaration (%s)", suffix ? suffix : "NULL");
    }
    char nm[96];
    if ((size_t)snprintf(nm, sizeof(nm), "%s%s", b->prefix, suffix) >= sizeof(nm)) {
        return lina_set_error(LINA_EINVAL, "model: tensor name too long (%s%s)", b->prefix, suffix);
    }
    const int64_t shape[3] = {d0, ndim > 1 ? d1 : 0, ndim > 2 ? d2 : 0};
    int t = b->declare(b->ctx, nm, ndim, shape, decay, init, args);
    if (t < 0) {
        return t;
    }
    b->slot[slot] = t;
    return LINA_OK;
}

int lina_mixer_add(lina_mixer_builder *b, int slot, const char *suffix, int ndim, int64_t d0, int64_t d1,
                   int64_t d2, int decay, lina_init init)
{
    return lina_mixer_add_init(b, slot, suffix, ndim, d0, d1, d2, decay, init, NULL);
}

int lina_mixer_add_qkv_convs(lina_mixer_builder *b, int sq, int sk, int sv, int64_t cq, int64_t ck, int64_t cv,
                             int64_t W)
{
    int rc = lina_mixer_add(b, sq, "q_conv1d.weight", 3, cq, 1, W, 1, LINA_INIT_NORMAL);
    rc = rc ? rc : lina_mixer_add(b, sk, "k_conv1d.weight", 3, ck, 1, W, 1, LINA_INIT_NORMAL);
    return rc ? rc : lina_mixer_add(b, sv, "v_conv1d.weight", 3, cv, 1, W, 1, LINA_INIT_NORMAL);
}
