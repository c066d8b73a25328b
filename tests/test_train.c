/* test_train.c -- AdamW against a double reference, the schedule, token files
 * (round trip and every malformed case), the sampler, checkpoints, resume to
 * bit-identical losses (also across kill -9), and the NaN stop. The trainer is
 * driven through a toy bigram softmax model with analytic gradients. */
#include "harness.h"
#include "lina.h"
#include "../src/train/train_internal.h"

#include <dirent.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_dir[64];

static void path_in(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", g_dir, name);
}

/* rm -r for our test tree (two levels at most) */
static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        unlink(dir);
        return;
    }
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) {
            continue;
        }
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            rm_tree(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

/* ------------------------------------------------------ toy bigram model */

/* logits[b,t,:] = W[tokens[b,t], :] + bias; mean cross-entropy. W [V,V]
 * decays, bias [V] does not. */
typedef struct toy {
    int V;
    float *p, *g;          /* [V*V + V] */
    int64_t wshape[2], bshape[1];
    int nan_at;            /* > 0: the nan_at-th train_step call returns a NaN loss; < 0: the
                              -nan_at-th call also fails with LINA_ENONFINITE, as lina_model does */
    int calls;
} toy;

static int toy_init(toy *t, int V, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->V = V;
    size_t n = (size_t)V * V + V;
    t->p = calloc(n, sizeof(float));
    t->g = calloc(n, sizeof(float));
    if (!t->p || !t->g) {
        return -1;
    }
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        t->p[i] = (float)((double)(lina_splitmix64(&s) >> 11) / 9007199254740992.0 - 0.5) * 0.2f;
    }
    t->wshape[0] = V;
    t->wshape[1] = V;
    t->bshape[0] = V;
    return 0;
}

static void toy_free(toy *t)
{
    free(t->p);
    free(t->g);
}

static size_t toy_num_params(const void *self)
{
    const toy *t = self;
    return (size_t)t->V * t->V + t->V;
}
static float *toy_params(void *self)
{
    return ((toy *)self)->p;
}
static float *toy_grads(void *self)
{
    return ((toy *)self)->g;
}
static void toy_zero_grad(void *self)
{
    toy *t = self;
    memset(t->g, 0, toy_num_params(t) * sizeof(float));
}
static int toy_num_tensors(const void *self)
{
    (void)self;
    return 2;
}
static int toy_tensor(const void *self, int i, const char **name, int *ndim, const int64_t **shape,
                      size_t *offset, int *decay)
{
    const toy *t = self;
    if (i < 0 || i > 1) {
        return lina_set_error(LINA_EINVAL, "toy: no tensor %d", i);
    }
    *name = i == 0 ? "w" : "bias";
    *ndim = i == 0 ? 2 : 1;
    *shape = i == 0 ? t->wshape : t->bshape;
    *offset = i == 0 ? 0 : (size_t)t->V * t->V;
    *decay = i == 0;
    return LINA_OK;
}

static int toy_loss(toy *t, const int32_t *tok, const int32_t *tgt, int B, int T, double *loss,
                    int grad)
{
    const int V = t->V;
    double sum = 0.0;
    int count = 0;
    double *pr = malloc((size_t)V * sizeof(double));
    const float *bias = t->p + (size_t)V * V;
    for (int i = 0; i < B * T; i++) {
        if (tgt[i] < 0) {
            continue;
        }
        count++;
    }
    for (int i = 0; i < B * T; i++) {
        if (tgt[i] < 0) {
            continue;
        }
        const float *w = t->p + (size_t)tok[i] * V;
        double mx = -1e300, z = 0.0;
        for (int v = 0; v < V; v++) {
            pr[v] = (double)w[v] + bias[v];
            mx = pr[v] > mx ? pr[v] : mx;
        }
        for (int v = 0; v < V; v++) {
            pr[v] = exp(pr[v] - mx);
            z += pr[v];
        }
        sum += -(log(pr[tgt[i]] / z));
        if (grad) {
            float *gw = t->g + (size_t)tok[i] * V, *gb = t->g + (size_t)V * V;
            for (int v = 0; v < V; v++) {
                double d = (pr[v] / z - (v == tgt[i])) / count;
                gw[v] += (float)d;
                gb[v] += (float)d;
            }
        }
    }
    free(pr);
    *loss = count ? sum / count : 0.0;
    return LINA_OK;
}

static int toy_train_step(void *self, const int32_t *tok, const int32_t *tgt, int B, int T,
                          double *loss, lina_ws *ws)
{
    (void)ws;
    toy *t = self;
    t->calls++;
    int rc = toy_loss(t, tok, tgt, B, T, loss, 1);
    if (t->nan_at != 0 && t->calls >= abs(t->nan_at)) {
        *loss = NAN;
        if (t->nan_at < 0) {
            return lina_set_error(LINA_ENONFINITE, "model: loss is not finite (nan)");
        }
    }
    return rc;
}

static int toy_eval_loss(void *self, const int32_t *tok, const int32_t *tgt, int B, int T,
                         double *loss, lina_ws *ws)
{
    (void)ws;
    return toy_loss(self, tok, tgt, B, T, loss, 0);
}

static lina_trainable toy_adapter(toy *t);

static int toy_save(const void *self, const char *dir)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    if (!f) {
        return lina_set_error(LINA_EIO, "%s: cannot write", p);
    }
    fprintf(f, "{\"model_type\": \"toy_bigram\", \"vocab_size\": %d}\n", ((const toy *)self)->V);
    fclose(f);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    lina_trainable a = toy_adapter((toy *)self);
    return lina_ckpt_save_params(&a, p);
}

static lina_trainable toy_adapter(toy *t)
{
    lina_trainable a = {.self = t, .num_params = toy_num_params, .params = toy_params, .grads = toy_grads,
                        .zero_grad = toy_zero_grad, .num_tensors = toy_num_tensors, .tensor = toy_tensor,
                        .train_step = toy_train_step, .eval_loss = toy_eval_loss, .save = toy_save,
                        .vocab_size = t->V};
    return a;
}

/* ------------------------------------------------------------- AdamW */

