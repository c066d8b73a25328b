/* test_varlen.c -- packed variable-length sequences (cu_seqlens) for every op in both
 * forms: a packed run equals each document run alone (outputs, final states and every
 * gradient, every position), chunk packed against recurrent alone within docs/ops.md's
 * tolerances; bad offsets give one clear error; `lina op --cu-seqlens` end to end. */
#include "harness.h"
#include "lina.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define FWD_TOL 1e-4
#define GRAD_TOL 5e-4

enum { H = 2, K = 8, V = 6 };

/* one op configuration: flags and the per-document initial states (with cotangents) */
typedef struct vcase {
    const char *op;
    int normalize, qk_l2norm, window, non_causal;
    int states; /* 0 none, 1 h0, 2 h0 + z0, 3 h0 + n0 + m0 */
} vcase;

static void add_rand(lina_tset *s, const char *name, int nd, const int64_t *sh, double lo, double hi, int normal)
{
    lina_tensor t;
    if (lina_tensor_alloc(&t, nd, sh) != 0) {
        exit(2);
    }
    for (int64_t i = 0; i < lina_tensor_numel(&t); i++) {
        t.data[i] = (float)(normal ? hi * th_normal() : th_uniform(lo, hi));
    }
    lina_tset_add(s, name, &t);
}

static void make_case(const vcase *c, int64_t T, int64_t N, uint64_t seed, lina_tset *in)
{
    const lina_op_info *op = lina_op_find(c->op);
    lina_mix_dims d = {1, (int)T, H, K, V, 0, 0};
    memset(in, 0, sizeof *in);
    op->make_inputs(&d, 1, seed, in);
    if (c->normalize && strcmp(c->op, "linear_attn") == 0) { /* positive features: no near-zero denominators */
        lina_tensor *q = lina_tset_find(in, "q"), *k = lina_tset_find(in, "k");
        for (int64_t i = 0; i < lina_tensor_numel(q); i++) {
            q->data[i] = fabsf(q->data[i]) + 0.1f;
            k->data[i] = fabsf(k->data[i]) + 0.1f;
        }
    }
    int64_t sh[4] = {N, H, K, V}, sz[3] = {N, H, K}, sm[2] = {N, H};
    if (c->states >= 1) {
        add_rand(in, "h0", 4, sh, 0, 0.5, 1);
        add_rand(in, "dht", 4, sh, 0, 1, 1);
    }
    if (c->states == 2) {
        add_rand(in, "z0", 3, sz, 0.5, 1.5, 0);
        add_rand(in, "dzt", 3, sz, 0, 1, 1);
    }
    if (c->states == 3) {
        add_rand(in, "n0", 3, sz, 0, 0.5, 1);
        add_rand(in, "m0", 2, sm, -1, 1, 0);
        add_rand(in, "dnt", 3, sz, 0, 1, 1);
        add_rand(in, "dmt", 2, sm, 0, 1, 1);
    }
}

/* rows [f*a, f*(a+L)) of a packed tensor or row d of a per-document one, as a tensor */
static void take(const lina_tensor *t, int state, int64_t d, int64_t a, int64_t L, int64_t T, lina_tensor *s)
{
    int64_t sh[LINA_MAX_DIMS];
    memcpy(sh, t->shape, sizeof sh);
    sh[0] = 1;
    int64_t r = 1;
    for (int i = state ? 1 : 2; i < t->ndim; i++) {
        r *= t->shape[i];
    }
    const float *src;
    if (state) {
        src = t->data + d * r;
    } else {
        int64_t f = t->shape[1] / T;
        sh[1] = f * L;
        r *= f;
        src = t->data + a * r;
        r *= L;
    }
    lina_tensor_alloc(s, t->ndim, sh);
    memcpy(s->data, src, (size_t)r * sizeof(float));
}

