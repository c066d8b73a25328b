/* kind.h -- the one interface through which a token mixer or a feed-forward
 * block plugs into a model (internal; not public API).
 *
 * A kind is a table of functions (lina_mixer_vt) defined in its layer file in
 * src/nn/, next to the layer's math. src/model/kinds.c is the registry
 * (model_type -> table); src/model/model.c composes the blocks and knows no
 * kind by name. The dependency goes one way: src/model includes this header,
 * nothing in src/nn includes a src/model header.
 *
 * The model calls `build` once per layer to validate the config, fill the
 * kind's private dims and declare its tensors (lina_mixer_add: FLA state-dict
 * name and shape, a slot number of the kind's choosing). At run time the model
 * hands the kind the views of those tensors by slot (P[slot], G[slot]; NULL
 * where absent) and the buffers it sized through acts_floats / scratch_floats
 * / state_floats.
 *
 * Conventions (as nn.h): rows N = B*T, token-major; forward WRITES out,
 * backward ADDS into dx and into every gradient view; the state is constant
 * in T (decode memory does not grow with the context), except for a kind
 * flagged LINA_KIND_KV_CACHE (softmax attention), whose state holds up to
 * max_len tokens.
 *
 * Adding a kind: the layer file (its math and a lina_mixer_vt), one line in
 * src/model/kinds.c, tests (src/model/README.md). */
#ifndef LINA_KIND_H
#define LINA_KIND_H

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
    LINA_INIT_DT_BIAS = 4, /* softplus^-1(dt), dt = exp(U(ln lo, ln hi)) floored at fl; (lo, hi, fl) =
                              (1e-3, 0.1, 1e-4) or the arguments of lina_mixer_add_init */
    LINA_INIT_A_LOG_1_16 = 5, /* ln U(1, 16)  (Mamba2 A_log, A_init_range [1, 16]) */
    LINA_INIT_EYE = 6,     /* identity for a square [d, d] block repeated along dim 0 (hedgehog) */
    LINA_INIT_LINSPACE_3_6 = 7, /* linspace(3, 6) over the elements (xLSTM forget-gate bias) */
    LINA_INIT_MINUS_10 = 8, /* -10 (xLSTM input-gate bias) */
    LINA_INIT_UNIFORM = 9, /* U(-a, a), a = the first argument of lina_mixer_add_init (PyTorch's
                              default Linear / Conv1d init has a = 1/sqrt(fan_in)) */
    LINA_INIT_A_LOG_ARANGE = 10, /* ln(1 + j mod n), n the last dim (Mamba A_log: A = -(1..N) per row) */
    LINA_INIT_CONSTANT = 11 /* every element the first argument of lina_mixer_add_init */
} lina_init;

/* What build declares its tensors through. The model fills `declare` and
 * `ctx` (it owns the tensor table); a kind only calls lina_mixer_add. */
typedef struct lina_mixer_builder {
    /* Declare tensor `name` [shape[0..ndim-1]]; returns its index (>= 0) or a
     * negative LINA_* error. args: NULL or the init's three arguments. */
    int (*declare)(void *ctx, const char *name, int ndim, const int64_t *shape, int decay, lina_init init,
                   const double *args);
    void *ctx;
    int *slot;          /* [LINA_MIXER_MAX_SLOTS] tensor index per slot (-1: absent) */
    char prefix[64];    /* "model.layers.{i}.attn.", "model.layers.{i}.mlp.", "backbone.layers.{i}.mixer." */
} lina_mixer_builder;

/* Declare tensor "<prefix><suffix>" with shape [d0] / [d0,d1] / [d0,d1,d2]
 * (ndim 1..3) as slot `slot` (< LINA_MIXER_MAX_SLOTS). decay: AdamW weight
 * decay applies (matrices yes; norms, biases, A_log, dt_bias, D no). Returns
 * LINA_OK or an error. */
int lina_mixer_add(lina_mixer_builder *b, int slot, const char *suffix, int ndim, int64_t d0, int64_t d1,
                   int64_t d2, int decay, lina_init init);
