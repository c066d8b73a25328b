/*
 * ggml_bench.c -- llama.cpp's ggml CPU ops next to lina's kernels, in one
 * process, on the same inputs (bench/ggml/run.sh builds and runs it; see
 * bench/README.md for building ggml).
 *
 *   ggml_bench [--T n] [--threads a,b,...] [--repeat r] [--cases a,b,...] [--cpu] [--check-only]
 *
 * --cases names the timed pairs (gla, gdn, kda, rwkv7, mamba2, mamba1; all by
 * default); the check on small shapes always covers every pair. --cpu times
 * by the least process CPU time of the runs (and SGEMM per CPU second), not
 * the median wall time: meant for one thread on a shared machine.
 *
 * First a check on small shapes: ggml and lina get the same inputs (mapped
 * to each one's conventions) and their outputs and final states are
 * compared. Then the timings at the benchmark shape: the median of r runs
 * after a warm-up, per thread count, with OpenBLAS SGEMM (n = 1024, best of
 * 7) measured in the same process. Prints Markdown.
 *
 * Pairs (ggml op <-> lina kernel):
 *   ggml_gated_linear_attn            <-> gla (lina_dd_fwd, vector gate)
 *   ggml_gated_delta_net, scalar gate <-> gated_delta_rule (lina_delta_fwd)
 *   ggml_gated_delta_net, vector gate <-> the registry op "kda", if present
 *   ggml_rwkv_wkv7                    <-> the registry op "rwkv7", if present
 *   ggml_ssm_scan, Mamba-2 (A [1,H])  <-> simple_gla (lina_dd_fwd, scalar gate, scale 1)
 *   ggml_ssm_scan, Mamba-1 (A [N,E])  <-> gla with K = N, V = 1, one head per channel
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-cpu.h"
#include "ggml.h"
#include "lina.h"
#include "../../src/train/model_bench.h" /* lina_bench_sgemm_gflops: the rate lina bench uses */

/* ------------------------------------------------------------ inputs */

static uint64_t g_seed = 12345;

static float urand(float lo, float hi)
{
    return lo + (hi - lo) * (float)(lina_splitmix64(&g_seed) >> 40) * (1.0f / 16777216.0f);
}

static float *buf(size_t n)
{
    float *x = calloc(n ? n : 1, sizeof(float));
    if (!x) {
        fprintf(stderr, "ggml_bench: out of memory (%zu floats)\n", n);
        exit(1);
    }
    return x;
}

static float *rnd(size_t n, float lo, float hi)
{
    float *x = buf(n);
    for (size_t i = 0; i < n; i++) {
        x[i] = urand(lo, hi);
    }
    return x;
}

/* rows of length K scaled to unit L2 norm (the delta rule's keys) */
static void l2rows(float *x, size_t rows, int K)
{
    for (size_t r = 0; r < rows; r++) {
        double s = 0.0;
        for (int i = 0; i < K; i++) {
            s += (double)x[r * K + i] * x[r * K + i];
        }
        float inv = (float)(1.0 / sqrt(s + 1e-12));
        for (int i = 0; i < K; i++) {
            x[r * K + i] *= inv;
        }
    }
}

static float logsigmoidf_(float x)
{
    return x >= 0 ? -log1pf(expf(-x)) : x - log1pf(expf(x));
}

static float softplusf_(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

/* ------------------------------------------------------------- ggml */

typedef struct gg {
    struct ggml_context *ctx;
    struct ggml_cgraph *gf;
    struct ggml_tensor *out;
    uint8_t *work;
    size_t work_size;
} gg;

static void gg_init(gg *g, size_t floats)
{
    struct ggml_init_params ip = {floats * sizeof(float) + 32 * ggml_tensor_overhead() +
                                      ggml_graph_overhead() + (1 << 20),
                                  NULL, false};
    memset(g, 0, sizeof *g);
    g->ctx = ggml_init(ip);
    if (!g->ctx) {
        fprintf(stderr, "ggml_bench: ggml_init failed\n");
        exit(1);
    }
}

static struct ggml_tensor *gg_t(gg *g, int64_t n0, int64_t n1, int64_t n2, int64_t n3, const float *src)
{
    struct ggml_tensor *t = ggml_new_tensor_4d(g->ctx, GGML_TYPE_F32, n0, n1, n2, n3);
    memcpy(t->data, src, (size_t)(n0 * n1 * n2 * n3) * sizeof(float));
    return t;
}

static void gg_graph(gg *g, struct ggml_tensor *out)
{
    g->out = out;
    g->gf = ggml_new_graph(g->ctx);
    ggml_build_forward_expand(g->gf, out);
}

static void gg_run(gg *g, int threads)
{
    struct ggml_cplan plan = ggml_graph_plan(g->gf, threads, NULL);
    if (plan.work_size > g->work_size) {
        free(g->work);
        g->work = malloc(plan.work_size);
        g->work_size = plan.work_size;
        if (!g->work) {
            fprintf(stderr, "ggml_bench: out of memory (ggml work buffer)\n");
            exit(1);
        }
    }
    plan.work_data = g->work;
    if (ggml_graph_compute(g->gf, &plan) != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "ggml_bench: ggml_graph_compute failed\n");
        exit(1);
    }
}

