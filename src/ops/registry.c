/* registry.c -- named tensor sets, input validation and the table of ops
 * behind `lina op` and `lina bench`. */
#include "ops_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- tensor sets */

lina_tensor *lina_tset_find(lina_tset *s, const char *name)
{
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->names[i], name) == 0) {
            return &s->t[i];
        }
    }
    return NULL;
}

const lina_tensor *lina_tset_cfind(const lina_tset *s, const char *name)
{
    return lina_tset_find((lina_tset *)s, name);
}

int lina_tset_add(lina_tset *s, const char *name, lina_tensor *t)
{
    if (strlen(name) >= sizeof s->names[0]) {
        return lina_set_error(LINA_EINVAL, "tensor name '%s' too long", name);
    }
    lina_tensor *old = lina_tset_find(s, name);
    if (old) {
        lina_tensor_free(old);
        *old = *t;
        return LINA_OK;
    }
    if (s->n >= LINA_TSET_MAX) {
        return lina_set_error(LINA_EINVAL, "too many tensors (max %d)", LINA_TSET_MAX);
    }
    snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    s->t[s->n++] = *t;
    return LINA_OK;
}

float *lina_tset_out(lina_tset *s, const char *name, int ndim, const int64_t *shape)
{
    lina_tensor *old = lina_tset_find(s, name);
    if (old && old->ndim == ndim && memcmp(old->shape, shape, (size_t)ndim * sizeof(int64_t)) == 0) {
        return old->data;
    }
    lina_tensor t;
    if (lina_tensor_alloc(&t, ndim, shape)) {
        return NULL;
    }
    if (lina_tset_add(s, name, &t)) {
        lina_tensor_free(&t);
        return NULL;
    }
    return t.data;
}

void lina_tset_free(lina_tset *s)
{
    for (int i = 0; i < s->n; i++) {
        lina_tensor_free(&s->t[i]);
    }
    s->n = 0;
}

/* ------------------------------------------------------------- validation */

void lina_binds_init(lina_binds *bd)
{
    for (int i = 0; i < 26; i++) {
        bd->v[i] = -1;
        bd->from[i] = NULL;
    }
}

static void fmt_shape(char *buf, size_t n, const lina_tensor *t)
{
    size_t p = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < t->ndim && p < n; i++) {
        p += (size_t)snprintf(buf + p, n - p, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    }
    if (p < n) {
        snprintf(buf + p, n - p, ")");
    }
}

static _Thread_local int g_trusted;

int lina_op_trusted(void)
{
    return g_trusted;
}

int lina_op_run(const lina_op_info *info, const lina_tset *in, lina_tset *out,
                const lina_op_opts *opts, lina_ws *ws)
{
    lina_clear_error();
    g_trusted = opts->trusted;
    int rc = info->run(in, out, opts, ws);
    g_trusted = 0;
    if (rc && !lina_last_error()[0]) {
        lina_set_error(rc, "%s failed (code %d)", info->name, rc);
    }
    return rc;
}

const lina_tensor *lina_op_input(const lina_tset *in, const char *name, const char *spec,
                                 lina_binds *bd, int optional, int *err)
{
    const lina_tensor *t = lina_tset_cfind(in, name);
    if (!t) {
        if (!optional) {
            *err = lina_set_error(LINA_EINVAL, "missing input %s.npy", name);
        }
        return NULL;
    }
    int nd = (int)strlen(spec);
    char sh[128];
    fmt_shape(sh, sizeof sh, t);
    if (t->ndim != nd) {
        *err = lina_set_error(LINA_EINVAL, "%s.npy has shape %s but must be [%s] (%d dims)", name,
                              sh, spec, nd);
        return NULL;
    }
    for (int i = 0; i < nd; i++) {
        int L = spec[i] - 'A';
        if (bd->v[L] < 0) {
            bd->v[L] = t->shape[i];
            bd->from[L] = name;
        } else if (bd->v[L] != t->shape[i]) {
            *err = lina_set_error(LINA_EINVAL,
                                  "%s.npy has shape %s: dim %d (%c) is %lld but %s.npy gives %c=%lld",
                                  name, sh, i, spec[i], (long long)t->shape[i], bd->from[L],
                                  spec[i], (long long)bd->v[L]);
            return NULL;
        }
    }
    int64_t n = g_trusted ? 0 : lina_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(t->data[i])) {
            *err = lina_set_error(LINA_ENONFINITE, "%s.npy contains a non-finite value (%s at index %lld)",
                                  name, isnan(t->data[i]) ? "NaN" : "Inf", (long long)i);
            return NULL;
        }
    }
    return t;
}