static void test_adamw(void)
{
    /* 43 parameters: whole vectors of every path (8 and 16 lanes) and a tail; entries
     * 6..9 (a tensor in the middle) without decay */
    enum { N = 43, STEPS = 4 };
    const double b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, clip = 0.5;
    const double lrs[STEPS] = {1e-2, 3e-2, 2e-2, 5e-3};
    float p[N], g[N];
    double pd[N], md[N] = {0}, vd[N] = {0};
    for (int i = 0; i < N; i++) {
        p[i] = (float)th_uniform(-1, 1);
        pd[i] = p[i];
    }
    lina_adamw o;
    int rc = lina_adamw_init(&o, N);
    CHECK(rc == 0 && o.beta1 == 0.9 && o.beta2 == 0.95 && o.eps == 1e-8 && o.weight_decay == 0.1,
          "adamw defaults 0.9/0.95/1e-8/0.1");
    CHECK(lina_adamw_set_decay(&o, 6, 4, 0) == 0, "adamw decay mask on a tensor in the middle");
    CHECK(lina_adamw_set_decay(&o, N - 2, 4, 0) == LINA_EINVAL, "adamw decay range outside -> EINVAL");
    double maxerr = 0.0;
    for (int s = 0; s < STEPS; s++) {
        /* two accumulated micro-batches of gradients, as the trainer does */
        for (int i = 0; i < N; i++) {
            g[i] = (float)th_uniform(-2, 2) + (float)th_uniform(-2, 2);
        }
        double sq = 0.0;
        for (int i = 0; i < N; i++) {
            sq += (double)g[i] * g[i];
        }
        double norm = sqrt(sq) * 0.5;
        double gn = lina_grad_norm(g, N) * 0.5;
        CHECK(fabs(gn - norm) <= 1e-14 * norm, "grad norm step %d: %.17g vs %.17g", s, gn, norm);
        double cf = norm > clip ? clip / (norm + 1e-6) : 1.0;
        CHECK(fabs(lina_clip_factor(gn, clip) - cf) < 1e-15, "clip factor step %d = %.6f", s, cf);
        rc = lina_adamw_step(&o, p, g, lrs[s], 0.5 * cf);
        CHECK(rc == 0, "adamw step %d", s);
        double t = s + 1;
        for (int i = 0; i < N; i++) {
            double gi = (double)g[i] * 0.5 * cf;
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            if (i < 6 || i >= 10) {
                pd[i] *= 1.0 - lrs[s] * wd;
            }
            double mh = md[i] / (1 - pow(b1, t)), vh = vd[i] / (1 - pow(b2, t));
            pd[i] -= lrs[s] * mh / (sqrt(vh) + eps);
        }
        for (int i = 0; i < N; i++) {
            double e = fabs(p[i] - pd[i]) / fmax(1.0, fabs(pd[i]));
            maxerr = e > maxerr ? e : maxerr;
        }
    }
    CHECK(maxerr < 1e-6 && o.step == STEPS, "adamw vs double reference, %d steps (decay mask, "
                                            "clipping, accumulation): max rel err %.2e",
          STEPS, maxerr);
    /* the decay mask matters: zero gradients move only the decayed entries */
    float q[N], z[N] = {0};
    memcpy(q, p, sizeof q);
    lina_adamw o2;
    lina_adamw_init(&o2, N);
    lina_adamw_set_decay(&o2, 6, 4, 0);
    lina_adamw_step(&o2, q, z, 0.1, 1.0);
    int okm = 1;
    for (int i = 0; i < N; i++) {
        float want = i < 6 || i >= 10 ? p[i] * (float)(1.0 - 0.1 * 0.1) : p[i];
        okm &= fabsf(q[i] - want) <= 1e-7f * fabsf(want) + 1e-12f;
    }
    CHECK(okm, "adamw zero gradient: decoupled decay only where the mask says");
    CHECK(lina_adamw_step(&o2, q, z, NAN, 1.0) == LINA_EINVAL, "adamw NaN lr -> EINVAL");
    lina_adamw_free(&o2);
    lina_adamw_free(&o);

    /* norm: deterministic over thread counts, NaN propagates */
    size_t n = 300000;
    float *big = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        big[i] = (float)th_uniform(-1, 1);
    }
    lina_set_threads(1);
    double n1 = lina_grad_norm(big, n);
    lina_set_threads(2);
    double n2 = lina_grad_norm(big, n);
    lina_set_threads(0);
    double ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        ref += (double)big[i] * big[i];
    }
    ref = sqrt(ref);
    CHECK(n1 == n2 && fabs(n1 - ref) < 1e-12 * ref, "grad norm bit-identical on 1 and 2 threads, "
                                                    "rel err %.1e", fabs(n1 - ref) / ref);
    big[12345] = NAN;
    CHECK(!isfinite(lina_grad_norm(big, n)), "grad norm with a NaN is not finite");
    free(big);
    CHECK(lina_clip_factor(10.0, 0.0) == 1.0 && lina_clip_factor(0.5, 1.0) == 1.0,
          "clip factor: off when max_norm 0; 1 below the limit");
}

static void test_schedule(void)
{
    lina_lr_sched s = {1.0, 0.1, 2, 11};
    double e0 = lina_lr_at(&s, 0), e1 = lina_lr_at(&s, 1), e2 = lina_lr_at(&s, 2);
    double e6 = lina_lr_at(&s, 6), e10 = lina_lr_at(&s, 10), e20 = lina_lr_at(&s, 20);
    double e4 = lina_lr_at(&s, 4);
    double want4 = 0.1 + 0.9 * 0.5 * (1 + cos(3.14159265358979323846 * 2.0 / 8.0));
    CHECK(e0 == 0.5 && e1 == 1.0, "warmup: lr*(step+1)/warmup = %g %g", e0, e1);
    CHECK(fabs(e2 - 1.0) < 1e-15 && fabs(e6 - 0.55) < 1e-15 && fabs(e10 - 0.1) < 1e-15 &&
              fabs(e20 - 0.1) < 1e-15 && fabs(e4 - want4) < 1e-15,
          "cosine: 1 at end of warmup, 0.55 halfway, 0.1 (min ratio) at the last step and after: "
          "%g %g %g %g",
          e2, e6, e10, e20);
    int mono = 1;
    for (int i = 2; i < 10; i++) {
        mono &= lina_lr_at(&s, i + 1) <= lina_lr_at(&s, i);
    }
    CHECK(mono, "cosine is non-increasing after warmup");
    lina_lr_sched s0 = {3e-4, 0.0, 0, 5};
    CHECK(lina_lr_at(&s0, 0) == 3e-4 && lina_lr_at(&s0, 4) == 0.0, "no warmup: starts at lr, ends "
                                                                     "at lr*min_ratio = 0");
    lina_lr_sched s1 = {1.0, 0.1, 0, 1};
    CHECK(lina_lr_at(&s1, 0) == 1.0, "a single step runs at the peak lr");
}

