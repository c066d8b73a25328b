/*
 * lina.h -- the public API of lina, a C engine for linear transformers.
 *
 * Conventions (see README.md and docs/architecture.md):
 *   - activations are [B, T, H, D] row-major float32 (B batch, T time, H heads,
 *     K key dim, V value dim); recurrent state is [B, H, K, V];
 *   - gates are in log space (decay = exp(g)), default scale is K^-1/2;
 *   - functions return 0 on success and a negative code on error; the message
 *     of the last error on the calling thread is lina_last_error(). The library
 *     never exits the process.
 */
#ifndef LINA_H
#define LINA_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LINA_VERSION "0.1.0"

/* ------------------------------------------------------------------ errors */

enum {
    LINA_OK = 0,
    LINA_EINVAL = -1,   /* bad argument, shape or option */
    LINA_EIO = -2,      /* file could not be read or written */
    LINA_EFORMAT = -3,  /* malformed file */
    LINA_ENOMEM = -4,   /* allocation failed */
    LINA_ENONFINITE = -5, /* NaN or Inf where finite values are required */
    LINA_EINTR = -6       /* stopped on request (lina_train_opts.stop); state was saved */
};

/* Message of the last error raised on this thread ("" if none). */
const char *lina_last_error(void);
/* Record an error message (printf-style) and return `code`. */
int lina_set_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void lina_clear_error(void);

/* ----------------------------------------------------------------- threads */

/* Number of threads lina's kernels use (OpenMP); n <= 0 restores the default. */
void lina_set_threads(int n);
int lina_get_threads(void);

/* ---------------------------------------------------- instruction sets */

/* The hot kernels exist once per instruction-set path: on x86-64 "avx512"
 * (AVX-512 F/BW/DQ/VL), "avx2" (AVX2 + FMA) and "portable" (plain C for the
 * baseline target); elsewhere "portable". The best path the CPU supports is
 * chosen once at start-up; the environment variable LINA_ISA (avx512, avx2 or
 * portable) forces one when the CPU has it. */
const char *lina_isa_name(void);       /* the active path */
const char *lina_isa_supported(void);  /* usable paths, best first, space-separated */
/* 1 when the active path is avx512 and the CPU runs 512-bit vector arithmetic at full
 * width; 0 on the other paths and on AMD family 19h (Zen 4), whose cores split each
 * 512-bit operation into two 256-bit halves, so that the dense products of the chunk forms
 * gain nothing over AVX2 there. lina_delta_fast_form reads it. */
int lina_cpu_full512(void);

/* The byte layout of the public structures that other languages mirror (the Python
 * package's ctypes structures): lines "name size field:offset ...". */
const char *lina_abi_layout(void);
/* LINA_EINVAL with a message naming the problem when LINA_ISA is set to a
 * path that is unknown or that this CPU lacks (the best path is used then);
 * the lina CLI refuses to run in that case. */
int lina_isa_init(void);
/* Switch to a path by name (applies to later calls); LINA_EINVAL with a
 * message when the name is unknown or the path is not usable here. */
int lina_isa_set(const char *name);

/* ------------------------------------------------------------------ random */

/* splitmix64: advances *state and returns the next value. */
uint64_t lina_splitmix64(uint64_t *state);
/* Seconds on a monotonic clock (for timings and progress lines). */
double lina_now(void);

/* --------------------------------------------------------------- workspace */

/* A growable scratch arena owned by the caller. Kernels take what they need
 * from it; once it has grown to a call's needs, repeating that call allocates
 * nothing. Passing NULL where a lina_ws* is expected makes the kernel use a
 * private arena that is freed before it returns. */
typedef struct lina_ws {
    void **blocks;     /* per-thread blocks */
    size_t *sizes;     /* their sizes in bytes */
    int nblocks;
} lina_ws;

void lina_ws_init(lina_ws *ws);
void lina_ws_free(lina_ws *ws);
/* Scratch of at least `bytes` for thread slot `slot` (64-byte aligned); NULL
 * with an error set when the allocation fails. Valid until the next call for
 * the same slot. Not thread safe across the same slot. */
void *lina_ws_get(lina_ws *ws, int slot, size_t bytes);
/* Make sure `nslots` slots exist (call outside parallel regions). */
int lina_ws_reserve(lina_ws *ws, int nslots);

/* -------------------------------------------------------------------- GEMM */

/* Row-major C[M,N] = alpha * op(A)[M,K] op(B)[K,N] + beta * C, with leading
 * dimensions in elements (OpenBLAS underneath). Safe to call inside OpenMP
 * parallel regions (runs single-threaded there). */
void lina_sgemm(int transA, int transB, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc);

/* ---------------------------------------------------------------- vmath */

float lina_logsigmoidf(float x);
float lina_softplusf(float x);
/* y[i] = exp(x[i]) for n elements (vectorised; y may alias x). */
void lina_vexp(float *y, const float *x, size_t n);
/* Checks of data made by other code before or after a mixer call, one vectorised pass each
 * (the Python package's ops use them instead of passes of their own).
 * lina_check_log_gates: 0 when all n values of g are log decays (finite and <= 0); 1 when
 * one is NaN or +-Inf (*worst, if not NULL, gets it); 2 when all are finite but some are
 * above 0 (*worst gets the largest). */
int lina_check_log_gates(const float *g, size_t n, float *worst);
/* 1 when the probes of a mixer output o[B,T,H,V] are all finite, 0 when one is not: column
 * 0 of every row (B*T*H values) and the whole last token (B*H*V values). A NaN or Inf in q_t
 * reaches every column of o_t, one in k, v, a gate or the initial state reaches the state
 * and so the last token: the probes show a non-finite input of the recurrences without
 * reading the inputs (1 for an empty o). */
int lina_mix_out_finite(const float *o, int B, int T, int H, int V);

/* ------------------------------------------------------------------ tensor */

#define LINA_MAX_DIMS 8

typedef struct lina_tensor {
    int ndim;
    int64_t shape[LINA_MAX_DIMS];
    float *data;              /* owned, 64-byte aligned */
} lina_tensor;

int64_t lina_tensor_numel(const lina_tensor *t);
/* Allocate a zero-filled tensor. */
int lina_tensor_alloc(lina_tensor *t, int ndim, const int64_t *shape);
void lina_tensor_free(lina_tensor *t);

/* -------------------------------------------------------------- .npy I/O */

/* Read a .npy file (little-endian float32 '<f4', or '<f8' converted; C order).
 * Malformed, truncated, Fortran-order, big-endian or other-dtype files fail
 * with LINA_EFORMAT and a message naming the file and the problem. */
int lina_npy_read(const char *path, lina_tensor *out);
/* Write '<f4' C-order .npy atomically (temporary file, fsync, rename). */
int lina_npy_write(const char *path, const lina_tensor *t);
/* Parse an in-memory .npy image; `name` is used in messages. */
int lina_npy_parse(const void *buf, size_t len, const char *name, lina_tensor *out);
/* Read a 1-D integer .npy file ('<i4' or '<i8', e.g. cu_seqlens offsets) into a
 * malloc'd array of *n int64 values (free with free()); another dtype or shape
 * fails with LINA_EFORMAT naming the file and the problem. */
int lina_npy_read_int(const char *path, int64_t **vals, int64_t *n);

/* ------------------------------------------------------------ safetensors */

/*
 * Named tensors with names of any length ("model.layers.11.attn.q_proj.weight")
 * plus string metadata: the in-memory form of a safetensors file. Entries keep
 * their insertion (file) order; names are unique. Initialise with
 * lina_tdict_init (or zero it) and release with lina_tdict_free. (lina_tset,
 * with its 16-character names, stays the exchange form of `lina op`.)
 */
typedef struct lina_tdict {
    int n, cap;
    char **names;             /* [n], owned */
    lina_tensor *t;           /* [n], owned */
    int nmeta, meta_cap;
    char **meta_keys;         /* [nmeta], owned */
    char **meta_vals;         /* [nmeta], owned */
} lina_tdict;

void lina_tdict_init(lina_tdict *d);
void lina_tdict_free(lina_tdict *d);
/* Append a tensor. On success the dict owns t->data and *t is zeroed; on
 * failure (empty or duplicate name, no memory) the caller still owns it. */
int lina_tdict_add(lina_tdict *d, const char *name, lina_tensor *t);
/* Index of `name`, or -1. */
int lina_tdict_index(const lina_tdict *d, const char *name);
lina_tensor *lina_tdict_find(lina_tdict *d, const char *name);
const lina_tensor *lina_tdict_cfind(const lina_tdict *d, const char *name);
/* Metadata value of `key`, or NULL. */
const char *lina_tdict_meta(const lina_tdict *d, const char *key);
/* Set (or replace) a metadata entry; both strings are copied. */
int lina_tdict_set_meta(lina_tdict *d, const char *key, const char *value);

/*
 * safetensors files: u64 little-endian header length N, an N-byte JSON header
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
 * {string: string}}, then the data buffer.
 *
 * Reading converts F32, BF16, F16 and F64 tensors to float32. Opening
 * validates the whole header first: header length against the file size,
 * well-formed JSON, field types, non-negative integral shapes whose byte size
 * does not overflow, every known safetensors dtype (other dtypes such as I64
 * can be listed but not loaded), offsets inside the data buffer,
 * end - begin == numel * dtype size, unique names, no two tensors sharing a
 * byte (gaps are allowed). Any violation fails with LINA_EFORMAT and a
 * message naming the file, the tensor and the problem; nothing is ever read
 * outside the validated ranges.
 */
typedef enum lina_st_dtype {
    LINA_ST_F32 = 0,
    LINA_ST_BF16 = 1          /* written with round-to-nearest-even */
} lina_st_dtype;

/* lina_st_read flags */
#define LINA_ST_SKIP_UNSUPPORTED 1u /* skip tensors whose dtype cannot be read as float32 */

/* Read a whole file into *out (initialised here; freed on failure). A tensor
 * of an unsupported dtype fails the read unless LINA_ST_SKIP_UNSUPPORTED. */
int lina_st_read(const char *path, lina_tdict *out, unsigned flags);

