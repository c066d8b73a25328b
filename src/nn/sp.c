/* sp.c -- sequence parallelism (LASP-2) for the layers: the per-piece
 * summaries of each kernel family, their composition, and the buffers a
 * layer keeps from its forward to its backward (kind.h, docs/distributed.md).
 *
 * Diagonal-decay family (h_t = diag(exp(g_t)) h_{t-1} + k_t v_t^T): a piece p
 * maps its initial state affinely, h_end = diag(exp(a_p)) h_in + S_p, with
 * a_p [B,H,K] the piece's summed log decays and S_p [B,H,K,V] its final state
 * from zero. Pieces compose in order: h_in(p) = sum_{q<p} diag(exp(a_{q+1} +
 * ... + a_{p-1})) S_q. Backward: with dM_p the gradient of piece p's outputs
 * w.r.t. h_in(p), the cotangent of its final state is dH_{p+1} = dM_{p+1} +
 * diag(exp(a_{p+1})) dH_{p+2}, ..., zero after the last piece. */
#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lina_sp_store {
    const void *key;
    float *buf;
    size_t n;
    lina_sp_store *next;
};

float *lina_sp_keep(const lina_sp *sp, const void *key, size_t n)
{
    lina_sp_store *k = sp->keep;
    for (; k && k->key != key; k = k->next) {
    }
    if (!k) {
        if (!(k = calloc(1, sizeof *k))) {
            lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
            return NULL;
        }
        k->key = key;
        /* the list head lives in the (const) lina_sp the caller owns */
        k->next = sp->keep;
        ((lina_sp *)sp)->keep = k;
    }
    if (k->n < n) {
        float *b = calloc(n, sizeof(float));
        if (!b) {
            lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
            return NULL;
        }
        free(k->buf);
        k->buf = b;
        k->n = n;
    }
    return k->buf;
}

void lina_sp_keep_free(lina_sp *sp)
{
    while (sp && sp->keep) {
        lina_sp_store *k = sp->keep;
        sp->keep = k->next;
        free(k->buf);
        free(k);
    }
}

static int active(const lina_sp *sp)
{
    return sp && sp->size > 1;
}

/* a [B,H,K] = the piece's summed log decay per key channel (double sums) */
static void dd_decay(const lina_mix_dims *md, const lina_dd_in *in, float *a)
{
    const int B = md->B, T = md->T, H = md->H, K = md->K;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int k = 0; k < K; k++) {
                double s = 0.0;
                switch (in->gate) {
                case LINA_GATE_HEAD:
                    s = (double)in->g[h] * T;
                    break;
                case LINA_GATE_SCALAR:
                    for (int t = 0; t < T; t++) {
                        s += in->g[((size_t)b * T + t) * H + h];
                    }
                    break;
                case LINA_GATE_VECTOR:
                    for (int t = 0; t < T; t++) {
                        s += in->g[(((size_t)b * T + t) * H + h) * K + k];
                    }
                    break;
                default:
                    break;
                }
                a[((size_t)b * H + h) * K + k] = (float)s;
            }
        }
    }
}

/* h [B,H,K,V] = diag(exp(a)) h + s add, row by row */
static void decay_add(float *h, const float *a, const float *add, float s, size_t rows, int V)
{
    for (size_t r = 0; r < rows; r++) {
        float e = expf(a[r]);
        for (int j = 0; j < V; j++) {
            h[r * V + j] = e * h[r * V + j] + s * add[r * V + j];
        }
    }
}

static float weight_of(const lina_sp *sp)
{
    return sp->weight > 0.0 ? (float)sp->weight : 1.0f;
}

static int no_states(const lina_sp *sp, const void *h0, const void *ht)
{
    (void)sp;
    if (h0 || ht) {
        return lina_set_error(LINA_EINVAL, "sequence parallel: a layer's initial or final state cannot be given "
                                           "with --sp (training starts every sequence from a zero state)");
    }
    return LINA_OK;
}

/* One kernel family behind the LASP-2 driver below: the map part of its
 * summary (nA floats: the decays, or the state map), its kernel on the piece
 * and the composition of its maps. */
typedef struct sp_family {
    size_t nA, nS;  /* floats of the map part and of one state [B,H,K,V] */
    void *k;        /* the family's call (kernel dims and arguments) */
    int (*map)(void *k, float *A);
    /* the piece from h0 (NULL: zero); ht: NULL or its final state; final:
     * this pass's outputs are the layer's (write the kernel's cache) */
    int (*fwd)(void *k, const float *h0, float *ht, int final);
    /* its backward from h0 with the final state's cotangent dht (NULL: zero);
     * dh0: NULL or the initial state's gradient */
    int (*bwd)(void *k, const float *h0, const float *dht, float *dh0);
    /* h = A h + s add (A^T with transpose). A map that depends on the state it
     * is applied at (mLSTM's stabiliser) gets, with transpose, the piece's
     * forward summary fwd [nA + nS] and its initial state at [nS]. */
    void (*compose)(void *k, float *h, const float *A, const float *add, float s, int transpose, const float *fwd,
                    const float *at);
    int needs_at; /* the backward composition needs fwd and at */
} sp_family;

/* What a forward keeps for the backward (under the layer's key): the piece's
 * initial state [nS], then every piece's forward summary [S][nA + nS]. */
