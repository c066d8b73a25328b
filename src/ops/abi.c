/*
 * The byte layout of the public structures that callers outside C mirror by hand
 * (python/lina/_lib.py's ctypes structures), as text: one line per structure,
 *
 *   name size field:offset field:offset ...
 *
 * The Python package compares its mirror with this table when it loads the library
 * and refuses to load on any difference, so a field added in C cannot be misread
 * silently. A structure gains its fields here when it gains them in lina.h.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "lina.h"

#define E(S, f) {#S, #f, offsetof(S, f), sizeof(S)},

static const struct field {
    const char *type, *name;
    size_t offset, size;
} fields[] = {
    E(lina_ws, blocks) E(lina_ws, sizes) E(lina_ws, nblocks)
    E(lina_mix_dims, B) E(lina_mix_dims, T) E(lina_mix_dims, H) E(lina_mix_dims, K)
    E(lina_mix_dims, V) E(lina_mix_dims, chunk) E(lina_mix_dims, scale)
    E(lina_dd_in, q) E(lina_dd_in, k) E(lina_dd_in, v) E(lina_dd_in, gate) E(lina_dd_in, g)
    E(lina_dd_in, h0)
    E(lina_dd_out, o) E(lina_dd_out, ht) E(lina_dd_out, states) E(lina_dd_out, finite)
    E(lina_dd_grad_in, do_) E(lina_dd_grad_in, dht) E(lina_dd_grad_in, states)
    E(lina_dd_grad_out, dq) E(lina_dd_grad_out, dk) E(lina_dd_grad_out, dv)
    E(lina_dd_grad_out, dg) E(lina_dd_grad_out, dh0)
    E(lina_delta_in, q) E(lina_delta_in, k) E(lina_delta_in, v) E(lina_delta_in, beta)
    E(lina_delta_in, g) E(lina_delta_in, h0) E(lina_delta_in, n) E(lina_delta_in, gk)
    E(lina_delta_out, o) E(lina_delta_out, ht) E(lina_delta_out, cache) E(lina_delta_out, finite)
    E(lina_delta_grad_in, do_) E(lina_delta_grad_in, dht) E(lina_delta_grad_in, cache)
    E(lina_delta_grad_out, dq) E(lina_delta_grad_out, dk) E(lina_delta_grad_out, dv)
    E(lina_delta_grad_out, dbeta) E(lina_delta_grad_out, dg) E(lina_delta_grad_out, dh0)
    E(lina_delta_grad_out, dgk)
    E(lina_mlstm_in, q) E(lina_mlstm_in, k) E(lina_mlstm_in, v) E(lina_mlstm_in, i)
    E(lina_mlstm_in, f) E(lina_mlstm_in, h0) E(lina_mlstm_in, n0) E(lina_mlstm_in, m0)
    E(lina_mlstm_out, o) E(lina_mlstm_out, ht) E(lina_mlstm_out, nt) E(lina_mlstm_out, mt)
    E(lina_mlstm_grad_in, do_) E(lina_mlstm_grad_in, dht) E(lina_mlstm_grad_in, dnt)
    E(lina_mlstm_grad_in, dmt)
    E(lina_mlstm_grad_out, dq) E(lina_mlstm_grad_out, dk) E(lina_mlstm_grad_out, dv)
    E(lina_mlstm_grad_out, di) E(lina_mlstm_grad_out, df) E(lina_mlstm_grad_out, dh0)
    E(lina_mlstm_grad_out, dn0) E(lina_mlstm_grad_out, dm0)
    E(lina_softmax_in, q) E(lina_softmax_in, k) E(lina_softmax_in, v)
    E(lina_softmax_in, window) E(lina_softmax_in, non_causal) E(lina_softmax_in, g)
    E(lina_softmax_in, q_from)
    E(lina_softmax_out, o) E(lina_softmax_out, stat)
    E(lina_softmax_grad_in, do_) E(lina_softmax_grad_in, stat)
    E(lina_softmax_grad_out, dq) E(lina_softmax_grad_out, dk) E(lina_softmax_grad_out, dv)
    E(lina_softmax_grad_out, dg)
    E(lina_lion_in, q) E(lina_lion_in, k) E(lina_lion_in, v) E(lina_lion_in, g)
    E(lina_lion_in, normalize)
    E(lina_lion_out, o)
    E(lina_lion_grad_in, do_)
    E(lina_lion_grad_out, dq) E(lina_lion_grad_out, dk) E(lina_lion_grad_out, dv)
    E(lina_lion_grad_out, dg)
};

const char *lina_abi_layout(void)
{
    static char text[8192];
    if (text[0])
        return text;
    size_t n = 0, count = sizeof fields / sizeof fields[0];
    for (size_t i = 0; i < count; i++) {
        int w;
        if (i == 0 || strcmp(fields[i].type, fields[i - 1].type) != 0)
            w = snprintf(text + n, sizeof text - n, "%s%s %zu", i ? "\n" : "", fields[i].type,
                         fields[i].size);
        else
            w = 0;
        if (w < 0 || (size_t)w >= sizeof text - n)
            return "";
        n += (size_t)w;
        w = snprintf(text + n, sizeof text - n, " %s:%zu", fields[i].name, fields[i].offset);
        if (w < 0 || (size_t)w >= sizeof text - n)
            return "";
        n += (size_t)w;
    }
    return text;
}