/* An open, validated file: list the tensors, then load the ones you want
 * straight into your own buffers (a model's parameter views) without a copy
 * of the whole file in memory. */
typedef struct lina_st_file lina_st_file;
int lina_st_open(const char *path, lina_st_file **out);
/* The same for an in-memory image of a file; `buf` must outlive the handle;
 * `name` is used in messages. */
int lina_st_open_mem(const void *buf, size_t len, const char *name, lina_st_file **out);
void lina_st_close(lina_st_file *f);
int lina_st_count(const lina_st_file *f);
/* Index of the tensor called `name`, or -1. Tensors are in header order. */
int lina_st_find(const lina_st_file *f, const char *name);
const char *lina_st_name(const lina_st_file *f, int i);
/* The dtype string as in the file ("F32", "BF16", "I64", ...). */
const char *lina_st_dtype_name(const lina_st_file *f, int i);
/* Writes the shape, returns the rank (negative on a bad index). */
int lina_st_shape(const lina_st_file *f, int i, int64_t shape[LINA_MAX_DIMS]);
int64_t lina_st_numel(const lina_st_file *f, int i);
/* Load tensor i converted to float32 into dst, which holds exactly n floats
 * (n must equal the tensor's element count). */
int lina_st_load(const lina_st_file *f, int i, float *dst, int64_t n);
int lina_st_meta_count(const lina_st_file *f);
const char *lina_st_meta_key(const lina_st_file *f, int i);
/* Metadata value of `key`, or NULL. */
const char *lina_st_meta(const lina_st_file *f, const char *key);

/* A tensor to write: borrowed name, shape and data. */
typedef struct lina_st_view {
    const char *name;
    int ndim;
    int64_t shape[LINA_MAX_DIMS];
    const float *data;
} lina_st_view;

/* Write n tensors in the order given (data laid out back to back in that
 * order), all as `dtype`, with nmeta metadata pairs meta[2i] = key,
 * meta[2i+1] = value (meta may be NULL when nmeta is 0). The header is padded
 * with spaces to a multiple of 8 bytes. Written atomically: temporary file,
 * fsync, rename (then the directory is fsynced). Names must be unique,
 * non-empty and not "__metadata__". */
int lina_st_write(const char *path, const lina_st_view *v, int n, const char *const *meta, int nmeta,
                  lina_st_dtype dtype);
/* Write every tensor and metadata entry of d, in d's order. */
int lina_st_write_dict(const char *path, const lina_tdict *d, lina_st_dtype dtype);

/* ----------------------------------------------------------- model config */

/*
 * An HF-style config.json as flash-linear-attention writes it (model_type
 * selects the class; docs/checkpoints.md section 1). Keys missing from
 * the file take FLA's class defaults for that model_type; keys that the class
 * does not have are ignored (as are HF's own: architectures, torch_dtype, ...).
 * "null" in the file is kept as the sentinel noted on each field.
 */
typedef enum lina_model_type {
    LINA_MODEL_GLA = 0,            /* "gla" */
    LINA_MODEL_DELTA_NET = 1,      /* "delta_net" */
    LINA_MODEL_GATED_DELTANET = 2, /* "gated_deltanet" */
    LINA_MODEL_RETNET = 3,         /* "retnet" */
    LINA_MODEL_LINEAR_ATTN = 4,    /* "linear_attn" */
    LINA_MODEL_TRANSFORMER = 5,    /* "transformer" */
    LINA_MODEL_HGRN2 = 6,          /* "hgrn2" */
    LINA_MODEL_GATED_DELTAPRODUCT = 7, /* "gated_deltaproduct" */
    LINA_MODEL_MAMBA2 = 8,         /* "mamba2" */
    LINA_MODEL_MOM = 9,            /* "mom" */
    LINA_MODEL_MLSTM = 10,         /* "mlstm" (lina's own: xLSTM's mLSTM block in FLA's LM frame) */
    LINA_MODEL_KDA = 11,           /* "kda" (Kimi Delta Attention) */
    LINA_MODEL_MAMBA = 12,         /* "mamba" (Mamba-1) */
    LINA_MODEL_FORGETTING_TRANSFORMER = 13, /* "forgetting_transformer" (FoX) */
    LINA_MODEL_HGRN = 14,          /* "hgrn" (HGRN-1) */
    LINA_MODEL_RWKV7 = 15,         /* "rwkv7" (RWKV-7, FLA's RWKV7ForCausalLM) */
    LINA_MODEL_GSA = 16,           /* "gsa" (Gated Slot Attention) */
    LINA_MODEL_COUNT = 17
} lina_model_type;

#define LINA_CONFIG_MAX_LAYERS 1024
/* Upper bounds on config dimensions, checked by lina_config_validate (so by
 * every config read and every model built). They are far above any model
 * that fits in memory and keep every size derived from a config (parameter,
 * activation, state and workspace counts) clear of integer overflow. */
#define LINA_CONFIG_MAX_HIDDEN 65536      /* hidden_size */
#define LINA_CONFIG_MAX_HEADS 65536       /* num_heads, num_kv_heads, num_v_heads, n_groups, attn.num_heads */
#define LINA_CONFIG_MAX_HEAD_DIM 4096     /* per-head key / value size: head_dim, hidden_size*expand_k/num_heads,
                                             expand_ratio, state_size, ... */
#define LINA_CONFIG_MAX_WIDTH (1 << 20)   /* any layer width: intermediate_size, moe_intermediate_size, the MLP
                                             width, hidden_size*expand_k, num_heads*head_dim, expand*hidden_size */
#define LINA_CONFIG_MAX_VOCAB (1 << 24)   /* vocab_size */
#define LINA_CONFIG_MAX_CONV 256          /* conv_size, conv_kernel */
#define LINA_CONFIG_MAX_EXPERTS 1024      /* num_experts, num_memories */
#define LINA_CONFIG_MAX_CHUNK 4096        /* mamba2 chunk_size */

typedef struct lina_config {
    lina_model_type model_type;
    /* every model */
    int hidden_size;               /* D */
    int num_hidden_layers;         /* L (<= LINA_CONFIG_MAX_LAYERS) */
    int num_heads;                 /* H; hgrn2: null -> hidden_size / expand_ratio */
    int vocab_size;
    double hidden_ratio;           /* 0 = null (the MLP then uses 4) */
    int intermediate_size;         /* 0 = null: FLA's rule, lina_config_mlp_size() */
    double norm_eps;
    char hidden_act[16];           /* "swish" */
    int max_position_embeddings;
    int elementwise_affine;        /* null reads as 0 (not for delta_net / gated_deltanet) */
    int tie_word_embeddings;
    double initializer_range;
    int use_cache;
    int pad_token_id, bos_token_id, eos_token_id; /* -1 = null */
    int fuse_norm, fuse_swiglu, fuse_cross_entropy, fuse_linear_cross_entropy, use_l2warp;
    int attnres_block_size;        /* 0 = null; a non-null value is rejected (unsupported) */
    int no_mlp;                    /* lina: blocks without the feed-forward (mlp_norm, mlp.*), as the
                                      synthetic-task models; key "no_mlp", written only when true */
    /* linear-attention family (not transformer) */
    char attn_mode[24];            /* "chunk", "fused_chunk", "fused_recurrent", ... */
    double expand_k;               /* gla, delta_net, retnet, linear_attn */
    double expand_v;               /* gla, delta_net, gated_deltanet, retnet, linear_attn */
    int num_kv_heads;              /* gla, retnet, linear_attn, transformer; 0 = null (= num_heads) */
    int head_dim;                  /* gated_deltanet: key dim per head */
    int num_v_heads;               /* gated_deltanet: 0 = null (= num_heads) */
    int use_short_conv, conv_size; /* every type but mamba2 (its own conv_kernel); linear_attn and
                                      transformer: a lina option (FLA's layers have none) */
    int use_output_gate;           /* gla, retnet */
    int use_gate;                  /* delta_net, gated_deltanet */
    int use_beta, use_output_norm; /* delta_net */
    int allow_neg_eigval;          /* delta_net, gated_deltanet */
    char qk_norm[8];               /* delta_net: "l2" | "sum"; transformer: "rms" (true) or "" (false) */
    char qk_activation[16];        /* delta_net: "silu" | "relu" | "elu" | "identity" */
    char feature_map[32];          /* gla, retnet, linear_attn; "" = null */
    int has_clamp_min;             /* gla: clamp_min given (not null) */
    double clamp_min;
    int use_gk, use_gv;            /* gla (ignored by FLA's current layer) */
    int tie_feature_map_qk, norm_q, norm_k, norm_feature_map; /* linear_attn */
    int expand_ratio, use_lower_bound; /* hgrn2 */
    int num_householder, use_forget_gate; /* gated_deltaproduct */
    int safe_gate, has_lower_bound; /* kda (has_lower_bound: lower_bound not null) */
    double lower_bound;
    /* gsa (also expand_k, expand_v, num_kv_heads, feature_map "swish" | "relu" | "t2r",
       use_short_conv, conv_size, elementwise_affine) */
    int num_slots;                 /* M slots per head; 0 = null (= the key dim per head) */
    double gate_logit_normalizer;  /* g = logsigmoid(f) / gate_logit_normalizer */
    int use_norm;                  /* read and written back; FLA's layer ignores it */
    /* mamba2 (head_dim is the head size P; allow_neg_eigval: decay in [-1, 1]) */
    int state_size, expand, n_groups, conv_kernel, use_conv_bias, use_bias;
    int rmsnorm, norm_before_gate, chunk_size, D_has_hdim, residual_in_fp32;
    double dt_min, dt_max, dt_init_floor;
    /* mamba (also state_size, expand, conv_kernel, use_conv_bias, use_bias, dt_min, dt_max,
       dt_init_floor; intermediate_size is the inner width E = expand * hidden_size) */
    int dt_rank;                   /* "auto" in a file: ceil(hidden_size / 16), stored resolved */
    double dt_scale;
    char dt_init_scheme[16];       /* "random" | "constant" */
    int rescale_prenorm_residual;  /* read and written back, no effect */
    /* rwkv7 (also head_dim: key size per head, num_heads null -> hidden_size / head_dim;
       hidden_ratio / intermediate_size give the FFN width, 32 * ceil(D * ratio / 32)) */
    int decay_low_rank_dim, gate_low_rank_dim, a_low_rank_dim, v_low_rank_dim;
    int value_dim;                 /* 0 = null (= hidden_size) */
    int norm_first, norm_bias;     /* layer 0's pre_norm; LayerNorm biases */
    /* mom (memories are Gated DeltaNets: head_dim, expand_v, use_short_conv, conv_size,
       use_output_gate) */
    int num_memories, topk, shared_mem, single_kv_proj, use_layer_wise_balance;
    double capacity, aux_loss_scale;
    char mom_backend[24];
    /* mixture-of-experts MLP (every model type; num_experts 0 = null = dense GatedMLP) */
    int num_experts, num_experts_per_tok, moe_intermediate_size;
    double router_aux_loss_coef;
    /* transformer attention */
    int qkv_bias;
    int window_size;               /* 0 = null (no window) */
    double rope_theta;             /* 0 = null */
    /* transformer: linearized attention (src/nn/linattn_layer.c, docs/linearize.md) instead of
       softmax attention when linear_method is "lolcats" or "liger" ("" = softmax attention) */
    char linear_method[16];
    char linear_feature_map[16];   /* "hedgehog" (learned, per head) | "softmax" (no parameters) */
    int linear_gate;               /* GLA-style decay of the linear branch from the key projection */
    double window_factor;          /* liger: the window branch's fixed share (0.5); lolcats: the
                                      initial logit of the learned per-head factor */
    int lora_rank;                 /* LoRA on q/k/v/o of the linearized layers; 0 = none */
    double lora_alpha;             /* LoRA scale alpha / rank */
    int attn_transfer;             /* not a config.json key: stage-1 attention transfer (the layers
                                      output softmax attention, the MSE of their own output is the
                                      auxiliary loss) */
    /* hybrid softmax-attention layers: key "attn" (not for transformer) */
    struct {
        int enabled;               /* "attn" present and not null */
        int n_layers;
        int layers[LINA_CONFIG_MAX_LAYERS]; /* layer indices, ascending, unique */
        int num_heads;
        int num_kv_heads;          /* defaults to num_heads */
        int qkv_bias;
        int window_size;           /* 0 = null */
        double rope_theta;         /* default 10000 */
    } attn;
} lina_config;