/* The same with the init's arguments (LINA_INIT_DT_BIAS: lo, hi, floor; LINA_INIT_UNIFORM: a). */
int lina_mixer_add_init(lina_mixer_builder *b, int slot, const char *suffix, int ndim, int64_t d0, int64_t d1,
                        int64_t d2, int decay, lina_init init, const double args[3]);

/* Sequence parallelism (LASP-2, docs/distributed.md): every sequence of the
 * batch is split into `size` contiguous pieces, one per rank; a call holds
 * piece `rank`, whose first token is at position pos0 of the sequence. The
 * layers exchange per-piece summaries through `allgather` (filled by
 * src/train from src/dist; the layers never see MPI). A kind flagged
 * LINA_KIND_SP computes its piece exactly as the whole sequence would
 * (src/nn/sp.c holds the summaries of each kernel family). */
typedef struct lina_sp_store lina_sp_store;
typedef struct lina_sp {
    int rank, size;
    int64_t pos0;
    int64_t seq_len; /* the whole sequence's length (the pieces' sum) */
    /* the normaliser of this piece's loss (its target count): each rank's
     * backward starts from the gradient of its own mean loss, so the
     * gradients the pieces exchange are rescaled from one piece's to another's
     * (a weight <= 0 is taken as 1) */
    double weight;
    void *ctx;
    /* recv [size * n] = every piece's send [n], in piece order */
    int (*allgather)(void *ctx, const float *send, size_t n, float *recv);
    /* recv [n] = the sum over the pieces of their send [rank * n .. (rank + 1) * n) (send [size * n]) */
    int (*reduce_scatter)(void *ctx, const float *send, size_t n, float *recv);
    lina_sp_store *keep;  /* what a layer's forward keeps for its backward (sp.c) */
} lina_sp;

/* n floats kept under `key` (a layer's dims pointer) from a forward to its
 * backward, zero-filled when first made (or grown); NULL with an error when
 * out of memory. */
float *lina_sp_keep(const lina_sp *sp, const void *key, size_t n);
void lina_sp_keep_free(lina_sp *sp);

/* The diagonal-decay engine (lina_dd_fwd / lina_dd_bwd) on one piece of a
 * sequence-parallel sequence; the same calls as the engine's when sp is NULL
 * or has one piece. Forward: the piece's summary (total log decay per key
 * channel, final state from a zero state) is all-gathered, the pieces before
 * this one are composed into its initial state, and the piece is finished
 * from it. Backward: the gradient of the piece's own outputs w.r.t. its
 * initial state is all-gathered with the decays, the later pieces' are
 * composed (transposed, in reverse) into the cotangent of its final state,
 * and the piece's backward runs with it. The sequence's own initial / final
 * states (in->h0, out->ht, gin->dht, gout->dh0) must be NULL with sp. */
int lina_sp_dd_fwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_dd_in *in,
                   lina_dd_out *out, lina_form form, lina_ws *ws);
int lina_sp_dd_bwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_dd_in *in,
                   const lina_dd_grad_in *gin, lina_dd_grad_out *gout, lina_form form, lina_ws *ws);

/* The same for the delta-rule engine (lina_delta_fwd / lina_delta_bwd): the
 * piece's summary is its K x K state map M_p (the product of its exp(g)
 * (I - beta k k^T), computed by the engine from h0 = I with v = 0) and its
 * final state from zero; the backward composes M_q^T from the last piece
 * down. The chunk-form cache (out->cache, gin->cache) may be used as with the
 * engine. */
int lina_sp_delta_fwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_delta_in *in,
                      lina_delta_out *out, lina_form form, lina_ws *ws);
int lina_sp_delta_bwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_delta_in *in,
                      const lina_delta_grad_in *gin, lina_delta_grad_out *gout, lina_form form, lina_ws *ws);

/* The same for the mLSTM cell (lina_mlstm_fwd / lina_mlstm_bwd): the summary
 * is the piece's summed log forget gate F, the max-plus part of its
 * stabiliser M = max_t (i_t + the log forget gates after t) and its final
 * (C, n, m) from zero; the pieces compose as the stabilised cell does
 * (sp.c), exactly, stabiliser included. */