static float *sp_kept(const lina_sp *sp, const void *key, const sp_family *f)
{
    return lina_sp_keep(sp, key, f->nS + (f->nA + f->nS) * (size_t)sp->size);
}

/* Forward: the piece's summary from a zero state (on piece 0 the outputs are
 * then final), all-gathered; the pieces before this one composed into its
 * initial state (kept under key), and the piece run again from it. */
static int sp_forward(const lina_sp *sp, const void *key, const sp_family *f)
{
    const size_t n = f->nA + f->nS;
    const int p = sp->rank;
    float *hin = sp_kept(sp, key, f);
    float *buf = calloc(n, sizeof(float));
    if (!hin || !buf) {
        free(buf);
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    float *mine = buf, *all = hin + f->nS;
    int rc;
    if ((rc = f->map(f->k, mine)) || (rc = f->fwd(f->k, NULL, mine + f->nA, p == 0)) ||
        (rc = sp->allgather(sp->ctx, mine, n, all))) {
        free(buf);
        return rc;
    }
    memset(hin, 0, f->nS * sizeof(float));
    for (int q = 0; q < p; q++) {
        f->compose(f->k, hin, all + (size_t)q * n, all + (size_t)q * n + f->nA, 1.0f, 0, NULL, NULL);
    }
    if (p > 0) {
        rc = f->fwd(f->k, hin, NULL, 1);
    }
    free(buf);
    return rc;
}

/* Backward: dM_p (the piece's backward with a zero final cotangent; final on
 * the last piece) all-gathered with the maps and the pieces' loss weights;
 * dH_{p+1} composed from the last piece down (dH_q = dM_q + A_q^T dH_{q+1},
 * each dM rescaled to this piece's loss normaliser), and the piece's backward
 * run again with it. */
static int sp_backward(const lina_sp *sp, const void *key, const sp_family *f)
{
    const size_t n = f->nA + f->nS + 1, nf = f->nA + f->nS;
    const int S = sp->size, p = sp->rank;
    float *hin = sp_kept(sp, key, f); /* written by the forward */
    const float *fwd = hin + f->nS;
    /* at: the initial states of pieces p .. S-1, when the maps need them */
    const size_t nat = f->needs_at ? f->nS * (size_t)(S - p) : 0;
    float *buf = calloc(n * (size_t)(S + 1) + f->nS + nat, sizeof(float));
    if (!hin || !buf) {
        free(buf);
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    float *mine = buf, *all = buf + n, *dH = all + n * (size_t)S, *at = dH + f->nS;
    const float *h0 = p > 0 ? hin : NULL;
    mine[n - 1] = weight_of(sp);
    int rc;
    if ((rc = f->map(f->k, mine)) || (rc = f->bwd(f->k, h0, NULL, mine + f->nA)) ||
        (rc = sp->allgather(sp->ctx, mine, n, all))) {
        free(buf);
        return rc;
    }
    if (p < S - 1) {
        if (nat) {
            memcpy(at, hin, f->nS * sizeof(float));
            for (int q = p; q < S - 1; q++) {
                float *h = at + f->nS * (size_t)(q + 1 - p);
                memcpy(h, h - f->nS, f->nS * sizeof(float));
                f->compose(f->k, h, fwd + (size_t)q * nf, fwd + (size_t)q * nf + f->nA, 1.0f, 0, NULL, NULL);
            }
        }
        memset(dH, 0, f->nS * sizeof(float));
        for (int q = S - 1; q > p; q--) {
            const float *sq = all + (size_t)q * n;
            f->compose(f->k, dH, sq, sq + f->nA, sq[n - 1] / weight_of(sp), 1, fwd + (size_t)q * nf,
                       nat ? at + f->nS * (size_t)(q - p) : NULL);
        }
        rc = f->bwd(f->k, h0, dH, NULL);
    }
    free(buf);
    return rc;
}

/* the diagonal-decay engine as an sp_family */
typedef struct dd_call {
    const lina_mix_dims *md;
    const lina_dd_in *in;
    lina_dd_out *out;
    const lina_dd_grad_in *gin;
    lina_dd_grad_out *gout;
    lina_form form;
    lina_ws *ws;
} dd_call;

static int dd_map(void *k, float *A)
{
    const dd_call *c = k;
    dd_decay(c->md, c->in, A);
    return LINA_OK;
}

static int dd_run_fwd(void *k, const float *h0, float *ht, int final)
{
    const dd_call *c = k;
    lina_dd_in in = *c->in;
    in.h0 = h0;
    lina_dd_out o = {.o = c->out->o, .ht = ht, .states = final ? c->out->states : NULL};
    return lina_dd_fwd(c->md, &in, &o, c->form, c->ws);
}

static int dd_run_bwd(void *k, const float *h0, const float *dht, float *dh0)
{
    const dd_call *c = k;
    lina_dd_in in = *c->in;
    in.h0 = h0;
    lina_dd_grad_in gi = *c->gin;
    gi.dht = dht;
    lina_dd_grad_out go = *c->gout;
    go.dh0 = dh0;
    return lina_dd_bwd(c->md, &in, &gi, &go, c->form, c->ws);
}

static void dd_compose(void *k, float *h, const float *A, const float *add, float s, int transpose,
                       const float *fwd, const float *at)
{
    const dd_call *c = k;
    (void)transpose; /* diagonal */
    (void)fwd;
    (void)at;
    decay_add(h, A, add, s, (size_t)c->md->B * c->md->H * c->md->K, c->md->V);
}

static sp_family dd_family(dd_call *c)
{
    const size_t rows = (size_t)c->md->B * c->md->H * c->md->K;
    sp_family f = {rows, rows * c->md->V, c, dd_map, dd_run_fwd, dd_run_bwd, dd_compose, 0};
    return f;
}

/* The layers ask for the chunk form for every call of more than one token (training,
 * prefill, evaluation); in one process that becomes the faster of the two exact forms for
 * the call's dims, the same for the forward and its backward (lina_dd_fast_form /
 * lina_delta_fast_form with a backward). Sequence-parallel pieces keep the chunk form. */
static lina_form dd_layer_form(lina_form form, const lina_mix_dims *md, const lina_dd_in *in)
{
    return form == LINA_FORM_CHUNK ? lina_dd_fast_form(md, (lina_gate_kind)(in->gate & ~LINA_GATE_CHECKED), 1)
                                   : form;
}

static lina_form delta_layer_form(lina_form form, const lina_mix_dims *md, const lina_delta_in *in)
{
    return form == LINA_FORM_CHUNK ? lina_delta_fast_form(md, in->n, 1) : form;
}

int lina_sp_dd_fwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_dd_in *in,
                   lina_dd_out *out, lina_form form, lina_ws *ws)
{
    if (!active(sp)) {
        const lina_form f = dd_layer_form(form, md, in);
        if (f == LINA_FORM_RECURRENT && out->states) {
            lina_dd_out o = *out; /* the recurrent backward runs its states again */
            o.states = NULL;
            return lina_dd_fwd(md, in, &o, f, ws);
        }
        return lina_dd_fwd(md, in, out, f, ws);
    }
    int rc = no_states(sp, in->h0, out->ht);
    dd_call c = {md, in, out, NULL, NULL, form, ws};
    sp_family f = dd_family(&c);
    return rc ? rc : sp_forward(sp, key, &f);
}

int lina_sp_dd_bwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_dd_in *in,
                   const lina_dd_grad_in *gin, lina_dd_grad_out *gout, lina_form form, lina_ws *ws)
{
    if (!active(sp)) {
        return lina_dd_bwd(md, in, gin, gout, dd_layer_form(form, md, in), ws);
    }
    int rc = no_states(sp, gin->dht, gout->dh0);
    dd_call c = {md, in, NULL, gin, gout, form, ws};
    sp_family f = dd_family(&c);
    return rc ? rc : sp_backward(sp, key, &f);
}