/* "gla", ...; NULL for an invalid value. */
const char *lina_model_type_name(lina_model_type t);
/* Fill *c with FLA's class defaults for model type t. */
int lina_config_default(lina_config *c, lina_model_type t);
/* Parse config.json text (len bytes); `name` is used in messages. Unknown
 * model_type, wrong JSON types (e.g. "hidden_size": "2048"), out-of-range or
 * inconsistent values fail with LINA_EFORMAT and a message naming the key. */
int lina_config_parse(const char *json, size_t len, const char *name, lina_config *c);
int lina_config_read(const char *path, lina_config *c);
/* Check ranges (the LINA_CONFIG_MAX_* bounds above) and divisibility (head
 * dims, kv groups, attn layers). */
int lina_config_validate(const lina_config *c, const char *name);
/* The config as JSON text: model_type, architectures and every key of the
 * class (malloc'd; NULL with an error set on failure). */
char *lina_config_json(const lina_config *c);
/* Write config.json atomically (temporary file, fsync, rename). */
int lina_config_write(const char *path, const lina_config *c);
/* GatedMLP width (FLA's rule): intermediate_size if > 0, else
 * 256 * ceil(floor(D * hidden_ratio * 2/3) / 256), hidden_ratio <= 0 (null)
 * meaning 4. D=2048 ratio 4 -> 5632; D=1024 -> 2816. -1 if it overflows. */
int lina_mlp_width(int hidden_size, double hidden_ratio, int intermediate_size);
/* lina_mlp_width of the config's hidden_size, hidden_ratio, intermediate_size; for rwkv7 the
 * RWKV7FeedForward width: intermediate_size if > 0, else 32 * ceil(D * hidden_ratio / 32). */
int lina_config_mlp_size(const lina_config *c);
/* Non-zero when layer i is a softmax-attention layer of a hybrid (always
 * for transformer, unless it has a linear_method). */
int lina_config_is_attn_layer(const lina_config *c, int i);

/* ------------------------------------------------------ mixer kernels */

typedef enum lina_form {
    LINA_FORM_RECURRENT = 0, /* one token at a time: the reference and decode path */
    LINA_FORM_CHUNK = 1      /* chunkwise: intra-chunk dense products + state passing */
} lina_form;

/* The structures from here to the LION ones are mirrored by the Python package
 * (python/lina/_lib.py) and described by lina_abi_layout() (src/ops/abi.c): a field
 * added here is added in both, or the package refuses to load. */

/* Shape of one mixer call. */
typedef struct lina_mix_dims {
    int B, T, H, K, V;
    int chunk;      /* chunk size for LINA_FORM_CHUNK; <= 0: the op's default, 64 (the
                       diagonal-decay and delta-rule ops: 32 when K <= 64, else 64) */
    float scale;    /* query scale; 0 means K^-1/2 */
} lina_mix_dims;

/*
 * Diagonal-decay linear attention: one engine for linear_attn, retention,
 * simple_gla and gla.
 *
 *   h_t = diag(exp(g_t)) h_{t-1} + k_t v_t^T,   o_t = scale * h_t^T q_t
 *
 * q, k [B,T,H,K]; v [B,T,H,V]; o [B,T,H,V]; h0, ht [B,H,K,V].
 * The gate is one of: none (g = 0), per head constant (g_head [H]),
 * scalar per step ([B,T,H]) or a vector per step ([B,T,H,K]).
 */
typedef enum lina_gate_kind {
    LINA_GATE_NONE = 0,
    LINA_GATE_HEAD = 1,    /* g_head[H], constant over time (retention) */
    LINA_GATE_SCALAR = 2,  /* g[B,T,H] (simple_gla) */
    LINA_GATE_VECTOR = 3   /* g[B,T,H,K] (gla) */
} lina_gate_kind;
/* Or'ed into lina_dd_in.gate by a caller that takes its gates from elsewhere (the Python
 * package's ops): lina_dd_fwd and lina_dd_fwd_varlen then refuse, with LINA_ENONFINITE and
 * a message, a gate holding a value that is not a finite log decay <= 0 (NaN, +-Inf, above
 * 0). The recurrent form checks each gate row as it reads it (no pass of its own); the
 * chunk form checks each chunk's gate rows right before it reads them (g comes from memory
 * once), a head gate (H values) in one pass first. The outputs are unspecified then. The
 * backward ignores the bit. */
#define LINA_GATE_CHECKED 0x100

typedef struct lina_dd_in {
    const float *q, *k, *v;   /* [B,T,H,K], [B,T,H,K], [B,T,H,V] */
    lina_gate_kind gate;
    const float *g;           /* per gate kind; NULL for LINA_GATE_NONE */
    const float *h0;          /* [B,H,K,V] or NULL (zero state) */
} lina_dd_in;

typedef struct lina_dd_out {
    float *o;                 /* [B,T,H,V] (required) */
    float *ht;                /* [B,H,K,V] or NULL */
    float *states;            /* optional: [B,H,nC+1,K,V] states at the chunk starts
                                 (t = 0, C, 2C, ...; nC = ceil(T/chunk)) and the final
                                 state, written by either form, for lina_dd_bwd */
    int *finite;              /* optional: set to 1 when the elements of o that
                                 lina_mix_out_finite reads (column 0 of every row, every
                                 column of each sequence's last row; each document's last
                                 row in the varlen form) are all finite, else 0; checked as
                                 they are written, without a pass of its own */
} lina_dd_out;

typedef struct lina_dd_grad_in {
    const float *do_;         /* [B,T,H,V] or NULL (zero) */
    const float *dht;         /* [B,H,K,V] or NULL (zero) */
    const float *states;      /* optional: the states written by lina_dd_fwd (same dims and
                                 chunk size); the chunk backward then skips recomputing them
                                 (the recurrent backward does not read them) */
} lina_dd_grad_in;

/* Number of floats of lina_dd_out.states for these dims. */
size_t lina_dd_states_size(const lina_mix_dims *d);

/* Every gradient given is written (its old contents never read), in both forms. */
typedef struct lina_dd_grad_out {
    float *dq, *dk, *dv;      /* required */
    float *dg;                /* same shape as g; NULL to skip (HEAD: [H], accumulated over B,T) */
    float *dh0;               /* [B,H,K,V] or NULL */
} lina_dd_grad_out;

/* out->ht may be in->h0: the final state then replaces the initial one in
 * place (each (b, h) state is read before it is written), which is how
 * decode steps update a layer's state without a copy. */
int lina_dd_fwd(const lina_mix_dims *d, const lina_dd_in *in, lina_dd_out *out,
                lina_form form, lina_ws *ws);
int lina_dd_bwd(const lina_mix_dims *d, const lina_dd_in *in, const lina_dd_grad_in *gin,
                lina_dd_grad_out *gout, lina_form form, lina_ws *ws);

/* Packed documents (flash-linear-attention's cu_seqlens): d->B = 1, d->T the packed
 * length, cu[0..ncu-1] = [0, t_1, ..., T] (ncu - 1 documents, strictly increasing).
 * Each document runs as its own sequence: its state starts from its own h0 row and
 * ends in its own ht row (h0, ht, dh0, dht [ncu-1, H, K, V]); nothing crosses a
 * boundary. The chunk form's chunks start at each document's first row, and its
 * (document, head) pairs share one parallel loop; the recurrent form runs the
 * documents one after another. `states` (optional) are each document's
 * [H][nC_j+1][K,V] back to back, lina_dd_states_size_varlen floats. HEAD gates'
 * dg sums over the documents. */
int lina_dd_fwd_varlen(const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_dd_in *in,
                       lina_dd_out *out, lina_form form, lina_ws *ws);
int lina_dd_bwd_varlen(const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_dd_in *in,
                       const lina_dd_grad_in *gin, lina_dd_grad_out *gout, lina_form form, lina_ws *ws);