static void gg_free(gg *g)
{
    free(g->work);
    ggml_free(g->ctx);
    memset(g, 0, sizeof *g);
}

/* ----------------------------------------------------------- timing */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* --cpu: time calls by the least process CPU time over the runs instead of
 * the median wall time (at one thread, what other processes on a shared
 * machine disturb least) */
static int g_cpu;

/* A timed call: fn(arg) once as a warm-up, then the median wall time of
 * `repeat` runs (ms), or with g_cpu their least process CPU time. */
typedef void (*run_fn)(void *arg);

static double time_ms(run_fn fn, void *arg, int repeat)
{
    double t[64];
    repeat = repeat < 1 ? 1 : repeat > 64 ? 64 : repeat;
    fn(arg);
    for (int r = 0; r < repeat; r++) {
        double t0 = g_cpu ? cpu_now() : lina_now();
        fn(arg);
        t[r] = ((g_cpu ? cpu_now() : lina_now()) - t0) * 1e3;
    }
    qsort(t, (size_t)repeat, sizeof t[0], cmp_d);
    if (g_cpu) {
        return t[0];
    }
    return repeat % 2 ? t[repeat / 2] : 0.5 * (t[repeat / 2 - 1] + t[repeat / 2]);
}

/* ------------------------------------------------------------ cases */

/* What one case yields: ggml and lina outputs (o then final state, both in
 * lina's layout) and, when timed, the times. */
typedef struct result {
    const char *op, *lina_op, *shape;
    double flops;          /* recurrent-form count of the shared recurrence */
    int have_lina;
    double ggml_ms, lina_ms[2]; /* lina_ms[form]: LINA_FORM_RECURRENT, LINA_FORM_CHUNK */
    double err_o, err_h;   /* max |ggml - lina| / max(1, max |lina|) */
} result;

typedef struct ctx {
    int threads, repeat, timing;
} ctx;

static double relerr(const float *a, const float *b, size_t n)
{
    double e = 0.0, m = 1.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        e = d > e ? d : e;
        m = fabs(b[i]) > m ? fabs(b[i]) : m;
    }
    return e / m;
}

/* [.., R, C] -> [.., C, R] for `mats` matrices */
static void transpose_mats(float *dst, const float *src, size_t mats, int R, int C)
{
    for (size_t m = 0; m < mats; m++) {
        for (int r = 0; r < R; r++) {
            for (int c = 0; c < C; c++) {
                dst[m * R * C + (size_t)c * R + r] = src[m * R * C + (size_t)r * C + c];
            }
        }
    }
}

typedef struct gg_job {
    gg *g;
    int threads;
} gg_job;

static void run_gg(void *a)
{
    gg_job *j = a;
    gg_run(j->g, j->threads);
}

/* lina side of a case: a closure over the kernel call */
typedef struct lina_job {
    int kind; /* 0: dd, 1: delta, 2: registry op */
    int delta_softplus; /* registry op option (mamba) */
    lina_mix_dims d;
    lina_dd_in dd;
    lina_delta_in de;
    float *o, *ht;
    lina_form form;
    lina_ws *ws;
    const lina_op_info *op;
    const lina_tset *in;
    lina_tset *out;
} lina_job;

static void run_lina(void *a)
{
    lina_job *j = a;
    int rc = 0;
    if (j->kind == 0) {
        lina_dd_out out = {j->o, j->ht, NULL};
        rc = lina_dd_fwd(&j->d, &j->dd, &out, j->form, j->ws);
    } else if (j->kind == 1) {
        lina_delta_out out = {j->o, j->ht, NULL};
        rc = lina_delta_fwd(&j->d, &j->de, &out, j->form, j->ws);
    } else {
        lina_op_opts o = {0};
        o.form = j->form;
        o.trusted = 1;
        o.delta_softplus = j->delta_softplus;
        rc = lina_op_run(j->op, j->in, j->out, &o, j->ws);
    }
    if (rc) {
        fprintf(stderr, "ggml_bench: lina: %s\n", lina_last_error());
        exit(1);
    }
}

/* run the lina job in both forms: time each (when timing), keep the chunk
 * form's outputs (the recurrent form's are compared to them in lina's own
 * tests) */
static void lina_both(lina_job *j, const ctx *c, result *r)
{
    for (int f = 1; f >= 0; f--) {
        j->form = (lina_form)f;
        if (c->timing) {
            r->lina_ms[f] = time_ms(run_lina, j, c->repeat);
        } else {
            run_lina(j);
        }
    }
    j->form = LINA_FORM_CHUNK;
    run_lina(j);
}