/* ------------------------------------------------------------ token files */

static int write_raw(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        return -1;
    }
    fwrite(buf, 1, n, f);
    fclose(f);
    return 0;
}

static void header(unsigned char *h, const char *magic, uint32_t ver, uint32_t width,
                   uint32_t vocab, uint32_t res, uint64_t count)
{
    memcpy(h, magic, 8);
    memcpy(h + 8, &ver, 4);
    memcpy(h + 12, &width, 4);
    memcpy(h + 16, &vocab, 4);
    memcpy(h + 20, &res, 4);
    memcpy(h + 24, &count, 8);
}

static void bad_file(const char *what, const unsigned char *buf, size_t n, int want_rc,
                     const char *want_msg)
{
    char p[256];
    path_in(p, sizeof p, "bad.tok");
    write_raw(p, buf, n);
    lina_tokfile *f = (lina_tokfile *)1;
    int rc = lina_tok_open(p, &f);
    const char *msg = lina_last_error();
    CHECK(rc == want_rc && f == NULL && strstr(msg, want_msg) && strstr(msg, "bad.tok"),
          "token file %s -> %d: %s", what, rc, msg);
}

static void test_tokfile(void)
{
    char p[256];
    uint32_t toks[1000];
    for (int i = 0; i < 1000; i++) {
        toks[i] = (uint32_t)((i * 7919u) % 1000u);
    }
    for (int w = 2; w <= 4; w += 2) {
        path_in(p, sizeof p, "a.tok");
        int rc = lina_tok_write(p, toks, 1000, 1000, w);
        lina_tokfile *f = NULL;
        rc |= lina_tok_open(p, &f);
        int32_t back[1000];
        int ok = rc == 0 && f && lina_tok_count(f) == 1000 && lina_tok_vocab(f) == 1000 &&
                 lina_tok_width(f) == w && lina_tok_read(f, 0, 1000, back) == 0;
        for (int i = 0; ok && i < 1000; i++) {
            ok = back[i] == (int32_t)toks[i];
        }
        struct stat st;
        stat(p, &st);
        CHECK(ok && st.st_size == 32 + 1000 * w, "token file round trip, width %d (%lld bytes)", w,
              (long long)st.st_size);
        CHECK(f && lina_tok_read(f, 990, 11, back) == LINA_EINVAL, "read past the end -> EINVAL");
        lina_tok_close(f);
    }
    /* width 0 picks 4 for big vocabularies */
    uint32_t big[3] = {0, 70000, 69999};
    path_in(p, sizeof p, "b.tok");
    lina_tokfile *f = NULL;
    int rc = lina_tok_write(p, big, 3, 70001, 0);
    rc |= lina_tok_open(p, &f);
    int32_t bb[3] = {0};
    CHECK(rc == 0 && lina_tok_width(f) == 4 && lina_tok_read(f, 0, 3, bb) == 0 && bb[1] == 70000,
          "vocab 70001 is written with 4-byte tokens");
    lina_tok_close(f);
    CHECK(lina_tok_write(p, big, 3, 70000, 0) == LINA_EINVAL, "writer: token >= vocab -> EINVAL (%s)",
          lina_last_error());
    CHECK(lina_tok_write(p, big, 3, 70001, 2) == LINA_EINVAL, "writer: width 2 for vocab 70001 -> EINVAL");
    uint32_t none = 0;
    path_in(p, sizeof p, "empty.tok");
    rc = lina_tok_write(p, &none, 0, 5, 0);
    rc |= lina_tok_open(p, &f);
    CHECK(rc == 0 && lina_tok_count(f) == 0, "empty token file round trip");
    int32_t t1[4], t2[4];
    uint64_t r = 1;
    CHECK(lina_tok_sample(f, &r, 1, 3, t1, t2) == LINA_EINVAL, "sampling a too-short file -> EINVAL (%s)",
          lina_last_error());
    lina_tok_close(f);

    /* malformed files */
    unsigned char buf[64] = {0};
    uint16_t tk[4] = {1, 2, 3, 4};
    header(buf, "LINATOK1", 1, 2, 10, 0, 4);
    memcpy(buf + 32, tk, 8);
    path_in(p, sizeof p, "good.tok");
    write_raw(p, buf, 40);
    rc = lina_tok_open(p, &f);
    CHECK(rc == 0 && lina_tok_count(f) == 4, "hand-made token file opens (control for the cases below)");
    lina_tok_close(f);
    unsigned char b2[64];
    memcpy(b2, buf, 64);
    memcpy(b2, "LINATOK2", 8);
    bad_file("with bad magic", b2, 40, LINA_EFORMAT, "magic");
    header(b2, "LINATOK1", 2, 2, 10, 0, 4);
    memcpy(b2 + 32, tk, 8);
    bad_file("of version 2", b2, 40, LINA_EFORMAT, "version 2");
    header(b2, "LINATOK1", 1, 3, 10, 0, 4);
    bad_file("with width 3", b2, 44, LINA_EFORMAT, "width 3");
    header(b2, "LINATOK1", 1, 2, 0, 0, 4);
    bad_file("with vocab 0", b2, 40, LINA_EFORMAT, "vocab_size 0");
    header(b2, "LINATOK1", 1, 2, 70000, 0, 4);
    bad_file("with 2-byte tokens and vocab 70000", b2, 40, LINA_EFORMAT, "vocab_size 70000");
    header(b2, "LINATOK1", 1, 2, 10, 7, 4);
    bad_file("with reserved != 0", b2, 40, LINA_EFORMAT, "reserved");
    bad_file("with a truncated header", buf, 20, LINA_EFORMAT, "truncated header");
    bad_file("with truncated tokens", buf, 38, LINA_EFORMAT, "truncated");
    bad_file("with trailing bytes", buf, 42, LINA_EFORMAT, "trailing");
    header(b2, "LINATOK1", 1, 2, 10, 0, UINT64_MAX / 2);
    bad_file("with a huge count", b2, 40, LINA_EFORMAT, "truncated");
    memcpy(b2, buf, 64);
    b2[32 + 4] = 10; /* token 2 becomes 10 == vocab */
    bad_file("with a token >= vocab", b2, 40, LINA_EFORMAT, "token 2 is 10");
    path_in(p, sizeof p, "missing.tok");
    f = (lina_tokfile *)1;
    rc = lina_tok_open(p, &f);
    CHECK(rc == LINA_EIO && f == NULL && strstr(lina_last_error(), "missing.tok"),
          "missing token file -> EIO: %s", lina_last_error());
}