size_t lina_dd_states_size_varlen(const lina_mix_dims *d, const int64_t *cu, int64_t ncu);

/* RetNet decay of head h out of H: log(1 - 2^(-5-h)). Fills g_head[H]. */
void lina_retention_gates(int H, float *g_head);

/* The faster of a mixer's two forms for a call of these dims on this library's kernels, for
 * callers that do not need one in particular (the Python package's ops). Both forms are
 * exact (the same function to float32 round-off); backward: nonzero when the call's
 * backward will run too (the choice holds for both passes). Diagonal decay: the recurrent
 * form for a gate per key channel (gla) at K in 49..64 (forward alone: 49..128) and V in
 * 49..128, for the other gates (scalar, head, none) at K and V in 49..64, and where
 * lina_cpu_full512() is 0, with a backward, for every gate at K in 17..64 and V in 17..128
 * and for a gate per key channel at K in 17..128 and V in 17..256, and on the AVX2 and AVX-512
 * paths where lina_cpu_full512() is 0, with a backward, for every gate at K and V in 17..128;
 * else the chunk form. Delta rule (n sub-steps per token): where lina_cpu_full512() is 0, the recurrent
 * form at K and V <= 64 (forward alone: <= 128); otherwise the chunk form from T*n >= two
 * chunks on (d->chunk, or its default for K), except a forward alone at K <= 16, else the
 * recurrent one. Calls of T < 2 are recurrent. */
lina_form lina_dd_fast_form(const lina_mix_dims *d, lina_gate_kind gate, int backward);
lina_form lina_delta_fast_form(const lina_mix_dims *d, int n, int backward);

/* ------------------------------------------------------ delta-rule family */

/*
 * One engine for delta_rule, gated_delta_rule and delta_product. Each token t
 * has n Householder-like sub-steps (n >= 1); k, v and beta hold T*n rows,
 * row t*n + j being sub-step j of token t (FLA's [B,T,n,H,*] layout):
 *
 *   h <- exp(g_t) h                                   (once per token; only if g)
 *   for j = 0..n-1:  u = v_tj - h^T k_tj,  h <- h + beta_tj k_tj u^T
 *   o_t = scale * h^T q_t                             (after the last sub-step)
 *
 * delta_rule = (n = 1, no g); gated_delta_rule = (n = 1, g); delta_product =
 * (n >= 1, g optional); kda (Kimi Delta Attention) = (n = 1, gk: the decay
 * diag(exp(gk_t)) has one factor per key channel and enters the UT transform).
 * Callers pass L2-normalised k (beta in (0, 2) keeps the transition
 * non-expansive). d->T counts tokens.
 *
 *   q [B,T,H,K]; k [B,T*n,H,K]; v [B,T*n,H,V]; beta [B,T*n,H]; g [B,T,H];
 *   o [B,T,H,V]; h0, ht [B,H,K,V].
 *
 * Forms: RECURRENT (row by row, state tiled over value columns; the decode
 * path) and CHUNK (WY/UT transform over chunks of d->chunk interleaved rows,
 * then one pass over chunks carrying the state). The backward passes
 * recompute: the chunk form keeps only chunk-start states plus O(T*n*(V+C))
 * per-row values (or takes them from the forward's optional cache), the
 * recurrent one a checkpoint every 32 rows. The two forms agree to float32
 * round-off for beta in (0, 2) and log gates down to -20 per step.
 */
typedef struct lina_delta_in {
    const float *q;           /* [B,T,H,K] */
    const float *k;           /* [B,T*n,H,K] */
    const float *v;           /* [B,T*n,H,V] */
    const float *beta;        /* [B,T*n,H] */
    const float *g;           /* [B,T,H] log decay, or NULL (no decay) */
    const float *h0;          /* [B,H,K,V] or NULL (zero state) */
    int n;                    /* sub-steps per token; <= 0 means 1 */
    const float *gk;          /* [B,T,H,K] per-key-channel log decay (KDA), or NULL; not with
                                 g, and only with n = 1: h <- diag(exp(gk_t)) h */
} lina_delta_in;

typedef struct lina_delta_out {
    float *o;                 /* [B,T,H,V] (required) */
    float *ht;                /* [B,H,K,V] or NULL */
    float *cache;             /* CHUNK form, optional: lina_delta_cache_floats() floats that
                                 lina_delta_fwd fills for lina_delta_bwd (NULL: none) */
    int *finite;              /* optional: the output probe, as lina_dd_out.finite */
} lina_delta_out;

typedef struct lina_delta_grad_in {
    const float *do_;         /* [B,T,H,V] or NULL (zero) */
    const float *dht;         /* [B,H,K,V] or NULL (zero) */
    const float *cache;       /* CHUNK form, optional: the cache lina_delta_fwd filled for the
                                 same dims, chunk size and inputs; the backward then skips
                                 its recompute pass over the chunks. NULL: recompute. */
} lina_delta_grad_in;

/* Every gradient given is written (its old contents never read), in both forms. */
typedef struct lina_delta_grad_out {
    float *dq, *dk, *dv, *dbeta; /* shapes of q, k, v, beta (required) */
    float *dg;                /* [B,T,H]; NULL to skip (ignored when g is NULL) */
    float *dh0;               /* [B,H,K,V] or NULL */
    float *dgk;               /* [B,T,H,K]; NULL to skip (ignored when gk is NULL) */
} lina_delta_grad_out;

/* out->ht may be in->h0 (the state is updated in place), as for lina_dd_fwd. */
int lina_delta_fwd(const lina_mix_dims *d, const lina_delta_in *in, lina_delta_out *out,
                   lina_form form, lina_ws *ws);
/* Gradients of sum(o * do) + sum(ht * dht) w.r.t. every input. */
int lina_delta_bwd(const lina_mix_dims *d, const lina_delta_in *in,
                   const lina_delta_grad_in *gin, lina_delta_grad_out *gout, lina_form form,
                   lina_ws *ws);
/* Size in floats of the chunk-form cache (chunk-start states, the rows' WY
 * values U and the chunks' (I + A)^{-1}): B*H*((nc+1)*K*V + T*n*V + nc*C*C),
 * nc = ceil(T*n / C), C = d->chunk (when <= 0: 32 if K <= 64, else 64); 0 for bad dims. */
size_t lina_delta_cache_floats(const lina_mix_dims *d, int n);
/* Packed documents (cu_seqlens), as lina_dd_fwd_varlen: d->B = 1, d->T packed tokens
 * (rows n times those), cu [0, ..., T]; h0, ht, dh0, dht [ncu-1, H, K, V]; the cache
 * is each document's back to back (lina_delta_cache_floats_varlen floats). */
int lina_delta_fwd_varlen(const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_delta_in *in,
                          lina_delta_out *out, lina_form form, lina_ws *ws);
int lina_delta_bwd_varlen(const lina_mix_dims *d, const int64_t *cu, int64_t ncu, const lina_delta_in *in,
                          const lina_delta_grad_in *gin, lina_delta_grad_out *gout, lina_form form,
                          lina_ws *ws);
size_t lina_delta_cache_floats_varlen(const lina_mix_dims *d, int n, const int64_t *cu, int64_t ncu);

/* ------------------------------------ mLSTM, softmax attention and LION */

/*
 * mLSTM (xLSTM, stabilised; docs/ops.md section 3, docs/mixers.md section 5):
 *
 *   lf_t = logsigmoid(f_t),  m_t = max(lf_t + m_{t-1}, i_t)
 *   f'_t = exp(lf_t + m_{t-1} - m_t),  i'_t = exp(i_t - m_t),  k~_t = scale * k_t
 *   C_t = f'_t C_{t-1} + i'_t k~_t v_t^T,  n_t = f'_t n_{t-1} + i'_t k~_t
 *   o_t = (q_t^T C_t) / (max(|q_t . n_t|, exp(-m_t)) + 1e-6)
 *
 * q, k [B,T,H,K]; v, o [B,T,H,V]; i, f [B,T,H] (gate pre-activations);
 * h0, ht [B,H,K,V] (C); n0, nt [B,H,K]; m0, mt [B,H]. h0, n0, m0 are given
 * all three or none (none: C0 = 0, n0 = 0, m0 = 0). d->scale is the KEY
 * scale (0: K^-1/2); q is not scaled. Both forms compute the same stabiliser
 * sequence m_t. Gradients are exact autograd of the recurrence including
 * through the max; a tie lf_t + m_{t-1} == i_t takes the carry branch
 * (m_t = lf_t + m_{t-1}), a tie |q.n| == exp(-m_t) the |q.n| branch.
 */
typedef struct lina_mlstm_in {
    const float *q, *k, *v;   /* [B,T,H,K], [B,T,H,K], [B,T,H,V] */
    const float *i, *f;       /* [B,T,H] each */
    const float *h0, *n0, *m0; /* [B,H,K,V], [B,H,K], [B,H], or all NULL */
} lina_mlstm_in;

typedef struct lina_mlstm_out {
    float *o;                 /* [B,T,H,V] (required) */
    float *ht, *nt, *mt;      /* [B,H,K,V], [B,H,K], [B,H]; each may be NULL */
} lina_mlstm_out;

typedef struct lina_mlstm_grad_in {
    const float *do_;         /* [B,T,H,V] or NULL (zero) */
    const float *dht, *dnt, *dmt; /* cotangents of ht, nt, mt; each may be NULL (zero) */
} lina_mlstm_grad_in;

typedef struct lina_mlstm_grad_out {
    float *dq, *dk, *dv;      /* required */
    float *di, *df;           /* [B,T,H], required */
    float *dh0, *dn0, *dm0;   /* used only with initial states; each may be NULL */
} lina_mlstm_grad_out;

int lina_mlstm_fwd(const lina_mix_dims *d, const lina_mlstm_in *in, lina_mlstm_out *out,
                   lina_form form, lina_ws *ws);
int lina_mlstm_bwd(const lina_mix_dims *d, const lina_mlstm_in *in,
                   const lina_mlstm_grad_in *gin, lina_mlstm_grad_out *gout, lina_form form,
                   lina_ws *ws);