/* ---- short convolution (window W): the halo of inputs before a piece
 *
 * Each piece sends its last min(T, W) inputs (right-aligned in W rows) and
 * its length; a piece then reads the W inputs before its first token by
 * walking back over the pieces before it (more than one when they are
 * shorter than W), zeros before the sequence. The backward sends the
 * gradient of those W inputs back the same way: every piece adds the parts
 * that later pieces read from it. */

/* piece q and the row counted back from its end (0 = last) holding input
 * `back` + 1 steps before piece r; q < 0 when before the sequence */
static void halo_walk(const float *all, size_t n, int r, int back, int *q, int *row)
{
    int p = r - 1;
    while (p >= 0) {
        int Tq = (int)all[(size_t)p * n + n - 1];
        if (back < Tq) {
            break;
        }
        back -= Tq;
        p--;
    }
    *q = p;
    *row = back;
}

int lina_sp_conv_halo(const lina_sp *sp, const float *x, int B, int T, int C, int W, float *cache)
{
    const size_t n = (size_t)B * W * C + 1;
    const int S = sp->size, p = sp->rank;
    float *buf = calloc(n * (size_t)(S + 1), sizeof(float));
    if (!buf) {
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    float *mine = buf, *all = buf + n;
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < W && j < T; j++) { /* j steps back from the end */
            memcpy(mine + ((size_t)b * W + (W - 1 - j)) * C, x + ((size_t)b * T + (T - 1 - j)) * C,
                   (size_t)C * sizeof(float));
        }
    }
    mine[n - 1] = (float)T;
    int rc = sp->allgather(sp->ctx, mine, n, all);
    for (int i = 0; rc == LINA_OK && i < W; i++) {
        int q, row;
        halo_walk(all, n, p, i, &q, &row);
        for (int b = 0; b < B; b++) {
            const float *src = q >= 0 ? all + (size_t)q * n + ((size_t)b * W + (W - 1 - row)) * C : NULL;
            for (int c = 0; c < C; c++) {
                cache[((size_t)b * C + c) * W + (W - 1 - i)] = src ? src[c] : 0.0f;
            }
        }
    }
    free(buf);
    return rc;
}

