/*
 * softmax_attn.c -- exact softmax attention, tiled ("flash" style), forward
 * and backward, memory O(T*(K+V)) (the backward adds 2 SA_BR T floats per
 * thread):
 *
 *   o_i = sum_j softmax_j(s q_i.k_j) v_j,   j in J(i):
 *         causal j <= i;  --window W: i - W < j <= i;  --non-causal: all j.
 *
 * Forward, per (b,h) and tile of SA_BR query rows: loop over the key tiles of
 * SA_BC keys that hold allowed keys; S = s Q K^T, masked per row to its
 * allowed column range, running max m and sum l per row:
 *   m' = max(m, max_j S_j),  P = exp(S - m'),  l = l exp(m - m') + sum P,
 *   O = O exp(m - m') + P V;
 * finally o = O / l and, for the backward, the row statistics (m, log l) as
 * two floats: m is one of the row's logits and log l lies in [0, log T], so
 * P = exp((S - m) - log l) is recomputed exact to float rounding however
 * large the logits (a single float m + log l near 4e4 is off by 2e-3).
 * Backward, per (b,h) and query tile, two passes over the key tiles it sees:
 *   1. P = exp((S - m) - log l), dV += P^T dO, dP = dO V^T (P and dP kept for
 *      the tile row), D_i = sum_j P_ij dP_ij / sum_j P_ij;
 *   2. dS = P (dP - D), dQ += s dS K, dK += s dS^T Q.
 * D is formed from the same P and dP that dS uses (not do . o from the
 * rounded o), so sum_j dS_ij = 0 up to the rounding of each product, and a
 * one-hot row (P_ij* = 1) gives dS = 0 exactly, as the exact gradient is
 * ~0; dividing by the computed sum of P keeps its rounding (times D, times
 * the size of k) out of dQ.
 * Threads: forward over (b,h) x query tiles, backward over (b,h).
 * The products are lina's own register-tiled kernel (lina_mm, kern/gemm.c:
 * tiles of 6 rows, per instruction-set path), not BLAS calls: a tile's products are
 * 128 x 128 x K, small enough that packing the operands for a BLAS kernel
 * costs as much as the product, and each group of 6 rows takes only the
 * columns (or the summed range) its rows may see, so a causal tile costs
 * about half of a full one.
 *
 * Forgetting attention (FoX, with a log forget gate g [B,T,H], causal): every
 * logit gets the bias c_i - c_j, c_t = sum_{u <= t} g_u, the cumulative gate
 * kept in double per (b,h) so that the difference of two long prefix sums
 * loses nothing; the backward adds dc_i = sum_j dS_ij - sum_i' dS_i'i and
 * dg_t = sum_{i >= t} dc_i.
 */
#include "ops_internal.h"
#include "../kern/gemm.h"
#include "../kern/isa.h"
#include "../kern/vexp.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define SA_BR 128  /* query rows per tile */
#define SA_BC 128  /* keys per tile */

typedef struct sa_ctx {
    int B, T, H, K, V;
    int q0;          /* first query row computed */
    int window;      /* 0: none */
    int causal;
    float s;
    const double *cg; /* [B*H][T] cumulative log forget gate (FoX) or NULL */
} sa_ctx;

static size_t sa_al64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static int sa_setup(sa_ctx *c, const lina_mix_dims *d, const lina_softmax_in *in)
{
    if (!d || !in || !in->q || !in->k || !in->v) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: missing q, k or v");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: bad dims B=%d T=%d H=%d K=%d V=%d",
                              d->B, d->T, d->H, d->K, d->V);
    }
    if (in->window < 0) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: window must be >= 1 (got %d)", in->window);
    }
    if (in->window > 0 && in->non_causal) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: a window applies only to causal attention");
    }
    if (in->g && in->non_causal) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: a forget gate applies only to causal attention");
    }
    if (in->q_from < 0 || in->q_from > d->T) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: q_from %d is outside 0..T (T = %d)", in->q_from, d->T);
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->window = in->window;
    c->q0 = in->q_from;
    c->causal = !in->non_causal;
    c->s = d->scale != 0.0f ? d->scale : 1.0f / sqrtf((float)d->K);
    c->cg = NULL;
    return LINA_OK;
}

/* FoX: the cumulative gates of every (b,h) in double (malloc'd; NULL without
 * a gate or on failure, *rc set then) */
static double *sa_cumgate(const sa_ctx *c, const float *g, int *rc)
{
    *rc = LINA_OK;
    if (!g) {
        return NULL;
    }
    double *cg = malloc(((size_t)c->B * c->H * c->T + 1) * sizeof(double));
    if (!cg) {
        *rc = lina_set_error(LINA_ENOMEM, "softmax_attn: out of memory");
        return NULL;
    }
    for (int b = 0; b < c->B; b++) {
        for (int h = 0; h < c->H; h++) {
            double acc = 0.0, *ch = cg + ((size_t)b * c->H + h) * c->T;
            for (int t = 0; t < c->T; t++) {
                acc += g[((size_t)b * c->T + t) * c->H + h];
                ch[t] = acc;
            }
        }
    }
    return cg;
}

/* Ask for rows [r0, r1) of a head's [B,T,H,D] tensor (w floats each, ld floats
 * apart) ahead of a tile's products: the rows lie a few hundred bytes apart
 * and the first pass over them (a transpose, a product's broadcasts) would
 * otherwise wait on each one in turn. */