/*
 * Softmax attention, tiled with an online (running-max) softmax; memory
 * O(T*(K+V)), never O(T^2):
 *
 *   o_i = sum_j softmax_j(scale q_i.k_j) v_j
 *
 * over j <= i (causal), i - window < j <= i (causal with window > 0) or all j
 * (non_causal; window must be 0). q, k [B,T,H,K]; v, o [B,T,H,V];
 * stat [B,T,H,2] the per-row softmax statistics the backward needs: the
 * largest scaled logit m and log of sum_j exp(logit_j - m) (their sum is the
 * log-sum-exp; kept apart so that large logits lose nothing to rounding).
 * d->scale 0 means K^-1/2; d->chunk is ignored.
 */
typedef struct lina_softmax_in {
    const float *q, *k, *v;   /* [B,T,H,K], [B,T,H,K], [B,T,H,V] */
    int window;               /* 0 = no window; >= 1 keys i-window < j <= i */
    int non_causal;           /* attend to every key */
    const float *g;           /* [B,T,H] log forget gates (Forgetting Transformer, causal only) or
                                 NULL: logit_ij += c_i - c_j, c_t = sum_{u <= t} g_u */
    int q_from;               /* 0, or the first query row computed (0 <= q_from <= T): rows
                                 before it of q, o, stat, do and dq are neither read nor written,
                                 dk and dv are written for every key (zero where no computed row
                                 sees it) -- a sequence piece's queries over the keys of the
                                 pieces before it and its own */
} lina_softmax_in;

typedef struct lina_softmax_out {
    float *o;                 /* [B,T,H,V] (required) */
    float *stat;              /* [B,T,H,2] or NULL */
} lina_softmax_out;

typedef struct lina_softmax_grad_in {
    const float *do_;         /* [B,T,H,V] (required) */
    const float *stat;        /* the forward's stat; NULL: recomputed */
} lina_softmax_grad_in;

typedef struct lina_softmax_grad_out {
    float *dq, *dk, *dv;      /* required */
    float *dg;                /* [B,T,H], required with a forget gate */
} lina_softmax_grad_out;

int lina_softmax_attn_fwd(const lina_mix_dims *d, const lina_softmax_in *in,
                          lina_softmax_out *out, lina_ws *ws);
int lina_softmax_attn_bwd(const lina_mix_dims *d, const lina_softmax_in *in,
                          const lina_softmax_grad_in *gin, lina_softmax_grad_out *gout,
                          lina_ws *ws);

/*
 * LION-S bidirectional linear attention (docs/ops.md section 3): lambda_t = exp(g_t),
 *   M_ij = prod_{k=j}^{i-1} lambda_k (i > j),  1 (i = j),  prod_{k=i+1}^{j} lambda_k (i < j)
 *   unnormalised: o_i = scale sum_j M_ij (q_i.k_j) v_j
 *   normalize:    o_i = sum_j M_ij (q_i.k_j) v_j / sum_j M_ij (q_i.k_j)   (no eps)
 * computed in O(T) as two causal scans of the diagonal-decay engine (forward,
 * and on the time-reversed sequence) minus the doubly counted diagonal.
 * q, k [B,T,H,K]; v, o [B,T,H,V]; g [B,T,H] log decays (<= 0). `form`
 * selects the engine form of the two scans. d->scale 0 means K^-1/2.
 */
typedef struct lina_lion_in {
    const float *q, *k, *v;   /* [B,T,H,K], [B,T,H,K], [B,T,H,V] */
    const float *g;           /* [B,T,H] */
    int normalize;
} lina_lion_in;

typedef struct lina_lion_out {
    float *o;                 /* [B,T,H,V] */
} lina_lion_out;

typedef struct lina_lion_grad_in {
    const float *do_;         /* [B,T,H,V] (required) */
} lina_lion_grad_in;

typedef struct lina_lion_grad_out {
    float *dq, *dk, *dv;      /* required */
    float *dg;                /* [B,T,H] or NULL */
} lina_lion_grad_out;

int lina_lion_fwd(const lina_mix_dims *d, const lina_lion_in *in, lina_lion_out *out,
                  lina_form form, lina_ws *ws);
int lina_lion_bwd(const lina_mix_dims *d, const lina_lion_in *in, const lina_lion_grad_in *gin,
                  lina_lion_grad_out *gout, lina_form form, lina_ws *ws);

/*
 * Mamba (Mamba-1) selective scan (docs/ops.md, docs/mixers.md section 12). Per
 * channel c of E, with a state h [E,N]:
 *
 *   dt_t[c] = delta_t[c] + delta_bias[c]    (softplus of it with delta_softplus)
 *   h_t[c,:] = exp(dt_t[c] A[c,:]) * h_{t-1}[c,:] + dt_t[c] u_t[c] B_t
 *   y_t[c]   = C_t . h_t[c,:] + D[c] u_t[c];   o_t = y_t * silu(z_t)  (without z: y_t)
 *
 * Dimensions: d->B batch, d->T time, d->H = E channels, d->K = N state size
 * (d->V and d->scale are ignored). u, delta, z, o [B,T,E]; A [E,N] (<= 0);
 * B, C [B,T,N] (one pair shared by all channels); D, delta_bias [E];
 * h0, ht [B,E,N]. Without delta_softplus dt must be >= 0.
 * Forms: RECURRENT is the sequential scan over channel blocks, the fast
 * form on a CPU; CHUNK runs each channel as a GLA head (K = N, V = 1, q = C,
 * k = B, v = dt u, g = dt A) through the diagonal-decay engine, which costs
 * O(chunk) times the scan's work and B*T*E*N floats per operand: a cross-check
 * of the scan, not a faster path.
 */
typedef struct lina_mamba_in {
    const float *u, *delta;   /* [B,T,E] */
    const float *A;           /* [E,N] */
    const float *Bm, *Cm;     /* [B,T,N] */
    const float *D;           /* [E] or NULL (0) */
    const float *z;           /* [B,T,E] or NULL (no gate) */
    const float *delta_bias;  /* [E] or NULL (0) */
    const float *h0;          /* [B,E,N] or NULL (zero state) */
    int delta_softplus;
} lina_mamba_in;

typedef struct lina_mamba_out {
    float *o;                 /* [B,T,E] (required) */
    float *ht;                /* [B,E,N] or NULL; may be in->h0 (updated in place) */
} lina_mamba_out;

typedef struct lina_mamba_grad_in {
    const float *do_;         /* [B,T,E] (required) */
    const float *dht;         /* [B,E,N] or NULL (zero) */
} lina_mamba_grad_in;

/* Gradients are written (not accumulated); dA, dD, ddelta_bias are summed
 * over batch and time. The optional ones are skipped when NULL (dD, dz,
 * ddelta_bias, dh0 only exist with their input). */
typedef struct lina_mamba_grad_out {
    float *du, *ddelta;       /* [B,T,E] (required) */
    float *dA;                /* [E,N] (required) */
    float *dB, *dC;           /* [B,T,N] (required) */
    float *dD, *dz, *ddelta_bias, *dh0;
} lina_mamba_grad_out;

int lina_mamba_fwd(const lina_mix_dims *d, const lina_mamba_in *in, lina_mamba_out *out,
                   lina_form form, lina_ws *ws);
/* Gradients of sum(o * do) + sum(ht * dht) w.r.t. every input. */
int lina_mamba_bwd(const lina_mix_dims *d, const lina_mamba_in *in,
                   const lina_mamba_grad_in *gin, lina_mamba_grad_out *gout, lina_form form,
                   lina_ws *ws);

/*
 * HGRN (HGRN-1): an element-wise gated linear recurrence (docs/ops.md,
 * docs/mixers.md section 15), per channel c of D:
 *
 *   h_t[c] = exp(g_t[c]) h_{t-1}[c] + x_t[c],   o_t = h_t
 *
 * x, g, o [B,T,D] (g: log decays <= 0); h0, ht [B,D]. Forms: RECURRENT runs
 * the recurrence over channel blocks; CHUNK is the blocked scan (each chunk
 * of d->chunk steps from a zero state in parallel, the chunk states passed
 * along in order, then exp(cumulative gate) times the incoming state added to
 * every row). Dimensions: d->B, d->T, d->H = D (d->K, d->V, d->scale are
 * ignored).
 */
typedef struct lina_hgrn_in {
    const float *x, *g;       /* [B,T,D] */
    const float *h0;          /* [B,D] or NULL (zero state) */
} lina_hgrn_in;

typedef struct lina_hgrn_out {
    float *o;                 /* [B,T,D] (required) */
    float *ht;                /* [B,D] or NULL; may be in->h0 (updated in place) */
} lina_hgrn_out;

typedef struct lina_hgrn_grad_in {
    const float *do_;         /* [B,T,D] (required) */
    const float *dht;         /* [B,D] or NULL (zero) */
} lina_hgrn_grad_in;

/* Gradients are written (not accumulated); dh0 only with h0 (may be NULL). */
typedef struct lina_hgrn_grad_out {
    float *dx, *dg;           /* [B,T,D] (required) */
    float *dh0;               /* [B,D] or NULL */
} lina_hgrn_grad_out;

int lina_hgrn_fwd(const lina_mix_dims *d, const lina_hgrn_in *in, lina_hgrn_out *out, lina_form form,
                  lina_ws *ws);
/* Gradients of sum(o * do) + sum(ht * dht) w.r.t. x, g and h0. */
int lina_hgrn_bwd(const lina_mix_dims *d, const lina_hgrn_in *in, const lina_hgrn_grad_in *gin,
                  lina_hgrn_grad_out *gout, lina_form form, lina_ws *ws);

/*
 * RWKV-7's generalized delta rule, a diagonal-plus-low-rank transition
 * (docs/ops.md, docs/mixers.md section 13), per head with a K x V state:
 *
 *   S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T
 *   o_t = scale S_t^T r_t
 *
 * r, w, k, a, b [B,T,H,K] (w: log decays <= 0); v, o [B,T,H,V]; h0, ht
 * [B,H,K,V]. d->scale 0 means 1 (RWKV-7's scale). The RWKV-7 layer passes
 * a = -kk, b = kk * iclr. Both forms run the same recurrence (one task per
 * (b, h), state in place); the backward keeps the state every d->chunk
 * steps and recomputes each segment.
 */