static void test_sampler(void)
{
    char p[256];
    enum { N = 5000 };
    static uint32_t seq[N];
    for (int i = 0; i < N; i++) {
        seq[i] = (uint32_t)i;
    }
    path_in(p, sizeof p, "seq.tok");
    lina_tokfile *f = NULL;
    int rc = lina_tok_write(p, seq, N, N, 0);
    rc |= lina_tok_open(p, &f);
    CHECK(rc == 0, "sequence file");
    if (rc) {
        return;
    }
    enum { B = 4, T = 1500 };
    static int32_t a[B * T], at[B * T], b[B * T], bt[B * T], c[B * T], ct[B * T];
    uint64_t r1 = 42, r2 = 42, r3 = 43;
    rc = lina_tok_sample(f, &r1, B, T, a, at);
    rc |= lina_tok_sample(f, &r2, B, T, b, bt);
    rc |= lina_tok_sample(f, &r3, B, T, c, ct);
    int same = !memcmp(a, b, sizeof a) && !memcmp(at, bt, sizeof at) && r1 == r2;
    CHECK(rc == 0 && same && memcmp(a, c, sizeof a) != 0, "sampler: same seed, same batch; other "
                                                          "seed, other batch");
    uint64_t r4 = 42;
    lina_splitmix64(&r4);
    lina_splitmix64(&r4);
    lina_splitmix64(&r4);
    lina_splitmix64(&r4);
    CHECK(r1 == r4, "sampler advances the state by B splitmix64 draws");
    int ok = 1;
    for (int i = 0; i < B; i++) {
        ok &= a[i * T] >= 0 && a[i * T] + T < N;
        for (int t = 0; t < T; t++) {
            ok &= at[i * T + t] == a[i * T + t] + 1 && a[i * T + t] == a[i * T] + t;
        }
    }
    CHECK(ok, "sampler: windows of T+1 consecutive tokens inside the file, targets shifted by one");
    /* splitmix64 known value (reference: seed 0 -> 0xe220a8397b1dcdaf) */
    uint64_t z = 0;
    CHECK(lina_splitmix64(&z) == 0xe220a8397b1dcdafull, "splitmix64 reference value");
    rc = lina_tok_eval_batch(f, 1, B, T, a, at);
    rc |= lina_tok_eval_batch(f, 1, B, T, b, bt);
    CHECK(rc == 0 && !memcmp(a, b, sizeof a) && a[0] == (int32_t)(((1 * B + 0) * T) % (N - T)),
          "eval batches are fixed windows");
    lina_tok_close(f);
}

/* --------------------------------------------------------- checkpoints */

static void test_ckpt_files(void)
{
    toy t1, t2;
    toy_init(&t1, 7, 1);
    toy_init(&t2, 7, 2);
    lina_trainable a1 = toy_adapter(&t1), a2 = toy_adapter(&t2);
    lina_adamw o1, o2;
    lina_adamw_init(&o1, toy_num_params(&t1));
    lina_adamw_init(&o2, toy_num_params(&t2));
    for (size_t i = 0; i < o1.n; i++) {
        t1.g[i] = (float)th_uniform(-1, 1);
    }
    lina_adamw_step(&o1, t1.p, t1.g, 1e-2, 1.0);
    lina_adamw_step(&o1, t1.p, t1.g, 1e-2, 1.0);
    o1.beta2 = 0.99;
    char pm[256], po[256];
    path_in(pm, sizeof pm, "m.safetensors");
    path_in(po, sizeof po, "o.safetensors");
    int rc = lina_ckpt_save_params(&a1, pm);
    rc |= lina_ckpt_save_optim(&a1, &o1, po);
    rc |= lina_ckpt_load_params(&a2, pm);
    rc |= lina_ckpt_load_optim(&a2, &o2, po);
    size_t n = o1.n * sizeof(float);
    CHECK(rc == 0 && !memcmp(t1.p, t2.p, n) && !memcmp(o1.m, o2.m, n) && !memcmp(o1.v, o2.v, n) &&
              o2.step == 2 && o2.beta2 == 0.99,
          "params + optimizer state round trip exactly (step %lld)", (long long)o2.step);
    lina_tdict d;
    rc = lina_st_read(po, &d, 0);
    CHECK(rc == 0 && lina_tdict_find(&d, "exp_avg.w") && lina_tdict_find(&d, "exp_avg_sq.bias") &&
              !strcmp(lina_tdict_meta(&d, "step"), "2"),
          "optimizer.safetensors: exp_avg.<name>, exp_avg_sq.<name>, metadata step");
    lina_tdict_free(&d);
    toy t3;
    toy_init(&t3, 8, 3);
    lina_trainable a3 = toy_adapter(&t3);
    rc = lina_ckpt_load_params(&a3, pm);
    CHECK(rc == LINA_EFORMAT && strstr(lina_last_error(), "shape"), "loading into another shape -> "
                                                                     "EFORMAT: %s",
          lina_last_error());
    lina_adamw_free(&o1);
    lina_adamw_free(&o2);
    toy_free(&t1);
    toy_free(&t2);
    toy_free(&t3);
}

/* train a fresh toy (seed 5) into dir; returns the rc */
static int run_toy(const char *dir, const char *data, const char *val, int64_t steps, int resume,
                   int64_t stop_after, int nan_at, int save_every, double *losses, double *vals,
                   float *final_params)
{
    toy t;
    toy_init(&t, 16, 5);
    t.nan_at = nan_at;
    lina_trainable a = toy_adapter(&t);
    lina_train_opts o;
    lina_train_opts_default(&o);
    o.data_path = data;
    o.val_path = val;
    o.out_dir = dir;
    o.steps = steps;
    o.batch = 3;
    o.seq_len = 8;
    o.accum = 2;
    o.lr = 0.05;
    o.warmup = 2;
    o.clip = 0.5;
    o.seed = 11;
    o.eval_every = 2;
    o.eval_batches = 2;
    o.save_every = save_every;
    o.resume = resume;
    o.stop_after = stop_after;
    o.progress = 0;
    o.losses = losses;
    o.val_losses = vals;
    int rc = lina_train(&a, &o);
    if (final_params) {
        memcpy(final_params, t.p, toy_num_params(&t) * sizeof(float));
    }
    toy_free(&t);
    return rc;
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    int n = 0, c;
    while (f && (c = fgetc(f)) != EOF) {
        n += c == '\n';
    }
    if (f) {
        fclose(f);
    }
    return n;
}