static void sa_prefetch_rows(const float *row0, size_t ld, int n, int w)
{
    for (int r = 0; r < n; r++) {
        lina_prefetch_floats(row0 + (size_t)r * ld, w);
    }
}

/* Allowed key range [lo, hi) of query row i. */
static inline void sa_keys(const sa_ctx *c, int i, int *lo, int *hi)
{
    if (!c->causal) {
        *lo = 0;
        *hi = c->T;
        return;
    }
    *hi = i + 1;
    *lo = c->window > 0 && i - c->window + 1 > 0 ? i - c->window + 1 : 0;
}

/* Allowed columns [lo, hi) of query row i within the key tile [j0, j0+nc);
 * 0 when there are none. */
static inline int sa_cols(const sa_ctx *c, int i, int j0, int nc, int *lo, int *hi)
{
    sa_keys(c, i, lo, hi);
    *lo = *lo > j0 ? *lo - j0 : 0;
    *hi = *hi < j0 + nc ? *hi - j0 : nc;
    return *hi > *lo;
}

/* t [x][j] (ld SA_BC) = the tile's rows src[j][x] (ld), j < n, x < w */
static void sa_transpose(float *t, const float *src, size_t ld, int n, int w)
{
    LINA_KFN(lina_transpose)(src, ld, n, w, t, SA_BC);
}

/* Allowed columns of the rows [i0, i0+nr) in the key tile [j0, j0+nc):
 * lo[r], hi[r] (lo = hi = 0 when none). */
static void sa_row_cols(const sa_ctx *c, int i0, int nr, int j0, int nc, int *lo, int *hi)
{
    for (int r = 0; r < nr; r++) {
        if (!sa_cols(c, i0 + r, j0, nc, &lo[r], &hi[r])) {
            lo[r] = hi[r] = 0;
        }
    }
}

/* Query rows of the tile [i0, i0+nr) that see key j0 + j, for j < nc: lo[j], hi[j]
 * (relative to i0; lo >= hi when none). */
static void sa_key_rows(const sa_ctx *c, int i0, int nr, int j0, int nc, int *lo, int *hi)
{
    for (int j = 0; j < nc; j++) {
        int l = 0, h = nr;
        if (c->causal) {
            const int key = j0 + j;
            l = key - i0 > 0 ? key - i0 : 0; /* i >= key */
            if (c->window > 0 && key + c->window - i0 < nr) {
                h = key + c->window - i0; /* i < key + W */
            }
        }
        lo[j] = l;
        hi[j] = h;
    }
}

/* S = s Q K^T of query rows [i0, i0+nr) and keys [j0, j0+nc) of (b,h), with
 * ld SA_BC; entries of keys a row may not see are 0. lo, hi [nr]: the rows'
 * allowed columns (sa_row_cols); kt: room for the tile's K^T [K][SA_BC]. */
static void sa_logits(const sa_ctx *c, const lina_softmax_in *in, int b, int h, int i0, int nr,
                      int j0, int nc, float *S, const int *lo, const int *hi, float *kt)
{
    const int T = c->T, H = c->H, K = c->K, ldk = H * K;
    sa_transpose(kt, LINA_ROW(in->k, b, j0, h, T, H, K), ldk, nc, K);
    LINA_KFN(lina_mm)(nr, nc, K, c->s, LINA_ROW(in->q, b, i0, h, T, H, K), ldk, 1, kt, SA_BC, 0.0f, S, SA_BC, lo, hi, 0);
    for (int r = 0; r < nr; r++) {
        float *Sr = S + (size_t)r * SA_BC;
        const int l = lo[r] < hi[r] ? lo[r] : nc, e = lo[r] < hi[r] ? hi[r] : nc;
        for (int j = 0; j < l; j++) {
            Sr[j] = 0.0f;
        }
        for (int j = e; j < nc; j++) {
            Sr[j] = 0.0f;
        }
        if (c->cg) {
            const double *ch = c->cg + ((size_t)b * c->H + h) * c->T, ci = ch[i0 + r];
            for (int j = l; j < e; j++) {
                Sr[j] += (float)(ci - ch[j0 + j]);
            }
        }
    }
}

/* The row work between the products, one pass each on the vector paths (a call of
 * lina_vexp and separate scalar passes per row cost as much as the row's share of the
 * products at T = 128): sa_row_max, the largest of x[lo, hi); sa_exp_row, x[j] =
 * exp((x[j] - a) - b) in place (the values lina_vexp gives: the same vector exp, the
 * partial vector by masked loads and stores with -inf in the other lanes), returning
 * their sum. */
