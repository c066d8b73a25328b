/* mixer.h -- how a token mixer (or a feed-forward block) living in its own
 * file plugs into src/model (internal; not public API).
 *
 * A kind is a table of functions (lina_mixer_vt). The model calls `build`
 * once per layer to validate the config, fill the kind's private dims and
 * declare its tensors (lina_mixer_add: FLA state-dict name and shape, a slot
 * number of the kind's choosing). At run time the model hands the kind the
 * views of those tensors by slot (P[slot], G[slot]; NULL where absent) and the
 * buffers it sized through acts_floats / scratch_floats / state_floats.
 *
 * Conventions (as src/nn/nn.h): rows N = B*T, token-major; forward WRITES out,
 * backward ADDS into dx and into every gradient view; the state is constant
 * in T (decode memory does not grow with the context).
 *
 * Adding a kind: write src/nn/<kind>_layer.c (the layer's math) and a
 * lina_mixer_vt for it, declare the vt below and return it from
 * lina_mixer_vt_for / lina_ffn_vt_for in src/model/mixers.c. */
#ifndef LINA_MIXER_H
#define LINA_MIXER_H

#include "lina.h"

#include <stddef.h>
#include <stdint.h>

#define LINA_MIXER_MAX_SLOTS 256
#define LINA_MIXER_DIMS_BYTES 512

/* initial values of a declared tensor (with the model seed) */
typedef enum lina_init {
    LINA_INIT_NORMAL = 0, /* N(0, initializer_range) */
    LINA_INIT_ONES = 1,
    LINA_INIT_ZEROS = 2,
    LINA_INIT_A_LOG = 3,   /* ln U(0, 16)  (Gated DeltaNet A_log) */
    LINA_INIT_DT_BIAS = 4, /* softplus^-1(dt), dt = exp(U(ln 1e-3, ln 0.1)) floored at 1e-4 */
    LINA_INIT_A_LOG_1_16 = 5, /* ln U(1, 16)  (Mamba2 A_log, A_init_range [1, 16]) */
    LINA_INIT_EYE = 6,     /* identity for a square [d, d] block repeated along dim 0 (hedgehog) */
    LINA_INIT_LINSPACE_3_6 = 7, /* linspace(3, 6) over the elements (xLSTM forget-gate bias) */
    LINA_INIT_MINUS_10 = 8 /* -10 (xLSTM input-gate bias) */
} lina_init;

typedef struct lina_mixer_builder lina_mixer_builder;

/* Declare tensor "<prefix><suffix>" with shape [d0] / [d0,d1] / [d0,d1,d2]
 * (ndim 1..3) as slot `slot` (< LINA_MIXER_MAX_SLOTS). The prefix is the
 * layer's ("model.layers.{i}.attn.", "model.layers.{i}.mlp.",
 * "backbone.layers.{i}.mixer."). decay: AdamW weight decay applies (matrices
 * yes; norms, biases, A_log, dt_bias, D no). Returns LINA_OK or an error. */
int lina_mixer_add(lina_mixer_builder *b, int slot, const char *suffix, int ndim, int64_t d0, int64_t d1,
                   int64_t d2, int decay, lina_init init);

/* One forward or backward call. */
typedef struct lina_mixer_call {
    const void *dims;     /* the kind's dims, as build filled them */
    float *const *P;      /* [LINA_MIXER_MAX_SLOTS] parameter views */
    float *const *G;      /* [LINA_MIXER_MAX_SLOTS] gradient views (backward; accumulate) */
    int B, T;
    const float *x;       /* [B*T, D] layer input (after the block's pre-norm) */
    float *out;           /* forward: [B*T, D] written */
    const float *dout;    /* backward: [B*T, D] */
    float *dx;            /* backward: [B*T, D] accumulated */
    float *acts;          /* acts_floats(B*T) floats: forward writes what backward needs */
    float *scratch;       /* backward: scratch_floats(B*T) floats */
    float *state;         /* forward: NULL (training: zero initial state, nothing kept) or
                             state_floats(B) floats, read as the initial state and
                             overwritten with the final one (prefill and decode) */
    int64_t pos;          /* tokens already consumed by `state` (decode) */
    double *aux;          /* forward: if non-NULL, ADD the layer's auxiliary loss
                             (already multiplied by its coefficient) */
    double aux_grad;      /* backward: d(total loss)/d(aux), 1 for a train step */
    lina_form form;       /* chunk (training, prefill) or recurrent (decode) */
    lina_ws *ws;
} lina_mixer_call;

typedef struct lina_mixer_vt {
    const char *name;
    int (*build)(lina_mixer_builder *b, const lina_config *c, int layer, void *dims);
    size_t (*acts_floats)(const void *dims, int N);
    size_t (*scratch_floats)(const void *dims, int N);
    size_t (*state_floats)(const void *dims, int B);
    int (*forward)(const lina_mixer_call *c);
    int (*backward)(const lina_mixer_call *c);
} lina_mixer_vt;

/* The plug-in kind for layer `layer` of a model with config c, or NULL when
 * the layer is one of model.c's built-in kinds (GLA/RetNet, DeltaNet/Gated
 * DeltaNet, HGRN2, softmax attention). */
const lina_mixer_vt *lina_mixer_vt_for(const lina_config *c, int layer);
/* The feed-forward kind (NULL: the dense GatedMLP). */
const lina_mixer_vt *lina_ffn_vt_for(const lina_config *c);

#endif