int lina_sp_conv_halo_bwd(const lina_sp *sp, const float *dcache, int B, int T, int C, int W, float *dx)
{
    const size_t n = (size_t)B * C * W + 2;
    const int S = sp->size, p = sp->rank;
    float *buf = malloc(n * (size_t)(S + 1) * sizeof(float));
    if (!buf) {
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    float *mine = buf, *all = buf + n;
    memcpy(mine, dcache, (n - 2) * sizeof(float));
    /* the weight rescales the gradient to the receiving piece's loss normaliser */
    mine[n - 2] = weight_of(sp);
    mine[n - 1] = (float)T;
    int rc = sp->allgather(sp->ctx, mine, n, all);
    for (int r = p + 1; rc == LINA_OK && r < S; r++) {
        const float *dr = all + (size_t)r * n;
        const float s = dr[n - 2] / weight_of(sp);
        for (int i = 0; i < W; i++) {
            int q, row;
            halo_walk(all, n, r, i, &q, &row);
            if (q != p) {
                continue;
            }
            for (int b = 0; b < B; b++) {
                float *d = dx + ((size_t)b * T + (T - 1 - row)) * C;
                for (int c = 0; c < C; c++) {
                    d[c] += s * dr[((size_t)b * C + c) * W + (W - 1 - i)];
                }
            }
        }
    }
    free(buf);
    return rc;
}

/* ---- delta-rule family (h <- exp(g) (I - beta k k^T) h + beta k v^T)
 *
 * A piece maps its initial state by h_end = M_p h_in + S_p with M_p [K,K] per
 * (b, h) the product of the piece's exp(g) (I - beta k k^T), late to early,
 * and S_p its final state from zero. M_p is the final state of the same
 * kernel run with v = 0 from h0 = I (value width K). Composition: h = M_q h +
 * S_q over q < p; backward: dH_q = dM_q + M_q^T dH_{q+1} from the last piece
 * down. Summary: K K + K V floats per (b, h). */

/* h [K,V] = M [K,K] h + s add, per (b, h) */
static void map_add(float *h, const float *M, const float *add, float s, size_t bh, int K, int V, int transpose)
{
    double *t = malloc((size_t)K * V * sizeof(double));
    if (!t) {
        return;
    }
    for (size_t r = 0; r < bh; r++) {
        const float *m = M + r * (size_t)K * K;
        float *x = h + r * (size_t)K * V;
        for (int i = 0; i < K; i++) {
            for (int j = 0; j < V; j++) {
                double acc = 0.0;
                for (int l = 0; l < K; l++) {
                    acc += (double)(transpose ? m[(size_t)l * K + i] : m[(size_t)i * K + l]) * x[(size_t)l * V + j];
                }
                t[(size_t)i * V + j] = acc;
            }
        }
        for (size_t e = 0; e < (size_t)K * V; e++) {
            x[e] = (float)t[e] + s * add[r * (size_t)K * V + e];
        }
    }
    free(t);
}

/* M [B,H,K,K]: the piece's state map */
static int delta_map(const lina_mix_dims *md, const lina_delta_in *in, float *M, lina_ws *ws)
{
    const int B = md->B, T = md->T, H = md->H, K = md->K, n = in->n > 0 ? in->n : 1;
    const size_t bh = (size_t)B * H;
    float *buf = calloc((size_t)B * T * n * H * K + (size_t)B * T * H * K + bh * K * K, sizeof(float));
    if (!buf) {
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    float *v0 = buf, *o = v0 + (size_t)B * T * n * H * K, *eye = o + (size_t)B * T * H * K;
    for (size_t r = 0; r < bh; r++) {
        for (int i = 0; i < K; i++) {
            eye[(r * K + i) * K + i] = 1.0f;
        }
    }
    lina_mix_dims mk = *md;
    mk.V = K;
    lina_delta_in im = *in;
    im.v = v0;
    im.h0 = eye;
    lina_delta_out om = {.o = o, .ht = M, .cache = NULL};
    int rc = lina_delta_fwd(&mk, &im, &om, LINA_FORM_CHUNK, ws);
    free(buf);
    return rc;
}

/* the delta-rule engine as an sp_family */
typedef struct delta_call {
    const lina_mix_dims *md;
    const lina_delta_in *in;
    lina_delta_out *out;
    const lina_delta_grad_in *gin;
    lina_delta_grad_out *gout;
    lina_form form;
    lina_ws *ws;
} delta_call;

static int delta_map_of(void *k, float *A)
{
    const delta_call *c = k;
    return delta_map(c->md, c->in, A, c->ws);
}

static int delta_run_fwd(void *k, const float *h0, float *ht, int final)
{
    const delta_call *c = k;
    lina_delta_in in = *c->in;
    in.h0 = h0;
    lina_delta_out o = {.o = c->out->o, .ht = ht, .cache = final ? c->out->cache : NULL};
    return lina_delta_fwd(c->md, &in, &o, c->form, c->ws);
}

static int delta_run_bwd(void *k, const float *h0, const float *dht, float *dh0)
{
    const delta_call *c = k;
    lina_delta_in in = *c->in;
    in.h0 = h0;
    lina_delta_grad_in gi = *c->gin;
    gi.dht = dht;
    lina_delta_grad_out go = *c->gout;
    go.dh0 = dh0;
    return lina_delta_bwd(c->md, &in, &gi, &go, c->form, c->ws);
}

static void delta_compose(void *k, float *h, const float *A, const float *add, float s, int transpose,
                          const float *fwd, const float *at)
{
    const delta_call *c = k;
    (void)fwd;
    (void)at;
    map_add(h, A, add, s, (size_t)c->md->B * c->md->H, c->md->K, c->md->V, transpose);
}

static sp_family delta_family(delta_call *c)
{
    const size_t bh = (size_t)c->md->B * c->md->H;
    sp_family f = {bh * c->md->K * c->md->K, bh * c->md->K * c->md->V, c, delta_map_of, delta_run_fwd,
                   delta_run_bwd, delta_compose, 0};
    return f;
}

int lina_sp_delta_fwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_delta_in *in,
                      lina_delta_out *out, lina_form form, lina_ws *ws)
{
    if (!active(sp)) {
        return lina_delta_fwd(md, in, out, delta_layer_form(form, md, in), ws);
    }
    int rc = no_states(sp, in->h0, out->ht);
    delta_call c = {md, in, out, NULL, NULL, form, ws};
    sp_family f = delta_family(&c);
    return rc ? rc : sp_forward(sp, key, &f);
}

int lina_sp_delta_bwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_delta_in *in,
                      const lina_delta_grad_in *gin, lina_delta_grad_out *gout, lina_form form, lina_ws *ws)
{
    if (!active(sp)) {
        return lina_delta_bwd(md, in, gin, gout, delta_layer_form(form, md, in), ws);
    }
    int rc = no_states(sp, gin->dht, gout->dh0);
    delta_call c = {md, in, NULL, gin, gout, form, ws};
    sp_family f = delta_family(&c);
    return rc ? rc : sp_backward(sp, key, &f);
}