static void make_corpus(char *data, char *val)
{
    enum { N = 4000 };
    static uint32_t tk[N];
    uint64_t s = 99;
    for (int i = 0; i < N; i++) {
        /* a learnable bigram-ish stream */
        tk[i] = i == 0 ? 0 : (uint32_t)((tk[i - 1] * 5 + 1 + (lina_splitmix64(&s) % 3 == 0)) % 16);
    }
    path_in(data, 256, "train.tok");
    path_in(val, 256, "val.tok");
    lina_tok_write(data, tk, N - 500, 16, 0);
    lina_tok_write(val, tk + N - 500, 500, 16, 0);
}

static void test_resume(void)
{
    char data[256], val[256], d1[256], d2[256], p[512];
    make_corpus(data, val);
    path_in(d1, sizeof d1, "run1");
    path_in(d2, sizeof d2, "run2");
    const size_t np = 16 * 16 + 16;
    double l1[6], v1[6], l2[6], v2[6];
    float p1[16 * 16 + 16], p2[16 * 16 + 16];
    int rc = run_toy(d1, data, val, 6, 0, 0, 0, 0, l1, v1, p1);
    CHECK(rc == 0 && l1[5] < l1[0], "toy trains 6 steps: loss %.4f -> %.4f, val %.4f", l1[0], l1[5],
          v1[5]);
    rc = run_toy(d2, data, val, 6, 0, 3, 0, 0, l2, v2, NULL);
    snprintf(p, sizeof p, "%s/checkpoint/trainer.json", d2);
    struct stat st;
    CHECK(rc == 0 && stat(p, &st) == 0, "3 steps, stopped with a checkpoint");
    rc = run_toy(d2, data, val, 6, 1, 0, 0, 0, l2, v2, p2);
    int same = rc == 0 && !memcmp(l1, l2, sizeof l1) && !memcmp(p1, p2, np * sizeof(float));
    for (int i = 0; i < 6; i++) {
        same &= (isnan(v1[i]) && isnan(v2[i])) || v1[i] == v2[i];
    }
    for (int i = 0; !same && i < 6; i++) {
        printf("    step %d: %.17g %.17g  val %.17g %.17g\n", i + 1, l1[i], l2[i], v1[i], v2[i]);
    }
    CHECK(same, "6 steps straight == 3 + resume + 3: losses, val losses and parameters bit-identical");
    snprintf(p, sizeof p, "%s/log.jsonl", d2);
    CHECK(count_lines(p) == 6, "log.jsonl of the resumed run has one line per step (%d)",
          count_lines(p));
    FILE *f = fopen(p, "r");
    char line[512] = "";
    for (int i = 0; f && i < 2; i++) {
        fgets(line, sizeof line, f);
    }
    if (f) {
        fclose(f);
    }
    CHECK(strstr(line, "{\"step\":2,\"loss\":") && strstr(line, "\"lr\":") &&
              strstr(line, "\"grad_norm\":") && strstr(line, "\"tokens_per_s\":") &&
              strstr(line, "\"val_loss\":"),
          "log line: %.*s", (int)strcspn(line, "\n"), line);
    rc = run_toy(d2, data, val, 6, 0, 0, 0, 0, l2, v2, NULL);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "--resume"),
          "a fresh run into a directory with a checkpoint is refused: %s", lina_last_error());
    /* resuming with other settings continues (with a note); fewer steps than done is refused */
    toy t;
    toy_init(&t, 16, 5);
    lina_trainable a = toy_adapter(&t);
    lina_train_opts o;
    lina_train_opts_default(&o);
    o.data_path = data;
    o.out_dir = d2;
    o.steps = 6;
    o.batch = 4;
    o.seq_len = 8;
    o.accum = 2;
    o.seed = 11;
    o.resume = 1;
    o.progress = 0;
    rc = lina_train(&a, &o);
    CHECK(rc == LINA_OK, "resume with another batch is allowed (a note names it): %s", lina_last_error());
    o.steps = 5;
    rc = lina_train(&a, &o);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "beyond --steps 5"),
          "resume of a 6-step checkpoint with --steps 5 -> EINVAL: %s", lina_last_error());
    o.steps = 6;
    snprintf(p, sizeof p, "%s/nothing", g_dir);
    o.out_dir = p;
    o.batch = 3;
    rc = lina_train(&a, &o);
    CHECK(rc == LINA_EIO && strstr(lina_last_error(), "no complete checkpoint"),
          "resume without a checkpoint -> EIO: %s", lina_last_error());
    /* damaged checkpoint files are reported, not trusted */
    o.out_dir = d1;
    snprintf(p, sizeof p, "%s/checkpoint/trainer.json", d1);
    FILE *fj = fopen(p, "w");
    fputs("{\"format\": \"lina-trainer\", \"version\": 1, \"step\": 6,", fj);
    fclose(fj);
    rc = lina_train(&a, &o);
    CHECK(rc == LINA_EFORMAT && strstr(lina_last_error(), "trainer.json"),
          "resume with a truncated trainer.json -> EFORMAT: %s", lina_last_error());
    fj = fopen(p, "w");
    fputs("{\"format\": \"lina-trainer\", \"version\": 1, \"step\": 6, \"total_steps\": 6, "
          "\"seed\": \"11\", \"rng_state\": \"5\", \"batch\": 3, \"seq_len\": 8, \"accum\": 2, "
          "\"tokens_seen\": \"0\", \"losses\": [1, 2], \"val_losses\": []}", fj);
    fclose(fj);
    rc = lina_train(&a, &o);
    CHECK(rc == LINA_EFORMAT && strstr(lina_last_error(), "one number per step"),
          "resume with a loss history of the wrong length -> EFORMAT: %s", lina_last_error());
    snprintf(p, sizeof p, "%s/checkpoint/optimizer.safetensors", d1);
    CHECK(truncate(p, 100) == 0, "truncate optimizer.safetensors");
    snprintf(p, sizeof p, "%s/checkpoint/trainer.json", d2);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp %s %s/checkpoint/trainer.json", p, d1);
    rc = system(cmd);
    rc = lina_train(&a, &o);
    CHECK(rc == LINA_EFORMAT && strstr(lina_last_error(), "optimizer.safetensors"),
          "resume with a truncated optimizer.safetensors -> EFORMAT: %s", lina_last_error());
    toy_free(&t);
}