/* the outputs o and ht of a registry op, copied out */
static void take_oh(const lina_tset *out, const char *op, float *o, size_t no, float *ht, size_t nh)
{
    const lina_tensor *to = lina_tset_cfind(out, "o"), *th = lina_tset_cfind(out, "ht");
    if (!to || !th || lina_tensor_numel(to) != (int64_t)no || lina_tensor_numel(th) != (int64_t)nh) {
        fprintf(stderr, "ggml_bench: lina %s: outputs o and ht of the input shapes expected\n", op);
        exit(1);
    }
    memcpy(o, to->data, no * sizeof(float));
    memcpy(ht, th->data, nh * sizeof(float));
}

static void ggml_side(gg *g, const ctx *c, result *r)
{
    gg_job gj = {g, c->threads};
    if (c->timing) {
        r->ggml_ms = time_ms(run_gg, &gj, c->repeat);
    } else {
        run_gg(&gj);
    }
}

/* GLA: h_t = diag(exp(g_t)) h_{t-1} + k_t v_t^T, o_t = scale h_t^T q_t.
 * ggml takes the decay itself (exp(g)), lina the log decay; both [T,H,K]
 * rows with the state [H,K,V]. */
static void case_gla(int B, int T, int H, int K, const ctx *c, result *r)
{
    const int V = K;
    size_t nq = (size_t)B * T * H * K, ns = (size_t)B * H * K * V;
    float *q = rnd(nq, -1, 1), *k = rnd(nq, -1, 1), *v = rnd(nq, -1, 1), *g = buf(nq), *eg = buf(nq);
    float *h0 = rnd(ns, -0.5f, 0.5f);
    for (size_t i = 0; i < nq; i++) {
        g[i] = logsigmoidf_(urand(-3, 3)) / 16.0f; /* FLA's GLA gate: logsigmoid(x) / 16 */
        eg[i] = expf(g[i]);
    }
    r->op = "gated_linear_attn";
    r->lina_op = "gla";
    r->flops = 4.0 * B * T * H * (double)K * V;
    gg gc;
    gg_init(&gc, 6 * nq + 3 * ns);
    struct ggml_tensor *tk = gg_t(&gc, K, H, (int64_t)B * T, 1, k), *tv = gg_t(&gc, V, H, (int64_t)B * T, 1, v);
    struct ggml_tensor *tq = gg_t(&gc, K, H, (int64_t)B * T, 1, q), *tg = gg_t(&gc, K, H, (int64_t)B * T, 1, eg);
    struct ggml_tensor *ts = gg_t(&gc, (int64_t)K * V * H, B, 1, 1, h0);
    gg_graph(&gc, ggml_gated_linear_attn(gc.ctx, tk, tv, tq, tg, ts, 1.0f / sqrtf((float)K)));
    ggml_side(&gc, c, r);
    const float *go = (const float *)gc.out->data;

    float *o = buf(nq), *ht = buf(ns);
    lina_ws ws;
    lina_ws_init(&ws);
    lina_job j = {0};
    j.kind = 0;
    j.d = (lina_mix_dims){B, T, H, K, V, 0, 0.0f};
    j.dd = (lina_dd_in){q, k, v, LINA_GATE_VECTOR, g, h0};
    j.o = o;
    j.ht = ht;
    j.ws = &ws;
    lina_both(&j, c, r);
    r->have_lina = 1;
    r->err_o = relerr(go, o, nq);
    r->err_h = relerr(go + nq, ht, ns);
    lina_ws_free(&ws);
    gg_free(&gc);
    free(q), free(k), free(v), free(g), free(eg), free(h0), free(o), free(ht);
}

/* Gated DeltaNet / KDA: S' = diag(exp(g_t)) S (scalar or per key channel),
 * u = beta (v - S'^T k), S = S' + k u^T, o = K^-1/2 S^T q. ggml keeps S
 * transposed ([H,V,K]); lina [H,K,V]. Keys (and queries) L2-normalised. */
