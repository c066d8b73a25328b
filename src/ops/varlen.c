/* varlen.c -- packed variable-length sequences for every op: B = 1 holds N documents
 * back to back, cu_seqlens = [0, t_1, ..., t_{N-1}, T] their offsets. Each document runs
 * as its own sequence (its own initial state, its own final state), so no state, window
 * or attention crosses a boundary, a boundary inside a chunk is exact, and every output
 * and gradient position is written. */
#include "ops_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lina_cu_seqlens_check(const int64_t *cu, int64_t n, int64_t T)
{
    if (n < 2) {
        return lina_set_error(LINA_EINVAL, "cu_seqlens has %lld offset%s; it needs [0, ..., T] (at least 2)",
                              (long long)n, n == 1 ? "" : "s");
    }
    if (cu[0] != 0) {
        return lina_set_error(LINA_EINVAL, "cu_seqlens must start at 0 (starts at %lld)", (long long)cu[0]);
    }
    for (int64_t i = 1; i < n; i++) {
        if (cu[i] <= cu[i - 1]) {
            return lina_set_error(LINA_EINVAL,
                                  "cu_seqlens must be strictly increasing: offset %lld is %lld after %lld",
                                  (long long)i, (long long)cu[i], (long long)cu[i - 1]);
        }
    }
    if (cu[n - 1] != T) {
        return lina_set_error(LINA_EINVAL, "cu_seqlens must end at T = %lld (ends at %lld)", (long long)T,
                              (long long)cu[n - 1]);
    }
    return LINA_OK;
}

typedef struct doc_len {
    int64_t len;
    int j;
} doc_len;

static int docs_longer(const void *a, const void *b)
{
    const doc_len *x = a, *y = b;
    return x->len != y->len ? (x->len < y->len ? 1 : -1) : (x->j > y->j) - (x->j < y->j);
}

int lina_docs_order(const char *who, int B, int64_t T, const int64_t *cu, int64_t ncu, int **ord)
{
    *ord = NULL;
    if (B != 1) {
        return lina_set_error(LINA_EINVAL, "%s: with cu_seqlens the batch dim must be 1 (B = %d)", who, B);
    }
    if (!cu) {
        return lina_set_error(LINA_EINVAL, "%s: cu_seqlens is NULL", who);
    }
    int rc = lina_cu_seqlens_check(cu, ncu, T);
    if (rc) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", lina_last_error());
        return lina_set_error(rc, "%s: %s", who, msg);
    }
    if (ncu - 1 > 0x7fffffffLL) {
        return lina_set_error(LINA_EINVAL, "%s: %lld documents are too many", who, (long long)(ncu - 1));
    }
    int n = (int)(ncu - 1), *o = malloc((size_t)n * sizeof(int));
    doc_len *dl = malloc((size_t)n * sizeof(doc_len));
    if (!o || !dl) {
        free(o);
        free(dl);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory (%d documents)", who, n);
    }
    for (int j = 0; j < n; j++) {
        dl[j].len = cu[j + 1] - cu[j];
        dl[j].j = j;
    }
    qsort(dl, (size_t)n, sizeof(doc_len), docs_longer);
    for (int j = 0; j < n; j++) {
        o[j] = dl[j].j;
    }
    free(dl);
    *ord = o;
    return LINA_OK;
}

/* How a tensor is split: along dim 1 (rows per token `f`: the packed time axis) or
 * along dim 0 (one entry per document: initial and final states). */
typedef struct vl_kind {
    int state;
    int64_t f;
} vl_kind;

static int64_t row_floats(const lina_tensor *t, int from)
{
    int64_t n = 1;
    for (int i = from; i < t->ndim; i++) {
        n *= t->shape[i];
    }
    return n;
}

/* inputs: a state has dim 0 = N (N > 1 here), a packed tensor dim 0 = 1 and dim 1 a
 * multiple of T */
static int input_kind(const char *name, const lina_tensor *t, int64_t N, int64_t T, vl_kind *k)
{
    if (t->ndim >= 1 && t->shape[0] == N) {
        k->state = 1;
        k->f = 1;
        return LINA_OK;
    }
    if (t->ndim >= 2 && t->shape[0] == 1 && t->shape[1] % T == 0 && t->shape[1] > 0) {
        k->state = 0;
        k->f = t->shape[1] / T;
        return LINA_OK;
    }
    return lina_set_error(LINA_EINVAL,
                          "%s.npy: with cu_seqlens of %lld documents a tensor is either packed [1, T = %lld, ...] "
                          "or one row per document [%lld, ...]",
                          name, (long long)N, (long long)T, (long long)N);
}

/* outputs of one document of length L: the gradient d<X> of an input X splits as X;
 * other outputs ending in 't' (ht, zt, nt, mt) are final states; the rest is packed */