/* accum 2 x batch 3 draws the same 6 windows as 1 x batch 6: same losses and
 * (to float round-off) the same parameters */
static void test_accum(void)
{
    char data[256], val[256], d[2][256];
    make_corpus(data, val);
    double l[2][4];
    float p[2][16 * 16 + 16];
    for (int k = 0; k < 2; k++) {
        snprintf(d[k], sizeof d[k], "%s/accum%d", g_dir, k);
        toy t;
        toy_init(&t, 16, 5);
        lina_trainable a = toy_adapter(&t);
        lina_train_opts o;
        lina_train_opts_default(&o);
        o.data_path = data;
        o.out_dir = d[k];
        o.steps = 4;
        o.batch = k ? 6 : 3;
        o.accum = k ? 1 : 2;
        o.seq_len = 8;
        o.lr = 0.05;
        o.clip = 0.1;
        o.seed = 4;
        o.progress = 0;
        o.losses = l[k];
        int rc = lina_train(&a, &o);
        CHECK(rc == 0, "accumulation run %d", k);
        memcpy(p[k], t.p, sizeof p[k]);
        toy_free(&t);
    }
    double el = 0.0, ep = 0.0;
    for (int i = 0; i < 4; i++) {
        el = fmax(el, fabs(l[0][i] - l[1][i]));
    }
    for (int i = 0; i < 16 * 16 + 16; i++) {
        ep = fmax(ep, fabs((double)p[0][i] - p[1][i]));
    }
    CHECK(el < 1e-6 && ep < 1e-5, "accum 2 x batch 3 == batch 6 (with clipping): loss diff %.1e, "
                                  "param diff %.1e",
          el, ep);
}

/* The NaN stop names the step and keeps the last checkpoint, whether the
 * model returns the NaN loss (refuse 0) or refuses it itself (refuse 1, as
 * lina_model's train step does with LINA_ENONFINITE). */
static void test_nan_stop_with(int refuse)
{
    char data[256], val[256], d[256], p[512];
    make_corpus(data, val);
    path_in(d, sizeof d, refuse ? "nan_refused" : "nan");
    double l[10];
    /* accum 2: train_step call 9 is in update 5; checkpoints every 2 updates */
    int rc = run_toy(d, data, NULL, 10, 0, 0, refuse ? -9 : 9, 2, l, NULL, NULL);
    CHECK(rc == LINA_ENONFINITE && strstr(lina_last_error(), "NaN") &&
              strstr(lina_last_error(), "step 5") && strstr(lina_last_error(), "step 4"),
          "NaN loss stops training (model refuses it: %d): %s", refuse, lina_last_error());
    toy t;
    toy_init(&t, 16, 0);
    lina_trainable a = toy_adapter(&t);
    lina_adamw o;
    lina_adamw_init(&o, toy_num_params(&t));
    lina_train_state s;
    lina_train_state_alloc(&s, 10);
    rc = lina_ckpt_read(d, &a, &o, &s);
    CHECK(rc == 0 && s.step == 4 && o.step == 4 && s.losses[3] == l[3], "the step-4 checkpoint is "
                                                                         "kept and complete");
    snprintf(p, sizeof p, "%s/log.jsonl", d);
    CHECK(count_lines(p) == 4, "log has the 4 finished steps");
    lina_train_state_free(&s);
    lina_adamw_free(&o);
    toy_free(&t);
}

/* kill -9 a training run at several moments; every time a complete
 * checkpoint must remain, and resuming must end with the straight run's losses */
static void test_kill(void)
{
    char data[256], val[256], d[256], ref[256];
    make_corpus(data, val);
    path_in(ref, sizeof ref, "kill_ref");
    enum { S = 20 };
    double lref[S], l[S];
    int rc = run_toy(ref, data, val, S, 0, 0, 0, 1, lref, NULL, NULL);
    CHECK(rc == 0, "reference run of %d steps", S);
    int ok_all = 1, kills = 0;
    const int delays_us[] = {3000, 11000, 23000, 41000, 67000};
    for (int k = 0; k < 5; k++) {
        snprintf(d, sizeof d, "%s/kill%d", g_dir, k);
        pid_t pid = fork();
        if (pid == 0) {
            /* the child trains with a checkpoint every step until killed */
            for (;;) {
                int r = run_toy(d, data, val, S, 0, 0, 0, 1, l, NULL, NULL);
                _exit(r == 0 ? 0 : 1);
            }
        }
        usleep((useconds_t)delays_us[k]);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        kills += WIFSIGNALED(status);
        char ck[512];
        snprintf(ck, sizeof ck, "%s/checkpoint", d);
        struct stat st;
        (void)st;
        if (!lina_ckpt_exists(d)) {
            /* killed before the first checkpoint: nothing to resume; start over */
            rc = run_toy(d, data, val, S, 0, 0, 0, 1, l, NULL, NULL);
        } else {
            rc = run_toy(d, data, val, S, 1, 0, 0, 1, l, NULL, NULL);
        }
        int same = rc == 0 && !memcmp(l, lref, sizeof l);
        if (!same) {
            printf("    kill %d: rc %d (%s)\n", k, rc, lina_last_error());
        }
        ok_all &= same;
    }
    CHECK(ok_all, "kill -9 at 5 moments (%d killed mid-run), resume ends with the straight run's "
                  "losses",
          kills);
}

/* ------------------------------------------------------- the real model */

/* kinds: 0 GLA, 1 GLA tied, 2 gated_deltanet, 3 transformer, 4 GLA + softmax attention hybrid */
static const char *const g_kind_name[] = {"gla", "gla tied", "gated_deltanet", "transformer",
                                          "gla+attn hybrid"};

static lina_config model_config(int kind)
{
    lina_config c;
    lina_model_type t = kind == 2 ? LINA_MODEL_GATED_DELTANET
                        : kind == 3 ? LINA_MODEL_TRANSFORMER
                                    : LINA_MODEL_GLA;
    lina_config_default(&c, t);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = 16;
    c.intermediate_size = 32;
    c.tie_word_embeddings = kind == 1;
    if (kind == 2) {
        c.head_dim = 8;
    }
    if (kind == 4) {
        c.attn.enabled = 1;
        c.attn.n_layers = 1;
        c.attn.layers[0] = 1;
        c.attn.num_heads = 2;
        c.attn.num_kv_heads = 2;
        c.attn.rope_theta = 10000.0;
    }
    return c;
}