static void case_gdn(int B, int T, int H, int K, int gmode, const ctx *c, result *r)
{
    const int V = K;
    const int vector_gate = gmode == 1;
    size_t nq = (size_t)B * T * H * K, ns = (size_t)B * H * K * V, nb = (size_t)B * T * H;
    size_t ng = vector_gate ? nq : nb;
    float *q = rnd(nq, -1, 1), *k = rnd(nq, -1, 1), *v = rnd(nq, -1, 1), *g = buf(ng), *beta = buf(nb);
    float *h0 = rnd(ns, -0.5f, 0.5f), *h0t = buf(ns);
    l2rows(q, (size_t)B * T * H, K);
    l2rows(k, (size_t)B * T * H, K);
    for (size_t i = 0; i < ng; i++) {
        g[i] = -urand(0.001f, 0.2f);
    }
    for (size_t i = 0; i < nb; i++) {
        beta[i] = 1.0f / (1.0f + expf(-urand(-3, 3)));
    }
    transpose_mats(h0t, h0, (size_t)B * H, K, V);
    /* gmode 2: ggml gets a per-channel gate equal over the channels (checks the
     * vector-gate path against the scalar-gate kernel) */
    float *gv = gmode == 2 ? buf(nq) : NULL;
    for (size_t i = 0; gv && i < nq; i++) {
        gv[i] = g[i / (size_t)K];
    }
    r->op = gmode == 1 ? "gated_delta_net, per-channel gate (KDA)"
          : gmode == 2 ? "gated_delta_net, per-channel gate equal over channels" : "gated_delta_net";
    r->lina_op = vector_gate ? "kda" : "gated_delta_rule";
    r->flops = 7.0 * B * T * H * (double)K * V;
    const lina_op_info *kda = vector_gate ? lina_op_find("kda") : NULL;
    if (vector_gate && !kda) {
        r->have_lina = 0;
    }
    gg gc;
    gg_init(&gc, 6 * nq + 3 * ns + 2 * nb);
    struct ggml_tensor *tq = gg_t(&gc, K, H, T, B, q), *tk = gg_t(&gc, K, H, T, B, k);
    struct ggml_tensor *tv = gg_t(&gc, V, H, T, B, v);
    struct ggml_tensor *tg = gv ? gg_t(&gc, K, H, T, B, gv) : gg_t(&gc, vector_gate ? K : 1, H, T, B, g);
    struct ggml_tensor *tb = gg_t(&gc, 1, H, T, B, beta), *ts = gg_t(&gc, V, K, H, B, h0t);
    gg_graph(&gc, ggml_gated_delta_net(gc.ctx, tq, tk, tv, tg, tb, ts, 1));
    ggml_side(&gc, c, r);
    float *gh = buf(ns);
    transpose_mats(gh, (const float *)gc.out->data + nq, (size_t)B * H, V, K);

    if (!vector_gate || kda) {
        float *o = buf(nq), *ht = buf(ns);
        lina_ws ws;
        lina_ws_init(&ws);
        lina_job j = {0};
        j.ws = &ws;
        lina_tset in = {0}, out = {0};
        if (!vector_gate) {
            j.kind = 1;
            j.d = (lina_mix_dims){B, T, H, K, V, 0, 0.0f};
            j.de = (lina_delta_in){q, k, v, beta, g, h0, 1, NULL};
            j.o = o;
            j.ht = ht;
        } else {
            /* the registry op of the KDA contract: q, k, v, g [B,T,H,K], beta [B,T,H], h0 */
            const int64_t s4[4] = {B, T, H, K}, s3[3] = {B, T, H}, sh[4] = {B, H, K, V};
            memcpy(lina_tset_out(&in, "q", 4, s4), q, nq * sizeof(float));
            memcpy(lina_tset_out(&in, "k", 4, s4), k, nq * sizeof(float));
            memcpy(lina_tset_out(&in, "v", 4, s4), v, nq * sizeof(float));
            memcpy(lina_tset_out(&in, "g", 4, s4), g, nq * sizeof(float));
            memcpy(lina_tset_out(&in, "beta", 3, s3), beta, nb * sizeof(float));
            memcpy(lina_tset_out(&in, "h0", 4, sh), h0, ns * sizeof(float));
            j.kind = 2;
            j.op = kda;
            j.in = &in;
            j.out = &out;
        }
        lina_both(&j, c, r);
        if (vector_gate) {
            take_oh(&out, "kda", o, nq, ht, ns);
        }
        r->have_lina = 1;
        r->err_o = relerr((const float *)gc.out->data, o, nq);
        r->err_h = relerr(gh, ht, ns);
        lina_tset_free(&in);
        lina_tset_free(&out);
        lina_ws_free(&ws);
        free(o), free(ht);
    }
    gg_free(&gc);
    free(q), free(k), free(v), free(g), free(gv), free(beta), free(h0), free(h0t), free(gh);
}

/* RWKV-7 (DPLR): S_t = diag(w_t) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,
 * o_t = S_t^T r_t (scale 1). ggml takes the decay w = exp(log w) and keeps S
 * transposed ([H,V,K]); the lina op contract takes the log decay. Inputs as
 * the RWKV-7 layer makes them: log w = -e^(-1/2) sigmoid(.), a = -kappa,
 * b = kappa * iclr with kappa L2-normalised.
 * mode 0: the full op against the registry op "rwkv7" (when lina has one);
 * mode 1: a = b = 0, which is GLA (scale 1);
 * mode 2: w = 1, a = -beta k, b = k, v <- beta v, which is DeltaNet (scale 1).
 * Modes 1 and 2 check ggml's layout and conventions against lina's kernels. */