typedef struct lina_rwkv7_in {
    const float *r, *w, *k, *v, *a, *b;
    const float *h0;          /* [B,H,K,V] or NULL (zero state) */
} lina_rwkv7_in;

typedef struct lina_rwkv7_out {
    float *o;                 /* [B,T,H,V] (required) */
    float *ht;                /* [B,H,K,V] or NULL */
} lina_rwkv7_out;

typedef struct lina_rwkv7_grad_in {
    const float *do_;         /* [B,T,H,V] (required) */
    const float *dht;         /* [B,H,K,V] or NULL (zero) */
} lina_rwkv7_grad_in;

typedef struct lina_rwkv7_grad_out {
    float *dr, *dw, *dk, *dv, *da, *db; /* required */
    float *dh0;               /* [B,H,K,V] or NULL */
} lina_rwkv7_grad_out;

int lina_rwkv7_fwd(const lina_mix_dims *d, const lina_rwkv7_in *in, lina_rwkv7_out *out, lina_form form,
                   lina_ws *ws);
/* Gradients of sum(o * do) + sum(ht * dht) w.r.t. every input. */
int lina_rwkv7_bwd(const lina_mix_dims *d, const lina_rwkv7_in *in, const lina_rwkv7_grad_in *gin,
                   lina_rwkv7_grad_out *gout, lina_form form, lina_ws *ws);

/*
 * Gated Slot Attention (docs/ops.md, docs/mixers.md section 16): M memory slots
 * per head, two states, a softmax over the slots between them:
 *
 *   Hk_t = Hk_{t-1} diag(exp(g_t)) + k_t s_t^T,   p_t = softmax(Hk_t^T (scale q_t))
 *   Hv_t = diag(exp(g_t)) Hv_{t-1} + s_t v_t^T,   o_t = Hv_t^T p_t
 *
 * q, k [B,T,H,K]; v, o [B,T,H,V]; s, g [B,T,H,M] (g: log decays <= 0); hk0,
 * hkt [B,H,K,M]; hv0, hvt [B,H,M,V]. d->scale 0 means K^-1/2 (the layer passes
 * 1). RECURRENT: the recurrence per (b, h); CHUNK: two passes of the
 * diagonal-decay engine (the first with one head per slot) and the softmax.
 */
typedef struct lina_gsa_in {
    const float *q, *k, *v, *s, *g;
    const float *hk0, *hv0;   /* or NULL (zero states) */
} lina_gsa_in;

typedef struct lina_gsa_out {
    float *o;                 /* required */
    float *hkt, *hvt;         /* or NULL */
} lina_gsa_out;

typedef struct lina_gsa_grad_in {
    const float *do_;         /* required */
    const float *dhkt, *dhvt; /* or NULL (zero) */
} lina_gsa_grad_in;

typedef struct lina_gsa_grad_out {
    float *dq, *dk, *dv, *ds, *dg; /* required, written */
    float *dhk0, *dhv0;            /* or NULL */
} lina_gsa_grad_out;

int lina_gsa_fwd(const lina_mix_dims *d, int M, const lina_gsa_in *in, lina_gsa_out *out, lina_form form,
                 lina_ws *ws);
/* Gradients of sum(o * do) + sum(hkt * dhkt) + sum(hvt * dhvt) w.r.t. every input. */
int lina_gsa_bwd(const lina_mix_dims *d, int M, const lina_gsa_in *in, const lina_gsa_grad_in *gin,
                 lina_gsa_grad_out *gout, lina_form form, lina_ws *ws);

/* ------------------------------------------------------------------ models */

/*
 * A causal language model built from a lina_config (flash-linear-attention's
 * LMs, docs/mixers.md section 2, docs/checkpoints.md): embedding, L pre-norm
 * blocks h = x + Mixer(RMSNorm(x)), y = h + GatedMLP(RMSNorm(h)), a final
 * RMSNorm and lm_head (tied to the embedding when tie_word_embeddings).
 * Parameters live in ONE contiguous float buffer with named views whose names
 * and shapes are FLA's state-dict names ("model.embeddings.weight",
 * "model.layers.0.attn.q_proj.weight", ..., "model.norm.weight",
 * "lm_head.weight"); the gradient buffer has the same layout. Initialisation
 * as FLA: Linear and embedding weights N(0, initializer_range), norm weights
 * 1, biases 0 (plus each mixer's own parameter init).
 *
 * Model types: gla, retnet, hgrn2, linear_attn, delta_net, gated_deltanet,
 * gated_deltaproduct, mlstm, mamba2 and mamba (FLA's "backbone." names, no MLP), mom,
 * transformer, forgetting_transformer, hgrn, gsa; hybrids of the linear ones with softmax-attention layers
 * (config key "attn"); a top-k MoE MLP for any type (num_experts > 0), whose
 * auxiliary loss (and MoM's) is added to the train_step loss, not to
 * eval_loss. A few options (HGRN2 short convs, GLA and RetNet feature maps)
 * fail in lina_model_create with LINA_EINVAL and a message.
 * A model is not thread safe: one call at a time (each call is parallel
 * inside).
 */
/* Targets equal to this are skipped by the loss (PyTorch's default). */
#define LINA_IGNORE_INDEX (-100)

typedef struct lina_model lina_model;

/* Validates cfg (lina_config_validate) and allocates parameters and
 * gradients (gradients zeroed), initialised from `seed`. */
int lina_model_create(const lina_config *cfg, uint64_t seed, lina_model **out);
void lina_model_free(lina_model *m);
const lina_config *lina_model_config(const lina_model *m);
/* Number of floats in the parameter buffer (a tied lm_head is not counted twice). */
size_t lina_model_num_params(const lina_model *m);
float *lina_model_params(lina_model *m);   /* one contiguous buffer */
float *lina_model_grads(lina_model *m);    /* same layout */
void lina_model_zero_grad(lina_model *m);
int lina_model_num_tensors(const lina_model *m);
/* i-th view: FLA name, rank, shape, offset (floats) into the buffer, decay = 1
 * unless norm weight, bias or embedding, or Gated DeltaNet's A_log / dt_bias
 * or HGRN2's model.lower_bounds (AdamW applies no weight decay to those).
 * Any output pointer may be NULL. Views are in parameter-buffer order and tile
 * it without gaps. */
int lina_model_tensor(const lina_model *m, int i, const char **name, int *ndim,
                      const int64_t **shape, size_t *offset, int *decay);
/* Forward + backward on tokens [B,T] int32, targets [B,T] int32 (-100 =
 * ignore): *loss = mean cross-entropy over the counted targets; gradients are
 * ACCUMULATED into the grads buffer. ws may be NULL. */
int lina_model_train_step(lina_model *m, const int32_t *tokens, const int32_t *targets,
                          int B, int T, double *loss, lina_ws *ws);
/* Forward only: *loss = mean cross-entropy. */
int lina_model_eval_loss(lina_model *m, const int32_t *tokens, const int32_t *targets,
                         int B, int T, double *loss, lina_ws *ws);
/* Packed documents: lina_model_train_step / lina_model_eval_loss with the B*T tokens
 * read as documents back to back, starting at the offsets cu[0..ncu-1] = [0, ...,
 * B*T] (strictly increasing; every row start b*T is a boundary as well, given or
 * not). Each document is computed as if alone: no recurrent state, short
 * convolution or attention crosses a boundary, and positions restart at 0. The
 * target of a document's last position (the next document's first token) is the
 * caller's to set to LINA_IGNORE_INDEX (lina_tok_docs does). The
 * feed-forward blocks are per token; the auxiliary loss of MoE / MoM layers, a
 * statistic of a whole call, is taken per document and summed over the documents
 * (as the sum of the documents' train_step losses would hold it). */
int lina_model_train_step_varlen(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                                 const int64_t *cu, int64_t ncu, double *loss, lina_ws *ws);
int lina_model_eval_loss_varlen(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                                const int64_t *cu, int64_t ncu, double *loss, lina_ws *ws);
/* logits [B,T,vocab] of a forward pass (prefill, chunk form). */
int lina_model_forward_logits(lina_model *m, const int32_t *tokens, int B, int T, float *logits,
                              lina_ws *ws);
/* config.json + model.safetensors in directory `dir` (created if missing),
 * each written atomically. */
int lina_model_save(const lina_model *m, const char *dir);
/* Read dir/config.json and dir/model.safetensors (F32 or BF16); every
 * tensor of the model must be present with its shape. */
int lina_model_load(const char *dir, lina_model **out);

/*
 * Incremental inference (prefill, then decode). A lina_model_state holds, per
 * layer, what the next token needs: the recurrent state [B,H,K,V] (and the
 * short-conv tails) of a linear-attention layer -- constant in the context
 * length -- and a key/value cache of `max_len` positions for softmax-attention
 * layers. lina_model_decode feeds tokens [B,T] at the state's current position
 * (T > 1: chunk form, T == 1: recurrent form) and writes logits [B,T,vocab];
 * a prefill followed by single-token calls gives the logits of one forward
 * pass over the whole sequence (to float round-off).
 */
typedef struct lina_model_state lina_model_state;
/* max_len: capacity of the attention KV caches (ignored without attention layers). */
int lina_model_state_create(const lina_model *m, int B, int max_len, lina_model_state **out);
void lina_model_state_free(lina_model_state *s);
/* Back to position 0 with empty states. */
void lina_model_state_reset(lina_model_state *s);
/* Tokens consumed so far. */
int64_t lina_model_state_pos(const lina_model_state *s);
/* Floats of layer `layer`'s part of the state (0 when out of range); with attention
 * layers it grows with max_len (lina info reports both parts). */
size_t lina_model_state_layer_floats(const lina_model_state *s, int layer);
int lina_model_decode(lina_model *m, lina_model_state *s, const int32_t *tokens, int B, int T, float *logits,
                      lina_ws *ws);