static int run_model(const char *dir, const char *data, const char *val, int kind, int resume,
                     int64_t stop_after, double *losses, double *vals, float **final_params,
                     size_t *np)
{
    lina_config c = model_config(kind);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 7, &m);
    if (rc != LINA_OK) {
        return rc;
    }
    lina_trainable a;
    lina_trainable_from_model(m, &a);
    lina_train_opts o;
    lina_train_opts_default(&o);
    o.data_path = data;
    o.val_path = val;
    o.out_dir = dir;
    o.steps = 6;
    o.batch = 2;
    o.seq_len = 12;
    o.accum = 2;
    o.lr = 3e-3;
    o.warmup = 2;
    o.seed = 3;
    o.eval_every = 3;
    o.eval_batches = 2;
    o.resume = resume;
    o.stop_after = stop_after;
    o.progress = 0;
    o.losses = losses;
    o.val_losses = vals;
    rc = lina_train(&a, &o);
    if (final_params) {
        *np = lina_model_num_params(m);
        *final_params = malloc(*np * sizeof(float));
        memcpy(*final_params, lina_model_params(m), *np * sizeof(float));
    }
    lina_model_free(m);
    return rc;
}

static void test_model_resume(int kind)
{
    const char *kn = g_kind_name[kind];
    char data[256], val[256], d1[256], d2[256], p[512];
    make_corpus(data, val);
    snprintf(d1, sizeof d1, "%s/model%d_a", g_dir, kind);
    snprintf(d2, sizeof d2, "%s/model%d_b", g_dir, kind);
    double l1[6], v1[6], l2[6], v2[6];
    float *p1 = NULL, *p2 = NULL;
    size_t n1 = 0, n2 = 0;
    int rc = run_model(d1, data, val, kind, 0, 0, l1, v1, &p1, &n1);
    CHECK(rc == 0 && isfinite(l1[5]) && l1[5] < l1[0], "%s model trains 6 steps: loss %.4f -> %.4f (%s)",
          kn, l1[0], l1[5], rc ? lina_last_error() : "");
    rc = run_model(d2, data, val, kind, 0, 3, l2, v2, NULL, NULL);
    rc |= run_model(d2, data, val, kind, 1, 0, l2, v2, &p2, &n2);
    int same = rc == 0 && n1 == n2 && !memcmp(l1, l2, sizeof l1) && !memcmp(p1, p2, n1 * sizeof(float));
    for (int i = 0; i < 6; i++) {
        same &= (isnan(v1[i]) && isnan(v2[i])) || v1[i] == v2[i];
        if (l1[i] != l2[i]) {
            printf("    step %d: %.17g vs %.17g\n", i + 1, l1[i], l2[i]);
        }
    }
    CHECK(same, "%s model: 6 steps == 3 + resume + 3, bit-identical losses and parameters", kn);
    snprintf(p, sizeof p, "%s/checkpoint", d2);
    lina_model *m = NULL;
    rc = lina_model_load(p, &m);
    CHECK(rc == 0 && lina_model_num_params(m) == n1 &&
              !memcmp(lina_model_params(m), p1, n1 * sizeof(float)),
          "%s: checkpoint/ loads with lina_model_load and holds the final parameters", kn);
    lina_model_free(m);
    free(p1);
    free(p2);
}

/* ----------------------------------------------------------------- CLI */

/* run `lina ARGS`, stderr to a file; returns the exit status */
static int cli(const char *args, char *err, size_t nerr)
{
    const char *bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    char cmd[2048], ef[300];
    snprintf(ef, sizeof ef, "%s/stderr.txt", g_dir);
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>%s", bin, args, ef);
    int st = system(cmd);
    FILE *f = fopen(ef, "r");
    size_t n = f ? fread(err, 1, nerr - 1, f) : 0;
    err[n] = '\0';
    while (n > 0 && err[n - 1] == '\n') {
        err[--n] = '\0';
    }
    if (f) {
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void)
{
    const char *bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    if (access(bin, X_OK) != 0) {
        CHECK(0, "lina train end to end: need %s", bin);
        return;
    }
    char txt[256], tok[256], cfg[256], run[256], args[2048], err[4096], p[512];
    path_in(txt, sizeof txt, "cli.txt");
    path_in(tok, sizeof tok, "cli.tok");
    path_in(cfg, sizeof cfg, "cli_config.json");
    path_in(run, sizeof run, "cli_run");
    FILE *f = fopen(txt, "w");
    uint64_t s = 5;
    for (int i = 0; i < 3000; i++) {
        fprintf(f, "%d%c", (int)(lina_splitmix64(&s) % 4) + 4 * (i % 4), i % 20 == 19 ? '\n' : ' ');
    }
    fclose(f);
    f = fopen(cfg, "w");
    fprintf(f, "{\"model_type\": \"gla\", \"hidden_size\": 16, \"num_hidden_layers\": 1, "
               "\"num_heads\": 2, \"vocab_size\": 16, \"intermediate_size\": 32}\n");
    fclose(f);
    snprintf(args, sizeof args, "data pack --vocab 16 --in %s --out %s", txt, tok);
    int rc = cli(args, err, sizeof err);
    lina_tokfile *tf = NULL;
    int orc = lina_tok_open(tok, &tf);
    CHECK(rc == 0 && orc == 0 && lina_tok_count(tf) == 3000 && lina_tok_vocab(tf) == 16,
          "lina data pack: text -> token file (%s)", err);
    lina_tok_close(tf);
    snprintf(args, sizeof args, "data pack --vocab 8 --in %s --out %s", txt, tok);
    rc = cli(args, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "not below --vocab 8"), "lina data pack: token >= vocab -> %d: %s",
          rc, err);
    snprintf(args, sizeof args, "data info %s", txt);
    rc = cli(args, err, sizeof err);
    CHECK(rc == 1 && strstr(err, "magic"), "lina data info on a text file -> 1: %s", err);
    snprintf(args, sizeof args, "data pack --vocab 16 --in %s --out %s", txt, tok);
    cli(args, err, sizeof err);
    snprintf(args, sizeof args,
             "train --config %s --data %s --val %s --out %s --steps 4 --batch 2 --seq-len 8 "
             "--threads 1 --save-every 2 --eval-every 2 --lr 1e-2",
             cfg, tok, tok, run);
    rc = cli(args, err, sizeof err);
    snprintf(p, sizeof p, "%s/log.jsonl", run);
    int lines = count_lines(p);
    snprintf(p, sizeof p, "%s/checkpoint/optimizer.safetensors", run);
    CHECK(rc == 0 && lines == 4 && access(p, R_OK) == 0 && strstr(err, "step 4/4"),
          "lina train: 4 steps, log.jsonl and checkpoint/ (rc %d, %d lines)", rc, lines);
    snprintf(args, sizeof args,
             "train --resume --data %s --val %s --out %s --steps 6 --batch 2 --seq-len 8 "
             "--threads 1 --quiet --lr 1e-2",
             tok, tok, run);
    rc = cli(args, err, sizeof err);
    snprintf(p, sizeof p, "%s/log.jsonl", run);
    lines = count_lines(p);
    CHECK(rc == 0 && lines == 6, "lina train --resume (config from the checkpoint) to 6 steps "
                                 "(rc %d, %d lines): %s",
          rc, lines, err);
    snprintf(args, sizeof args, "train --data %s --out %s", tok, run);
    rc = cli(args, err, sizeof err);
    CHECK(rc == 1 && strstr(err, "--resume"), "lina train into a directory with a checkpoint, no --resume -> 1: %s",
          err);
    {
        char run2[600], cj[700];
        snprintf(run2, sizeof run2, "%s_builtin", run);
        snprintf(args, sizeof args, "train --data %s --out %s --steps 1 --batch 1 --seq-len 8 --threads 1 --quiet",
                 tok, run2);
        rc = cli(args, err, sizeof err);
        snprintf(cj, sizeof cj, "%s/checkpoint/config.json", run2);
        lina_config bc;
        int crc = lina_config_read(cj, &bc);
        CHECK(rc == 0 && crc == 0 && bc.model_type == LINA_MODEL_GLA && bc.hidden_size == 256 &&
                  bc.num_hidden_layers == 4 && bc.vocab_size == 4096,
              "lina train without --config trains the built-in GLA model (rc %d): %s", rc, err);
        snprintf(args, sizeof args, "train --data %s --out %s --tokenizer /nonexistent/tok.json --steps 1", tok,
                 run2);
        rc = cli(args, err, sizeof err);
        CHECK(rc == 2 && strstr(err, "tokenizer"), "lina train --tokenizer MISSING -> 2: %s", err);
        char rmc[700];
        snprintf(rmc, sizeof rmc, "rm -rf '%s'", run2);
        CHECK(system(rmc) == 0, "cleanup");
    }
    snprintf(args, sizeof args, "train --config %s --data %s --out %s --steps 0", cfg, tok, run);
    rc = cli(args, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "--steps"), "lina train --steps 0 -> 2: %s", err);
    snprintf(args, sizeof args, "train --config %s --data %s --out %s --seq-len 5000 --quiet", cfg,
             tok, run);
    rc = cli(args, err, sizeof err);
    CHECK(rc == 1 && strstr(err, "too few"), "lina train with seq-len beyond the data -> 1: %s", err);
}