int lina_sp_conv_forward(const lina_sp *sp, float *y, const float *x, const float *w, const float *bias, int B,
                         int T, int C, int W, lina_act act)
{
    return lina_sp_conv_forward_key(sp, w, y, x, w, bias, B, T, C, W, act);
}

int lina_sp_conv_backward(const lina_sp *sp, float *dx, float *dw, float *dbias, const float *dy, const float *x,
                          const float *w, const float *bias, int B, int T, int C, int W, lina_act act)
{
    return lina_sp_conv_backward_key(sp, w, dx, dw, dbias, dy, x, w, bias, B, T, C, W, act);
}

int lina_sp_conv_forward_key(const lina_sp *sp, const void *key, float *y, const float *x, const float *w,
                             const float *bias, int B, int T, int C, int W, lina_act act)
{
    float *halo = lina_sp_keep(sp, key, (size_t)B * C * W);
    if (!halo) {
        return LINA_ENOMEM;
    }
    int rc = lina_sp_conv_halo(sp, x, B, T, C, W, halo);
    if (rc == LINA_OK) {
        lina_shortconv_forward(y, x, w, bias, halo, NULL, B, T, C, W, act);
    }
    return rc;
}

int lina_sp_conv_backward_key(const lina_sp *sp, const void *key, float *dx, float *dw, float *dbias, const float *dy,
                              const float *x, const float *w, const float *bias, int B, int T, int C, int W,
                              lina_act act)
{
    float *halo = lina_sp_keep(sp, key, (size_t)B * C * W); /* the forward's */
    float *dhalo = calloc((size_t)B * C * W, sizeof(float));
    if (!halo || !dhalo) {
        free(dhalo);
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    lina_shortconv_backward(dx, dw, dbias, dhalo, dy, x, w, bias, halo, B, T, C, W, act);
    int rc = lina_sp_conv_halo_bwd(sp, dhalo, B, T, C, W, dx);
    free(dhalo);
    return rc;
}

/* ---- softmax attention (LASP-2H)
 *
 * Every piece sends its rotated keys and its values, padded to Tm =
 * ceil(seq_len / size) rows, and its length: [B,Tm,Hkv,d] k, then v, then T.
 * A piece at offset o (the lengths before it) lays the pieces 0..p out as
 * one sequence of L = o + T rows with the heads repeated and runs the kernel
 * with q_from = o: its queries see the keys before it and its own. The
 * backward runs the kernel the same way; the key and value gradients of
 * every piece q <= p are reduce-scattered to their owners. */

typedef struct sp_attn {
    int S, p, Tm, L, off;     /* pieces, this piece, padded rows, rows 0..p, this piece's offset */
    size_t n;                 /* floats of one piece's share */
    float *all;               /* [S][n] the gathered shares (kept) */
    const float *len;         /* the piece lengths: all[q * n + n - 1] */
} sp_attn;

static int sp_attn_layout(const lina_sp *sp, const void *key, int B, int T, int Hkv, int d, sp_attn *a)
{
    a->S = sp->size;
    a->p = sp->rank;
    a->Tm = (int)((sp->seq_len + sp->size - 1) / sp->size);
    if (sp->seq_len <= 0 || T > a->Tm) {
        return lina_set_error(LINA_EINVAL, "sequence parallel attention: a piece of %d tokens in a sequence of "
                                           "%lld split %d ways",
                              T, (long long)sp->seq_len, sp->size);
    }
    a->n = 2 * (size_t)B * a->Tm * Hkv * d + 1;
    a->all = lina_sp_keep(sp, key, a->n * (size_t)a->S);
    return a->all ? LINA_OK : LINA_ENOMEM;
}

/* the offsets of the pieces (from the gathered lengths) */
static void sp_attn_offsets(sp_attn *a)
{
    a->off = 0;
    for (int q = 0; q < a->p; q++) {
        a->off += (int)a->all[(size_t)q * a->n + a->n - 1];
    }
    a->L = a->off + (int)a->all[(size_t)a->p * a->n + a->n - 1];
}

/* kf, vf [B,L,H,d]: the keys and values of pieces 0..p, heads repeated */
static void sp_attn_unpack(const sp_attn *a, int B, int H, int Hkv, int d, float *kf, float *vf)
{
    const size_t hd = (size_t)H * d, kd = (size_t)Hkv * d, half = (size_t)B * a->Tm * kd;
    for (int q = 0, o = 0; q <= a->p; q++) {
        const float *share = a->all + (size_t)q * a->n;
        const int Tq = (int)share[a->n - 1];
        for (int b = 0; b < B; b++) {
            size_t dst = ((size_t)b * a->L + o) * hd, src = (size_t)b * a->Tm * kd;
            lina_heads_repeat(kf + dst, share + src, (size_t)Tq, H, Hkv, d);
            lina_heads_repeat(vf + dst, share + half + src, (size_t)Tq, H, Hkv, d);
        }
        o += Tq;
    }
}

/* rows [off, off+T) of full [B,L,E] <-> piece [B,T,E] */
static void sp_rows(float *full, const float *piece, float *out, int B, int L, int off, int T, size_t E)
{
    for (int b = 0; b < B; b++) {
        float *f = full + ((size_t)b * L + off) * E;
        if (piece) {
            memcpy(f, piece + (size_t)b * T * E, (size_t)T * E * sizeof(float));
        } else {
            memcpy(out + (size_t)b * T * E, f, (size_t)T * E * sizeof(float));
        }
    }
}

int lina_sp_attn_fwd(const lina_sp *sp, const void *key, int B, int T, int H, int Hkv, int d, int window,
                     const float *q, const float *k, const float *v, float *o, float *stat, lina_ws *ws)
{
    sp_attn a = {0};
    int rc = sp_attn_layout(sp, key, B, T, Hkv, d, &a);
    if (rc) {
        return rc;
    }
    const size_t kd = (size_t)Hkv * d, half = (size_t)B * a.Tm * kd;
    float *mine = calloc(a.n, sizeof(float));
    if (!mine) {
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    for (int b = 0; b < B; b++) {
        memcpy(mine + (size_t)b * a.Tm * kd, k + (size_t)b * T * kd, (size_t)T * kd * sizeof(float));
        memcpy(mine + half + (size_t)b * a.Tm * kd, v + (size_t)b * T * kd, (size_t)T * kd * sizeof(float));
    }
    mine[a.n - 1] = (float)T;
    rc = sp->allgather(sp->ctx, mine, a.n, a.all);
    free(mine);
    if (rc) {
        return rc;
    }
    sp_attn_offsets(&a);
    const size_t hd = (size_t)H * d, nf = (size_t)B * a.L * hd;
    float *buf = malloc((4 * nf + (size_t)B * a.L * H * 2) * sizeof(float));
    if (!buf) {
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    float *qf = buf, *kf = qf + nf, *vf = kf + nf, *of = vf + nf, *sf = of + nf;
    sp_attn_unpack(&a, B, H, Hkv, d, kf, vf);
    sp_rows(qf, q, NULL, B, a.L, a.off, T, hd);
    lina_mix_dims md = {B, a.L, H, d, d, 0, 0.0f};
    lina_softmax_in in = {qf, kf, vf, window, 0, NULL, a.off};
    lina_softmax_out out = {of, sf};
    rc = lina_softmax_attn_fwd(&md, &in, &out, ws);
    if (rc == LINA_OK) {
        sp_rows(of, NULL, o, B, a.L, a.off, T, hd);
        sp_rows(sf, NULL, stat, B, a.L, a.off, T, (size_t)H * 2);
    }
    free(buf);
    return rc;
}

int lina_sp_attn_bwd(const lina_sp *sp, const void *key, int B, int T, int H, int Hkv, int d, int window,
                     const float *q, const float *stat, const float *dO, float *dq, float *dk, float *dv, lina_ws *ws)
{
    sp_attn a = {0};
    int rc = sp_attn_layout(sp, key, B, T, Hkv, d, &a); /* the forward's gathered shares */
    if (rc) {
        return rc;
    }
    sp_attn_offsets(&a);
    const size_t hd = (size_t)H * d, kd = (size_t)Hkv * d, nf = (size_t)B * a.L * hd;
    const size_t share = (a.n - 1) / 2 * 2, half = share / 2; /* k and v gradients of one piece */
    float *buf = malloc((7 * nf + (size_t)B * a.L * H * 2 + share * (size_t)(a.S + 1)) * sizeof(float));
    if (!buf) {
        return lina_set_error(LINA_ENOMEM, "sequence parallel: out of memory");
    }
    float *qf = buf, *kf = qf + nf, *vf = kf + nf, *dof = vf + nf, *dqf = dof + nf, *dkf = dqf + nf;
    float *dvf = dkf + nf, *sf = dvf + nf, *send = sf + (size_t)B * a.L * H * 2, *recv = send + share * a.S;
    sp_attn_unpack(&a, B, H, Hkv, d, kf, vf);
    sp_rows(qf, q, NULL, B, a.L, a.off, T, hd);
    sp_rows(dof, dO, NULL, B, a.L, a.off, T, hd);
    sp_rows(sf, stat, NULL, B, a.L, a.off, T, (size_t)H * 2);
    lina_mix_dims md = {B, a.L, H, d, d, 0, 0.0f};
    lina_softmax_in in = {qf, kf, vf, window, 0, NULL, a.off};
    lina_softmax_grad_in gin = {dof, sf};
    lina_softmax_grad_out gout = {dqf, dkf, dvf, NULL};
    rc = lina_softmax_attn_bwd(&md, &in, &gin, &gout, ws);
    if (rc == LINA_OK) {
        sp_rows(dqf, NULL, dq, B, a.L, a.off, T, hd);
        /* piece r's rows of dk, dv, heads reduced, in this piece's normaliser times its weight */
        const float w = weight_of(sp);
        memset(send, 0, share * a.S * sizeof(float));
        for (int r = 0, o = 0; r <= a.p; r++) {
            const int Tr = (int)a.all[(size_t)r * a.n + a.n - 1];
            float *sk = send + (size_t)r * share, *sv = sk + half;
            for (int b = 0; b < B; b++) {
                size_t src = ((size_t)b * a.L + o) * hd, dst = (size_t)b * a.Tm * kd;
                lina_heads_reduce(sk + dst, dkf + src, (size_t)Tr, H, Hkv, d, 0);
                lina_heads_reduce(sv + dst, dvf + src, (size_t)Tr, H, Hkv, d, 0);
            }
            o += Tr;
        }
        for (size_t i = 0; i < share * (size_t)(a.p + 1); i++) {
            send[i] *= w;
        }
        rc = sp->reduce_scatter(sp->ctx, send, share, recv);
    }
    if (rc == LINA_OK) {
        const float inv = 1.0f / weight_of(sp);
        for (int b = 0; b < B; b++) {
            for (size_t i = 0; i < (size_t)T * kd; i++) {
                dk[(size_t)b * T * kd + i] = recv[(size_t)b * a.Tm * kd + i] * inv;
                dv[(size_t)b * T * kd + i] = recv[half + (size_t)b * a.Tm * kd + i] * inv;
            }
        }
    }
    free(buf);
    return rc;
}

/* ---- mLSTM (stabilised; lina_mlstm_fwd)
 *
 * With lf = logsigmoid(f), the true state C e^m, n e^m of the cell decays by
 * e^{lf} per step, and the stabiliser is the max-plus scan m_t = max(lf_t +
 * m_{t-1}, i_t). A piece maps its initial state (C, n, m) to
 *   m' = max(m + F, M),  C' = e^{m + F - m'} C + e^{m_q - m'} C_q  (n alike)
 * with F the sum of its lf, M = max_t (i_t + the lf after t), and (C_q, n_q,
 * m_q) its final state from zero (m_q = max(F, M)). Summary per (b, h): F, M
 * and that state, K V + K + 1 floats. The map is not linear in m, so the
 * backward's transposed step uses the state it was applied at (kept: every
 * piece's forward summary), case by case:
 *   m + F >= M:  dC = dC', dn = dn', dm = dm' - e^{m_q - m'} (dC'.C_q + dn'.n_q)
 *   else:        dC = e dC', dn = e dn', dm = e (dC'.C + dn'.n),  e = e^{m + F - M}
 * (a tie takes the carry branch, as the kernel does). */

typedef struct mlstm_call {
    const lina_mix_dims *md;
    const lina_mlstm_in *in;
    lina_mlstm_out *out;
    const lina_mlstm_grad_in *gin;
    lina_mlstm_grad_out *gout;
    lina_form form;
    lina_ws *ws;
} mlstm_call;

static double log_sigmoid(double x)
{
    return x >= 0.0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

/* A [2][B,H]: F, then M */
static int mlstm_map(void *k, float *A)
{
    const mlstm_call *c = k;
    const int B = c->md->B, T = c->md->T, H = c->md->H;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            double F = 0.0, M = -INFINITY;
            for (int t = T - 1; t >= 0; t--) {
                size_t r = ((size_t)b * T + t) * H + h;
                double cand = (double)c->in->i[r] + F; /* F: the lf after t */
                M = cand > M ? cand : M;
                F += log_sigmoid(c->in->f[r]);
            }
            A[(size_t)b * H + h] = (float)F;
            A[(size_t)(B + b) * H + h] = (float)M;
        }
    }
    return LINA_OK;
}

/* the parts of a state [C | n | m] */
static void mlstm_parts(const mlstm_call *c, const float *s, const float **C, const float **n, const float **m)
{
    const size_t bh = (size_t)c->md->B * c->md->H;
    *C = s;
    *n = s ? s + bh * c->md->K * c->md->V : NULL;
    *m = s ? *n + bh * c->md->K : NULL;
}

static int mlstm_run_fwd(void *k, const float *h0, float *ht, int final)
{
    const mlstm_call *c = k;
    lina_mlstm_in in = *c->in;
    mlstm_parts(c, h0, &in.h0, &in.n0, &in.m0);
    const float *C, *n, *m;
    mlstm_parts(c, ht, &C, &n, &m);
    lina_mlstm_out o = {c->out->o, (float *)C, (float *)n, (float *)m};
    (void)final; /* the kernel keeps no cache */
    return lina_mlstm_fwd(c->md, &in, &o, c->form, c->ws);
}

static int mlstm_run_bwd(void *k, const float *h0, const float *dht, float *dh0)
{
    const mlstm_call *c = k;
    lina_mlstm_in in = *c->in;
    mlstm_parts(c, h0, &in.h0, &in.n0, &in.m0);
    lina_mlstm_grad_in gi = *c->gin;
    mlstm_parts(c, dht, &gi.dht, &gi.dnt, &gi.dmt);
    lina_mlstm_grad_out go = *c->gout;
    const float *C, *n, *m;
    mlstm_parts(c, dh0, &C, &n, &m);
    go.dh0 = (float *)C;
    go.dn0 = (float *)n;
    go.dm0 = (float *)m;
    return lina_mlstm_bwd(c->md, &in, &gi, &go, c->form, c->ws);
}

static void mlstm_compose(void *k, float *h, const float *A, const float *add, float s, int transpose,
                          const float *fwd, const float *at)
{
    const mlstm_call *c = k;
    const int B = c->md->B, H = c->md->H, K = c->md->K, V = c->md->V;
    const size_t bh = (size_t)B * H, kv = (size_t)K * V;
    float *hC = h, *hn = h + bh * kv, *hm = hn + bh * K;
    const float *aC, *an, *am;
    if (!transpose) { /* h = piece (A, add) applied to h */
        mlstm_parts(c, add, &aC, &an, &am);
        for (size_t r = 0; r < bh; r++) {
            const double F = A[r], M = A[bh + r], mc = (double)hm[r] + F, m1 = mc >= M ? mc : M;
            const float e1 = (float)exp(mc - m1), e2 = (float)exp((double)am[r] - m1);
            for (size_t j = 0; j < kv; j++) {
                hC[r * kv + j] = e1 * hC[r * kv + j] + e2 * aC[r * kv + j];
            }
            for (int j = 0; j < K; j++) {
                hn[r * K + j] = e1 * hn[r * K + j] + e2 * an[r * K + j];
            }
            hm[r] = (float)m1;
        }
        return;
    }
    /* h = J^T h + s add: J the piece's map at its initial state `at`, from its forward summary */
    const float *qC, *qn, *qm, *sC, *sn, *sm;
    mlstm_parts(c, fwd + 2 * bh, &qC, &qn, &qm);
    mlstm_parts(c, at, &sC, &sn, &sm);
    mlstm_parts(c, add, &aC, &an, &am);
    for (size_t r = 0; r < bh; r++) {
        const double F = fwd[r], M = fwd[bh + r], mc = (double)sm[r] + F;
        double dm;
        float e;
        if (mc >= M) { /* carry: m' = m + F, C' = C + e^{m_q - m'} C_q */
            const double e2 = exp((double)qm[r] - mc);
            double dot = 0.0;
            for (size_t j = 0; j < kv; j++) {
                dot += (double)hC[r * kv + j] * qC[r * kv + j];
            }
            for (int j = 0; j < K; j++) {
                dot += (double)hn[r * K + j] * qn[r * K + j];
            }
            dm = (double)hm[r] - e2 * dot;
            e = 1.0f;
        } else { /* m' = M, C' = e^{m + F - M} C + e^{m_q - M} C_q */
            const double e1 = exp(mc - M);
            double dot = 0.0;
            for (size_t j = 0; j < kv; j++) {
                dot += (double)hC[r * kv + j] * sC[r * kv + j];
            }
            for (int j = 0; j < K; j++) {
                dot += (double)hn[r * K + j] * sn[r * K + j];
            }
            dm = e1 * dot;
            e = (float)e1;
        }
        for (size_t j = 0; j < kv; j++) {
            hC[r * kv + j] = e * hC[r * kv + j] + s * aC[r * kv + j];
        }
        for (int j = 0; j < K; j++) {
            hn[r * K + j] = e * hn[r * K + j] + s * an[r * K + j];
        }
        hm[r] = (float)dm + s * am[r];
    }
}

static sp_family mlstm_family(mlstm_call *c)
{
    const size_t bh = (size_t)c->md->B * c->md->H;
    sp_family f = {2 * bh, bh * ((size_t)c->md->K * c->md->V + c->md->K + 1), c, mlstm_map, mlstm_run_fwd,
                   mlstm_run_bwd, mlstm_compose, 1};
    return f;
}

int lina_sp_mlstm_fwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_mlstm_in *in,
                      lina_mlstm_out *out, lina_form form, lina_ws *ws)
{
    if (!active(sp)) {
        return lina_mlstm_fwd(md, in, out, form, ws);
    }
    int rc = no_states(sp, in->h0, out->ht);
    mlstm_call c = {md, in, out, NULL, NULL, form, ws};
    sp_family f = mlstm_family(&c);
    return rc ? rc : sp_forward(sp, key, &f);
}

int lina_sp_mlstm_bwd(const lina_sp *sp, const void *key, const lina_mix_dims *md, const lina_mlstm_in *in,
                      const lina_mlstm_grad_in *gin, lina_mlstm_grad_out *gout, lina_form form, lina_ws *ws)
{
    if (!active(sp)) {
        return lina_mlstm_bwd(md, in, gin, gout, form, ws);
    }
    int rc = no_states(sp, gin->dht, gout->dh0);
    mlstm_call c = {md, in, NULL, gin, gout, form, ws};
    sp_family f = mlstm_family(&c);
    return rc ? rc : sp_backward(sp, key, &f);
}