static void case_rwkv7(int B, int T, int H, int K, int mode, const ctx *c, result *r)
{
    const int V = K;
    size_t nq = (size_t)B * T * H * K, ns = (size_t)B * H * K * V, nb = (size_t)B * T * H;
    float *rr = rnd(nq, -1, 1), *k = rnd(nq, -0.5f, 0.5f), *v = rnd(nq, -1, 1), *w = buf(nq), *ew = buf(nq);
    float *a = rnd(nq, -1, 1), *b = buf(nq), *h0 = rnd(ns, -0.5f, 0.5f), *h0t = buf(ns);
    float *beta = buf(nb), *gv = buf(nq);
    l2rows(a, (size_t)B * T * H, K);
    if (mode == 2) {
        l2rows(k, (size_t)B * T * H, K);
    }
    for (size_t i = 0; i < nb; i++) {
        beta[i] = 1.0f / (1.0f + expf(-urand(-3, 3)));
    }
    for (size_t i = 0; i < nq; i++) {
        w[i] = mode == 2 ? 0.0f : -0.60653066f / (1.0f + expf(-urand(-3, 3)));
        ew[i] = expf(w[i]);
        b[i] = mode == 1 ? 0.0f : mode == 2 ? k[i] : a[i] * urand(0, 1);
        a[i] = mode == 1 ? 0.0f : mode == 2 ? -beta[i / (size_t)K] * k[i] : -a[i];
        gv[i] = mode == 2 ? beta[i / (size_t)K] * v[i] : v[i];
    }
    transpose_mats(h0t, h0, (size_t)B * H, K, V);
    r->op = mode == 0 ? "rwkv_wkv7" : mode == 1 ? "rwkv_wkv7 with a = b = 0" : "rwkv_wkv7 as DeltaNet";
    r->lina_op = mode == 0 ? "rwkv7" : mode == 1 ? "gla (scale 1)" : "delta_rule (scale 1)";
    r->flops = 6.0 * B * T * H * (double)K * V; /* decay+update 2, a^T S 2, read 2 per entry */
    const lina_op_info *op = mode == 0 ? lina_op_find("rwkv7") : NULL;
    gg gc;
    gg_init(&gc, 8 * nq + 3 * ns);
    int64_t BT = (int64_t)B * T;
    struct ggml_tensor *tr = gg_t(&gc, K, H, BT, 1, rr), *tw = gg_t(&gc, K, H, BT, 1, ew);
    struct ggml_tensor *tk = gg_t(&gc, K, H, BT, 1, k), *tv = gg_t(&gc, V, H, BT, 1, gv);
    struct ggml_tensor *ta = gg_t(&gc, K, H, BT, 1, a), *tb = gg_t(&gc, K, H, BT, 1, b);
    struct ggml_tensor *ts = gg_t(&gc, (int64_t)K * V * H, B, 1, 1, h0t);
    gg_graph(&gc, ggml_rwkv_wkv7(gc.ctx, tr, tw, tk, tv, ta, tb, ts));
    ggml_side(&gc, c, r);
    if (op || mode) {
        float *gh = buf(ns), *o = buf(nq), *ht = buf(ns);
        transpose_mats(gh, (const float *)gc.out->data + nq, (size_t)B * H, V, K);
        lina_ws ws;
        lina_ws_init(&ws);
        lina_tset in = {0}, out = {0};
        lina_job j = {0};
        j.ws = &ws;
        j.d = (lina_mix_dims){B, T, H, K, V, 0, 1.0f};
        j.o = o;
        j.ht = ht;
        if (mode == 1) {
            j.kind = 0;
            j.dd = (lina_dd_in){rr, k, v, LINA_GATE_VECTOR, w, h0};
        } else if (mode == 2) {
            j.kind = 1;
            j.de = (lina_delta_in){rr, k, v, beta, NULL, h0, 1, NULL};
        } else {
            const int64_t s4[4] = {B, T, H, K}, sh[4] = {B, H, K, V};
            const char *names[6] = {"r", "w", "k", "v", "a", "b"};
            const float *src[6] = {rr, w, k, v, a, b};
            for (int i = 0; i < 6; i++) {
                memcpy(lina_tset_out(&in, names[i], 4, s4), src[i], nq * sizeof(float));
            }
            memcpy(lina_tset_out(&in, "h0", 4, sh), h0, ns * sizeof(float));
            j.kind = 2;
            j.op = op;
            j.in = &in;
            j.out = &out;
        }
        lina_both(&j, c, r);
        if (mode == 0) {
            take_oh(&out, "rwkv7", o, nq, ht, ns);
        }
        r->have_lina = 1;
        r->err_o = relerr((const float *)gc.out->data, o, nq);
        r->err_h = relerr(gh, ht, ns);
        lina_tset_free(&in);
        lina_tset_free(&out);
        lina_ws_free(&ws);
        free(gh), free(o), free(ht);
    }
    gg_free(&gc);
    free(rr), free(k), free(v), free(w), free(ew), free(a), free(b), free(h0), free(h0t);
    free(beta), free(gv);
}