static float sa_row_max(const float *x, int lo, int hi)
{
    float mx = -INFINITY;
    int j = lo;
#ifdef LINA_VL
    if (hi - lo >= LINA_VL) {
        lina_vf m = LINA_VLD(x + j);
        for (j += LINA_VL; j + LINA_VL <= hi; j += LINA_VL) {
            m = LINA_VMAX(m, LINA_VLD(x + j));
        }
        _Alignas(64) float t[LINA_VL];
        LINA_VST(t, m);
        for (int l = 0; l < LINA_VL; l++) {
            mx = t[l] > mx ? t[l] : mx;
        }
    }
#else
    /* 16 lanes in a fixed-width inner loop both compilers vectorise (clang cannot
     * vectorise a max reduction under omp simd) */
    float m16[16];
    for (int k = 0; k < 16; k++) {
        m16[k] = -INFINITY;
    }
    for (; j + 16 <= hi; j += 16) {
        for (int k = 0; k < 16; k++) {
            m16[k] = x[j + k] > m16[k] ? x[j + k] : m16[k];
        }
    }
    for (int k = 0; k < 16; k++) {
        mx = m16[k] > mx ? m16[k] : mx;
    }
#endif
    for (; j < hi; j++) {
        mx = x[j] > mx ? x[j] : mx;
    }
    return mx;
}

static float sa_exp_row(float *x, int lo, int hi, float a, float b)
{
#ifdef LINA_VL
    const lina_vf av = LINA_VSET1(a), bv = LINA_VSET1(b);
    lina_vf acc = LINA_VZERO();
    int j = lo;
    for (; j + LINA_VL <= hi; j += LINA_VL) {
        const lina_vf e = lina_vexp_v(LINA_VSUB(LINA_VSUB(LINA_VLD(x + j), av), bv));
        LINA_VST(x + j, e);
        acc = LINA_VADD(acc, e);
    }
    if (j < hi) {
        /* the partial vector: masked load and store, -inf (exp 0) in the other lanes */
        const int n = hi - j;
#if defined(__AVX512F__)
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        const lina_vf xv = _mm512_mask_loadu_ps(LINA_VSET1(-INFINITY), m, x + j);
        const lina_vf e = lina_vexp_v(LINA_VSUB(LINA_VSUB(xv, av), bv));
        _mm512_mask_storeu_ps(x + j, m, e);
#elif defined(__AVX2__)
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const lina_vf xv = _mm256_blendv_ps(LINA_VSET1(-INFINITY), _mm256_maskload_ps(x + j, m), _mm256_castsi256_ps(m));
        const lina_vf e = lina_vexp_v(LINA_VSUB(LINA_VSUB(xv, av), bv));
        _mm256_maskstore_ps(x + j, m, e);
#else
        const lina_vf e = lina_vexp_v(LINA_VSUB(LINA_VSUB(lina_nv_ld_n(x + j, n, -INFINITY), av), bv));
        lina_nv_st_n(x + j, n, e);
#endif
        acc = LINA_VADD(acc, e);
    }
    _Alignas(64) float t[LINA_VL];
    LINA_VST(t, acc);
    float sum = 0.0f;
    for (int l = 0; l < LINA_VL; l++) {
        sum += t[l];
    }
    return sum;
#else
    for (int j = lo; j < hi; j++) {
        x[j] = (x[j] - a) - b;
    }
    lina_vexp(x + lo, x + lo, (size_t)(hi - lo));
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = lo; j < hi; j++) {
        sum += x[j];
    }
    return sum;
#endif
}

/* -------------------------------------------------------------- forward */

/* per thread: S [BR][BC], O [BR][V], m, l [BR], the rows' column ranges
 * [2][BR] (int), K^T [K][BC] */
static size_t sa_fwd_bytes(const sa_ctx *c)
{
    return sa_al64((size_t)SA_BR * SA_BC * sizeof(float)) + sa_al64((size_t)SA_BR * c->V * sizeof(float)) +
           2 * sa_al64(SA_BR * sizeof(float)) + sa_al64(2 * SA_BR * sizeof(int)) +
           sa_al64((size_t)c->K * SA_BC * sizeof(float)) + 64;
}