int lina_sp_mlstm_fwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_mlstm_in *in,
                      lina_mlstm_out *out, lina_form form, lina_ws *ws);
int lina_sp_mlstm_bwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_mlstm_in *in,
                      const lina_mlstm_grad_in *gin, lina_mlstm_grad_out *gout, lina_form form, lina_ws *ws);

/* Softmax attention (LASP-2H) on a piece of T tokens: q [B,T,H,d] (rotated
 * at the piece's positions), k, v [B,T,Hkv,d] (k rotated) of this piece; the
 * k and v of every piece are all-gathered (kept under key for the backward),
 * and the piece's queries attend causally (window: 0 or W) over the keys of
 * the pieces before it and its own. o [B,T,H,d], stat [B,T,H,2] (the
 * kernel's row statistics) written. */
int lina_sp_attn_fwd(const lina_sp *sp, const void *key, int B, int T, int H, int Hkv, int d, int window,
                     const float *q, const float *k, const float *v, float *o, float *stat, lina_ws *ws);
/* Its backward from dO [B,T,H,d]: dq [B,T,H,d] written; the gradients of the
 * gathered keys and values are reduce-scattered back to the pieces they came
 * from (each rescaled to the receiving piece's loss normaliser), and dk, dv
 * [B,T,Hkv,d] of this piece's own keys and values are written. */
int lina_sp_attn_bwd(const lina_sp *sp, const void *key, int B, int T, int H, int Hkv, int d, int window,
                     const float *q, const float *stat, const float *dO, float *dq, float *dk, float *dv, lina_ws *ws);

/* The short convolution (window W, lina_shortconv_forward) of a piece:
 * cache [B,C,W] = the W inputs before the piece's first token, gathered from
 * the pieces before it (zeros before the sequence); x [B,T,C] the piece's
 * inputs. One all-gather. */
int lina_sp_conv_halo(const lina_sp *sp, const float *x, int B, int T, int C, int W, float *cache);
/* Its backward: dcache [B,C,W] (lina_shortconv_backward's, w.r.t. that
 * cache) goes back to the pieces the inputs came from; dx [B,T,C] of this
 * piece accumulates what later pieces read from it. One all-gather. */
int lina_sp_conv_halo_bwd(const lina_sp *sp, const float *dcache, int B, int T, int C, int W, float *dx);

/* The short convolutions of q, k, v: "q_conv1d.weight" [cq, 1, W], "k_conv1d.weight" [ck, 1, W],
 * "v_conv1d.weight" [cv, 1, W] as slots sq, sk, sv (decayed, N(0, initializer_range)). */
int lina_mixer_add_qkv_convs(lina_mixer_builder *b, int sq, int sk, int sv, int64_t cq, int64_t ck, int64_t cv,
                             int64_t W);

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
    float *scratch;       /* backward: scratch_floats(B*T) floats, holding anything on entry
                             (what the previous layer left; -3e29 everywhere under
                             LINA_POISON_SCRATCH, which the test suite sets): zero what
                             accumulates, or write it first */
    float *state;         /* forward: NULL (training: zero initial state, nothing kept) or
                             state_floats(B, cap) floats, read as the initial state and
                             overwritten with the final one (prefill and decode) */
    int64_t pos;          /* tokens already consumed by `state` (decode) */
    int cap;              /* max_len the state was sized for */
    float *shared;        /* the kind's model-level work buffer (shared_build), or NULL */
    double *aux;          /* forward: if non-NULL, ADD the layer's auxiliary loss
                             (already multiplied by its coefficient) */
    double aux_grad;      /* backward: d(total loss)/d(aux), 1 for a train step */
    lina_form form;       /* chunk (training, prefill) or recurrent (decode) */
    lina_ws *ws;
    const lina_sp *sp;    /* training with sequence parallelism (LINA_KIND_SP kinds only), or NULL */
    const int64_t *cu;    /* packed documents (LINA_KIND_VARLEN kinds only): B = 1 and offsets
                             [0, ..., T] of the documents, or NULL; no state, convolution or
                             position crosses a boundary (training: no state given) */
    int64_t ncu;
    float *carry;         /* a kind with carry_floats: carry_floats(B*T) floats handed from layer to
                             layer (RWKV-7's v_first): forward, layer 0 writes, the others read; the
                             backward still sees the forward's values */
    float *dcarry;        /* backward: its gradient, zeroed before the last layer, accumulated by
                             the layers above 0 and read by layer 0 */
} lina_mixer_call;