/* Selective scan. ggml: Delta = softplus(dt); state[h,p,n] = state * exp(Delta A)
 * + B[n] x[p] Delta; y[h,p] = sum_n state C[n] (B, C shared by the heads: one
 * group). As linear attention: q = C, k = B, v = Delta x, log gate Delta A,
 * scale 1, K = N, V = P; ggml's state is [H,P,N], lina's [H,N,P].
 *   mamba2: A [1,H]: one decay per head -> simple_gla (scalar gate);
 *   mamba1: A [N,E]: P = 1 and one head per channel -> the registry op "mamba"
 *   (the selective scan, --delta-softplus; ggml's state [E,1,N] is lina's [E,N]),
 *   or gla (vector gate) in a lina without it. */
static void case_ssm(int B, int T, int H, int P, int N, int mamba1, const ctx *c, result *r)
{
    size_t nx = (size_t)B * T * H * P, nbc = (size_t)B * T * N, ns = (size_t)B * H * P * N;
    size_t nqk = (size_t)B * T * H * N, na = mamba1 ? (size_t)H * N : (size_t)H;
    float *x = rnd(nx, -1, 1), *dt = rnd((size_t)B * T * H, -4, 0), *Bm = rnd(nbc, -1, 1);
    float *Cm = rnd(nbc, -1, 1), *A = buf(na), *s0 = rnd(ns, -0.5f, 0.5f);
    for (size_t i = 0; i < na; i++) {
        A[i] = mamba1 ? -(float)(1 + i % (size_t)N) : -urand(1, 16); /* Mamba's A_log inits */
    }
    r->op = mamba1 ? "ssm_scan, Mamba-1" : "ssm_scan, Mamba-2";
    const lina_op_info *scan = mamba1 ? lina_op_find("mamba") : NULL;
    r->lina_op = scan ? "mamba (the scan)" : mamba1 ? "gla (K=N, V=1, a head per channel)" : "simple_gla (scale 1)";
    r->flops = 4.0 * B * T * H * (double)P * N;
    gg gc;
    gg_init(&gc, 2 * nx + 2 * nbc + 3 * ns + na + (size_t)B * T * H + B);
    struct ggml_tensor *ts = gg_t(&gc, N, P, H, B, s0), *tx = gg_t(&gc, P, H, T, B, x);
    struct ggml_tensor *tdt = gg_t(&gc, H, T, B, 1, dt), *tA = gg_t(&gc, mamba1 ? N : 1, H, 1, 1, A);
    struct ggml_tensor *tB = gg_t(&gc, N, 1, T, B, Bm), *tC = gg_t(&gc, N, 1, T, B, Cm);
    struct ggml_tensor *ids = ggml_new_tensor_1d(gc.ctx, GGML_TYPE_I32, B);
    for (int b = 0; b < B; b++) {
        ((int32_t *)ids->data)[b] = b;
    }
    gg_graph(&gc, ggml_ssm_scan(gc.ctx, ts, tx, tdt, tA, tB, tC, ids, 1));
    ggml_side(&gc, c, r);
    float *gh = buf(ns);
    transpose_mats(gh, (const float *)gc.out->data + nx, (size_t)B * H, P, N);

    /* lina's inputs: broadcast B, C to every head, v = Delta x, g = Delta A */
    float *q = buf(nqk), *k = buf(nqk), *v = buf(nx), *g = buf(mamba1 ? nqk : (size_t)B * T * H);
    float *h0 = buf(ns), *o = buf(nx), *ht = buf(ns);
    transpose_mats(h0, s0, (size_t)B * H, P, N);
    for (size_t bt = 0; bt < (size_t)B * T; bt++) {
        for (int h = 0; h < H; h++) {
            float D = softplusf_(dt[bt * H + h]);
            memcpy(q + (bt * H + h) * N, Cm + bt * N, N * sizeof(float));
            memcpy(k + (bt * H + h) * N, Bm + bt * N, N * sizeof(float));
            for (int p = 0; p < P; p++) {
                v[(bt * H + h) * P + p] = D * x[(bt * H + h) * P + p];
            }
            if (mamba1) {
                for (int n = 0; n < N; n++) {
                    g[(bt * H + h) * N + n] = D * A[(size_t)h * N + n];
                }
            } else {
                g[bt * H + h] = D * A[h];
            }
        }
    }
    lina_ws ws;
    lina_ws_init(&ws);
    lina_job j = {0};
    lina_tset sin = {0}, sout = {0};
    j.kind = 0;
    j.d = (lina_mix_dims){B, T, H, N, P, 0, 1.0f};
    j.dd = (lina_dd_in){q, k, v, mamba1 ? LINA_GATE_VECTOR : LINA_GATE_SCALAR, g, h0};
    j.o = o;
    j.ht = ht;
    j.ws = &ws;
    if (scan) { /* u = x, delta = dt (softplus inside), A [E,N], B, C [B,T,N], h0 [B,E,N] */
        const int64_t se[3] = {B, T, H}, sa[2] = {H, N}, sn[3] = {B, T, N}, sh[3] = {B, H, N};
        memcpy(lina_tset_out(&sin, "u", 3, se), x, nx * sizeof(float));
        memcpy(lina_tset_out(&sin, "delta", 3, se), dt, nx * sizeof(float));
        memcpy(lina_tset_out(&sin, "A", 2, sa), A, na * sizeof(float));
        memcpy(lina_tset_out(&sin, "B", 3, sn), Bm, nbc * sizeof(float));
        memcpy(lina_tset_out(&sin, "C", 3, sn), Cm, nbc * sizeof(float));
        memcpy(lina_tset_out(&sin, "h0", 3, sh), s0, ns * sizeof(float));
        j.kind = 2;
        j.op = scan;
        j.in = &sin;
        j.out = &sout;
        j.delta_softplus = 1;
    }
    lina_both(&j, c, r);
    if (scan) {
        take_oh(&sout, "mamba", o, nx, ht, ns); /* [B,E,N]: ggml's [B,E,1,N] transposed, as P = 1 */
    }
    lina_tset_free(&sin);
    lina_tset_free(&sout);
    r->have_lina = 1;
    r->err_o = relerr((const float *)gc.out->data, o, nx);
    r->err_h = relerr(gh, ht, ns);
    lina_ws_free(&ws);
    gg_free(&gc);
    free(x), free(dt), free(Bm), free(Cm), free(A), free(s0), free(gh);
    free(q), free(k), free(v), free(g), free(h0), free(o), free(ht);
}