/* One query tile [i0, i1) of (b,h); o NULL: the row statistics only. */
static void sa_fwd_tile(const sa_ctx *c, const lina_softmax_in *in, float *o, float *stat, int b,
                        int h, int i0, int i1, char *mem)
{
    const int T = c->T, H = c->H, V = c->V, nr = i1 - i0;
    const int ldv = H * V;
    float *S = (float *)mem;                                        /* [BR][BC] */
    float *O = (float *)(mem + sa_al64((size_t)SA_BR * SA_BC * sizeof(float))); /* [BR][V] */
    float *mr = O + sa_al64((size_t)SA_BR * V * sizeof(float)) / sizeof(float); /* [BR] */
    float *lr = mr + sa_al64(SA_BR * sizeof(float)) / sizeof(float);            /* [BR] */
    int *clo = (int *)(void *)(lr + sa_al64(SA_BR * sizeof(float)) / sizeof(float)), *chi = clo + SA_BR;
    float *kt = (float *)(void *)((char *)clo + sa_al64(2 * SA_BR * sizeof(int))); /* [K][BC] */
    memset(O, 0, (size_t)nr * V * sizeof(float));
    for (int r = 0; r < nr; r++) {
        mr[r] = -INFINITY;
        lr[r] = 0.0f;
    }
    int jlo, jhi, dummy;
    sa_keys(c, i0, &jlo, &dummy);
    sa_keys(c, i1 - 1, &dummy, &jhi);
    if (jlo < jhi) {
        const int nk = jhi - jlo < SA_BC ? jhi - jlo : SA_BC;
        sa_prefetch_rows(LINA_ROW(in->k, b, jlo, h, T, H, c->K), (size_t)H * c->K, nk, c->K);
        sa_prefetch_rows(LINA_ROW(in->q, b, i0, h, T, H, c->K), (size_t)H * c->K, nr, c->K);
        if (o) {
            sa_prefetch_rows(LINA_ROW(in->v, b, jlo, h, T, H, V), ldv, nk, V);
        }
    }
    for (int j0 = jlo; j0 < jhi; j0 += SA_BC) {
        const int nc = jhi - j0 < SA_BC ? jhi - j0 : SA_BC;
        sa_row_cols(c, i0, nr, j0, nc, clo, chi);
        sa_logits(c, in, b, h, i0, nr, j0, nc, S, clo, chi, kt);
        for (int r = 0; r < nr; r++) {
            float *Sr = S + (size_t)r * SA_BC;
            const int lo = clo[r], hi = chi[r];
            if (lo >= hi) {
                continue;
            }
            const float mx = sa_row_max(Sr, lo, hi);
            const float mnew = mx > mr[r] ? mx : mr[r];
            const float sum = sa_exp_row(Sr, lo, hi, mnew, 0.0f);
            if (mr[r] == -INFINITY) {
                mr[r] = mnew; /* the first visit: O and l are still 0 */
            } else if (mnew > mr[r]) {
                const float alpha = expf(mr[r] - mnew);
                float *Or = O + (size_t)r * V;
                for (int x = 0; o && x < V; x++) {
                    Or[x] *= alpha;
                }
                lr[r] *= alpha;
                mr[r] = mnew;
            }
            lr[r] += sum;
        }
        if (o) {
            LINA_KFN(lina_mm)(nr, V, nc, 1.0f, S, SA_BC, 1, LINA_ROW(in->v, b, j0, h, T, H, V), ldv, 1.0f, O, V, clo, chi, 1);
        }
    }
    for (int r = 0; r < nr; r++) {
        if (o) {
            const float inv = 1.0f / lr[r];
            float *dst = LINA_ROW(o, b, i0 + r, h, T, H, V);
            const float *Or = O + (size_t)r * V;
            for (int x = 0; x < V; x++) {
                dst[x] = Or[x] * inv;
            }
        }
        if (stat) {
            float *st = stat + 2 * (((size_t)b * T + i0 + r) * H + h);
            st[0] = mr[r];
            st[1] = logf(lr[r]);
        }
    }
}

static int sa_fwd(const sa_ctx *c, const lina_softmax_in *in, float *o, float *stat, lina_ws *ws)
{
    /* query tiles on the grid of SA_BR from the one holding row q0 (the first clipped to q0) */
    const int t0 = c->q0 / SA_BR, nt = (c->T + SA_BR - 1) / SA_BR - t0, ntask = c->B * c->H * nt;
    int rc = LINA_OK;
    const size_t need = sa_fwd_bytes(c);
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = ntask - 1; task >= 0; task--) {
        /* descending: the long (late) causal tiles start first */
        const int ti = task % nt, bh = task / nt;
        char *mem = lina_ws_get(ws, lina_thread_id(), need);
        if (!mem) {
            rc = LINA_ENOMEM;
            continue;
        }
        const int g0 = (t0 + ti) * SA_BR, i0 = g0 > c->q0 ? g0 : c->q0;
        const int i1 = g0 + SA_BR < c->T ? g0 + SA_BR : c->T;
        if (i0 < i1) {
            sa_fwd_tile(c, in, o, stat, bh / c->H, bh % c->H, i0, i1, mem);
        }
    }
    return rc;
}

int LINA_KFN(lina_softmax_attn_fwd)(const lina_mix_dims *d, const lina_softmax_in *in,
                          lina_softmax_out *out, lina_ws *ws)
{
    sa_ctx c;
    int rc = sa_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: output o is NULL");
    }
    if (c.T == 0) {
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    double *cg = sa_cumgate(&c, in->g, &rc);
    c.cg = cg;
    if (!rc) {
        rc = sa_fwd(&c, in, out->o, out->stat, sc.ws);
    }
    free(cg);
    lina_ws_scope_close(&sc);
    if (rc) {
        return lina_set_error(rc, "softmax_attn: out of memory");
    }
    return LINA_OK;
}

/* -------------------------------------------------------------- backward */

/* per thread: P and dP of one query tile ([nkt][BR][BC] each), D [2][BR],
 * the rows' column ranges [2][BR] and the keys' row ranges [2][BC] (int),
 * a transposed K or V tile [max(K, V)][BC], seen [nkt] (key tiles whose
 * dk, dv hold a first value), then (FoX) dc [T] */
typedef struct sa_bwd_mem {
    float *P, *dP, *tr;
    double *D, *dc;
    int *clo, *chi, *klo, *khi;
    unsigned char *seen;
} sa_bwd_mem;