/* Batched inference over rows of unequal length, each row with its own state
 * (states[b]: a B = 1 state, its own position): tokens [B,T] left-padded, row b's
 * real tokens are its last len[b] (0..T); the padding before them changes nothing
 * (the row's recurrent state, convolution tail, KV cache and position stay exactly
 * as they were) and gets zero logits. Row b's logits [T - len[b] .. T) equal those
 * of lina_model_decode on its state alone; the per-token parts (embedding, norms,
 * feed-forward blocks, head) run over all rows of a length at once, each mixer per
 * row on the row's state. len[b] = 0 skips a row (e.g. one that has ended). */
int lina_model_decode_rows(lina_model *m, lina_model_state *const *states, const int32_t *tokens, const int *len,
                           int B, int T, float *logits, lina_ws *ws);

/*
 * Sampling and generation. A sampler draws a token from logits[vocab]:
 * temperature 0 is greedy (the arg max, lowest id on ties); otherwise the
 * logits are divided by the temperature, cut to the top_k largest (0: all),
 * then to the shortest most-likely prefix whose probability reaches top_p
 * (1: all), and a token is drawn from what is left with a splitmix64 stream
 * started at `seed` (the same seed gives the same tokens).
 */
typedef struct lina_sampler lina_sampler;
int lina_sampler_create(int vocab, float temperature, int top_k, float top_p, uint64_t seed, lina_sampler **out);
void lina_sampler_free(lina_sampler *s);
int32_t lina_sampler_sample(lina_sampler *s, const float *logits);

/* Called with each generated token; a non-zero return stops generation. */
typedef int (*lina_token_cb)(int32_t token, void *user);
/* Prompt tokens per lina_model_decode call while lina_generate prefills. */
#define LINA_PREFILL_CHUNK 256
/* Feed prompt[n_prompt] (n_prompt >= 1) at the state's position (chunk form,
 * in pieces of at most LINA_PREFILL_CHUNK tokens, so memory does not grow with
 * the prompt), then draw up to max_new tokens one at a time (recurrent form).
 * Stops early at stop_token (not emitted; -1: none) or when on_token (may be
 * NULL) returns non-zero. The generated tokens go to out (NULL, or room for
 * max_new), their count to *n_out. The state must be for B = 1 and, with
 * softmax-attention layers, have room for its position + n_prompt + max_new. */
int lina_generate(lina_model *m, lina_model_state *s, const int32_t *prompt, int n_prompt, int max_new,
                  int stop_token, lina_sampler *smp, lina_token_cb on_token, void *user, int32_t *out, int *n_out);

/* ---------------------------------------------------------------- training */

/*
 * AdamW over one flat parameter buffer (torch.optim.AdamW semantics: weight
 * decay decoupled, applied as p *= 1 - lr*wd before the Adam update, bias
 * correction on both moments):
 *
 *   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *
 * t = step after the increment. Decay is per element (set per tensor with
 * lina_adamw_set_decay; default on). Defaults (torchtitan / flame): betas
 * 0.9 / 0.95, eps 1e-8, weight_decay 0.1.
 */
typedef struct lina_adamw {
    size_t n;
    float *m, *v;              /* [n] moments (owned, zeroed at init) */
    uint8_t *decay;            /* [n] 1 = weight decay applies (owned) */
    int64_t step;              /* updates done so far */
    double beta1, beta2, eps, weight_decay;
} lina_adamw;

int lina_adamw_init(lina_adamw *o, size_t n);
void lina_adamw_free(lina_adamw *o);
int lina_adamw_set_decay(lina_adamw *o, size_t offset, size_t count, int decay);
/* One update of params[n] with grads[n] * grad_scale at learning rate lr.
 * Elementwise (OpenMP), so the result does not depend on the thread count. */
int lina_adamw_step(lina_adamw *o, float *params, const float *grads, double lr,
                    double grad_scale);
/* sqrt(sum g^2) accumulated in double in fixed blocks: deterministic for any
 * thread count. NaN/Inf in g gives a non-finite result. */
double lina_grad_norm(const float *g, size_t n);
/* Global-norm clipping factor: min(1, max_norm / (norm + 1e-6)); 1 when
 * max_norm <= 0. */
double lina_clip_factor(double norm, double max_norm);

/* Learning rate of update `step` (0-based) of `total`: linear warmup
 * lr * (step+1) / warmup for step < warmup, then cosine from lr down to
 * lr * min_lr_ratio at step total-1 (held there after). */
typedef struct lina_lr_sched {
    double lr;
    double min_lr_ratio;       /* default 0.1 */
    int64_t warmup;
    int64_t total;
} lina_lr_sched;
double lina_lr_at(const lina_lr_sched *s, int64_t step);

/*
 * Token files (src/train/README.md): a 32-byte little-endian header
 *   0  char[8] magic "LINATOK1"     8  u32 version (1)    12 u32 width (2 or 4)
 *   16 u32 vocab_size (>= 1)        20 u32 reserved (0)   24 u64 count
 * then count tokens of `width` bytes, little-endian, each < vocab_size; the
 * file size must be exactly 32 + count * width. Opening validates all of it
 * (bad magic, version, width, size, an out-of-vocabulary token) and fails with
 * LINA_EFORMAT and a message naming the file and the problem.
 */
typedef struct lina_tokfile lina_tokfile;
int lina_tok_open(const char *path, lina_tokfile **out);
void lina_tok_close(lina_tokfile *f);
uint64_t lina_tok_count(const lina_tokfile *f);
uint32_t lina_tok_vocab(const lina_tokfile *f);
int lina_tok_width(const lina_tokfile *f);
/* Copy tokens [start, start+n) as int32. */
int lina_tok_read(const lina_tokfile *f, uint64_t start, size_t n, int32_t *dst);
/* Write a token file atomically; width 0 picks 2 when vocab <= 65536, else 4.
 * Every token must be < vocab (vocab <= 2^31). */
int lina_tok_write(const char *path, const uint32_t *tokens, uint64_t n, uint32_t vocab,
                   int width);

/* B random windows of T+1 consecutive tokens (starts drawn with splitmix64
 * from *rng, which advances by B draws): tokens[b,t] = w[t],
 * targets[b,t] = w[t+1]. Needs count >= T+1. */
int lina_tok_sample(const lina_tokfile *f, uint64_t *rng, int B, int T, int32_t *tokens,
                    int32_t *targets);
/* Documents of a batch from a token file that separates them with the token
 * `sep` (a document ends with it; `make data` puts <|endoftext|> after every
 * KJV chapter): writes cu[0..*ncu-1], the offsets over the B*T tokens of every
 * row start and of the position after each separator, ending at B*T (cu needs
 * room for B*T + 1 values), and sets the target of each separator position
 * (the next document's first token) to LINA_IGNORE_INDEX. */
void lina_tok_docs(const int32_t *tokens, int32_t *targets, int B, int T, int32_t sep, int64_t *cu,
                   int64_t *ncu);
/* Deterministic evaluation batch `i`: window b starts at ((i*B + b) * T) mod
 * (count - T). */
int lina_tok_eval_batch(const lina_tokfile *f, int64_t i, int B, int T, int32_t *tokens,
                        int32_t *targets);

/*
 * What the trainer needs from a model: a table of callbacks, so that the loop,
 * the optimizer and the checkpoints work with lina_model (lina_trainable_from_model)
 * or any other model. Tensor views name slices of the one parameter buffer.
 */
struct lina_sp; /* sequence parallelism: internal (src/nn/kind.h) */
typedef struct lina_trainable {
    void *self;
    size_t (*num_params)(const void *self);
    float *(*params)(void *self);
    float *(*grads)(void *self);
    void (*zero_grad)(void *self);
    int (*num_tensors)(const void *self);
    int (*tensor)(const void *self, int i, const char **name, int *ndim, const int64_t **shape,
                  size_t *offset, int *decay);
    /* gradients accumulate; loss is the batch mean */
    int (*train_step)(void *self, const int32_t *tokens, const int32_t *targets, int B, int T,
                      double *loss, lina_ws *ws);
    int (*eval_loss)(void *self, const int32_t *tokens, const int32_t *targets, int B, int T,
                     double *loss, lina_ws *ws);
    /* write config.json + model.safetensors into dir (an existing directory) */
    int (*save)(const void *self, const char *dir);
    int vocab_size;
    /* packed documents (optional; lina_train_opts.pack needs them): as train_step /
     * eval_loss with the documents starting at cu[0..ncu-1] (lina_model_*_varlen) */
    int (*train_step_varlen)(void *self, const int32_t *tokens, const int32_t *targets, int B, int T,
                             const int64_t *cu, int64_t ncu, double *loss, lina_ws *ws);
    int (*eval_loss_varlen)(void *self, const int32_t *tokens, const int32_t *targets, int B, int T,
                            const int64_t *cu, int64_t ncu, double *loss, lina_ws *ws);
    /* optional: sequence parallelism for the following train steps (the
     * distributed trainer's; NULL turns it off); NULL: not supported */
    int (*set_sp)(void *self, const struct lina_sp *sp);
    /* optional: during the following train steps' backward, fn(ctx, from) is called as soon as
     * the gradients from offset `from` to the end are final (the distributed trainer starts
     * their all-reduce then); fn NULL turns it off */
    void (*set_grad_hook)(void *self, void (*fn)(void *ctx, size_t from), void *ctx);
} lina_trainable;

/* Fill *out with callbacks onto the model m (which must outlive it). */
int lina_trainable_from_model(lina_model *m, lina_trainable *out);

/* model.safetensors of every tensor view (F32) / load them back into the
 * parameter buffer (every view must be present with its shape). */
int lina_ckpt_save_params(const lina_trainable *m, const char *path);
int lina_ckpt_load_params(const lina_trainable *m, const char *path);
/* optimizer.safetensors: "exp_avg.<name>" and "exp_avg_sq.<name>" for every
 * view, metadata step, beta1, beta2, eps, weight_decay. */
int lina_ckpt_save_optim(const lina_trainable *m, const lina_adamw *o, const char *path);
int lina_ckpt_load_optim(const lina_trainable *m, lina_adamw *o, const char *path);