/* ------------------------------------------------------------- main */

enum { C_GLA, C_GDN, C_KDA, C_RWKV7, C_MAMBA2, C_MAMBA1, NCASES, /* checks only: */
       C_KDA_EQ = NCASES, C_RWKV7_GLA, C_RWKV7_DELTA, NCHECKS };

static void run_case(int id, int small, int T, const ctx *c, result *r)
{
    memset(r, 0, sizeof *r);
    g_seed = 12345 + (uint64_t)id;
    /* small: odd T, two sequences, a non-zero initial state */
    int B = small ? 2 : 1;
    int Tn = small ? 37 : T;
    switch (id) {
    case C_GLA:
        case_gla(B, Tn, small ? 2 : 4, small ? 16 : 128, c, r);
        r->shape = "H=4, K=V=128";
        break;
    case C_GDN:
    case C_KDA:
    case C_KDA_EQ:
        case_gdn(B, Tn, small ? 2 : 4, small ? 16 : 128, id == C_KDA ? 1 : id == C_KDA_EQ ? 2 : 0, c, r);
        r->shape = "H=4, K=V=128";
        break;
    case C_RWKV7:
    case C_RWKV7_GLA:
    case C_RWKV7_DELTA:
        /* ggml's vector path steps over the head in GGML_F32_STEP (64 with AVX-512) floats */
        case_rwkv7(B, Tn, small ? 2 : 4, small ? 64 : 128, id == C_RWKV7 ? 0 : id == C_RWKV7_GLA ? 1 : 2, c, r);
        r->shape = "H=4, K=V=128";
        break;
    case C_MAMBA2:
        case_ssm(B, Tn, small ? 3 : 16, small ? 8 : 64, small ? 16 : 128, 0, c, r);
        r->shape = "H=16 heads, P=64, N=128, 1 group";
        break;
    case C_MAMBA1:
        case_ssm(B, Tn, small ? 12 : 512, 1, 16, 1, c, r);
        r->shape = "E=512 channels, N=16";
        break;
    }
}

static const char *const k_case_names[NCASES] = {"gla", "gdn", "kda", "rwkv7", "mamba2", "mamba1"};

/* the case named by s[0, n), or -1 */
static int case_id(const char *s, size_t n)
{
    for (int id = 0; id < NCASES; id++) {
        if (strlen(k_case_names[id]) == n && !strncmp(s, k_case_names[id], n)) {
            return id;
        }
    }
    return -1;
}

/* whether the comma-separated list names the case (NULL: every case) */
static int case_wanted(const char *list, int id)
{
    for (const char *s = list; s && *s;) {
        size_t n = strcspn(s, ",");
        if (case_id(s, n) == id) {
            return 1;
        }
        s += n + (s[n] == ',');
    }
    return !list;
}

static const char *isa_name(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        return "x86-64, AVX-512";
    }
    if (__builtin_cpu_supports("avx2")) {
        return "x86-64, AVX2";
    }
    return "x86-64";
#elif defined(__aarch64__)
    return "aarch64";
#else
    return "other";
#endif
}