static size_t sa_bwd_carve(const sa_ctx *c, char *mem, sa_bwd_mem *m)
{
    const size_t nkt = (size_t)(c->T + SA_BC - 1) / SA_BC, w = (size_t)(c->K > c->V ? c->K : c->V);
    const size_t pb = sa_al64(nkt * SA_BR * SA_BC * sizeof(float));
    size_t off = 0;
#define SA_TAKE(dst, type, bytes) \
    do { \
        if (m) { \
            (dst) = (type)(void *)(mem + off); \
        } \
        off += sa_al64(bytes); \
    } while (0)
    SA_TAKE(m->P, float *, pb);
    SA_TAKE(m->dP, float *, pb);
    SA_TAKE(m->D, double *, 2 * SA_BR * sizeof(double));
    SA_TAKE(m->clo, int *, 2 * SA_BR * sizeof(int));
    SA_TAKE(m->klo, int *, 2 * SA_BC * sizeof(int));
    SA_TAKE(m->tr, float *, w * SA_BC * sizeof(float));
    SA_TAKE(m->seen, unsigned char *, nkt);
    SA_TAKE(m->dc, double *, c->cg ? (size_t)c->T * sizeof(double) : 0);
#undef SA_TAKE
    if (m) {
        m->chi = m->clo + SA_BR;
        m->khi = m->klo + SA_BC;
    }
    return off + 64;
}

static size_t sa_bwd_bytes(const sa_ctx *c)
{
    return sa_bwd_carve(c, NULL, NULL);
}

/* Query tile [i0, i0+nr) of (b,h): writes its dq rows; dk, dv of the key
 * tiles it sees accumulate (the first visit, seen[] 0, writes them). Query
 * tiles end on the SA_BR grid (or at T), so a key tile is first seen whole
 * unless it is the last. */
static void sa_bwd_tile(const sa_ctx *c, const lina_softmax_in *in, const float *stat,
                        const float *dO, lina_softmax_grad_out *g, int b, int h, int i0, int nr,
                        char *mem)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V;
    const int ldk = H * K, ldv = H * V;
    const size_t blk = (size_t)SA_BR * SA_BC;
    sa_bwd_mem mm;
    sa_bwd_carve(c, mem, &mm);
    float *P = mm.P, *dP = mm.dP;
    double *D = mm.D, *dc = mm.dc;
    unsigned char *seen = mm.seen;
    int *clo = mm.clo, *chi = mm.chi, *klo = mm.klo, *khi = mm.khi;
    int jlo, jhi, dummy;
    sa_keys(c, i0, &jlo, &dummy);
    sa_keys(c, i0 + nr - 1, &dummy, &jhi);
    jlo -= jlo % SA_BC; /* key tiles on the grid of SA_BC */
    const float *Q = LINA_ROW(in->q, b, i0, h, T, H, K);
    const float *dOt = LINA_ROW(dO, b, i0, h, T, H, V);
    if (jlo < jhi) {
        const int nk = jhi - jlo < SA_BC ? jhi - jlo : SA_BC;
        sa_prefetch_rows(LINA_ROW(in->k, b, jlo, h, T, H, K), ldk, nk, K);
        sa_prefetch_rows(Q, ldk, nr, K);
        sa_prefetch_rows(dOt, ldv, nr, V);
        sa_prefetch_rows(LINA_ROW(in->v, b, jlo, h, T, H, V), ldv, nk, V);
    }
    for (int r = 0; r < 2 * SA_BR; r++) {
        D[r] = 0.0;
    }
    /* 1. P, dV, dP and D */
    for (int j0 = jlo; j0 < jhi; j0 += SA_BC) {
        const int nc = jhi - j0 < SA_BC ? jhi - j0 : SA_BC;
        float *Pt = P + (size_t)(j0 / SA_BC) * blk, *dPt = dP + (size_t)(j0 / SA_BC) * blk;
        sa_row_cols(c, i0, nr, j0, nc, clo, chi);
        sa_key_rows(c, i0, nr, j0, nc, klo, khi);
        sa_logits(c, in, b, h, i0, nr, j0, nc, Pt, clo, chi, mm.tr);
        for (int r = 0; r < nr; r++) {
            float *Pr = Pt + (size_t)r * SA_BC;
            const int lo = clo[r], hi = chi[r];
            if (lo >= hi) {
                continue;
            }
            const float *st = stat + 2 * (((size_t)b * T + i0 + r) * H + h);
            (void)sa_exp_row(Pr, lo, hi, st[0], st[1]);
        }
        /* dV += P^T dO over the rows that see each key; dP = dO V^T on the rows' columns */
        LINA_KFN(lina_mm)(nc, V, nr, 1.0f, Pt, 1, SA_BC, dOt, ldv, seen[j0 / SA_BC] ? 1.0f : 0.0f,
              LINA_ROW(g->dv, b, j0, h, T, H, V), ldv, klo, khi, 1);
        sa_transpose(mm.tr, LINA_ROW(in->v, b, j0, h, T, H, V), ldv, nc, V);
        LINA_KFN(lina_mm)(nr, nc, V, 1.0f, dOt, ldv, 1, mm.tr, SA_BC, 0.0f, dPt, SA_BC, clo, chi, 0);
        for (int r = 0; r < nr; r++) {
            const float *Pr = Pt + (size_t)r * SA_BC, *dPr = dPt + (size_t)r * SA_BC;
            double acc = 0.0, sp = 0.0;
#pragma omp simd reduction(+ : acc, sp)
            for (int j = clo[r]; j < chi[r]; j++) {
                acc += (double)Pr[j] * dPr[j];
                sp += Pr[j];
            }
            D[r] += acc;
            D[SA_BR + r] += sp;
        }
    }
    for (int r = 0; r < nr; r++) {
        D[r] /= D[SA_BR + r]; /* sum_j P_ij: 1 up to the rounding of the P_ij */
    }
    /* 2. dS = P (dP - D), dQ, dK */
    for (int j0 = jlo; j0 < jhi; j0 += SA_BC) {
        const int nc = jhi - j0 < SA_BC ? jhi - j0 : SA_BC;
        float *Pt = P + (size_t)(j0 / SA_BC) * blk;
        const float *dPt = dP + (size_t)(j0 / SA_BC) * blk;
        sa_row_cols(c, i0, nr, j0, nc, clo, chi);
        sa_key_rows(c, i0, nr, j0, nc, klo, khi);
        for (int r = 0; r < nr; r++) {
            float *Pr = Pt + (size_t)r * SA_BC;
            const float *dPr = dPt + (size_t)r * SA_BC;
            const float Dr = (float)D[r];
            if (!c->cg) {
#pragma omp simd
                for (int j = clo[r]; j < chi[r]; j++) { /* P is 0 outside: so is dS */
                    Pr[j] *= dPr[j] - Dr; /* dS, in place */
                }
                continue;
            }
            double rs = 0.0;
#pragma omp simd reduction(+ : rs)
            for (int j = clo[r]; j < chi[r]; j++) {
                Pr[j] *= dPr[j] - Dr;
                rs += Pr[j];
            }
            /* the bias c_i - c_j: row sums to c_i, column sums from c_j */
            dc[i0 + r] += rs;
            for (int j = clo[r]; j < chi[r]; j++) {
                dc[j0 + j] -= Pr[j];
            }
        }
        LINA_KFN(lina_mm)(nr, K, nc, c->s, Pt, SA_BC, 1, LINA_ROW(in->k, b, j0, h, T, H, K), ldk, j0 > jlo ? 1.0f : 0.0f,
              LINA_ROW(g->dq, b, i0, h, T, H, K), ldk, clo, chi, 1);
        LINA_KFN(lina_mm)(nc, K, nr, c->s, Pt, 1, SA_BC, Q, ldk, seen[j0 / SA_BC] ? 1.0f : 0.0f,
              LINA_ROW(g->dk, b, j0, h, T, H, K), ldk, klo, khi, 1);
        seen[j0 / SA_BC] = 1;
    }
}