typedef struct lina_train_opts {
    const char *data_path;     /* token file (required) */
    const char *val_path;      /* validation token file or NULL */
    const char *out_dir;       /* created if missing (required) */
    int64_t steps;             /* total optimizer updates (default 100) */
    int batch, seq_len, accum; /* per micro-batch B, T; micro-batches per update (8, 256, 1) */
    double lr, min_lr_ratio;   /* 3e-4, 0.1 */
    int64_t warmup;            /* -1 (default): min(100, steps / 10) */
    double beta1, beta2, eps, weight_decay, clip; /* 0.9, 0.95, 1e-8, 0.1, 1.0 (<= 0: off) */
    uint64_t seed;             /* data sampling seed (default 0) */
    int eval_every;            /* 0: only at the end (when val_path) */
    int eval_batches;          /* 0 (default): the whole validation split (consecutive windows
                                  of seq_len tokens, as `lina eval`); N: its first N batches */
    int save_every;            /* checkpoint every N updates (default 200; 0: off) */
    double save_minutes;       /* and when this many minutes passed since the last one
                                  (default 10; 0: off); always at the end */
    int resume;                /* continue from out_dir/checkpoint */
    int64_t stop_after;        /* > 0: stop (with a checkpoint) after this many updates in
                                  this run, as if killed; for tests */
    volatile sig_atomic_t *stop; /* optional: when it becomes non-zero (e.g. set by a SIGINT
                                  handler), the current update finishes, a checkpoint is written
                                  and lina_train returns LINA_EINTR */
    int progress;              /* 1: progress on stderr (\r only on a tty); 0: quiet */
    double *losses;            /* optional [steps]: training loss of every update */
    double *val_losses;        /* optional [steps]: val loss after update i or NaN */
    double *last;              /* optional [2]: the last update's training loss and the last
                                  validation loss of this run (NaN when none) */
    const char *tokenizer_path; /* optional: copied into every checkpoint as tokenizer.json,
                                   so that the checkpoint directory is self-contained */
    int pack;                  /* 1: packed documents (lina train --pack): every window is split
                                  after each token doc_sep (lina_tok_docs), trained and validated
                                  with no state crossing a boundary; 0 (default): off */
    int doc_sep;               /* the token that ends a document (with pack) */
    struct lina_dist *dist;    /* optional: this process's place in an MPI job (data / sequence
                                  parallel; built by the lina CLI); NULL: one process */
} lina_train_opts;

void lina_train_opts_default(lina_train_opts *o);
/* Train m (whose parameters are the starting point unless resuming). Writes
 * out_dir/log.jsonl (one JSON object per update: step, loss, lr, grad_norm,
 * tokens_per_s, and val_loss when evaluated) and out_dir/checkpoint/
 * (config.json, model.safetensors, optimizer.safetensors, trainer.json),
 * replaced atomically as a whole; trainer.json also records the options of the
 * run (schedule, optimizer, data paths) so that a resume can take them. A
 * NaN/Inf loss or gradient stops training with LINA_ENONFINITE; the last
 * checkpoint is kept. Resuming with options that differ from the checkpoint's
 * prints a note naming each one that makes the result differ from an
 * uninterrupted run. Memory does not depend on `steps`. */
int lina_train(lina_trainable *m, const lina_train_opts *o);

/* ------------------------------------------------------------ op registry */

/* A named set of tensors: the exchange form used by `lina op` and `lina bench`. */
#define LINA_TSET_MAX 32
typedef struct lina_tset {
    int n;
    char names[LINA_TSET_MAX][16];
    lina_tensor t[LINA_TSET_MAX];
} lina_tset;

lina_tensor *lina_tset_find(lina_tset *s, const char *name);
const lina_tensor *lina_tset_cfind(const lina_tset *s, const char *name);
/* Add a tensor (takes ownership of t->data). */
int lina_tset_add(lina_tset *s, const char *name, lina_tensor *t);
/* Output slot: reuse `name` if present with the same shape, else (re)allocate
 * it zero-filled. Returns its data or NULL with an error set. */
float *lina_tset_out(lina_tset *s, const char *name, int ndim, const int64_t *shape);
void lina_tset_free(lina_tset *s);

typedef struct lina_op_opts {
    lina_form form;
    int backward;     /* also compute d<X> for every input X */
    int normalize;    /* linear_attn, lion */
    int qk_l2norm;    /* delta family */
    int window;       /* softmax_attn; 0 = none */
    int non_causal;   /* softmax_attn */
    int chunk;        /* <= 0: 64 */
    int trusted;      /* skip the finiteness scan of inputs (benchmarks) */
    int delta_softplus; /* mamba: dt = softplus(delta + delta_bias) */
} lina_op_opts;

typedef struct lina_op_info {
    const char *name;
    const char *summary;
    /* option flags this op accepts, e.g. "--normalize" (NULL-terminated) */
    const char *flags[4];
    /* Run forward (and backward when o->backward) on named inputs; writes the
     * named outputs into *out (lina_tset_out). Validates names, shapes and
     * finiteness of the inputs it uses. Entries of *out whose names start
     * with '_' are scratch (kept for reuse across calls), not outputs. */
    int (*run)(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws);
    /* Fill *in with random inputs in the op's domain for the given dims
     * (for benchmarks); with `backward` also the cotangents. */
    int (*make_inputs)(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in);
    /* FLOPs of one forward call by the README's counting rule. */
    double (*flops)(const lina_mix_dims *d, const lina_op_opts *o);
} lina_op_info;

/* Run an op: validates, then info->run (honours opts->trusted). */
int lina_op_run(const lina_op_info *info, const lina_tset *in, lina_tset *out,
                const lina_op_opts *opts, lina_ws *ws);

/* Packed variable-length sequences (cu_seqlens): q and every per-token input are
 * [1, T, ...] (delta_product's k, v, beta [1, n*T, ...]) holding N = ncu - 1
 * documents back to back, cu[0..ncu-1] = [0, t_1, ..., T] their strictly increasing
 * offsets; initial states and their cotangents (h0, n0, m0, z0, dht, ...) are one row
 * per document ([N, H, K, V], ...). Each document runs as its own sequence with its
 * own initial state, so no state, window or attention crosses a boundary; per-token
 * outputs and gradients come back packed, final states (ht, ...) and dh0, ... one row
 * per document. Same outputs as lina_op_run otherwise. */
int lina_op_run_varlen(const lina_op_info *info, const lina_tset *in, lina_tset *out,
                       const lina_op_opts *opts, const int64_t *cu, int64_t ncu, lina_ws *ws);
/* LINA_OK when cu[0..n-1] starts at 0, strictly increases and ends at T; else
 * LINA_EINVAL with a message naming the first problem. */
int lina_cu_seqlens_check(const int64_t *cu, int64_t n, int64_t T);

/* NULL-terminated list of every op. */
const lina_op_info *const *lina_ops(void);
const lina_op_info *lina_op_find(const char *name);

/* --------------------------------------------------------------- tokenizer */

/*
 * Byte-level BPE (GPT-2 style) trained in C, and BPE tokenizers loaded from a
 * Hugging Face tokenizer.json: lina's own (ByteLevel pre-tokenizer/decoder)
 * and the SentencePiece-style files of Llama/Mistral (Metaspace or
 * Prepend/Replace normalizers with U+2581, byte_fallback with <0xXX> tokens).
 * Texts are byte strings; a byte-level tokenizer encodes ANY bytes (invalid
 * UTF-8, NUL) and decode(encode(x)) == x. Added tokens (e.g. "<|endoftext|>")
 * found in a text are encoded as their own id. A file's post_processor (BOS/EOS
 * templates) is not applied: encode returns the text's tokens only. Supported
 * pipelines: ByteLevel pre-tokenizer (GPT-2 split) + ByteLevel decoder; or
 * Prepend/Replace normalizers or a Metaspace pre-tokenizer with Metaspace or
 * Replace/ByteFallback/Fuse/Strip decoders; others fail with a message naming
 * the component. Not thread safe for concurrent calls on the same object
 * (encoding keeps a cache).
 */
typedef struct lina_tokenizer lina_tokenizer;

/* Train on text[0..len) to vocab_size entries: 256 byte tokens (id = byte
 * value), merges (most frequent pair first; ties: the smaller (left, right) id
 * pair), then the nspecial special tokens (the last ids). The text is split
 * with GPT-2's pre-tokenisation rule; occurrences of the special tokens are
 * cut out first. Training stops early (smaller vocabulary) when no pair
 * occurs twice. */
int lina_tokenizer_train(const char *text, size_t len, int vocab_size,
                         const char *const *special, int nspecial, lina_tokenizer **out);
/* Load a tokenizer.json file, or parse an in-memory one (`name` is used in
 * messages). Malformed or unsupported files fail with LINA_EFORMAT and a
 * message naming the file and the problem. */
int lina_tokenizer_load(const char *path, lina_tokenizer **out);
int lina_tokenizer_parse(const char *json, size_t len, const char *name, lina_tokenizer **out);
/* Write a tokenizer.json that HF `tokenizers` loads (atomic write). */
int lina_tokenizer_save(const lina_tokenizer *t, const char *path);
void lina_tokenizer_free(lina_tokenizer *t);

/* Number of ids (1 + the largest id). */
int lina_tokenizer_vocab_size(const lina_tokenizer *t);
/* Id of a token given by its tokenizer.json string (UTF-8: "<|endoftext|>",
 * "</s>", or a byte-level piece such as "\xc4\xa0the" for " the"), or -1. */
int lina_tokenizer_token_id(const lina_tokenizer *t, const char *piece);
/* The tokenizer.json string of id (NULL when out of range). */
const char *lina_tokenizer_piece(const lina_tokenizer *t, int id);

/* Encode text[0..len): *ids (malloc'd, caller frees) and *n. */
int lina_tokenizer_encode(lina_tokenizer *t, const char *text, size_t len, int32_t **ids,
                          size_t *n);
/* Decode ids: *text (malloc'd, NUL-terminated for convenience; may contain
 * NULs) and *len. Out-of-range ids fail with LINA_EINVAL. */
int lina_tokenizer_decode(const lina_tokenizer *t, const int32_t *ids, size_t n, char **text,
                          size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* LINA_H */