int main(int argc, char **argv)
{
    int T = 4096, repeat = 5, check_only = 0, nthr = 0, thr[8];
    const char *cases = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--T") && i + 1 < argc) {
            T = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            for (char *s = argv[++i]; *s && nthr < 8;) {
                thr[nthr++] = (int)strtol(s, &s, 10);
                s += *s == ',';
            }
        } else if (!strcmp(argv[i], "--cases") && i + 1 < argc) {
            cases = argv[++i];
        } else if (!strcmp(argv[i], "--cpu")) {
            g_cpu = 1;
        } else if (!strcmp(argv[i], "--check-only")) {
            check_only = 1;
        } else {
            fprintf(stderr, "usage: ggml_bench [--T n] [--threads a,b] [--repeat r] [--cases a,b] "
                            "[--cpu] [--check-only]\n");
            return 2;
        }
    }
    if (T < 1 || repeat < 1) {
        fprintf(stderr, "ggml_bench: --T and --repeat must be positive\n");
        return 2;
    }
    for (const char *s = cases; s && *s;) {
        size_t n = strcspn(s, ",");
        if (case_id(s, n) < 0) {
            fprintf(stderr, "ggml_bench: unknown case '%.*s' in --cases (gla, gdn, kda, rwkv7, mamba2, mamba1)\n",
                    (int)n, s);
            return 2;
        }
        s += n + (s[n] == ',');
    }
    if (!nthr) {
        thr[0] = 1;
        thr[1] = 2;
        nthr = 2;
    }
    for (int i = 0; i < nthr; i++) {
        if (thr[i] < 1 || thr[i] > 256) {
            fprintf(stderr, "ggml_bench: bad thread count %d\n", thr[i]);
            return 2;
        }
    }
    ggml_cpu_init();
    const char *isa = isa_name();

    /* 1. same inputs, same outputs */
    printf("## Same inputs, same outputs (B=2, T=37, small heads (K=V=16; 64 for RWKV-7), non-zero initial state)\n\n");
    printf("max |ggml - lina| / max(1, max |lina|), lina's chunk form:\n\n");
    printf("| ggml op | lina | o | final state |\n|---|---|---|---|\n");
    int bad = 0;
    ctx c0 = {1, 1, 0};
    for (int id = 0; id < NCHECKS; id++) {
        result r;
        lina_set_threads(1);
        run_case(id, 1, T, &c0, &r);
        if (r.have_lina) {
            int ok = r.err_o < 1e-4 && r.err_h < 1e-4;
            bad += !ok;
            printf("| %s | %s | %.1e | %.1e%s |\n", r.op, r.lina_op, r.err_o, r.err_h, ok ? "" : " **MISMATCH**");
        } else {
            printf("| %s | no `%s` op in this lina | — | — |\n", r.op, r.lina_op);
        }
    }
    fflush(stdout);
    if (bad) {
        fprintf(stderr, "ggml_bench: %d op(s) disagree between ggml and lina\n", bad);
        return 1;
    }
    if (check_only) {
        return 0;
    }

    /* 2. timings */
    printf("\n## Forward times, B=1, T=%d (%s of %d after a warm-up; %s)\n\n", T,
           g_cpu ? "least process CPU time" : "median wall time", repeat, isa);
    printf("ratio = ggml ms / lina ms (above 1: lina faster). %% SGEMM: the shared recurrence's\n"
           "FLOPs (GLA, SSM 4·T·H·K·V; delta rule 7·; RWKV-7 6·) over the time, against OpenBLAS\n"
           "SGEMM n=1024 measured in the same process at the same thread count%s.\n\n",
           g_cpu ? " (per CPU second)" : "");
    printf("| op | shape | threads | SGEMM GFLOP/s | ggml ms (%% SGEMM) | lina | lina chunk ms | "
           "lina recurrent ms | lina best ms (%% SGEMM) | ratio | ISA |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int ti = 0; ti < nthr; ti++) {
        int th = thr[ti];
        lina_set_threads(th);
        openblas_set_num_threads(th);
        double sg_cpu = 0.0, sg = lina_bench_sgemm_gflops(&sg_cpu);
        if (g_cpu) {
            sg = sg_cpu;
        }
        ctx c = {th, repeat, 1};
        for (int id = 0; id < NCASES; id++) {
            if (!case_wanted(cases, id)) {
                continue;
            }
            result r;
            run_case(id, 0, T, &c, &r);
            double gpct = 100.0 * r.flops / (r.ggml_ms * 1e-3) / 1e9 / sg;
            printf("| %s | %s | %d | %.0f | %.1f (%.0f%%) |", r.op, r.shape, th, sg, r.ggml_ms, gpct);
            if (r.have_lina) {
                int bf = r.lina_ms[1] <= r.lina_ms[0];
                double best = r.lina_ms[bf];
                double lpct = 100.0 * r.flops / (best * 1e-3) / 1e9 / sg;
                printf(" %s | %.1f | %.1f | %.1f %s (%.0f%%) | %.2f | %s |\n", r.lina_op, r.lina_ms[1],
                       r.lina_ms[0], best, bf ? "chunk" : "recurrent", lpct, r.ggml_ms / best, isa);
            } else {
                printf(" — (no `%s` op) | — | — | — | — | %s |\n", r.lina_op, isa);
            }
            fflush(stdout);
        }
    }
    return 0;
}