int LINA_KFN(lina_softmax_attn_bwd)(const lina_mix_dims *d, const lina_softmax_in *in,
                          const lina_softmax_grad_in *gin, lina_softmax_grad_out *gout,
                          lina_ws *ws)
{
    sa_ctx c;
    int rc = sa_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gin->do_ || !gout || !gout->dq || !gout->dk || !gout->dv || (in->g && !gout->dg)) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: do and the outputs dq, dk, dv (and dg with a gate) "
                              "are required");
    }
    if (c.T == 0) {
        return LINA_OK;
    }
    const int slot = lina_ws_extra_slot();
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, slot + 1))) {
        return rc;
    }
    double *cg = sa_cumgate(&c, in->g, &rc);
    c.cg = cg;
    if (rc) {
        lina_ws_scope_close(&sc);
        return rc;
    }
    const float *stat = gin->stat;
    if (!stat) {
        const size_t nr = (size_t)c.B * c.T * c.H;
        float *sb = lina_ws_get(sc.ws, slot, 2 * nr * sizeof(float));
        if (!sb) {
            free(cg);
            lina_ws_scope_close(&sc);
            return lina_set_error(LINA_ENOMEM, "softmax_attn: out of memory");
        }
        if ((rc = sa_fwd(&c, in, NULL, sb, sc.ws))) {
            free(cg);
            lina_ws_scope_close(&sc);
            return lina_set_error(rc, "softmax_attn: out of memory");
        }
        stat = sb;
    }
    const size_t need = sa_bwd_bytes(&c);
    const int t0 = c.q0 / SA_BR, nqt = (c.T + SA_BR - 1) / SA_BR;
    const size_t nkt = (size_t)(c.T + SA_BC - 1) / SA_BC;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < c.B * c.H; bh++) {
        const int b = bh / c.H, h = bh % c.H;
        char *mem = lina_ws_get(sc.ws, lina_thread_id(), need);
        if (!mem) {
            rc = LINA_ENOMEM;
            continue;
        }
        /* the head's key tiles seen so far, and (FoX) dc */
        sa_bwd_mem mm;
        sa_bwd_carve(&c, mem, &mm);
        unsigned char *seen = mm.seen;
        double *dc = mm.dc;
        memset(seen, 0, nkt);
        if (cg) {
            memset(dc, 0, (size_t)c.T * sizeof(double));
        }
        for (int qt = t0; qt < nqt; qt++) {
            const int g0 = qt * SA_BR, i0 = g0 > c.q0 ? g0 : c.q0, i1 = g0 + SA_BR < c.T ? g0 + SA_BR : c.T;
            if (i0 < i1) {
                sa_bwd_tile(&c, in, stat, gin->do_, gout, b, h, i0, i1 - i0, mem);
            }
        }
        /* keys no computed query sees (with q0 > 0: before the first one's window, or all when q0 = T) */
        for (size_t kt = 0; kt < nkt; kt++) {
            for (int j = (int)kt * SA_BC; !seen[kt] && j < c.T && j < (int)(kt + 1) * SA_BC; j++) {
                memset(LINA_ROW(gout->dk, b, j, h, c.T, c.H, c.K), 0, (size_t)c.K * sizeof(float));
                memset(LINA_ROW(gout->dv, b, j, h, c.T, c.H, c.V), 0, (size_t)c.V * sizeof(float));
            }
        }
        if (cg) { /* dg_t = sum_{i >= t} dc_i */
            double acc = 0.0;
            for (int t = c.T - 1; t >= 0; t--) {
                acc += dc[t];
                gout->dg[((size_t)b * c.T + t) * c.H + h] = (float)acc;
            }
        }
    }
    free(cg);
    lina_ws_scope_close(&sc);
    if (rc) {
        return lina_set_error(rc, "softmax_attn: out of memory");
    }
    return LINA_OK;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_softmax_attn_fwd,
                  (const lina_mix_dims *d, const lina_softmax_in *in, lina_softmax_out *out,
                   lina_ws *ws),
                  (d, in, out, ws))