/* the real model through the CLI: kill -9 mid-run, --resume, same log */
static void read_losses(const char *log, double *l, int n)
{
    FILE *f = fopen(log, "r");
    char line[1024];
    for (int i = 0; i < n; i++) {
        l[i] = NAN;
    }
    while (f && fgets(line, sizeof line, f)) {
        long long s;
        double v;
        if (sscanf(line, "{\"step\":%lld,\"loss\":%lf", &s, &v) == 2 && s >= 1 && s <= n) {
            l[s - 1] = v;
        }
    }
    if (f) {
        fclose(f);
    }
}

static void test_cli_kill(void)
{
    const char *bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    char tok[256], cfg[256], ref[256], run[256], args[2048], err[4096], p[512];
    path_in(tok, sizeof tok, "cli.tok");
    path_in(cfg, sizeof cfg, "cli_config.json");
    path_in(ref, sizeof ref, "cli_kill_ref");
    path_in(run, sizeof run, "cli_kill");
    enum { S = 25 };
    const char *common = "--steps 25 --batch 2 --seq-len 16 --threads 1 --save-every 1 --quiet --lr 1e-2";
    snprintf(args, sizeof args, "train --config %s --data %s --out %s %s", cfg, tok, ref, common);
    int rc = cli(args, err, sizeof err);
    double lref[S], l[S];
    snprintf(p, sizeof p, "%s/log.jsonl", ref);
    read_losses(p, lref, S);
    CHECK(rc == 0 && isfinite(lref[S - 1]), "lina train reference run (%s)", err);
    int ok = 1, killed = 0;
    const int delays_us[] = {20000, 60000, 120000};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s%d", run, k);
        pid_t pid = fork();
        if (pid == 0) {
            execl(bin, bin, "train", "--config", cfg, "--data", tok, "--out", p, "--steps", "25",
                  "--batch", "2", "--seq-len", "16", "--threads", "1", "--save-every", "1",
                  "--quiet", "--lr", "1e-2", (char *)NULL);
            _exit(127);
        }
        usleep((useconds_t)delays_us[k]);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        killed += WIFSIGNALED(status);
        char ck[600];
        snprintf(ck, sizeof ck, "%s/checkpoint", p);
        struct stat st;
        (void)st;
        snprintf(args, sizeof args, "train %s --config %s --data %s --out %s %s",
                 lina_ckpt_exists(p) ? "--resume" : "", cfg, tok, p, common);
        rc = cli(args, err, sizeof err);
        char lp[600];
        snprintf(lp, sizeof lp, "%s/log.jsonl", p);
        read_losses(lp, l, S);
        int same = rc == 0 && !memcmp(l, lref, sizeof l) && count_lines(lp) == S;
        if (!same) {
            printf("    kill %d: rc %d, %d log lines: %s\n", k, rc, count_lines(lp), err);
        }
        ok &= same;
    }
    CHECK(ok, "lina train (GLA) killed with -9 at 3 moments (%d mid-run) and resumed: log.jsonl "
              "equals the uninterrupted run's, one line per step",
          killed);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/lina_train_XXXXXX");
    if (!mkdtemp(g_dir)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    test_adamw();
    test_schedule();
    test_tokfile();
    test_sampler();
    test_ckpt_files();
    test_resume();
    test_accum();
    test_nan_stop_with(0);
    test_nan_stop_with(1);
    test_kill();
    for (int kind = 0; kind < 5; kind++) {
        test_model_resume(kind);
    }
    test_cli();
    test_cli_kill();
    rm_tree(g_dir);
    return th_exit();
}