static vl_kind output_kind(const char *name, const lina_tensor *t, const lina_tset *in, const vl_kind *ik,
                           int64_t L)
{
    vl_kind k = {0, 1};
    for (int i = 0; i < in->n; i++) {
        if (name[0] == 'd' && strcmp(name + 1, in->names[i]) == 0) {
            return ik[i];
        }
    }
    size_t n = strlen(name);
    if (n >= 2 && name[n - 1] == 't') {
        k.state = 1;
    } else if (t->ndim >= 2 && L > 0) {
        k.f = t->shape[1] / L;
    }
    return k;
}

/* doc's part of a packed or per-document tensor into a new [1, ...] tensor */
static int slice_in(const lina_tensor *t, vl_kind k, int64_t doc, int64_t a, int64_t L, lina_tensor *s)
{
    int64_t shape[LINA_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = 1;
    const float *src;
    int64_t n;
    if (k.state) {
        n = row_floats(t, 1);
        src = t->data + doc * n;
    } else {
        shape[1] = k.f * L;
        int64_t r = row_floats(t, 2);
        n = shape[1] * r;
        src = t->data + k.f * a * r;
    }
    int rc = lina_tensor_alloc(s, t->ndim, shape);
    if (!rc && n) {
        memcpy(s->data, src, (size_t)n * sizeof(float));
    }
    return rc;
}

int lina_op_run_varlen(const lina_op_info *info, const lina_tset *in, lina_tset *out, const lina_op_opts *opts,
                       const int64_t *cu, int64_t ncu, lina_ws *ws)
{
    lina_clear_error();
    const lina_tensor *q = lina_tset_cfind(in, "q");
    if (!q) {
        q = lina_tset_cfind(in, "r"); /* rwkv7's query */
    }
    if (!q || q->ndim < 2) {
        return lina_set_error(LINA_EINVAL, "%s: cu_seqlens needs q.npy (r.npy for rwkv7) [1, T, ...] (its dim 1 is T)",
                              info->name);
    }
    if (q->shape[0] != 1) {
        return lina_set_error(LINA_EINVAL, "%s: with cu_seqlens the batch dim must be 1 (q.npy has B = %lld)",
                              info->name, (long long)q->shape[0]);
    }
    int64_t T = q->shape[1], N = ncu - 1;
    int rc = lina_cu_seqlens_check(cu, ncu, T);
    if (rc) {
        return rc;
    }
    if (N == 1) {
        return lina_op_run(info, in, out, opts, ws); /* one document: the plain op */
    }
    vl_kind ik[LINA_TSET_MAX];
    for (int i = 0; i < in->n; i++) {
        rc = in->names[i][0] == '_' ? 0 : input_kind(in->names[i], &in->t[i], N, T, &ik[i]);
        if (rc) {
            return rc;
        }
    }
    lina_tset sin = {0}, sout = {0};
    for (int64_t d = 0; d < N && !rc; d++) {
        int64_t a = cu[d], L = cu[d + 1] - cu[d];
        for (int i = 0; i < in->n && !rc; i++) {
            if (in->names[i][0] == '_') {
                continue;
            }
            lina_tensor s;
            rc = slice_in(&in->t[i], ik[i], d, a, L, &s);
            if (!rc && (rc = lina_tset_add(&sin, in->names[i], &s)) != 0) {
                lina_tensor_free(&s);
            }
        }
        for (int j = 0; j < sout.n && !rc; j++) {
            if (sout.names[j][0] != '_') { /* an op may accumulate into a reused output */
                memset(sout.t[j].data, 0, (size_t)lina_tensor_numel(&sout.t[j]) * sizeof(float));
            }
        }
        if (!rc && (rc = lina_op_run(info, &sin, &sout, opts, ws)) != 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", lina_last_error());
            lina_set_error(rc, "document %lld (tokens %lld..%lld): %s", (long long)d, (long long)a,
                           (long long)(a + L - 1), msg);
        }
        for (int j = 0; j < sout.n && !rc; j++) {
            const char *nm = sout.names[j];
            const lina_tensor *s = &sout.t[j];
            if (nm[0] == '_') {
                continue;
            }
            vl_kind k = output_kind(nm, s, in, ik, L);
            int64_t shape[LINA_MAX_DIMS];
            memcpy(shape, s->shape, sizeof shape);
            if (k.state) {
                shape[0] = N;
            } else {
                shape[1] = k.f * T;
            }
            float *o = lina_tset_out(out, nm, s->ndim, shape);
            if (!o) {
                rc = lina_last_error()[0] ? LINA_ENOMEM : lina_set_error(LINA_ENOMEM, "out of memory");
                break;
            }
            int64_t n = lina_tensor_numel(s);
            float *dst = k.state ? o + d * n : o + k.f * a * row_floats(s, 2);
            memcpy(dst, s->data, (size_t)n * sizeof(float));
        }
        lina_tset_free(&sin);
    }
    lina_tset_free(&sout);
    return rc;
}