LINA_ISA_DISPATCH(int, lina_softmax_attn_bwd,
                  (const lina_mix_dims *d, const lina_softmax_in *in,
                   const lina_softmax_grad_in *gin, lina_softmax_grad_out *gout, lina_ws *ws),
                  (d, in, gin, gout, ws))

/* ================================================ op for `lina op` / bench */

static int run_softmax_attn(const lina_tset *in, lina_tset *out, const lina_op_opts *o,
                            lina_ws *ws)
{
    lina_binds bd;
    const lina_tensor *q, *k, *v;
    int err = lina_op_qkv(in, &bd, &q, &k, &v);
    if (err) {
        return err;
    }
    if (lina_tset_cfind(in, "h0")) {
        return lina_set_error(LINA_EINVAL, "h0.npy given, but softmax_attn has no initial state");
    }
    if (o->window < 0) {
        return lina_set_error(LINA_EINVAL, "--window must be >= 1 (got %d)", o->window);
    }
    if (o->window > 0 && o->non_causal) {
        return lina_set_error(LINA_EINVAL, "--window and --non-causal exclude each other");
    }
    const lina_tensor *dO = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTHV", &bd, 0, &err);
        if (err) {
            return err;
        }
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['H' - 'A'],
                       (int)bd.v['K' - 'A'], (int)bd.v['V' - 'A'], o->chunk, 0.0f};
    lina_softmax_in sin = {q->data, k->data, v->data, o->window, o->non_causal, NULL, 0};
    float *po = lina_op_output(out, "o", "BTHV", &bd);
    if (!po) {
        return LINA_ENOMEM;
    }
    float *stat = NULL;
    if (o->backward) {
        stat = malloc((2 * (size_t)d.B * d.T * d.H + 1) * sizeof(float));
        if (!stat) {
            return lina_set_error(LINA_ENOMEM, "softmax_attn: out of memory");
        }
    }
    lina_softmax_out so = {po, stat};
    int rc = lina_softmax_attn_fwd(&d, &sin, &so, ws);
    if (!rc && o->backward) {
        lina_softmax_grad_out g = {lina_op_output(out, "dq", "BTHK", &bd),
                                   lina_op_output(out, "dk", "BTHK", &bd),
                                   lina_op_output(out, "dv", "BTHV", &bd), NULL};
        if (!g.dq || !g.dk || !g.dv) {
            rc = LINA_ENOMEM;
        } else {
            lina_softmax_grad_in gi = {dO->data, stat};
            rc = lina_softmax_attn_bwd(&d, &sin, &gi, &g, ws);
        }
    }
    free(stat);
    return rc;
}

static int mk_softmax_attn(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V};
    int rc = lina_bench_tensor(in, "q", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, sv, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule): 2*B*H*P*(K+V), P the number of allowed (query, key)
 * pairs -- QK^T and PV, 2 flops per multiply-add; the softmax itself is not
 * counted:
 *   causal          P = T(T+1)/2
 *   window W < T    P = W(W+1)/2 + (T-W) W     (W >= T: as causal)
 *   non-causal      P = T^2 */
static double softmax_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    const double T = d->T;
    double P;
    if (o->non_causal) {
        P = T * T;
    } else if (o->window > 0 && o->window < d->T) {
        const double W = o->window;
        P = W * (W + 1) / 2 + (T - W) * W;
    } else {
        P = T * (T + 1) / 2;
    }
    return 2.0 * d->B * d->H * P * (d->K + d->V);
}

const lina_op_info lina_op_softmax_attn = {
    "softmax_attn", "exact softmax attention (causal, sliding window or non-causal), tiled",
    {"--window", "--non-causal", NULL},
    run_softmax_attn, mk_softmax_attn, softmax_flops};

/* forgetting_attn: q [B,T,J,K] and g [B,T,J] on J query heads, k, v on H kv
 * heads (J a multiple of H; query head j reads kv head j / (J/H)) */