/* Names of the model-level tensors (printf formats take the layer index). */
typedef struct lina_kind_names {
    const char *embeddings;  /* "model.embeddings.weight" */
    const char *mixer_norm;  /* "model.layers.%d.attn_norm.weight" */
    const char *mixer;       /* "model.layers.%d.attn." (the mixer's tensor prefix) */
    const char *final_norm;  /* "model.norm.weight" */
    const char *final_norm_bias; /* "model.norm.bias" (LINA_KIND_LAYERNORM) */
} lina_kind_names;

enum {
    LINA_KIND_NO_FFN = 1,   /* the model's blocks have no feed-forward sub-block (Mamba2) */
    LINA_KIND_KV_CACHE = 2, /* the state grows with the context up to max_len (softmax attention) */
    LINA_KIND_SP = 4,       /* forward / backward honour lina_mixer_call.sp (sequence parallelism) */
    LINA_KIND_VARLEN = 8,   /* forward / backward honour lina_mixer_call.cu (packed documents in one call) */
    LINA_KIND_BLOCK = 16,    /* the kind is the whole block with its own norms and feed-forward (RWKV-7):
                               the model hands it the residual stream x, adds its output to x, and
                               declares no attn_norm, mlp_norm or feed-forward of its own */
    LINA_KIND_LAYERNORM = 32 /* the final norm is a LayerNorm with a bias (names->final_norm_bias) */
};

/* The table's size functions from a layer's typed ones, size_t fn(const
 * dims_type *, int): LINA_KIND_SIZE for acts_floats / scratch_floats (rows N),
 * LINA_KIND_STATE for a state_floats that depends on the batch only. */
#define LINA_KIND_SIZE(name, fn)                                                                                   \
    static size_t name(const void *dims, int N) { return fn(dims, N); }
#define LINA_KIND_STATE(name, fn)                                                                                  \
    static size_t name(const void *dims, int B, int max_len) { return (void)max_len, fn(dims, B); }

/* FLA's "backbone." names (Mamba2ForCausalLM, MambaForCausalLM; mamba2_layer.c) */
extern const lina_kind_names lina_backbone_names;

typedef struct lina_mixer_vt {
    const char *name;
    int (*build)(lina_mixer_builder *b, const lina_config *c, int layer, void *dims);
    size_t (*acts_floats)(const void *dims, int N);
    size_t (*scratch_floats)(const void *dims, int N);  /* NULL: none */
    size_t (*state_floats)(const void *dims, int B, int max_len); /* NULL: no state */
    int (*forward)(const lina_mixer_call *c);
    int (*backward)(const lina_mixer_call *c);
    /* optional, model-wide (read from the model's own kind only) */
    int flags;                      /* LINA_KIND_* */
    const lina_kind_names *names;   /* NULL: FLA's "model." names */
    /* Model-level tensors shared by the layers of the kind (HGRN2's lower
     * bounds), declared after the embeddings with an empty prefix; *work: floats
     * of the work buffer every layer sees as lina_mixer_call.shared (0: none,
     * and the shared calls are skipped). */
    int (*shared_build)(lina_mixer_builder *b, const lina_config *c, void *dims, size_t *work);
    /* before the layers' forward: c->dims (shared), c->P, c->shared */
    int (*shared_forward)(const lina_mixer_call *c);
    /* after the layers' backward: c->G too */
    int (*shared_backward)(const lina_mixer_call *c);
    /* floats per call of the buffer the layers hand on (lina_mixer_call.carry) for N rows, linear in N
       (read with layer 0's dims); NULL: none */
    size_t (*carry_floats)(const void *dims, int N);
    /* after the model's initialisation, per layer: overwrite the kind's tensors with its own
       initial values (P as in a call; seed: the model seed mixed with the layer) */
    void (*init)(const void *dims, float *const *P, uint64_t seed);
} lina_mixer_vt;

#endif