int lina_op_qkv(const lina_tset *in, lina_binds *bd, const lina_tensor **q,
                const lina_tensor **k, const lina_tensor **v)
{
    int err = 0;
    lina_binds_init(bd);
    *q = lina_op_input(in, "q", "BTHK", bd, 0, &err);
    *k = err ? NULL : lina_op_input(in, "k", "BTHK", bd, 0, &err);
    *v = err ? NULL : lina_op_input(in, "v", "BTHV", bd, 0, &err);
    return err;
}

int lina_op_check_nonpos(const lina_tensor *t, const char *name, const char *why)
{
    const int64_t n = lina_op_trusted() ? 0 : lina_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (t->data[i] > 0.0f) {
            return lina_set_error(LINA_EINVAL, "%s.npy must hold values <= 0 (found %g at index %lld): %s", name,
                                  (double)t->data[i], (long long)i, why);
        }
    }
    return LINA_OK;
}

float *lina_op_output(lina_tset *out, const char *name, const char *spec, const lina_binds *bd)
{
    int64_t shape[LINA_MAX_DIMS];
    int nd = (int)strlen(spec);
    for (int i = 0; i < nd; i++) {
        shape[i] = bd->v[spec[i] - 'A'];
    }
    return lina_tset_out(out, name, nd, shape);
}

/* -------------------------------------------------------------- random */

float lina_rng_uniform(uint64_t *s, float lo, float hi)
{
    double u = (double)(lina_splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(lo + (hi - lo) * u);
}

float lina_rng_normal(uint64_t *s)
{
    double u1 = ((double)(lina_splitmix64(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (double)(lina_splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int lina_bench_tensor(lina_tset *in, const char *name, int ndim, const int64_t *shape,
                      uint64_t *rng, float lo, float hi, int normal)
{
    lina_tensor t;
    int rc = lina_tensor_alloc(&t, ndim, shape);
    if (rc) {
        return rc;
    }
    int64_t n = lina_tensor_numel(&t);
    for (int64_t i = 0; i < n; i++) {
        t.data[i] = normal ? hi * lina_rng_normal(rng) : lina_rng_uniform(rng, lo, hi);
    }
    rc = lina_tset_add(in, name, &t);
    if (rc) {
        lina_tensor_free(&t);
    }
    return rc;
}

/* ----------------------------------------------------------- grouped heads */

void lina_op_heads_repeat(size_t BT, int H, int G, int K, const float *x, float *y)
{
    for (size_t r = 0; r < BT * (size_t)H * G; r++) {
        memcpy(y + r * K, x + (r / ((size_t)H * G) * H + r % ((size_t)H * G) / G) * K, (size_t)K * sizeof(float));
    }
}
void lina_op_heads_reduce(size_t BT, int H, int G, int K, const float *dy, float *dx)
{
    memset(dx, 0, BT * (size_t)H * K * sizeof(float));
    for (size_t r = 0; r < BT * (size_t)H * G; r++) {
        float *d = dx + (r / ((size_t)H * G) * H + r % ((size_t)H * G) / G) * K;
        const float *x = dy + r * K;
        for (int i = 0; i < K; i++) {
            d[i] += x[i];
        }
    }
}

/* ---------------------------------------------------------------- table */

extern const lina_op_info lina_op_linear_attn, lina_op_retention, lina_op_simple_gla, lina_op_gla;
extern const lina_op_info lina_op_delta_rule, lina_op_gated_delta_rule, lina_op_delta_product;
extern const lina_op_info lina_op_mlstm, lina_op_softmax_attn, lina_op_lion;
extern const lina_op_info lina_op_kda, lina_op_forgetting_attn;
extern const lina_op_info lina_op_mamba, lina_op_rwkv7;
extern const lina_op_info lina_op_hgrn, lina_op_gsa;

static const lina_op_info *const g_ops[] = {
    &lina_op_linear_attn,
    &lina_op_retention,
    &lina_op_simple_gla,
    &lina_op_gla,
    &lina_op_delta_rule,
    &lina_op_gated_delta_rule,
    &lina_op_delta_product,
    &lina_op_mlstm,
    &lina_op_softmax_attn,
    &lina_op_lion,
    &lina_op_kda,
    &lina_op_forgetting_attn,
    &lina_op_mamba,
    &lina_op_rwkv7,
    &lina_op_hgrn,
    &lina_op_gsa,
    NULL,
};

const lina_op_info *const *lina_ops(void)
{
    return g_ops;
}

const lina_op_info *lina_op_find(const char *name)
{
    for (int i = 0; g_ops[i]; i++) {
        if (strcmp(g_ops[i]->name, name) == 0) {
            return g_ops[i];
        }
    }
    return NULL;
}