static int run_forgetting_attn(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    lina_binds bd;
    lina_binds_init(&bd);
    int err = 0;
    const lina_tensor *q = lina_op_input(in, "q", "BTJK", &bd, 0, &err);
    const lina_tensor *k = err ? NULL : lina_op_input(in, "k", "BTHK", &bd, 0, &err);
    const lina_tensor *v = err ? NULL : lina_op_input(in, "v", "BTHV", &bd, 0, &err);
    const lina_tensor *g = err ? NULL : lina_op_input(in, "g", "BTJ", &bd, 0, &err);
    const lina_tensor *dO = NULL;
    if (!err && o->backward) {
        dO = lina_op_input(in, "do", "BTJV", &bd, 0, &err);
    }
    if (err) {
        return err;
    }
    if (lina_tset_cfind(in, "h0")) {
        return lina_set_error(LINA_EINVAL, "h0.npy given, but forgetting_attn has no initial state");
    }
    if (o->window < 0) {
        return lina_set_error(LINA_EINVAL, "--window must be >= 1 (got %d)", o->window);
    }
    const int64_t ng = lina_op_trusted() ? 0 : lina_tensor_numel(g);
    for (int64_t i = 0; i < ng; i++) {
        if (g->data[i] > 0.0f) {
            return lina_set_error(LINA_EINVAL, "g.npy must hold log forget gates <= 0 (found %g at index %lld)",
                                  (double)g->data[i], (long long)i);
        }
    }
    const int64_t Hq = bd.v['J' - 'A'], Hk = bd.v['H' - 'A'];
    if (bd.v['B' - 'A'] == 0 || Hq == 0 || Hk == 0 || bd.v['K' - 'A'] == 0 || bd.v['V' - 'A'] == 0) {
        return lina_set_error(LINA_EINVAL, "B, H, K and V must be positive");
    }
    if (Hq % Hk != 0) {
        return lina_set_error(LINA_EINVAL, "q.npy has %lld heads, which is not a multiple of the %lld heads of k.npy",
                              (long long)Hq, (long long)Hk);
    }
    const int G = (int)(Hq / Hk);
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)Hq, (int)bd.v['K' - 'A'],
                       (int)bd.v['V' - 'A'], o->chunk, 0.0f};
    const size_t BT = (size_t)d.B * d.T, nk = BT * Hq * d.K, nv = BT * Hq * d.V;
    /* k, v per query head (G > 1), their gradients, the row statistics */
    float *buf = malloc(((G > 1 ? 2 * (nk + nv) : 0) + 2 * BT * Hq + 1) * sizeof(float));
    if (!buf) {
        return lina_set_error(LINA_ENOMEM, "forgetting_attn: out of memory");
    }
    float *stat = buf, *rk = stat + 2 * BT * Hq, *rv = rk + nk, *gk = rv + nv, *gv = gk + nk;
    lina_softmax_in sin = {q->data, k->data, v->data, o->window, 0, g->data, 0};
    if (G > 1) {
        lina_op_heads_repeat(BT, (int)Hk, G, d.K, k->data, rk);
        lina_op_heads_repeat(BT, (int)Hk, G, d.V, v->data, rv);
        sin.k = rk;
        sin.v = rv;
    }
    int rc = LINA_ENOMEM;
    float *po = lina_op_output(out, "o", "BTJV", &bd);
    if (po) {
        lina_softmax_out so = {po, stat};
        rc = lina_softmax_attn_fwd(&d, &sin, &so, ws);
    }
    if (!rc && o->backward) {
        float *pdq = lina_op_output(out, "dq", "BTJK", &bd), *pdk = lina_op_output(out, "dk", "BTHK", &bd);
        float *pdv = lina_op_output(out, "dv", "BTHV", &bd), *pdg = lina_op_output(out, "dg", "BTJ", &bd);
        if (!pdq || !pdk || !pdv || !pdg) {
            rc = LINA_ENOMEM;
        } else {
            lina_softmax_grad_out gr = {pdq, G > 1 ? gk : pdk, G > 1 ? gv : pdv, pdg};
            lina_softmax_grad_in gi = {dO->data, stat};
            rc = lina_softmax_attn_bwd(&d, &sin, &gi, &gr, ws);
            if (!rc && G > 1) {
                lina_op_heads_reduce(BT, (int)Hk, G, d.K, gk, pdk);
                lina_op_heads_reduce(BT, (int)Hk, G, d.V, gv, pdv);
            }
        }
    }
    free(buf);
    if (rc && !lina_last_error()[0]) {
        lina_set_error(rc, "forgetting_attn: out of memory");
    }
    return rc;
}

/* benchmark inputs: q, k, v ~ N(0,1), g ~ U(-0.5, -0.01) (one kv head per query head) */
static int mk_forgetting_attn(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed ^ 0x5f0f;
    int64_t sg[3] = {d->B, d->T, d->H};
    int rc = mk_softmax_attn(d, backward, seed, in);
    return rc ? rc : lina_bench_tensor(in, "g", 3, sg, &rng, -0.5f, -0.01f, 0);
}

/* the causal (or windowed) softmax attention count; the bias adds one
 * subtraction per allowed pair, not counted */
static double forgetting_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    lina_op_opts oc = *o;
    oc.non_causal = 0;
    return softmax_flops(d, &oc);
}

const lina_op_info lina_op_forgetting_attn = {
    "forgetting_attn", "Forgetting Transformer: softmax attention with the logit bias sum_{j<u<=i} g_u, tiled",
    {"--window", NULL}, run_forgetting_attn, mk_forgetting_attn, forgetting_flops};
#endif /* LINA_ISA_PRIMARY */