static int is_state(const char *name)
{
    static const char *const st[] = {"h0", "z0", "n0", "m0", "ht", "zt", "nt", "mt", "dht", "dzt", "dnt",
                                     "dmt", "dh0", "dz0", "dn0", "dm0",
                                     /* gsa's two states */
                                     "hk0", "hv0", "hkt", "hvt", "dhkt", "dhvt", "dhk0", "dhv0", NULL};
    for (int i = 0; st[i]; i++) {
        if (strcmp(name, st[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* packed run in form `pf` against each document alone in form `af`; worst relative
 * errors (forward, gradients) over every output, -1 on a failed run, 1e30 on a missing
 * output or a shape mismatch */
static void compare(const vcase *c, const int64_t *cu, int64_t ncu, int chunk, lina_form pf, lina_form af,
                    double *ef, double *eg, lina_ws *ws)
{
    const lina_op_info *op = lina_op_find(c->op);
    int64_t N = ncu - 1, T = cu[N];
    lina_tset in, out = {0};
    make_case(c, T, N, 1234 + (uint64_t)T, &in);
    lina_op_opts o = {pf, 1, c->normalize, c->qk_l2norm, c->window, c->non_causal, chunk, 0, 0};
    *ef = *eg = 0;
    if (lina_op_run_varlen(op, &in, &out, &o, cu, ncu, ws) != 0) {
        printf("# %s: %s\n", c->op, lina_last_error());
        *ef = *eg = -1;
        lina_tset_free(&in);
        return;
    }
    int covered = 0;
    for (int64_t d = 0; d < N; d++) {
        lina_tset din = {0}, dout = {0};
        for (int i = 0; i < in.n; i++) {
            lina_tensor s;
            take(&in.t[i], is_state(in.names[i]), d, cu[d], cu[d + 1] - cu[d], T, &s);
            lina_tset_add(&din, in.names[i], &s);
        }
        lina_op_opts oa = o;
        oa.form = af;
        if (lina_op_run(op, &din, &dout, &oa, ws) != 0) {
            printf("# %s alone: %s\n", c->op, lina_last_error());
            *ef = *eg = -1;
        }
        for (int j = 0; j < dout.n && *ef >= 0; j++) {
            const char *nm = dout.names[j];
            if (nm[0] == '_') {
                continue;
            }
            const lina_tensor *p = lina_tset_cfind(&out, nm);
            double e = 1e30;
            if (p) {
                lina_tensor s;
                take(p, is_state(nm), d, cu[d], cu[d + 1] - cu[d], T, &s);
                if (lina_tensor_numel(&s) == lina_tensor_numel(&dout.t[j])) {
                    size_t n = (size_t)lina_tensor_numel(&s);
                    double *ref = malloc(n * sizeof(double) + 1);
                    for (size_t i = 0; i < n; i++) {
                        ref[i] = dout.t[j].data[i];
                    }
                    e = th_relerr_fd(s.data, ref, n);
                    free(ref);
                }
                lina_tensor_free(&s);
            }
            double *w = nm[0] == 'd' ? eg : ef;
            if (!(e <= *w)) {
                *w = e;
            }
            covered += d == 0;
        }
        lina_tset_free(&din);
        lina_tset_free(&dout);
    }
    /* every packed output was compared (none left unwritten or extra) */
    int nout = 0;
    for (int j = 0; j < out.n; j++) {
        nout += out.names[j][0] != '_';
    }
    if (nout != covered) {
        *ef = 1e30;
    }
    lina_tset_free(&in);
    lina_tset_free(&out);
}

static int64_t g_cu[64];

/* boundaries: 1-token documents, documents shorter than a chunk, boundaries on chunk
 * edges (C = 16) and one document spanning several chunks */
static int64_t layout_edges(void)
{
    static const int64_t c[] = {0, 1, 16, 17, 32, 48, 49, 53, 107, 112};
    memcpy(g_cu, c, sizeof c);
    return (int64_t)(sizeof c / sizeof c[0]);
}

/* random boundaries over T tokens, documents of 1..maxlen tokens */
static int64_t layout_random(int64_t T, int maxlen)
{
    int64_t n = 1;
    g_cu[0] = 0;
    while (g_cu[n - 1] < T && n < 63) {
        int64_t L = 1 + (int64_t)th_uniform(0, maxlen);
        g_cu[n] = g_cu[n - 1] + L < T ? g_cu[n - 1] + L : T;
        n++;
    }
    g_cu[n - 1] = T;
    return n;
}

static const vcase g_cases[] = {
    {"linear_attn", 0, 0, 0, 0, 1},      {"linear_attn", 1, 0, 0, 0, 2},  {"retention", 0, 0, 0, 0, 1},
    {"simple_gla", 0, 0, 0, 0, 1},       {"gla", 0, 0, 0, 0, 1},          {"delta_rule", 0, 1, 0, 0, 1},
    {"gated_delta_rule", 0, 1, 0, 0, 1}, {"delta_product", 0, 1, 0, 0, 1}, {"mlstm", 0, 0, 0, 0, 3},
    {"softmax_attn", 0, 0, 0, 0, 0},     {"softmax_attn", 0, 0, 5, 0, 0}, {"softmax_attn", 0, 0, 0, 1, 0},
    {"lion", 0, 0, 0, 0, 0},             {"lion", 1, 0, 0, 0, 0},         {"kda", 0, 1, 0, 0, 1},
    {"rwkv7", 0, 0, 0, 0, 1},
};

static const vcase *case_for(const char *op)
{
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++) {
        if (strcmp(g_cases[i].op, op) == 0) {
            return &g_cases[i];
        }
    }
    return NULL;
}

/* the op's inputs include a packed q (r for rwkv7): the driver's time axis */
static int has_q(const lina_op_info *op)
{
    lina_tset in = {0};
    lina_mix_dims d = {1, 4, H, K, V, 0, 0};
    op->make_inputs(&d, 0, 1, &in);
    int q = lina_tset_cfind(&in, "q") != NULL || lina_tset_cfind(&in, "r") != NULL;
    lina_tset_free(&in);
    return q;
}

static void test_ops(lina_ws *ws)
{
    /* every registered op is covered by a case (ops without initial states need no more) */
    for (const lina_op_info *const *p = lina_ops(); *p; p++) {
        vcase dflt = {(*p)->name, 0, 0, 0, 0, 0};
        const vcase *c = case_for((*p)->name);
        if (!has_q(*p)) { /* ops without a packed q (mamba's per-channel A, D, delta_bias) */
            lina_tset in, out = {0};
            vcase nc = {(*p)->name, 0, 0, 0, 0, 0};
            make_case(&nc, 70, 2, 7, &in);
            lina_op_opts o = {LINA_FORM_CHUNK, 0, 0, 0, 0, 0, 16, 0, 0};
            const int64_t cu[] = {0, 30, 70};
            int rc = lina_op_run_varlen(*p, &in, &out, &o, cu, 3, ws);
            CHECK(rc != 0 && strstr(lina_last_error(), "cu_seqlens") && out.n == 0,
                  "varlen %s: refused with one message: %s", (*p)->name, lina_last_error());
            lina_tset_free(&in);
            lina_tset_free(&out);
            continue;
        }
        if (!c) {
            printf("# %s: no case with initial states here; run without them\n", (*p)->name);
            c = &dflt;
            double ef, eg;
            int64_t n = layout_edges();
            compare(c, g_cu, n, 16, LINA_FORM_CHUNK, LINA_FORM_CHUNK, &ef, &eg, ws);
            CHECK(ef >= 0 && ef <= 1e-6 && eg >= 0 && eg <= 1e-6, "varlen %s chunk: packed == alone (%.1e, %.1e)",
                  c->op, ef, eg);
        }
    }
    for (size_t ci = 0; ci < sizeof g_cases / sizeof g_cases[0]; ci++) {
        const vcase *c = &g_cases[ci];
        char tag[96];
        snprintf(tag, sizeof tag, "%s%s%s%s%s", c->op, c->normalize ? " normalize" : "",
                 c->qk_l2norm ? " qk-l2norm" : "", c->window ? " window 5" : "", c->non_causal ? " non-causal" : "");
        for (int layout = 0; layout < 3; layout++) {
            int64_t n = layout == 0 ? layout_edges() : layout == 1 ? layout_random(150, 40) : layout_random(90, 4);
            const char *ln = layout == 0 ? "1-token docs, chunk edges, a 54-token doc" :
                             layout == 1 ? "random docs of 1..40" : "random docs of 1..4";
            for (int f = 0; f < 2; f++) {
                lina_form pf = f ? LINA_FORM_RECURRENT : LINA_FORM_CHUNK;
                double ef, eg;
                /* the same form alone: the same function of each document's inputs */
                compare(c, g_cu, n, 16, pf, pf, &ef, &eg, ws);
                CHECK(ef >= 0 && ef <= 1e-6 && eg >= 0 && eg <= 1e-6,
                      "varlen %s %s, %s, %lld docs: packed == each alone (fwd %.1e, grad %.1e)", tag,
                      f ? "recurrent" : "chunk", ln, (long long)(n - 1), ef, eg);
            }
            /* chunk packed against the recurrent form alone: docs/ops.md tolerances */
            double ef, eg;
            compare(c, g_cu, n, 16, LINA_FORM_CHUNK, LINA_FORM_RECURRENT, &ef, &eg, ws);
            CHECK(ef >= 0 && ef <= FWD_TOL && eg >= 0 && eg <= GRAD_TOL,
                  "varlen %s chunk packed vs recurrent alone, %s: fwd %.1e (tol %.0e), grad %.1e (tol %.0e)", tag, ln,
                  ef, FWD_TOL, eg, GRAD_TOL);
        }
    }
}

/* the state does not leak: document 2's outputs do not depend on document 1's inputs */
static void test_isolation(lina_ws *ws)
{
    const int64_t cu[] = {0, 30, 70};
    for (const lina_op_info *const *p = lina_ops(); *p; p++) {
        if (!has_q(*p)) {
            continue; /* refused (test_ops) */
        }
        lina_tset in, o1 = {0}, o2 = {0};
        vcase c = {(*p)->name, 0, 0, 0, 0, 0};
        make_case(&c, 70, 2, 99, &in);
        lina_op_opts o = {LINA_FORM_CHUNK, 0, 0, strstr(c.op, "delta") != NULL, 0, 0, 16, 0, 0};
        int rc = lina_op_run_varlen(*p, &in, &o1, &o, cu, 3, ws);
        lina_tensor *q = lina_tset_find(&in, "q");
        if (!q) {
            q = lina_tset_find(&in, "r");
        }
        for (int64_t i = 0; i < 30 * H * K; i++) {
            q->data[i] *= -3.0f; /* document 0 changes */
        }
        lina_tensor *v = lina_tset_find(&in, "v");
        for (int64_t i = 0; i < 30 * H * V; i++) {
            v->data[i] += 1.0f;
        }
        rc = rc ? rc : lina_op_run_varlen(*p, &in, &o2, &o, cu, 3, ws);
        const lina_tensor *a = lina_tset_cfind(&o1, "o"), *b = lina_tset_cfind(&o2, "o");
        int same = !rc && a && b, changed = 0;
        int64_t row = lina_tensor_numel(a) / 70;
        for (int64_t i = 0; same && i < lina_tensor_numel(a); i++) {
            if (i >= 30 * row) {
                same = a->data[i] == b->data[i];
            } else {
                changed |= a->data[i] != b->data[i];
            }
        }
        CHECK(same && changed, "varlen %s: document 1's outputs are independent of document 0's inputs", c.op);
        lina_tset_free(&in);
        lina_tset_free(&o1);
        lina_tset_free(&o2);
    }
}

static int one_line(const char *e)
{
    size_t n = strlen(e);
    return n > 0 && strchr(e, '\n') == NULL;
}

static void test_errors(lina_ws *ws)
{
    const lina_op_info *op = lina_op_find("gla");
    lina_tset in, out = {0};
    vcase c = {"gla", 0, 0, 0, 0, 1};
    make_case(&c, 40, 2, 7, &in);
    lina_op_opts o = {LINA_FORM_CHUNK, 1, 0, 0, 0, 0, 16, 0, 0};
    static const struct {
        int64_t cu[4];
        int n;
        const char *want;
    } bad[] = {
        {{1, 20, 40}, 3, "start at 0"},        {{0, 20, 20, 40}, 4, "strictly increasing"},
        {{0, 30, 20, 40}, 4, "strictly increasing"}, {{0, 20, 39}, 3, "end at T = 40"},
        {{0, 20, 41}, 3, "end at T = 40"},     {{40}, 1, "at least 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = lina_op_run_varlen(op, &in, &out, &o, bad[i].cu, bad[i].n, ws);
        const char *e = lina_last_error();
        CHECK(rc != 0 && strstr(e, bad[i].want) && one_line(e) && out.n == 0, "varlen bad offsets #%zu: %s", i, e);
    }
    /* h0 with a row count that is neither 1 packed sequence nor one per document */
    int64_t cu3[] = {0, 10, 25, 40};
    int rc = lina_op_run_varlen(op, &in, &out, &o, cu3, 4, ws);
    CHECK(rc != 0 && strstr(lina_last_error(), "h0.npy") && out.n == 0, "varlen h0 rows != documents: %s",
          lina_last_error());
    lina_tset_free(&in);
    /* B != 1 */
    lina_mix_dims d = {2, 40, H, K, V, 0, 0};
    memset(&in, 0, sizeof in);
    op->make_inputs(&d, 0, 1, &in);
    int64_t cu2[] = {0, 20, 40};
    rc = lina_op_run_varlen(op, &in, &out, &o, cu2, 3, ws);
    CHECK(rc != 0 && strstr(lina_last_error(), "batch dim must be 1"), "varlen B = 2: %s", lina_last_error());
    lina_tset_free(&in);
    lina_tset_free(&out);
}

/* `lina op --cu-seqlens`: int32 and int64 files, the outputs of the library call; a
 * float file, a 2-D file and bad offsets give one error line and no output */
static void write_int_npy(const char *path, const int64_t *v, int n, int bytes, int ndim)
{
    char hdr[128];
    int p = ndim == 1 ? snprintf(hdr, sizeof hdr, "{'descr': '<i%d', 'fortran_order': False, 'shape': (%d,), }", bytes, n)
                      : snprintf(hdr, sizeof hdr, "{'descr': '<i%d', 'fortran_order': False, 'shape': (1, %d), }",
                                 bytes, n);
    while ((10 + p + 1) % 64) {
        hdr[p++] = ' ';
    }
    hdr[p++] = '\n';
    FILE *f = fopen(path, "wb");
    if (!f) {
        return;
    }
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)p, 0};
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, (size_t)p, f);
    for (int i = 0; i < n; i++) {
        if (bytes == 8) {
            fwrite(&v[i], 8, 1, f);
        } else {
            int32_t x = (int32_t)v[i];
            fwrite(&x, 4, 1, f);
        }
    }
    fclose(f);
}

static void test_cli(lina_ws *ws)
{
    const char *bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/lina_varlen_XXXXXX");
    if (!mkdtemp(dir) || access(bin, X_OK) != 0) {
        CHECK(0, "lina op --cu-seqlens: need %s and a temporary directory", bin);
        return;
    }
    char path[256], cmd[1024], out[64], err[1024];
    lina_tset in, ref = {0};
    vcase c = {"gla", 0, 0, 0, 0, 1};
    const int64_t cu[] = {0, 1, 16, 33, 60};
    make_case(&c, 60, 4, 5, &in);
    snprintf(cmd, sizeof cmd, "mkdir -p %s/in %s/out", dir, dir);
    if (system(cmd) != 0) {
        CHECK(0, "lina op --cu-seqlens: mkdir");
        return;
    }
    for (int i = 0; i < in.n; i++) {
        snprintf(path, sizeof path, "%s/in/%s.npy", dir, in.names[i]);
        lina_npy_write(path, &in.t[i]);
    }
    lina_op_opts o = {LINA_FORM_CHUNK, 1, 0, 0, 0, 0, 16, 0, 0};
    lina_op_run_varlen(lina_op_find("gla"), &in, &ref, &o, cu, 5, ws);
    for (int bytes = 4; bytes <= 8; bytes += 4) {
        snprintf(path, sizeof path, "%s/cu.npy", dir);
        write_int_npy(path, cu, 5, bytes, 1);
        snprintf(cmd, sizeof cmd, "%s op gla --in %s/in --out %s/out --form chunk --chunk 16 --backward --cu-seqlens %s",
                 bin, dir, dir, path);
        int rc = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
        double e = rc ? 1e30 : 0;
        for (int j = 0; j < ref.n && !rc; j++) {
            snprintf(path, sizeof path, "%s/out/%s.npy", dir, ref.names[j]);
            lina_tensor t;
            if (lina_npy_read(path, &t) != 0 || lina_tensor_numel(&t) != lina_tensor_numel(&ref.t[j])) {
                e = 1e30;
                continue;
            }
            for (int64_t i = 0; i < lina_tensor_numel(&t); i++) {
                double d = fabs((double)t.data[i] - ref.t[j].data[i]);
                e = d > e ? d : e;
            }
            lina_tensor_free(&t);
        }
        CHECK(rc == 0 && e == 0 && ref.n >= 6, "lina op gla --cu-seqlens (int%d file): the library's outputs (%d files, "
              "max diff %.1e)%s%s", bytes * 8, ref.n, e, rc ? ": " : "", rc ? err : "");
    }
    static const struct {
        int64_t cu[5];
        int n, bytes, ndim;
        const char *want;
    } bad[] = {
        {{0, 10, 10, 60}, 4, 8, 1, "strictly increasing"},
        {{5, 10, 60}, 3, 4, 1, "start at 0"},
        {{0, 10, 59}, 3, 8, 1, "end at T = 60"},
        {{0, 10, 60}, 3, 2, 1, "not supported"},
        {{0, 10, 60}, 3, 8, 2, "1-D"},
        {{0, 10, 20, 60}, 4, 8, 1, "of 3 documents"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "rm -f %s/out/*.npy", dir);
        if (system(cmd) != 0) {
            break;
        }
        snprintf(path, sizeof path, "%s/bad.npy", dir);
        write_int_npy(path, bad[i].cu, bad[i].n, bad[i].bytes == 2 ? 8 : bad[i].bytes, bad[i].ndim);
        if (bad[i].bytes == 2) { /* a float64 file of the same values */
            lina_tensor t;
            int64_t sh[1] = {bad[i].n};
            lina_tensor_alloc(&t, 1, sh);
            for (int j = 0; j < bad[i].n; j++) {
                t.data[j] = (float)bad[i].cu[j];
            }
            lina_npy_write(path, &t);
            lina_tensor_free(&t);
        }
        snprintf(cmd, sizeof cmd, "%s op gla --in %s/in --out %s/out --form chunk --cu-seqlens %s", bin, dir, dir, path);
        int rc = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
        snprintf(path, sizeof path, "%s/out/o.npy", dir);
        size_t n = strlen(err);
        int line = n > 6 && strncmp(err, "lina: ", 6) == 0 && strchr(err, '\n') == err + n - 1;
        CHECK(rc != 0 && line && strstr(err, bad[i].want) && access(path, F_OK) != 0,
              "lina op --cu-seqlens bad #%zu: one error line, no output: %s", i, err);
    }
    lina_tset_free(&in);
    lina_tset_free(&ref);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", dir);
    }
}

int main(void)
{
    lina_set_threads(2);
    lina_ws ws;
    lina_ws_init(&ws);
    test_ops(&ws);
    test_isolation(&ws);
    test_errors(&ws);
    test_cli(&ws);
    lina_ws_free(&ws);
    return th_exit();
}
