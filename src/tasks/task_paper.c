/* task_paper.c -- `lina paper`: the reduced reproduction of the papers' synthetic-task
 * findings (docs/tasks.md sections 1-4). Runs every experiment with fixed
 * settings chosen before looking at the results, writes DIR/PAPER.md (one table per
 * experiment: lina's numbers next to the paper's, seeds, wall time, and a plain
 * statement where lina disagrees) and PNG plots. A mixer that lina cannot build yet
 * gives a "not run: <reason>" row instead of stopping the sweep. */
#include "tasks.h"
#include "icl.h"
#include "../kern/kern.h"
#include "../io/plot.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct paper_ctx {
    const char *out;
    int threads;
    int quick;           /* a fast pass of the whole pipeline (far fewer steps) */
    FILE *md;            /* the sections (copied under the summary at the end) */
    char summary[16][8000];
    int nsum;
    int seeds;           /* seeds per configuration of the MQAR protocol */
    const char *mixers;  /* MQAR: comma-separated subset of the models (NULL: all) */
    const char *widths;  /* MQAR: comma-separated widths in the order they run (NULL: the report's) */
    const char *cells;   /* comma-separated configurations to run (NULL: all); the others are read back */
    int full;            /* the full protocol (make paper-full) instead of the budgeted report */
    int resume;          /* cells done earlier with the same settings are read back, not rerun */
    double lrs[LINA_TASK_MAX_LRS]; /* --lrs (nlrs > 0) instead of the report's learning rates */
    int nlrs;
    double section_wall; /* > 0: the section's training time, cells read back included */
    double section_cpu;  /* the CPU seconds of the section's runs that recorded them */
    int cpu_missing;     /* runs kept from before CPU time was recorded */
} paper_ctx;

/* add the CPU seconds of runs to the section's (NAN: not recorded for those runs) */
static void add_cpu(paper_ctx *p, double cpu_s, int runs)
{
    if (isnan(cpu_s)) {
        p->cpu_missing += runs;
    } else {
        p->section_cpu += cpu_s;
    }
}

static int write_atomic(const char *path, const char *data, size_t n);

static int list_has(const char *list, const char *name)
{
    if (!list) {
        return 1;
    }
    size_t n = strlen(name);
    for (const char *s = list; *s;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == n && !strncmp(s, name, n)) {
            return 1;
        }
        s += len + (e ? 1 : 0);
    }
    return 0;
}

static int paper_wants_mixer(const paper_ctx *p, lina_model_type m)
{
    return list_has(p->mixers, lina_model_type_name(m));
}

static void summary(paper_ctx *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void summary(paper_ctx *p, const char *fmt, ...)
{
    if (p->nsum >= 16) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->summary[p->nsum++], sizeof p->summary[0], fmt, ap);
    va_end(ap);
}

static void plot(paper_ctx *p, const char *file, const char *title, const char *xl, const char *yl, int logx,
                 lina_plot_series *s, int n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", p->out, file);
    lina_plot_opts po = {title, xl, yl, logx, 0, 0, 0};
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].n > 0) {
            s[k++] = s[i];
        }
    }
    if (k == 0) {
        fprintf(p->md, "(no data for %s: every run failed)\n\n", file);
        return;
    }
    if (lina_plot_png(path, &po, s, k)) {
        fprintf(stderr, "lina paper: %s: %s\n", path, lina_last_error());
        fprintf(p->md, "(plot %s failed: %s)\n\n", file, lina_last_error());
    } else {
        fprintf(p->md, "![%s](%s)\n\n", title, file);
    }
}

/* ================================================================= MQAR */

/* the models of the MQAR table by type name (a name this build lacks is left out); the first five
 * are the control and the four of the ordering finding, in that order, and run first; the paper
 * column is the DeltaNet paper's MQAR figure (L=512, N=64), accuracy % at d = 64 / 128 [fig~] */
#define MQ_NMODELS 13
#define MQ_NWIDTHS 3
enum { MQ_TR, MQ_DN, MQ_GDN, MQ_GLA, MQ_LA }; /* rows the verdicts read */
static const struct {
    const char *name, *paper;
} MQ_TABLE[MQ_NMODELS] = {
    {"transformer", "~100 / ~100 (Zoology fig. 2: attention ~97-100 at every d)"},
    {"delta_net", "100 / 100"},
    {"gated_deltanet", "not in the figure; ~89-99 in Zoology's state-size sweep"},
    {"gla", "~22 / ~95"},
    {"linear_attn", "not in the figure; expected lowest (docs/tasks.md 1.2)"},
    {"mamba2", "not in the figure (Mamba-1 is: see mamba)"},
    {"retnet", "~5 / ~87"},
    {"mamba", "~81 / 100"},
    {"kda", "not in the figure"},
    {"gsa", "not in the figure"},
    {"forgetting_transformer", "not in the figure"},
    {"hgrn", "not in the figure"},
    {"rwkv7", "not in the figure"},
};
static const int MQ_WIDTHS[MQ_NWIDTHS] = {32, 64, 128};
static lina_model_type MQ_MODELS[MQ_NMODELS];
static int mq_nmodels; /* the rows this build has (mq_models) */

/* resolve MQ_TABLE's names against the model registry */
static void mq_models(const char **paper)
{
    mq_nmodels = 0;
    for (int i = 0; i < MQ_NMODELS; i++) {
        for (int t = 0; t < LINA_MODEL_COUNT; t++) {
            if (!strcmp(lina_model_type_name((lina_model_type)t), MQ_TABLE[i].name)) {
                paper[mq_nmodels] = MQ_TABLE[i].paper;
                MQ_MODELS[mq_nmodels++] = (lina_model_type)t;
            }
        }
    }
}
#define MQ_L 128
#define MQ_N 16
#define MQ_V 256
#define MQ_STEPS 1500
#define MQ_TRAIN_N 10000
/* the full protocol's learning rates; the budgeted report keeps the first (docs/tasks.md 1.3) */
#define MQ_NLRS_FULL 2
static const double MQ_LRS_FULL[MQ_NLRS_FULL] = {1e-3, 3e-3};
/* the widths each report runs, in the order they run */
static const char MQ_WIDTHS_BUDGET[] = "64,32";
static const char MQ_WIDTHS_FULL[] = "64,32,128";
#define MQ_SPREAD 0.15 /* a standard deviation over seeds above this: the seeds disagree */
#define MQ_MIN_SEEDS 3 /* fewer seeds in a cell: a comparison with it is inconclusive */
#define MQ_TIE 0.02 /* "DeltaNet and Gated DeltaNet >= GLA": the lower of the two at most 2 points under GLA */
#define MQ_SAT 0.95 /* all four models at or above this at a width: the ordering cannot show there */

/* the learning rates of this report: --lrs, else the budget's one or the full protocol's two */
static int paper_lrs(const paper_ctx *p, double *lrs)
{
    if (p->nlrs > 0) {
        memcpy(lrs, p->lrs, sizeof(double) * (size_t)p->nlrs);
        return p->nlrs;
    }
    memcpy(lrs, MQ_LRS_FULL, sizeof MQ_LRS_FULL);
    return p->full ? MQ_NLRS_FULL : 1;
}

/* the MQAR protocol (docs/tasks.md 6): a fixed training set visited in epochs, warm-up + cosine,
 * early stop at 99 % validation accuracy, the best of the report's learning rates per seed */
static void mqar_protocol(lina_task_opts *o, lina_model_type m, int d, const paper_ctx *p)
{
    lina_task_opts_default(o, LINA_TASK_MQAR);
    o->mixer = m;
    o->d_model = d;
    o->layers = 2;
    o->heads = m == LINA_MODEL_TRANSFORMER || m == LINA_MODEL_FORGETTING_TRANSFORMER ? 1 : 2; /* attention: one head */
    o->seq_len = MQ_L;
    o->num_kv = MQ_N;
    o->vocab = MQ_V;
    o->steps = p->quick ? 60 : MQ_STEPS;
    o->batch = 64;
    o->train_n = MQ_TRAIN_N;
    o->target = 0.99;
    o->eval_every = 50;
    o->val_n = 128;
    o->eval_n = 256;
    o->seed = 0;
    o->threads = p->threads;
    o->progress = 1;
}

/* the report's settings on one thread (the options of a cell as the report keeps it) */
static paper_ctx one_thread(void)
{
    paper_ctx p;
    memset(&p, 0, sizeof p);
    p.threads = 1;
    return p;
}

void lina_paper_mqar_opts(lina_task_opts *o, lina_model_type m, int d)
{
    const paper_ctx p = one_thread();
    mqar_protocol(o, m, d, &p);
}

/* The budget ablation: the control and the four models of the ordering finding at the budgeted widths,
 * and Mamba2 (7.8 / 58.4 / 40.0 % at d 64, loss still falling; 0.7 / 4.9 / 28.2 % at d 32), again with
 * at most MQ_LONG_STEPS (the same early stop; warm-up and cosine over the longer schedule). It says
 * whether a spread of seeds is the budget's (Gated DeltaNet with FLA's gate init: one seed fits, another
 * stays at the plateau), and judges the ordering finding again where all five ran with the longer
 * budget. */
#define MQ_LONG_STEPS 4000
#define MQ_NLONG 12
static const struct {
    const char *name;
    int d;
} MQ_LONG[MQ_NLONG] = {{"transformer", 32}, {"delta_net", 32}, {"gated_deltanet", 32}, {"gla", 32},
                       {"linear_attn", 32}, {"mamba2", 32}, {"transformer", 64}, {"delta_net", 64},
                       {"gated_deltanet", 64}, {"gla", 64}, {"linear_attn", 64}, {"mamba2", 64}};

static void mqar_long_protocol(lina_task_opts *o, lina_model_type m, int d, const paper_ctx *p)
{
    mqar_protocol(o, m, d, p);
    o->steps = p->quick ? 60 : MQ_LONG_STEPS;
}

void lina_paper_mqar_long_opts(lina_task_opts *o, lina_model_type m, int d)
{
    const paper_ctx p = one_thread();
    mqar_long_protocol(o, m, d, &p);
}

/* one configuration over seeds and learning rates, as run now or read back from its cell file */
typedef struct mq_cell {
    int ran, ok;
    char why[200];
    lina_task_sweep sw;
} mq_cell;

/* ------------------------------------------------- memory at init */

/* Spearman's rank correlation of n pairs (average ranks for ties); NAN when n < 3 or a side is constant */
static double spearman(const double *a, const double *b, int n)
{
    if (n < 3 || n > LINA_TASK_MAX_SEEDS) {
        return NAN;
    }
    double ra[LINA_TASK_MAX_SEEDS], rb[LINA_TASK_MAX_SEEDS];
    const double *v[2] = {a, b};
    double *r[2] = {ra, rb};
    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < n; i++) {
            double lt = 0, eq = 0;
            for (int j = 0; j < n; j++) {
                lt += v[t][j] < v[t][i];
                eq += v[t][j] == v[t][i];
            }
            r[t][i] = lt + (eq + 1) / 2.0;
        }
    }
    double ma = 0, mb = 0;
    for (int i = 0; i < n; i++) {
        ma += ra[i] / n;
        mb += rb[i] / n;
    }
    double sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) {
        sab += (ra[i] - ma) * (rb[i] - mb);
        saa += (ra[i] - ma) * (ra[i] - ma);
        sbb += (rb[i] - mb) * (rb[i] - mb);
    }
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
}

/* Each seed's longest half-life at init (hl) and score (sc) for a sweep; returns the count (0: no
 * such gate) */
static int init_memory(const lina_task_opts *o, const lina_task_sweep *sw, double *hl, double *sc)
{
    int n = 0;
    for (int s = 0; s < sw->nseeds && s < LINA_TASK_MAX_SEEDS; s++) {
        hl[n] = lina_task_init_halflife(o, (int)o->seed + s);
        if (isnan(hl[n])) {
            return 0;
        }
        sc[n++] = sw->run[s].test_scaled;
    }
    return n;
}

/* One line per configuration with such a gate: each seed's longest half-life at init and its score,
 * and over the line's seeds the rank correlation of the two. */
static void init_memory_line(FILE *f, const char *label, const lina_task_opts *o, const lina_task_sweep *sw)
{
    double hl[LINA_TASK_MAX_SEEDS], sc[LINA_TASK_MAX_SEEDS];
    const int n = init_memory(o, sw, hl, sc);
    if (n == 0) {
        return;
    }
    fprintf(f, "- %s:", label);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s seed %d: %.0f tokens -> %.1f%%", i ? ";" : "", (int)o->seed + i, hl[i], 100 * sc[i]);
    }
    const double rho = spearman(hl, sc, n);
    if (!isnan(rho)) {
        fprintf(f, " (rank correlation %.2f)", rho);
    }
    fprintf(f, "\n");
}

static const char INIT_MEMORY_HEAD[] =
    "Memory at init (the models whose decay is exp(-exp(A_log) softplus(a + dt_bias)), computed from the models as "
    "each seed's run creates them): per seed, the longest half-life ln 2 / (exp(A_log) softplus(dt_bias)) over every "
    "head and layer at a zero input, in tokens, then the seed's score. A head that forgets within a few tokens cannot "
    "carry a key to a query up to L tokens later until training has slowed its decay; with 2 heads a layer, the "
    "longest memory at init differs widely between seeds.\n\n";

static double mq_mean(const mq_cell *c)
{
    return c->ran && c->ok ? c->sw.mean : NAN;
}

/* the fewest seeds among cells that ran (INT_MAX when none) */
static int mq_min_seeds(const mq_cell *const *c, int n)
{
    int m = INT_MAX;
    for (int i = 0; i < n; i++) {
        if (c[i]->ran && c[i]->ok && c[i]->sw.nseeds < m) {
            m = c[i]->sw.nseeds;
        }
    }
    return m;
}

void lina_task_sweep_key(const lina_task_opts *o, const double *lrs, int nlr, int nseeds, char *buf, size_t n)
{
    /* parity / mod-arith: their training and test lengths too (the other tasks' keys are as they were) */
    char lens[64] = "";
    if (o->kind == LINA_TASK_PARITY || o->kind == LINA_TASK_MODARITH) {
        snprintf(lens, sizeof lens, " len%d-%d/%d-%d e%d", o->train_min, o->train_max, o->test_min, o->test_max,
                 o->eval_n);
    }
    if (o->slow_decay) { /* the init ablation (the keys without it are as they were) */
        const size_t l = strlen(lens);
        snprintf(lens + l, sizeof lens - l, " slowdecay");
    }
    int k = snprintf(buf, n, "%s %s d%d l%d h%d hd%d nh%d neg%d mem%d/%d/%d L%d N%d V%d n%d b%d s%d t%g wd%g%s seeds%d lr",
                     lina_task_name(o->kind), lina_model_type_name(o->mixer), o->d_model, o->layers, o->heads,
                     o->head_dim, o->householder, o->neg_eigval, o->mom_memories, o->mom_topk, o->mom_shared,
                     o->seq_len, o->num_kv, o->vocab, o->train_n, o->batch, o->steps, o->target, o->weight_decay,
                     lens, nseeds);
    for (int i = 0; i < nlr && k > 0 && (size_t)k < n; i++) {
        k += snprintf(buf + k, n - (size_t)k, "%s%g", i ? "," : "", lrs[i]);
    }
}

int lina_task_sweep_save(const char *path, const char *key, const lina_task_sweep *s)
{
    char buf[8192];
    int k = snprintf(buf, sizeof buf, "key %s\nsweep %d %d %.17g %.17g %.17g %.17g %.17g %.17g %.17g\n", key,
                     s->nseeds, s->runs, s->mean, s->sd, s->min, s->max, s->fit_mean, s->fit_min, s->wall_s);
    for (int i = 0; i < s->nseeds && k < (int)sizeof buf; i++) {
        const lina_task_result *r = &s->run[i];
        double sa = r->seq_acc && r->seq_acc_n > 0 ? r->seq_acc[r->seq_acc_n - 1] : NAN;
        k += snprintf(buf + k, sizeof buf - (size_t)k, "seed %.17g %d %d %.17g %.17g %.17g %.17g %.17g %.17g\n",
                      s->lr[i], r->steps_done, r->stopped_early, r->test_scaled, r->test_acc, r->train_acc,
                      r->val_acc, r->wall_s, sa);
    }
    if (k < (int)sizeof buf && !isnan(s->cpu_s)) {
        k += snprintf(buf + k, sizeof buf - (size_t)k, "cpu %.17g\n", s->cpu_s);
    }
    /* parity / mod-arith: each seed's accuracy by length ("lens SEED N len acc ..."; read when present) */
    for (int i = 0; i < s->nseeds && k < (int)sizeof buf; i++) {
        const lina_task_result *r = &s->run[i];
        if (r->nlens > 0 && r->nlens <= LINA_TASK_MAX_LENS) {
            k += snprintf(buf + k, sizeof buf - (size_t)k, "lens %d %d", i, r->nlens);
            for (int j = 0; j < r->nlens && k < (int)sizeof buf; j++) {
                k += snprintf(buf + k, sizeof buf - (size_t)k, " %d %.17g", r->lens[j], r->acc_at[j]);
            }
            if (k < (int)sizeof buf) {
                k += snprintf(buf + k, sizeof buf - (size_t)k, "\n");
            }
        }
    }
    if (k >= (int)sizeof buf || strchr(key, '\n')) {
        return lina_set_error(LINA_EINVAL, "paper: the record of '%s' does not fit", path);
    }
    return write_atomic(path, buf, (size_t)k) ? lina_set_error(LINA_EIO, "paper: cannot write '%s'", path) : LINA_OK;
}

int lina_task_sweep_load(const char *path, const char *key, lina_task_sweep *s)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "r");
    if (!f) {
        return 0;
    }
    char line[2048];
    const size_t kl = strlen(key);
    int ok = fgets(line, sizeof line, f) && !strncmp(line, "key ", 4) && !strncmp(line + 4, key, kl) &&
             line[4 + kl] == '\n';
    ok = ok && fscanf(f, "sweep %d %d %lf %lf %lf %lf %lf %lf %lf\n", &s->nseeds, &s->runs, &s->mean, &s->sd,
                      &s->min, &s->max, &s->fit_mean, &s->fit_min, &s->wall_s) == 9 &&
         s->nseeds >= 1 && s->nseeds <= LINA_TASK_MAX_SEEDS;
    for (int i = 0; ok && i < s->nseeds; i++) {
        lina_task_result *r = &s->run[i];
        char sa[64];
        ok = fscanf(f, "seed %lf %d %d %lf %lf %lf %lf %lf %63s\n", &s->lr[i], &r->steps_done, &r->stopped_early,
                    &r->test_scaled, &r->test_acc, &r->train_acc, &r->val_acc, &r->wall_s, sa) == 9;
        double v = ok ? strtod(sa, NULL) : NAN;
        if (ok && !isnan(v)) {
            r->seq_acc = malloc(sizeof(double));
            ok = r->seq_acc != NULL;
            if (ok) {
                r->seq_acc[0] = v;
                r->seq_acc_n = 1;
            }
        }
    }
    /* the CPU seconds, kept since they were recorded (NAN in older records) */
    s->cpu_s = NAN;
    if (ok && fscanf(f, "cpu %lf", &s->cpu_s) != 1) {
        s->cpu_s = NAN;
    }
    /* the accuracy by length of each seed, when kept (parity / mod-arith); a damaged line drops them all */
    int si, nl;
    while (ok && fscanf(f, " lens %d %d", &si, &nl) == 2) {
        if (si < 0 || si >= s->nseeds || nl < 1 || nl > LINA_TASK_MAX_LENS) {
            ok = 0;
            break;
        }
        lina_task_result *r = &s->run[si];
        r->nlens = nl;
        for (int j = 0; ok && j < nl; j++) {
            ok = fscanf(f, "%d %lf", &r->lens[j], &r->acc_at[j]) == 2;
        }
    }
    fclose(f);
    if (!ok) {
        for (int i = 0; i < LINA_TASK_MAX_SEEDS; i++) {
            lina_task_result_free(&s->run[i]);
        }
        memset(s, 0, sizeof *s);
    }
    return ok;
}

int lina_task_sweep_load_any(const char *path, const lina_task_opts *o, const double *lrs, int nlr, int nseeds,
                             lina_task_sweep *s)
{
    char key[1024];
    for (int k = 0; k <= LINA_TASK_MAX_SEEDS; k++) {
        const int ns = k == 0 ? nseeds : LINA_TASK_MAX_SEEDS + 1 - k;
        if (ns < 1 || ns > LINA_TASK_MAX_SEEDS || (k > 0 && ns == nseeds)) {
            continue;
        }
        lina_task_sweep_key(o, lrs, nlr, ns, key, sizeof key);
        if (lina_task_sweep_load(path, key, s)) {
            return 1;
        }
    }
    return 0;
}

/* keep the seeds of a sweep finished so far as a record of that many seeds (lina_task_sweep_resume) */
typedef struct seed_keep {
    const paper_ctx *p;
    const lina_task_opts *o;
    const double *lrs;
    int nlr;
    const char *path;
} seed_keep;

static void keep_seeds(const lina_task_sweep *partial, void *ctx)
{
    const seed_keep *k = ctx;
    char key[1024], dir[4300];
    lina_task_sweep_key(k->o, k->lrs, k->nlr, partial->nseeds, key, sizeof key);
    snprintf(dir, sizeof dir, "%s/paper_parts/cells", k->p->out);
    if ((mkdir(dir, 0777) && errno != EEXIST) || lina_task_sweep_save(k->path, key, partial)) {
        fprintf(stderr, "lina paper: cannot keep the seeds done in '%s'\n", k->path);
    }
}

/* run a cell (seeds x learning rates) unless --resume finds it done; a cell run earlier with the
 * same settings is read back when this report does not run it (its section stays complete) */
static void cell_run(paper_ctx *p, const lina_task_opts *o, const double *lrs, int nlr, int nseeds, const char *name,
                     int want, mq_cell *c)
{
    char key[1024], path[4400], dir[4300];
    lina_task_sweep_key(o, lrs, nlr, nseeds, key, sizeof key);
    snprintf(path, sizeof path, "%s/paper_parts/cells/%s.txt", p->out, name);
    memset(c, 0, sizeof *c);
    want = want && list_has(p->cells, name);
    if ((!want || p->resume) && !p->quick && lina_task_sweep_load(path, key, &c->sw)) {
        c->ran = c->ok = 1;
        if (want) {
            fprintf(stderr, "lina paper: %s: done earlier with the same settings (--resume)\n", name);
        }
        return;
    }
    if (!want) {
        /* a record of the same settings run with another number of seeds (the table names the count) */
        if (!p->quick && lina_task_sweep_load_any(path, o, lrs, nlr, nseeds, &c->sw)) {
            c->ran = c->ok = 1;
        }
        return;
    }
    c->ran = 1;
    /* --resume: the seeds a run cut short had finished (kept after each seed as a record of that
       many seeds) are read back and the sweep goes on from there */
    int have = 0;
    if (p->resume && !p->quick && lina_task_sweep_load_any(path, o, lrs, nlr, nseeds, &c->sw)) {
        if (c->sw.nseeds < nseeds) {
            have = c->sw.nseeds;
            fprintf(stderr, "lina paper: %s: %d of %d seeds done earlier (--resume)\n", name, have, nseeds);
        } else { /* kept with more seeds than asked: done (the table names the count) */
            c->ok = 1;
            fprintf(stderr, "lina paper: %s: done earlier with %d seeds (--resume)\n", name, c->sw.nseeds);
            return;
        }
    }
    seed_keep sk = {p, o, lrs, nlr, path};
    int rc = lina_task_sweep_resume(o, lrs, nlr, nseeds, &c->sw, have, p->quick ? NULL : keep_seeds, &sk);
    c->ok = rc == LINA_OK;
    if (!c->ok) {
        snprintf(c->why, sizeof c->why, "%s", lina_last_error());
        for (char *q = c->why; *q; q++) {
            if (*q == '|' || *q == '\n') {
                *q = ' ';
            }
        }
        fprintf(stderr, "lina paper: %s: not run: %s\n", o->tag ? o->tag : name, c->why);
    } else if (!p->quick) {
        snprintf(dir, sizeof dir, "%s/paper_parts/cells", p->out);
        if ((mkdir(dir, 0777) && errno != EEXIST) || lina_task_sweep_save(path, key, &c->sw)) {
            fprintf(stderr, "lina paper: %s: cannot keep its numbers in '%s': %s\n", name, path,
                    errno ? strerror(errno) : lina_last_error());
        }
    }
}

static void cell_free(mq_cell *c)
{
    for (int k = 0; c->ok && k < c->sw.nseeds; k++) {
        lina_task_result_free(&c->sw.run[k]);
    }
}

/* "mean +- sd [min, max]" in percent, with the number of seeds when it is not the report's */
static void cell_pct(FILE *f, const mq_cell *c, int nseeds)
{
    if (!c->ran) {
        fprintf(f, " not run in this report |");
    } else if (!c->ok) {
        fprintf(f, " not run: %s |", c->why);
    } else {
        fprintf(f, " %.1f +- %.1f [%.1f, %.1f]", 100 * c->sw.mean, 100 * c->sw.sd, 100 * c->sw.min,
                100 * c->sw.max);
        if (c->sw.nseeds != nseeds) {
            fprintf(f, " (%d seed%s)", c->sw.nseeds, c->sw.nseeds == 1 ? "" : "s");
        }
        fprintf(f, " |");
    }
}

/* What an ablation b (3 seeds or more) says about the spread of the seeds of the cell a it varies: base
 * names a's setting ("FLA's init"), what the varied thing ("init"); into buf. */
static void ablation_spread(const mq_cell *a, const mq_cell *b, const char *base, const char *what, char *buf,
                            size_t n)
{
    if (b->sw.nseeds < MQ_MIN_SEEDS) {
        snprintf(buf, n, "inconclusive (fewer than 3 seeds)");
    } else if (!(a->ran && a->ok)) {
        snprintf(buf, n, "%s not run at this width", base);
    } else if (a->sw.sd > MQ_SPREAD && b->sw.sd <= MQ_SPREAD) {
        snprintf(buf, n, "the seeds agree with it and disagreed with %s: the spread is the %s's", base, what);
    } else if (a->sw.sd > MQ_SPREAD) {
        snprintf(buf, n, "the seeds disagree with either %s", what);
    } else if (b->sw.sd > MQ_SPREAD) {
        snprintf(buf, n, "the seeds disagree with it and agreed with %s", base);
    } else {
        snprintf(buf, n, "the seeds agree with either %s", what);
    }
}

/* The ablation of Gated DeltaNet's decay init: a table of FLA's init, the slow init and DeltaNet (no
 * gate) at the widths where the slow init ran, and its verdict (into v; empty when nothing ran). */
static void mqar_slow_ablation(paper_ctx *p, FILE *f, mq_cell (*cells)[MQ_NWIDTHS], const mq_cell *slow, char *v,
                               size_t vn)
{
    int any = 0;
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        any |= slow[j].ran && slow[j].ok;
    }
    if (!any) {
        return;
    }
    char desc[512] = "";
    lina_task_opts x;
    mqar_protocol(&x, LINA_MODEL_GATED_DELTANET, 64, p);
    x.slow_decay = 1;
    lina_task_describe(&x, desc, sizeof desc);
    fprintf(f, "Ablation of Gated DeltaNet's decay init (`lina task mqar --mixer gated_deltanet --slow-decay-init`): "
               "the same protocol and seeds with every head's gate starting at the slow end of the init range, "
               "training free to change it: %s (d at 64). DeltaNet is the same model without the gate.\n\n",
            desc);
    fprintf(f, "| model |");
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        if (slow[j].ran && slow[j].ok) {
            fprintf(f, " d=%d (%%) |", MQ_WIDTHS[j]);
        }
    }
    fprintf(f, " steps (mean) | wall (s) |\n|---|");
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        if (slow[j].ran && slow[j].ok) {
            fprintf(f, "---|");
        }
    }
    fprintf(f, "---|---|\n");
    const char *rows[3] = {"gated_deltanet, FLA's init (the table above)", "gated_deltanet, slow decay at init",
                           "delta_net (no decay gate; the table above)"};
    for (int r = 0; r < 3; r++) {
        fprintf(f, "| %s |", rows[r]);
        double steps = 0.0, wall = 0.0;
        int nst = 0;
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            if (!(slow[j].ran && slow[j].ok)) {
                continue;
            }
            const mq_cell *c = r == 0 ? &cells[MQ_GDN][j] : r == 1 ? &slow[j] : &cells[MQ_DN][j];
            cell_pct(f, c, p->seeds);
            for (int s2 = 0; c->ran && c->ok && s2 < c->sw.nseeds; s2++) {
                steps += c->sw.run[s2].steps_done;
                nst++;
            }
            wall += c->ran && c->ok ? c->sw.wall_s : 0.0;
        }
        fprintf(f, " %.0f | %.0f |\n", nst ? steps / nst : 0.0, wall);
    }
    fprintf(f, "\n");
    /* the verdict: at each width, do the seeds agree with a long memory at init, as they did not
     * with FLA's init? */
    size_t n = (size_t)snprintf(v, vn, "Gated DeltaNet's decay init, ablated (slow decay at init in every head):");
    for (int j = 0; j < MQ_NWIDTHS && n < vn; j++) {
        const mq_cell *a = &cells[MQ_GDN][j], *b = &slow[j];
        if (!(b->ran && b->ok)) {
            continue;
        }
        char what[160];
        ablation_spread(a, b, "FLA's init", "init", what, sizeof what);
        n += (size_t)snprintf(v + n, vn - n, " d=%d %.1f%% (sd %.1f) against FLA's init %.1f%% (sd %.1f), %s",
                              MQ_WIDTHS[j], 100 * b->sw.mean, 100 * b->sw.sd, 100 * mq_mean(a),
                              a->ran && a->ok ? 100 * a->sw.sd : NAN, what);
        /* the first half of the ordering finding with this Gated DeltaNet, by the main verdict's rules */
        const mq_cell *dn = &cells[MQ_DN][j], *gla = &cells[MQ_GLA][j];
        if (n < vn && dn->ran && dn->ok && gla->ran && gla->ok) {
            const double lo = fmin(dn->sw.mean, b->sw.mean);
            const double sd = fmax(fmax(dn->sw.sd, b->sw.sd), gla->sw.sd);
            const int few = dn->sw.nseeds < MQ_MIN_SEEDS || gla->sw.nseeds < MQ_MIN_SEEDS || b->sw.nseeds < MQ_MIN_SEEDS;
            const char *h = few ? "inconclusive (fewer than 3 seeds)"
                            : sd > MQ_SPREAD ? "inconclusive (the seeds disagree)"
                            : fmin(lo, gla->sw.mean) >= MQ_SAT ? "inconclusive (all three fit)"
                            : lo >= gla->sw.mean - MQ_TIE ? "holds"
                                                          : "does not hold";
            n += (size_t)snprintf(v + n, vn - n, "; with it, DeltaNet and Gated DeltaNet >= GLA (%.1f, %.1f, %.1f%%) %s",
                                  100 * dn->sw.mean, 100 * b->sw.mean, 100 * gla->sw.mean, h);
        }
        if (n < vn) {
            n += (size_t)snprintf(v + n, vn - n, ";");
        }
    }
    if (n < vn && n > 0 && v[n - 1] == ';') {
        v[n - 1] = '.';
    }
}

/* The ordering finding at width d from the five cells c[MQ_TR .. MQ_LA] (control, DeltaNet, Gated
 * DeltaNet, GLA, linear attention), each half judged on its own models' seeds: its sentence, after
 * label, appended to v at *n. Returns 0 (nothing written) when one of the four was not run. */
static int mq_order_verdict(char *v, size_t vn, int *n, const mq_cell *const *c, int d, const char *label)
{
    if (isnan(mq_mean(c[MQ_DN])) || isnan(mq_mean(c[MQ_GDN])) || isnan(mq_mean(c[MQ_GLA])) || isnan(mq_mean(c[MQ_LA])) ||
        (size_t)*n >= vn) {
        return 0;
    }
    double dn = mq_mean(c[MQ_DN]), gdn = mq_mean(c[MQ_GDN]), gla = mq_mean(c[MQ_GLA]),
           la = mq_mean(c[MQ_LA]), ctrl = mq_mean(c[MQ_TR]);
    double sdmax = fmax(fmax(c[MQ_DN]->sw.sd, c[MQ_GDN]->sw.sd), fmax(c[MQ_GLA]->sw.sd, c[MQ_LA]->sw.sd));
    /* ">=" up to MQ_TIE points; at a width where all four fit (MQ_SAT) neither gap can show */
    const int ge = fmin(dn, gdn) >= gla - MQ_TIE, gg = gla > la + 0.2,
              sat = fmin(fmin(dn, gdn), fmin(gla, la)) >= MQ_SAT;
    const char *why = NULL;
    /* the seeds of each half: DeltaNet, Gated DeltaNet, GLA; GLA, linear attention (+ the control) */
    const mq_cell *h1[4] = {c[MQ_DN], c[MQ_GDN], c[MQ_GLA], c[MQ_TR]};
    const mq_cell *h2[3] = {c[MQ_GLA], c[MQ_LA], c[MQ_TR]};
    const int few1 = mq_min_seeds(h1, 4), few2 = mq_min_seeds(h2, 3);
    char whys1[96], whys2[96];
    snprintf(whys1, sizeof whys1, "a model ran %d seed(s) of %d", few1, MQ_MIN_SEEDS);
    snprintf(whys2, sizeof whys2, "a model ran %d seed(s) of %d", few2, MQ_MIN_SEEDS);
    if (isnan(ctrl)) {
        why = "the attention control was not run at that width";
    } else if (ctrl < 0.9) {
        why = "the attention control did not fit (the budget is too small)";
    }
    /* the two halves of the claim, each judged on the spread of its own models' seeds */
    const double sd1 = fmax(fmax(c[MQ_DN]->sw.sd, c[MQ_GDN]->sw.sd), c[MQ_GLA]->sw.sd),
                 sd2 = fmax(c[MQ_GLA]->sw.sd, c[MQ_LA]->sw.sd);
    static const char DISAGREE[] = "the seeds disagree (sd above 15 points), so the order is which seed left the "
                                   "plateau";
    static const char SATURATED[] = "all four fit (95% or more), so no gap can show at this width (the "
                                    "finding is about small widths)";
    const char *why1 = why                   ? why
                       : few1 < MQ_MIN_SEEDS ? whys1
                       : sat                 ? SATURATED
                       : sd1 > MQ_SPREAD     ? DISAGREE
                                             : NULL;
    const char *why2 = why                   ? why
                       : few2 < MQ_MIN_SEEDS ? whys2
                       : sat                 ? SATURATED
                       : sd2 > MQ_SPREAD     ? DISAGREE
                                             : NULL;
    *n += snprintf(v + *n, vn - (size_t)*n,
                  "%sDeltaNet and Gated DeltaNet >= GLA >> linear attention at d=%d (%.0f, %.0f, %.0f, %.0f%%; "
                  "largest sd %.0f): DeltaNet and Gated DeltaNet >= GLA %s%s (largest sd %.0f); GLA >> linear "
                  "attention %s%s (largest sd %.0f). ",
                  label, d, 100 * dn, 100 * gdn, 100 * gla, 100 * la, 100 * sdmax,
                  why1 ? "inconclusive, " : ge ? "reproduced" : "not reproduced", why1 ? why1 : "", 100 * sd1,
                  why2 ? "inconclusive, " : gg ? "reproduced" : "not reproduced", why2 ? why2 : "", 100 * sd2);
    if ((size_t)*n >= vn) {
        *n = (int)vn - 1; /* cut short: later appends stay inside v */
    }
    return 1;
}

/* the wall time, runs and CPU time of the cells that ran, added to the section's and the report's */
static void cells_tally(paper_ctx *p, const mq_cell *c, int n, double *wall, int *runs)
{
    for (int k = 0; k < n; k++) {
        if (c[k].ran && c[k].ok) {
            *wall += c[k].sw.wall_s;
            *runs += c[k].sw.runs;
            add_cpu(p, c[k].sw.cpu_s, c[k].sw.runs);
        }
    }
}

/* the row of the MQAR table of a model type name (-1: not in this build) */
static int mq_row(const char *name)
{
    for (int i = 0; i < mq_nmodels; i++) {
        if (!strcmp(lina_model_type_name(MQ_MODELS[i]), name)) {
            return i;
        }
    }
    return -1;
}

static int mq_width_index(int d)
{
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        if (MQ_WIDTHS[j] == d) {
            return j;
        }
    }
    return -1;
}

/* the first width whose cell (byw[j] at MQ_WIDTHS[j]; NULL: none) reaches 90 % on average, or -1; *gap: a
 * smaller width has no cell that ran ("<= d") */
static int mq_first90(const mq_cell *const byw[MQ_NWIDTHS], int *gap)
{
    *gap = 0;
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        const int ok = byw[j] && byw[j]->ran && byw[j]->ok;
        if (ok && byw[j]->sw.mean >= 0.9) {
            return MQ_WIDTHS[j];
        }
        *gap |= !ok;
    }
    return -1;
}

/* The budget ablation's table (the cells at MQ_STEPS beside those at MQ_LONG_STEPS) and its verdict
 * (into v; empty when nothing ran). */
static void mqar_long_ablation(paper_ctx *p, FILE *f, mq_cell (*cells)[MQ_NWIDTHS], const mq_cell *lng, char *v,
                               size_t vn)
{
    int any = 0;
    v[0] = 0;
    for (int k = 0; k < MQ_NLONG; k++) {
        any |= lng[k].ran && lng[k].ok;
    }
    if (!any) {
        return;
    }
    lina_task_opts x;
    mqar_protocol(&x, LINA_MODEL_DELTA_NET, 64, p);
    fprintf(f, "Budget ablation: the control, the four models of the ordering finding and Mamba2, whose seeds were "
               "still learning when the %d steps ran out, again with at most %d steps (the same protocol and seeds, "
               "the same early stop, warm-up and cosine over the longer schedule). Where the control and the four "
               "all ran with it, the ordering finding is judged again on these cells alone.\n\n",
            x.steps, p->quick ? 60 : MQ_LONG_STEPS);
    fprintf(f, "| model | d | at most %d steps (the table above) | at most %d steps | steps (mean) | wall (s) | "
               "CPU (s) |\n|---|---|---|---|---|---|---|\n",
            x.steps, p->quick ? 60 : MQ_LONG_STEPS);
    size_t n = (size_t)snprintf(v, vn, "Budget ablation (at most %d steps):", p->quick ? 60 : MQ_LONG_STEPS);
    const size_t n0 = n;
    for (int k = 0; k < MQ_NLONG; k++) {
        const mq_cell *b = &lng[k];
        const int i = mq_row(MQ_LONG[k].name), j = mq_width_index(MQ_LONG[k].d);
        if (!(b->ran && b->ok) || i < 0 || j < 0) {
            continue;
        }
        const mq_cell *a = &cells[i][j];
        fprintf(f, "| %s | %d |", MQ_LONG[k].name, MQ_LONG[k].d);
        cell_pct(f, a, p->seeds);
        cell_pct(f, b, p->seeds);
        double steps = 0.0;
        for (int s2 = 0; s2 < b->sw.nseeds; s2++) {
            steps += b->sw.run[s2].steps_done;
        }
        fprintf(f, " %.0f | %.0f |", b->sw.nseeds ? steps / b->sw.nseeds : 0.0, b->sw.wall_s);
        fprintf(f, isnan(b->sw.cpu_s) ? " not recorded |\n" : " %.0f |\n", b->sw.cpu_s);
        char what[160];
        ablation_spread(a, b, "the shorter budget", "budget", what, sizeof what);
        const int spread = b->sw.sd > MQ_SPREAD || (a->ran && a->ok && a->sw.sd > MQ_SPREAD);
        if (n < vn && spread) {
            n += (size_t)snprintf(v + n, vn - n, " %s d=%d %.1f%% (sd %.1f) against %.1f%% (sd %.1f), %s;",
                                  MQ_LONG[k].name, MQ_LONG[k].d, 100 * b->sw.mean, 100 * b->sw.sd, 100 * mq_mean(a),
                                  a->ran && a->ok ? 100 * a->sw.sd : NAN, what);
        }
    }
    fprintf(f, "\n");
    if (n < vn && n > 0 && v[n - 1] == ';') {
        v[n - 1] = '.';
    }
    /* the ordering finding on the longer budget's cells, at each width where all five ran */
    for (int j = 0; j < MQ_NWIDTHS && n < vn; j++) {
        const mq_cell *c5[5] = {NULL, NULL, NULL, NULL, NULL};
        const int rows[5] = {MQ_TR, MQ_DN, MQ_GDN, MQ_GLA, MQ_LA};
        int have = 0;
        for (int r = 0; r < 5; r++) {
            for (int k = 0; k < MQ_NLONG; k++) {
                if (MQ_LONG[k].d == MQ_WIDTHS[j] && mq_row(MQ_LONG[k].name) == rows[r] && lng[k].ran && lng[k].ok) {
                    c5[r] = &lng[k];
                    have++;
                }
            }
        }
        if (have == 5) {
            int m = (int)n;
            mq_order_verdict(v, vn, &m, c5, MQ_WIDTHS[j], " With this budget: ");
            n = (size_t)m;
            if (n > 0 && v[n - 1] == ' ') {
                v[--n] = 0;
            }
        }
    }
    /* the first width >= 90 % on the longer budget's cells, per model ("<= d": a smaller width has no
     * cell with this budget) */
    int head = 0;
    for (int k = 0; k < MQ_NLONG && n < vn; k++) {
        int seen = 0;
        for (int k2 = 0; k2 < k; k2++) {
            seen |= !strcmp(MQ_LONG[k2].name, MQ_LONG[k].name);
        }
        if (seen) {
            continue;
        }
        const mq_cell *byw[MQ_NWIDTHS] = {NULL};
        int any = 0, gap;
        for (int k2 = 0; k2 < MQ_NLONG; k2++) {
            const int j = mq_width_index(MQ_LONG[k2].d);
            if (!strcmp(MQ_LONG[k2].name, MQ_LONG[k].name) && j >= 0) {
                byw[j] = &lng[k2];
                any |= lng[k2].ran && lng[k2].ok;
            }
        }
        if (!any) {
            continue;
        }
        const int first = mq_first90(byw, &gap);
        n += (size_t)snprintf(v + n, vn - n, "%s", head ? ";" : " With this budget, first width >= 90%:");
        head = 1;
        if (n < vn) {
            if (first > 0) {
                n += (size_t)snprintf(v + n, vn - n, " %s %s%d", MQ_LONG[k].name, gap ? "<= " : "", first);
            } else {
                n += (size_t)snprintf(v + n, vn - n, " %s below 90%% at every width run", MQ_LONG[k].name);
            }
        }
    }
    if (head && n + 1 < vn) {
        v[n++] = '.';
        v[n] = 0;
    }
    if (n == n0) {
        v[0] = 0; /* nothing to say */
    }
}

static void paper_mqar(paper_ctx *p)
{
    const double t0 = lina_now();
    static mq_cell cells[MQ_NMODELS][MQ_NWIDTHS];
    const char *MQ_PAPER[MQ_NMODELS];
    mq_models(MQ_PAPER);
    const int nseeds = p->seeds;
    double lrs[LINA_TASK_MAX_LRS];
    const int nlr = paper_lrs(p, lrs);
    const char *order = p->widths ? p->widths : p->full ? MQ_WIDTHS_FULL : MQ_WIDTHS_BUDGET;
    /* width by width in the report's order, every model at a width before the next width */
    for (int pass = 0; pass < 2; pass++) {
        for (const char *s = order; *s;) {
            int d = atoi(s);
            const char *e = strchr(s, ',');
            s = e ? e + 1 : s + strlen(s);
            for (int j = 0; j < MQ_NWIDTHS; j++) {
                if (MQ_WIDTHS[j] != d) {
                    continue;
                }
                for (int i = 0; i < mq_nmodels; i++) {
                    int want = pass == 0 && paper_wants_mixer(p, MQ_MODELS[i]);
                    if (pass == 1 && cells[i][j].ran) {
                        continue;
                    }
                    if (pass == 0 && !want) {
                        continue;
                    }
                    char tag[96], name[96];
                    snprintf(tag, sizeof tag, "paper mqar %s d=%d", lina_model_type_name(MQ_MODELS[i]), d);
                    snprintf(name, sizeof name, "mqar_%s_d%d", lina_model_type_name(MQ_MODELS[i]), d);
                    lina_task_opts o;
                    mqar_protocol(&o, MQ_MODELS[i], d, p);
                    o.tag = tag;
                    cell_run(p, &o, lrs, nlr, nseeds, name, want, &cells[i][j]);
                }
            }
        }
        /* pass 1: the cells of every width and model this report did not run, read back */
        order = MQ_WIDTHS_FULL;
    }
    /* the ablation of Gated DeltaNet's decay init, at the widths this report runs (with Gated DeltaNet's
     * stream); read back at the others */
    static mq_cell slow[MQ_NWIDTHS];
    {
        const char *run_w = p->widths ? p->widths : p->full ? MQ_WIDTHS_FULL : MQ_WIDTHS_BUDGET;
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            char ws[16], tag[96], name[96];
            snprintf(ws, sizeof ws, "%d", MQ_WIDTHS[j]);
            const int want = paper_wants_mixer(p, LINA_MODEL_GATED_DELTANET) && list_has(run_w, ws);
            snprintf(tag, sizeof tag, "paper mqar gated_deltanet (slow decay init) d=%d", MQ_WIDTHS[j]);
            snprintf(name, sizeof name, "mqar_gated_deltanet_slowdecay_d%d", MQ_WIDTHS[j]);
            lina_task_opts o;
            mqar_protocol(&o, LINA_MODEL_GATED_DELTANET, MQ_WIDTHS[j], p);
            o.slow_decay = 1;
            o.tag = tag;
            cell_run(p, &o, lrs, nlr, nseeds, name, want, &slow[j]);
        }
    }
    /* the budget ablation, at the widths this report runs (with the model's stream); read back at the others */
    static mq_cell lng[MQ_NLONG];
    {
        const char *run_w = p->widths ? p->widths : p->full ? MQ_WIDTHS_FULL : MQ_WIDTHS_BUDGET;
        for (int k = 0; k < MQ_NLONG; k++) {
            const int i = mq_row(MQ_LONG[k].name);
            memset(&lng[k], 0, sizeof lng[k]);
            if (i < 0) {
                continue;
            }
            char ws[16], tag[128], name[96];
            snprintf(ws, sizeof ws, "%d", MQ_LONG[k].d);
            const int want = paper_wants_mixer(p, MQ_MODELS[i]) && list_has(run_w, ws);
            snprintf(tag, sizeof tag, "paper mqar %s (at most %d steps) d=%d", MQ_LONG[k].name, MQ_LONG_STEPS,
                     MQ_LONG[k].d);
            snprintf(name, sizeof name, "mqar_%s_long_d%d", MQ_LONG[k].name, MQ_LONG[k].d);
            lina_task_opts o;
            mqar_long_protocol(&o, MQ_MODELS[i], MQ_LONG[k].d, p);
            o.tag = tag;
            cell_run(p, &o, lrs, nlr, nseeds, name, want, &lng[k]);
        }
    }
    FILE *f = p->md;
    lina_task_opts o;
    mqar_protocol(&o, LINA_MODEL_DELTA_NET, 64, p);
    fprintf(f, "## MQAR (Zoology; DeltaNet paper figure) -- docs/tasks.md 1\n\n");
    fprintf(f,
            "Zoology's generator (keys from the first half of the vocabulary, values from the second, power-law "
            "query gaps a = 0.01, filler 0), V = %d, L = %d, N = %d key-value pairs; loss and accuracy at the query "
            "positions only. Training: a fixed set of %d sequences visited in epochs (Zoology: 100k), batch %d, at "
            "most %d steps (%.1f epochs), AdamW (wd %g, clip %g, 10%% warm-up then cosine to 0), validation on %d "
            "held-out sequences every %d steps with an early stop at %.0f%% (as Zoology), ",
            o.vocab, o.seq_len, o.num_kv, o.train_n, o.batch, o.steps, (double)o.steps * o.batch / o.train_n,
            o.weight_decay, o.clip, o.val_n, o.eval_every, 100 * o.target);
    if (nlr == 1) {
        fprintf(f, "one learning rate, %g (the budgeted report; `make paper-full` keeps the best of", lrs[0]);
        for (int k = 0; k < MQ_NLRS_FULL; k++) {
            fprintf(f, "%s%g", k ? ", " : " ", MQ_LRS_FULL[k]);
        }
        fprintf(f, " per seed; Zoology: best of 4)");
    } else {
        fprintf(f, "the best of %d learning rates (", nlr);
        for (int k = 0; k < nlr; k++) {
            fprintf(f, "%s%g", k ? ", " : "", lrs[k]);
        }
        fprintf(f, "; Zoology: best of 4) kept per seed");
    }
    fprintf(f, ", seeds 0..%d (a cell run with fewer names its count); the score is the accuracy on %d further held-out sequences, mean +- standard "
               "deviation over the seeds [min, max]. The paper's setting is L = 512, N = 64, d = 64..512; compare "
               "the ordering and the width threshold.\n\n",
            nseeds - 1, o.eval_n);
    fprintf(f, "The models, as built for the runs (read from their configs):\n\n");
    for (int i = 0; i < mq_nmodels; i++) {
        int any = 0;
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            any |= cells[i][j].ran;
        }
        if (any) {
            char desc[512];
            lina_task_opts x;
            mqar_protocol(&x, MQ_MODELS[i], 64, p);
            if (lina_task_describe(&x, desc, sizeof desc) == 0) {
                fprintf(f, "- %s (d at 64; the other widths alike)\n", desc);
            }
        }
    }
    fprintf(f, "\n| model |");
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        fprintf(f, " lina d=%d (%%) |", MQ_WIDTHS[j]);
    }
    fprintf(f, " first d >= 90%% | paper d=64 / d=128 (%%) | learning rates kept | steps (mean) | wall per run (s) | "
               "wall (s) | CPU (s) |\n|---|");
    for (int j = 0; j < MQ_NWIDTHS + 7; j++) {
        fprintf(f, "---|");
    }
    fprintf(f, "\n");
    int first90[MQ_NMODELS], gap90[MQ_NMODELS]; /* gap90: a smaller width was not run ("<= d") */
    double total_wall = 0.0;
    int total_runs = 0;
    for (int i = 0; i < mq_nmodels; i++) {
        fprintf(f, "| %s |", lina_model_type_name(MQ_MODELS[i]));
        double wall = 0.0, steps = 0.0, cpu = 0.0;
        int nst = 0, runs = 0, ran_i = 0, cpu_na = 0;
        const mq_cell *byw[MQ_NWIDTHS];
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            byw[j] = &cells[i][j];
        }
        first90[i] = mq_first90(byw, &gap90[i]);
        char lrs_kept[256] = "";
        int kl = 0;
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            const mq_cell *c = &cells[i][j];
            cell_pct(f, c, p->seeds);
            if (!c->ran || !c->ok) {
                continue;
            }
            ran_i = 1;
            wall += c->sw.wall_s;
            runs += c->sw.runs;
            add_cpu(p, c->sw.cpu_s, c->sw.runs);
            cpu += isnan(c->sw.cpu_s) ? 0.0 : c->sw.cpu_s;
            cpu_na |= isnan(c->sw.cpu_s);
            for (int s2 = 0; s2 < c->sw.nseeds; s2++) {
                steps += c->sw.run[s2].steps_done;
                nst++;
                if (kl < 200) {
                    kl += snprintf(lrs_kept + kl, sizeof lrs_kept - (size_t)kl, "%s%g", kl ? " " : "", c->sw.lr[s2]);
                }
            }
            if (kl < 200) {
                kl += snprintf(lrs_kept + kl, sizeof lrs_kept - (size_t)kl, ";");
            }
        }
        total_wall += wall;
        total_runs += runs;
        if (first90[i] > 0) {
            fprintf(f, " %s%d |", gap90[i] ? "<= " : "", first90[i]);
        } else {
            fprintf(f, " %s |", ran_i ? "below 90 % at every width run" : "-");
        }
        if (!ran_i) {
            fprintf(f, " %s | - | - | - | - | - |\n", MQ_PAPER[i]);
            continue;
        }
        fprintf(f, " %s | %s | %.0f | %.0f | %.0f |", MQ_PAPER[i], kl ? lrs_kept : "-", nst ? steps / nst : 0.0,
                runs ? wall / runs : 0.0, wall);
        if (cpu_na) {
            fprintf(f, cpu > 0.0 ? " %.0f + not recorded |\n" : " not recorded |\n", cpu);
        } else {
            fprintf(f, " %.0f |\n", cpu);
        }
    }
    fprintf(f, "\n");
    {
        int head = 0;
        for (int i = 0; i < mq_nmodels; i++) {
            for (int j = 0; j < MQ_NWIDTHS; j++) {
                const mq_cell *c = &cells[i][j];
                if (!c->ran || !c->ok) {
                    continue;
                }
                lina_task_opts x;
                mqar_protocol(&x, MQ_MODELS[i], MQ_WIDTHS[j], p);
                if (isnan(lina_task_init_halflife(&x, 0))) {
                    break; /* no such gate in this model */
                }
                if (!head) {
                    fputs(INIT_MEMORY_HEAD, f);
                    head = 1;
                }
                char label[96];
                snprintf(label, sizeof label, "%s, d=%d", lina_model_type_name(MQ_MODELS[i]), MQ_WIDTHS[j]);
                init_memory_line(f, label, &x, &c->sw);
            }
        }
        if (head) {
            fprintf(f, "\n");
        }
    }
    char slow_verdict[1200] = "", long_verdict[3000] = "";
    mqar_slow_ablation(p, f, cells, slow, slow_verdict, sizeof slow_verdict);
    mqar_long_ablation(p, f, cells, lng, long_verdict, sizeof long_verdict);
    cells_tally(p, slow, MQ_NWIDTHS, &total_wall, &total_runs);
    cells_tally(p, lng, MQ_NLONG, &total_wall, &total_runs);
    /* verdicts: attention is the control; at each width run, it must fit (>= 90 %) before the
     * ordering of the others means anything; seeds that disagree make a comparison inconclusive */
    char verdict[7800]; /* inside the summary line of 8000 with its prefix */
    int n = 0, all_ran = 1;
    for (int i = 0; i < mq_nmodels; i++) {
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            all_ran &= cells[i][j].ran && cells[i][j].ok;
        }
    }
    double trmin = 1.0;
    int trn = 0, trseeds = INT_MAX;
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        double a = mq_mean(&cells[MQ_TR][j]);
        if (!isnan(a)) {
            trmin = fmin(trmin, a);
            trn++;
            trseeds = cells[MQ_TR][j].sw.nseeds < trseeds ? cells[MQ_TR][j].sw.nseeds : trseeds;
        }
    }
    if (trn == 0) {
        n += snprintf(verdict + n, sizeof verdict - n, "Attention ~100%% at every width: inconclusive (not run). ");
    } else {
        char few[64] = "";
        if (trseeds < MQ_MIN_SEEDS) {
            snprintf(few, sizeof few, "inconclusive, %d seed(s) of %d", trseeds, MQ_MIN_SEEDS);
        }
        n += snprintf(verdict + n, sizeof verdict - n, "Attention ~100%% at every width: %s (lowest mean %.1f%% over %d "
                      "width(s)%s). ",
                      trmin < 0.9 ? "inconclusive, attention did not fit within the budget"
                      : few[0]    ? few
                      : trn < MQ_NWIDTHS ? "reproduced at the widths run"
                                         : "reproduced",
                      100 * trmin, trn, trn < MQ_NWIDTHS ? "; the other widths were not run" : "");
    }
    /* delta rules >= gla >> linear attention at every width where all four and the control ran */
    int nw = 0;
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        const mq_cell *c5[5] = {&cells[MQ_TR][j], &cells[MQ_DN][j], &cells[MQ_GDN][j], &cells[MQ_GLA][j],
                                &cells[MQ_LA][j]};
        nw += mq_order_verdict(verdict, sizeof verdict, &n, c5, MQ_WIDTHS[j], "");
    }
    if (nw == 0) {
        n += snprintf(verdict + n, sizeof verdict - n,
                      "DeltaNet and Gated DeltaNet >= GLA >> linear attention: inconclusive (the four were not all run "
                      "at one width). ");
    }
    /* the configurations whose seeds disagree, where the memory at init is known: does the score
     * follow it? */
    {
        int head = 0;
        for (int i = 0; i < mq_nmodels; i++) {
            for (int j = 0; j < MQ_NWIDTHS; j++) {
                const mq_cell *c = &cells[i][j];
                if (!c->ran || !c->ok || c->sw.sd <= MQ_SPREAD) {
                    continue;
                }
                lina_task_opts x;
                mqar_protocol(&x, MQ_MODELS[i], MQ_WIDTHS[j], p);
                double hl[LINA_TASK_MAX_SEEDS], sc[LINA_TASK_MAX_SEEDS];
                const int ns = init_memory(&x, &c->sw, hl, sc);
                const double rho = spearman(hl, sc, ns);
                if (isnan(rho)) {
                    continue;
                }
                n += snprintf(verdict + n, sizeof verdict - n, "%s %s d=%d %.2f over %d seeds", head ? ";" :
                              "Where the seeds disagree, the rank correlation of a seed's score with its longest memory "
                              "at init (see above):", lina_model_type_name(MQ_MODELS[i]), MQ_WIDTHS[j], rho, ns);
                head = 1;
            }
        }
        if (head) {
            n += snprintf(verdict + n, sizeof verdict - n, ". ");
        }
    }
    if (slow_verdict[0]) {
        n += snprintf(verdict + n, sizeof verdict - n, "%s ", slow_verdict);
    }
    if (long_verdict[0]) {
        n += snprintf(verdict + n, sizeof verdict - n, "%s ", long_verdict);
    }
    n += snprintf(verdict + n, sizeof verdict - n, "First width >= 90%%:");
    for (int i = 0; i < mq_nmodels; i++) {
        int any = 0;
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            any |= cells[i][j].ran && cells[i][j].ok;
        }
        if (any) {
            if (first90[i] > 0) {
                n += snprintf(verdict + n, sizeof verdict - n, " %s %s%d;", lina_model_type_name(MQ_MODELS[i]),
                              gap90[i] ? "<= " : "", first90[i]);
            } else {
                n += snprintf(verdict + n, sizeof verdict - n, " %s below 90%% at every width run;",
                              lina_model_type_name(MQ_MODELS[i]));
            }
        }
    }
    if (!all_ran) {
        n += snprintf(verdict + n, sizeof verdict - n, " (cells marked \"not run in this report\" were not run)");
    }
    fprintf(f, "**Verdict.** %s\n\n", verdict);
    summary(p, "MQAR (L=%d, N=%d, %d seeds where the table names no other count, %d learning rate(s)): %s", MQ_L,
            MQ_N, nseeds, nlr, verdict);
    /* accuracy vs width */
    static double xs[MQ_NMODELS][MQ_NWIDTHS], ys[MQ_NMODELS][MQ_NWIDTHS];
    lina_plot_series s[MQ_NMODELS];
    for (int i = 0; i < mq_nmodels; i++) {
        int k = 0;
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            if (cells[i][j].ran && cells[i][j].ok) {
                xs[i][k] = MQ_WIDTHS[j];
                ys[i][k++] = 100.0 * cells[i][j].sw.mean;
            }
        }
        s[i].label = lina_model_type_name(MQ_MODELS[i]);
        s[i].x = xs[i];
        s[i].y = ys[i];
        s[i].n = k;
    }
    plot(p, "mqar_width.png", "MQAR: query accuracy (mean over seeds) vs model width", "d_model", "accuracy (%)", 1,
         s, mq_nmodels);
    fprintf(f, "Wall time of the MQAR runs in the tables: %.0f s over %d training runs (%.0f s in this invocation).\n\n",
            total_wall, total_runs, lina_now() - t0);
    p->section_wall = total_wall;
    for (int j = 0; j < MQ_NWIDTHS; j++) {
        cell_free(&slow[j]);
    }
    for (int k = 0; k < MQ_NLONG; k++) {
        cell_free(&lng[k]);
    }
    for (int i = 0; i < mq_nmodels; i++) {
        for (int j = 0; j < MQ_NWIDTHS; j++) {
            cell_free(&cells[i][j]);
        }
    }
}

/* ================================================================== MoM */

#define MOM_NCFG 3
#define MOM_D 32
#define MOM_N 32 /* the most pairs L = 128 holds (4N <= L): one small memory saturates */

static const lina_model_type MOM_TYPES[MOM_NCFG] = {LINA_MODEL_MOM, LINA_MODEL_GATED_DELTANET,
                                                     LINA_MODEL_GATED_DELTANET};
static const int MOM_HDS[MOM_NCFG] = {16, 32, 16};

/* the MoM section's sets of runs: the mixers' own init, the slow decay init ablation and the budget
 * ablation (the mixers' own init with at most MQ_LONG_STEPS steps, as the MQAR section's) */
enum { MOM_OWN, MOM_SLOW, MOM_LONG, MOM_NSET };

/* configuration k of the MoM section (0: MoM, 1: one memory of equal total state, 2: one of equal
 * per-memory state) in set `set` */
static void mom_opts(lina_task_opts *o, int k, int set, const paper_ctx *p)
{
    mqar_protocol(o, MOM_TYPES[k], MOM_D, p);
    o->num_kv = MOM_N;
    if (set == MOM_LONG) {
        o->steps = p->quick ? 60 : MQ_LONG_STEPS;
    } else if (!p->full && !p->quick) {
        o->steps = 1000; /* the budgeted report: MoM's four memories cost 3x a step of one */
    }
    o->head_dim = MOM_HDS[k];
    o->mom_memories = 3;
    o->mom_topk = 2;
    o->mom_shared = 1;
    o->slow_decay = set == MOM_SLOW;
}

void lina_paper_mom_opts(lina_task_opts *o, int k, int slow)
{
    const paper_ctx p = one_thread();
    mom_opts(o, k, slow ? MOM_SLOW : MOM_OWN, &p);
}

void lina_paper_mom_long_opts(lina_task_opts *o, int k)
{
    const paper_ctx p = one_thread();
    mom_opts(o, k, MOM_LONG, &p);
}

/* a decidedly above b: both seeds' spreads within MQ_SPREAD and the means further apart than the larger
 * spread (at least 2 points), or, with 3 seeds or more each, every seed of a above every seed of b (the
 * exact rank test: 3 against 3 separate by chance with probability 1/20) */
static int mq_above(const mq_cell *a, const mq_cell *b)
{
    const double sd = fmax(a->sw.sd, b->sw.sd);
    if (sd <= MQ_SPREAD && a->sw.mean > b->sw.mean + fmax(sd, 0.02)) {
        return 1;
    }
    return a->sw.nseeds >= MQ_MIN_SEEDS && b->sw.nseeds >= MQ_MIN_SEEDS && a->sw.min > b->sw.max;
}

/* The MoM verdict of one set of three cells (MoM, one memory of equal total state, one of equal
 * per-memory state) into v */
static void mom_verdict(const mq_cell *cells, const lina_task_opts *os, const char *const *tags, char *v, size_t vn)
{
    if (!(cells[0].ok && cells[1].ok && cells[2].ok)) {
        const mq_cell *bad = !cells[0].ok ? &cells[0] : !cells[1].ok ? &cells[1] : &cells[2];
        snprintf(v, vn, "not available: %s", bad->ran ? bad->why : "not run");
        return;
    }
    const double m0 = cells[0].sw.mean, m1 = cells[1].sw.mean, m2 = cells[2].sw.mean;
    const double spread = fmax(fmax(cells[0].sw.sd, cells[1].sw.sd), cells[2].sw.sd);
    const char *res;
    char sep[160] = "";
    const mq_cell *three[3] = {&cells[0], &cells[1], &cells[2]};
    const int sat = mq_above(&cells[1], &cells[2]), hi = mq_above(&cells[0], &cells[1]),
              lo = mq_above(&cells[1], &cells[0]);
    if (mq_min_seeds(three, 3) < MQ_MIN_SEEDS) {
        res = "inconclusive: a configuration ran fewer than 3 seeds";
    } else if (fmax(m0, m1) < 0.1) {
        res = "inconclusive: MoM and the equal-state memory both stayed on the plateau (below 10%)";
    } else if (!sat && spread > MQ_SPREAD) {
        res = "inconclusive: the seeds disagree (sd above 15 points), so the order is which seed left the plateau";
    } else if (!sat) {
        res = "inconclusive: the small memory does not saturate here (it is as good as the one of 4x the state)";
    } else if (hi) {
        res = "MoM recalls more than one memory of the same total state: the paper's direction";
    } else if (lo) {
        res = "not reproduced: one memory of the same total state recalls more than MoM";
    } else if (spread > MQ_SPREAD) {
        res = "inconclusive: the seeds disagree (sd above 15 points), so the order is which seed left the plateau";
    } else {
        res = "no difference beyond the seeds' spread at equal total state (MoM's gain over the small memory is "
              "its state size)";
    }
    if ((hi || lo) && spread > MQ_SPREAD) { /* decided by the seeds' separation, not the spread */
        const mq_cell *a = hi ? &cells[0] : &cells[1], *b = hi ? &cells[1] : &cells[0];
        snprintf(sep, sizeof sep, " (every seed: %.1f-%.1f%% against %.1f-%.1f%%; the small memory %.1f-%.1f%%)",
                 100 * a->sw.min, 100 * a->sw.max, 100 * b->sw.min, 100 * b->sw.max, 100 * cells[2].sw.min,
                 100 * cells[2].sw.max);
    }
    snprintf(v, vn, "MoM %.1f%% vs one memory of equal total state %.1f%% (one of equal per-memory state "
             "%.1f%%; largest sd %.1f): %s%s",
             100 * m0, 100 * m1, 100 * m2, 100 * spread, res, sep);
    /* a model of the compared pair that ran every step of its budget on every seed had not reached the early
     * stop: the verdict is this budget's */
    int full[2];
    for (int k = 0; k < 2; k++) {
        full[k] = cells[k].sw.nseeds > 0;
        for (int s2 = 0; s2 < cells[k].sw.nseeds; s2++) {
            full[k] &= cells[k].sw.run[s2].steps_done >= os[k].steps;
        }
    }
    if (full[0] || full[1]) {
        const size_t l = strlen(v);
        snprintf(v + l, vn - l, "; %s ran all %d steps on every seed without reaching the %.0f%% stop, so this is "
                 "the budget's verdict",
                 full[0] && full[1] ? "MoM and the memory of equal total state" : full[0] ? "MoM"
                                                                                   : "the memory of equal total state",
                 os[full[0] ? 0 : 1].steps, 100 * os[0].target);
    }
    int head = 0;
    for (int k = 0; k < MOM_NCFG; k++) {
        double hl[LINA_TASK_MAX_SEEDS], sc[LINA_TASK_MAX_SEEDS];
        const int ns = cells[k].sw.sd > MQ_SPREAD ? init_memory(&os[k], &cells[k].sw, hl, sc) : 0;
        const double rho = spearman(hl, sc, ns);
        if (!isnan(rho)) {
            const size_t l = strlen(v);
            snprintf(v + l, vn - l, "%s %s %.2f over %d seeds", head ? ";" :
                     "; where the seeds disagree, the rank correlation of a seed's score with its longest memory at "
                     "init:", tags[k], rho, ns);
            head = 1;
        }
    }
}

/* one set's table and memory-at-init lines */
static void mom_table(paper_ctx *p, FILE *f, const mq_cell *cells, const lina_task_opts *os,
                      const char *const *names, double *wall)
{
    fprintf(f, "| model | state floats/layer | params | lina accuracy (%%), mean +- sd [min, max] | steps (mean) | "
               "wall per run (s) |\n|---|---|---|---|---|---|\n");
    for (int k = 0; k < MOM_NCFG; k++) {
        const mq_cell *c = &cells[k];
        /* the state and parameter counts are the config's, whatever the run */
        lina_config cfg;
        long long st = -1, np = -1;
        if (lina_task_config(&os[k], &cfg) == LINA_OK) {
            lina_model *m = NULL;
            if (lina_model_create(&cfg, 0, &m) == LINA_OK) {
                np = (long long)lina_model_num_params(m);
                lina_model_free(m);
            }
            const long long H = cfg.num_heads, hd = cfg.head_dim;
            st = (k == 0 ? cfg.num_memories + (cfg.shared_mem ? 1 : 0) : 1) * H * hd * (long long)(hd * cfg.expand_v);
        }
        fprintf(f, "| %s | %lld | %lld |", names[k], st, np);
        cell_pct(f, c, p->seeds);
        double steps = 0.0;
        for (int s2 = 0; c->ok && s2 < c->sw.nseeds; s2++) {
            steps += c->sw.run[s2].steps_done;
        }
        fprintf(f, " %.0f | %.0f |\n", c->ok ? steps / c->sw.nseeds : 0.0, c->ok && c->sw.runs ? c->sw.wall_s / c->sw.runs : 0.0);
        *wall += c->ok ? c->sw.wall_s : 0.0;
        if (c->ok) {
            add_cpu(p, c->sw.cpu_s, c->sw.runs);
        }
    }
    fprintf(f, "\n");
    int head = 0;
    for (int k = 0; k < MOM_NCFG; k++) {
        if (os[k].slow_decay || !cells[k].ran || !cells[k].ok || isnan(lina_task_init_halflife(&os[k], 0))) {
            continue;
        }
        if (!head) {
            fputs(INIT_MEMORY_HEAD, f);
            head = 1;
        }
        init_memory_line(f, names[k], &os[k], &cells[k].sw);
    }
    if (head) {
        fprintf(f, "\n");
    }
}

static void paper_mom(paper_ctx *p)
{
    const double t0 = lina_now();
    static mq_cell cells[MOM_NSET][MOM_NCFG];
    const char *names[MOM_NCFG] = {"MoM (3 memories + shared, top-2, head_dim 16)",
                                   "Gated DeltaNet, one memory of equal total state (head_dim 32)",
                                   "Gated DeltaNet, one memory of equal per-memory state (head_dim 16)"};
    const char *tags[MOM_NCFG] = {"mom", "gdn_equal_total", "gdn_equal_memory"};
    double lrs[LINA_TASK_MAX_LRS];
    const int nlr = paper_lrs(p, lrs);
    lina_task_opts os[MOM_NSET][MOM_NCFG];
    const char *set_tag[MOM_NSET] = {"", " (slow decay init)", " (the budget ablation)"};
    const char *set_name[MOM_NSET] = {"", "_slowdecay", "_long"};
    for (int a = 0; a < MOM_NSET; a++) {
        for (int k = 0; k < MOM_NCFG; k++) {
            lina_task_opts *o = &os[a][k];
            mom_opts(o, k, a, p);
            char tag[96], name[96];
            snprintf(tag, sizeof tag, "paper mom %s%s", tags[k], set_tag[a]);
            snprintf(name, sizeof name, "mom_%s%s", tags[k], set_name[a]);
            o->tag = tag;
            cell_run(p, o, lrs, nlr, p->seeds, name, 1, &cells[a][k]);
            o->tag = NULL;
        }
    }
    FILE *f = p->md;
    const lina_task_opts *o = &os[0][0];
    fprintf(f, "## MoM: mixture of memories on MQAR -- docs/tasks.md 4\n\n");
    fprintf(f,
            "The MQAR protocol above (fixed training set in epochs, early stop at %.0f%%, learning rate(s)",
            100 * o->target);
    for (int k = 0; k < nlr; k++) {
        fprintf(f, "%s%g", k ? ", " : " ", lrs[k]);
    }
    fprintf(f, ", at most %d steps, seeds 0..%d) with the most pairs the length holds (V = %d, L = %d, N = %d) at d = %d, 2 heads: "
               "MoM with Gated DeltaNet memories against one Gated DeltaNet memory with the same total state "
               "(the comparison that separates routing from state size) and one with the state of a single MoM "
               "memory (the saturated baseline). The paper reports MoM's recall gain on real recall-intensive tasks "
               "(340M/15B: MoM 27.59 vs Gated DeltaNet 24.78 average).\n\n",
            o->steps, p->seeds - 1, o->vocab, o->seq_len, o->num_kv, o->d_model);
    fprintf(f, "The models, as built for the runs (read from their configs):\n\n");
    for (int k = 0; k < MOM_NCFG; k++) {
        char desc[512];
        if (lina_task_describe(&os[0][k], desc, sizeof desc) == 0) {
            fprintf(f, "- %s: %s\n", names[k], desc);
        }
    }
    fprintf(f, "\n");
    double wall = 0.0;
    mom_table(p, f, cells[0], os[0], names, &wall);
    char v[1000], vs[1000] = "", vl[1000] = "";
    mom_verdict(cells[0], os[0], tags, v, sizeof v);
    const int ab = cells[1][0].ran || cells[1][1].ran || cells[1][2].ran;
    const int lb = cells[2][0].ran || cells[2][1].ran || cells[2][2].ran;
    if (ab) {
        fprintf(f, "Ablation of the decay init (`--slow-decay-init`, as in the MQAR section): the same three "
                   "models and seeds with every decay gate, MoM's memories' and the single memories', starting at "
                   "A = 1, dt = %g (half-life %.0f tokens) in every head.\n\n",
                LINA_TASK_SLOW_DT, log(2.0) / LINA_TASK_SLOW_DT);
        mom_table(p, f, cells[1], os[1], names, &wall);
        mom_verdict(cells[1], os[1], tags, vs, sizeof vs);
    }
    char lh[64] = "";
    if (lb) {
        snprintf(lh, sizeof lh, " With at most %d steps (budget ablation): ", os[MOM_LONG][0].steps);
        fprintf(f, "Budget ablation (as in the MQAR section): the same three models and seeds with the mixers' own "
                   "init and at most %d steps instead of %d (the same early stop; warm-up and cosine over the longer "
                   "schedule).\n\n",
                os[MOM_LONG][0].steps, os[MOM_OWN][0].steps);
        mom_table(p, f, cells[MOM_LONG], os[MOM_LONG], names, &wall);
        mom_verdict(cells[MOM_LONG], os[MOM_LONG], tags, vl, sizeof vl);
    }
    fprintf(f, "**Verdict.** %s.%s%s%s%s%s%s\n\n", v, ab ? " With the slow decay init (ablation): " : "", vs,
            ab ? "." : "", lh, vl, lb ? "." : "");
    summary(p, "MoM on MQAR (N=%d, d=%d, %d seeds): %s%s%s%s%s%s", MOM_N, MOM_D, p->seeds, v,
            ab ? ". With the slow decay init (ablation): " : "", vs, lb ? "." : "", lh, vl);
    fprintf(f, "Wall time: %.0f s of training (%.0f s in this invocation).\n\n", wall, lina_now() - t0);
    p->section_wall = wall;
    for (int a = 0; a < MOM_NSET; a++) {
        for (int k = 0; k < MOM_NCFG; k++) {
            cell_free(&cells[a][k]);
        }
    }
}

/* ====================================================== parity, modarith */

#define PA_NCFG 4
#define PA_FIT 0.9 /* accuracy at the training lengths that counts as fitting them */
#define PA_PARITY_STEPS 4000 /* parity: every configuration's fixed budget (no early stop) */
#define PA_MODARITH_STEPS 20000 /* mod-arith: every configuration's fixed budget (no early stop) */

static void state_opts(lina_task_opts *o, lina_task_kind k, lina_model_type m, int neg, const paper_ctx *p)
{
    lina_task_opts_default(o, k);
    o->mixer = m;
    o->neg_eigval = neg;
    o->d_model = 64;
    o->layers = 2;
    o->heads = 4;
    o->train_min = 3;
    o->train_max = 40;
    o->test_min = 40;
    o->test_max = 256;
    /* parity: a fixed budget without an early stop, as the paper trains. Mamba2 stays on the loss plateau
     * (0.693) for its first ~2,000 steps at lr 1e-3, with or without negative eigenvalues, so 1,000 steps
     * never reach the escape; and a run stopped once the training lengths are fitted generalises less than
     * one trained on (Mamba2 [-1,1], seeds 0-2, scaled test accuracy 0.81 / 0.84 / 0.44 stopped at 99 %
     * against 0.93 / 0.98 / 0.32 after 4,000 steps; docs/tasks.md 5). Mod-arith likewise: at 1,500 steps no
     * model left chance; DeltaNet [-1,1] takes the loss from 1.61 (ln 5) to 0.16 by step 20,000 */
    o->steps = p->quick ? 60 : k == LINA_TASK_PARITY ? PA_PARITY_STEPS : PA_MODARITH_STEPS;
    o->batch = 32;
    o->lr = 1e-3;
    o->weight_decay = k == LINA_TASK_PARITY ? 0.0 : 0.1;
    o->eval_n = p->quick ? 16 : 64;
    o->seed = 0;
    o->threads = p->threads;
    o->progress = 1;
}

void lina_paper_state_opts(lina_task_opts *o, lina_task_kind k, lina_model_type m, int neg)
{
    const paper_ctx p = one_thread();
    state_opts(o, k, m, neg, &p);
}

/* a parity / mod-arith configuration over its seeds: how many fit the training lengths, and the
 * seed whose scaled test accuracy is best among those that fit (among all when none fits) */
typedef struct st_pick {
    int nfit, best;
} st_pick;

static st_pick state_pick(const mq_cell *c)
{
    st_pick k = {0, -1};
    for (int pass = 0; c->ran && c->ok && pass < 2 && k.best < 0; pass++) {
        for (int s = 0; s < c->sw.nseeds; s++) {
            const lina_task_result *r = &c->sw.run[s];
            const int fit = r->train_acc >= PA_FIT;
            k.nfit += pass == 0 && fit;
            if ((pass == 1 || fit) && (k.best < 0 || r->test_scaled > c->sw.run[k.best].test_scaled)) {
                k.best = s;
            }
        }
    }
    return k;
}

static void paper_state(paper_ctx *p, lina_task_kind kind)
{
    const double t0 = lina_now();
    const int parity = kind == LINA_TASK_PARITY;
    const int nseeds = p->seeds;
    const lina_model_type types[PA_NCFG] = {LINA_MODEL_DELTA_NET, LINA_MODEL_DELTA_NET, LINA_MODEL_MAMBA2,
                                            LINA_MODEL_MAMBA2};
    const int negs[PA_NCFG] = {0, 1, 0, 1};
    const char *names[PA_NCFG] = {"DeltaNet [0,1]", "DeltaNet [-1,1]", "Mamba2 [0,1]", "Mamba2 [-1,1]"};
    /* Grazzi et al. Table 3, best of 3 seeds, scaled accuracy */
    const char *paper_par[PA_NCFG] = {"0.017", "1.000", "0.000 (Mamba)", "1.000 (Mamba)"};
    const char *paper_mod[PA_NCFG] = {"0.314", "0.971", "0.095 (Mamba)", "0.241 (Mamba)"};
    static mq_cell cells[PA_NCFG];
    lina_task_opts os[PA_NCFG];
    st_pick pick[PA_NCFG];
    for (int c = 0; c < PA_NCFG; c++) {
        char tag[96], name[96];
        snprintf(tag, sizeof tag, "paper %s %s", lina_task_name(kind), names[c]);
        snprintf(name, sizeof name, "%s_%s_neg%d", lina_task_name(kind), lina_model_type_name(types[c]), negs[c]);
        state_opts(&os[c], kind, types[c], negs[c], p);
        os[c].tag = tag;
        cell_run(p, &os[c], &os[c].lr, 1, nseeds, name, 1, &cells[c]);
        os[c].tag = NULL;
        pick[c] = state_pick(&cells[c]);
    }
    FILE *f = p->md;
    const lina_task_opts *o = &os[0];
    if (parity) {
        fprintf(f, "## Parity (Grazzi et al., negative eigenvalues) -- docs/tasks.md 2.1\n\n");
        fprintf(f, "Random bits (tokens 1/2), label at the last position = parity of the count of 2s. ");
    } else {
        fprintf(f, "## Modular arithmetic without brackets, mod 5 (Grazzi et al.) -- docs/tasks.md 2.1\n\n");
        fprintf(f, "Digits 0..4 alternating with + - x (x binds tighter), '=' then the answer digit. ");
    }
    fprintf(f,
            "Train on lengths %d-%d (fresh random batches, right-padded), test on lengths %d-%d "
            "(accuracy at 8 evenly spaced lengths, %d sequences each, averaged). Scaled accuracy = "
            "(acc - 1/C) / (1 - 1/C), C = %d (1 = perfect, 0 = chance). %d layers, d = %d, %d heads, short "
            "convolution, AdamW lr %g, wd %g, batch %d x %d steps%s (the paper: 256 x %s steps, d = 128), "
            "seeds 0..%d; a configuration's score is the best scaled test accuracy among its seeds that fit the "
            "training lengths (the paper: best of 3). [-1,1] = allow_neg_eigval (beta in (0,2) for DeltaNet, decay "
            "in [-1,1] for Mamba2).\n\n",
            o->train_min, o->train_max, o->test_min, o->test_max, o->eval_n, parity ? 2 : 5, o->layers,
            o->d_model, o->heads, o->lr, o->weight_decay, o->batch, o->steps,
            parity ? ", every configuration, no early stop (as the paper; Mamba2 needs about 2,000 steps to leave "
                     "the initial loss plateau, and its seeds stopped once they fitted the training lengths "
                     "generalised less, docs/tasks.md 5)"
                   : ", every configuration, no early stop (raised from 1,500 steps, at which no model left chance "
                     "accuracy; docs/tasks.md 5)",
            parity ? "20k" : "100k",
            nseeds - 1);
    fprintf(f, "The models, as built for the runs (read from their configs):\n\n");
    for (int c = 0; c < PA_NCFG; c++) {
        char desc[512];
        if (lina_task_describe(&os[c], desc, sizeof desc) == 0) {
            fprintf(f, "- %s: %s\n", names[c], desc);
        }
    }
    fprintf(f, "\nA seed fits when its accuracy at the training lengths is >= %.2f, a configuration when one of its "
               "seeds does; only a fitted model's test score says anything about length generalisation. %s\n\n",
            PA_FIT,
            parity ? "The finding is about expressivity: a transition with eigenvalues in [0,1] cannot represent "
                     "parity (Grazzi et al.), so a [0,1] model that does not fit is the prediction, not a missing "
                     "comparison; the finding is decided once the [-1,1] model fits, and its length generalisation "
                     "is its test score."
                   : "The finding compares the test scores of two fitted models; it is decided only when both fit.");
    fprintf(f, "| model | seeds that fit | lina train-length acc. (scored seed) | lina scaled acc., test %d-%d (scored "
               "seed) | per seed: train acc. / scaled test | steps (mean) | paper (Table 3) | wall (s) | CPU (s) |\n"
               "|---|---|---|---|---|---|---|---|---|\n",
            o->test_min, o->test_max);
    double wall = 0.0;
    for (int c = 0; c < PA_NCFG; c++) {
        const mq_cell *x = &cells[c];
        fprintf(f, "| %s |", names[c]);
        if (!x->ran || !x->ok) {
            fprintf(f, " %s%s | - | - | - | - | %s | - | - |\n", x->ran ? "not run: " : "not run in this report",
                    x->ran ? x->why : "", parity ? paper_par[c] : paper_mod[c]);
            continue;
        }
        const lina_task_result *b = &x->sw.run[pick[c].best];
        fprintf(f, " %d of %d%s | %.3f | %.3f |", pick[c].nfit, x->sw.nseeds, pick[c].nfit ? "" : " (did not fit)",
                b->train_acc, b->test_scaled);
        double steps = 0.0;
        for (int s = 0; s < x->sw.nseeds; s++) {
            fprintf(f, "%s%.2f / %.3f", s ? ", " : " ", x->sw.run[s].train_acc, x->sw.run[s].test_scaled);
            steps += x->sw.run[s].steps_done;
        }
        fprintf(f, " | %.0f | %s | %.0f |", steps / x->sw.nseeds, parity ? paper_par[c] : paper_mod[c], x->sw.wall_s);
        fprintf(f, isnan(x->sw.cpu_s) ? " not recorded |\n" : " %.0f |\n", x->sw.cpu_s);
        wall += x->sw.wall_s;
        add_cpu(p, x->sw.cpu_s, x->sw.runs);
    }
    fprintf(f, "\n");
    /* verdicts: decided only with 3 seeds per configuration and the models the finding needs fitted */
    char v[1400];
    int n = 0;
    for (int pair = 0; pair < 2; pair++) {
        const mq_cell *a = &cells[2 * pair], *b = &cells[2 * pair + 1];
        const st_pick pa = pick[2 * pair], pb = pick[2 * pair + 1];
        const char *nm = pair ? "Mamba2" : "DeltaNet";
        if (!a->ran || !a->ok || !b->ran || !b->ok) {
            const mq_cell *bad = !a->ran || !a->ok ? a : b;
            n += snprintf(v + n, sizeof v - n, "%s: not run (%s). ", nm, bad->ran ? bad->why : "no kept cell");
            continue;
        }
        const lina_task_result *ra = &a->sw.run[pa.best], *rb = &b->sw.run[pb.best];
        const double sa = ra->test_scaled, sb = rb->test_scaled;
        const int fa = pa.nfit > 0, fb = pb.nfit > 0;
        const int few = a->sw.nseeds < b->sw.nseeds ? a->sw.nseeds : b->sw.nseeds;
        n += snprintf(v + n, sizeof v - n, "%s: training-length accuracy [-1,1] %.2f (%d of %d seeds fit), [0,1] %.2f "
                      "(%d of %d); ",
                      nm, rb->train_acc, pb.nfit, b->sw.nseeds, ra->train_acc, pa.nfit, a->sw.nseeds);
        if (few < MQ_MIN_SEEDS) {
            n += snprintf(v + n, sizeof v - n, "inconclusive -- a configuration ran %d seed(s) of %d. ", few,
                          MQ_MIN_SEEDS);
        } else if (!fb) {
            n += snprintf(v + n, sizeof v - n, "inconclusive -- the [-1,1] model did not fit the training lengths, so "
                          "the budget or set-up, not the eigenvalue range, may be what fails%s. ",
                          fa ? "" : " (test scores are no comparison)");
        } else if (parity && !fa) {
            n += snprintf(v + n, sizeof v - n, "the [-1,1] model fits and the [0,1] model does not, as the "
                          "expressivity result predicts; length generalisation of [-1,1]: scaled test %.2f, %s. ",
                          sb, sb >= 0.9 ? "reproduced" : "not reproduced (the paper: 1.0; below 0.9)");
        } else if (!fa) {
            n += snprintf(v + n, sizeof v - n, "inconclusive -- the [0,1] model did not fit the training lengths "
                          "(test scores %.2f vs %.2f are no comparison); with the same budget the [-1,1] model fits "
                          "them and the [0,1] model does not. ",
                          sb, sa);
        } else {
            const int rep = parity ? (sb >= 0.9 && sa <= 0.1) : (sb > sa + 0.05);
            n += snprintf(v + n, sizeof v - n, "both fit; scaled test accuracy [-1,1] %.2f vs [0,1] %.2f: %s. ", sb,
                          sa, rep ? "reproduced" : "not reproduced");
        }
    }
    fprintf(f, "**Verdict.** %s\n\n", v);
    summary(p, "%s (%d seeds): %s", parity ? "Parity" : "Mod-arith w/o brackets", nseeds, v);
    /* accuracy vs length (the scored seed of each configuration) */
    static double xs[PA_NCFG][LINA_TASK_MAX_LENS], ys[PA_NCFG][LINA_TASK_MAX_LENS];
    lina_plot_series s[PA_NCFG];
    for (int c = 0; c < PA_NCFG; c++) {
        s[c].label = names[c];
        s[c].x = xs[c];
        s[c].y = ys[c];
        s[c].n = 0;
        if (pick[c].best < 0) {
            continue;
        }
        const lina_task_result *r = &cells[c].sw.run[pick[c].best];
        for (int i = 0; i < r->nlens; i++) {
            if (i > 0 && r->lens[i] == r->lens[i - 1]) {
                continue;
            }
            xs[c][s[c].n] = r->lens[i];
            ys[c][s[c].n++] = r->acc_at[i];
        }
    }
    char title[128], file[64];
    snprintf(title, sizeof title, "%s: accuracy vs length (trained on %d-%d)", parity ? "parity" : "mod-arithmetic",
             o->train_min, o->train_max);
    snprintf(file, sizeof file, "%s_length.png", lina_task_name(kind));
    plot(p, file, title, "sequence length", "accuracy at the answer", 0, s, PA_NCFG);
    fprintf(f, "Wall time: %.0f s of training (%.0f s in this invocation).\n\n", wall, lina_now() - t0);
    p->section_wall = wall;
    for (int c = 0; c < PA_NCFG; c++) {
        cell_free(&cells[c]);
    }
}

/* ============================================================= S3 / S5 */

#define GR_NCFG 12 /* group x layers x n_h */
#define GR_FIT 0.9 /* sequence accuracy at the training length that counts as fitting it */

/* S3's budget: 1,500 steps left one seed of one layer with n_h = 2 short of the fit (0.08 at the training
 * length, the other two seeds stopped at 850 and 500 steps) in a rerun with the current code */
#define GR_S3_STEPS 5000

static void group_opts(lina_task_opts *o, lina_task_kind kind, int layers, int nh, const paper_ctx *p)
{
    lina_task_opts_default(o, kind);
    o->mixer = LINA_MODEL_GATED_DELTAPRODUCT;
    o->householder = nh;
    o->neg_eigval = 1;
    o->layers = layers;
    o->d_model = 64;
    o->heads = 4;
    o->seq_len = 32;
    o->test_max = 128;
    /* the budgeted report gives S5 (which no configuration fits in this budget) 1000 steps; S3 has at most
     * GR_S3_STEPS (the early stop ends the runs that fit, most within 1,000) */
    o->steps = p->quick ? 60 : kind == LINA_TASK_S3 ? GR_S3_STEPS : !p->full ? 1000 : 1500;
    o->batch = 32;
    o->lr = 1e-3;
    o->target = 0.99;
    o->eval_every = 50;
    o->val_n = 128;
    o->eval_n = 128;
    o->threads = p->threads;
    o->progress = 1;
}

void lina_paper_group_opts(lina_task_opts *o, lina_task_kind k, int layers, int nh)
{
    const paper_ctx p = one_thread();
    group_opts(o, k, layers, nh, &p);
}

/* mean sequence accuracy at the training length over seeds (NAN: not run) */
static double gr_fit(const mq_cell *c)
{
    return c->ran && c->ok ? c->sw.fit_mean : NAN;
}

static void paper_groups(paper_ctx *p)
{
    const double t0 = lina_now();
    static mq_cell cells[GR_NCFG];
    lina_task_opts os[GR_NCFG];
    double lrs[LINA_TASK_MAX_LRS] = {1e-3};
    const int nlr = p->nlrs > 0 ? p->nlrs : 1;
    if (p->nlrs > 0) {
        memcpy(lrs, p->lrs, sizeof(double) * (size_t)p->nlrs);
    }
    /* S3 before S5, one layer before two: the papers' headline rows first */
    for (int c = 0; c < GR_NCFG; c++) {
        const lina_task_kind kind = c < 6 ? LINA_TASK_S3 : LINA_TASK_S5;
        const int layers = (c % 6) < 3 ? 1 : 2, nh = c % 3 + 1;
        group_opts(&os[c], kind, layers, nh, p);
        char tag[96], name[96];
        snprintf(tag, sizeof tag, "paper %s %d layer(s) n_h=%d", lina_task_name(kind), layers, nh);
        snprintf(name, sizeof name, "%s_l%d_nh%d", lina_task_name(kind), layers, nh);
        os[c].tag = tag;
        cell_run(p, &os[c], lrs, nlr, p->seeds, name, 1, &cells[c]);
        os[c].tag = NULL;
    }
    FILE *f = p->md;
    const lina_task_opts *o = &os[0];
    fprintf(f, "## S3 and S5 word problems (DeltaProduct) -- docs/tasks.md 2.2\n\n");
    fprintf(f,
            "Tokens are elements of the group (S3: 6, S5: 120), the target at every position is the running "
            "product. Gated DeltaProduct with beta in (0,2) and n_h = 1, 2, 3 Householder steps per token (n_h = 1 "
            "is DeltaNet's transition), one and two layers, d = %d, %d heads x %d; AdamW lr %g, wd %g, batch %d "
            "fresh sequences of length %d, at most %d steps (S5: %d) with 10%% warm-up and cosine, validation every %d steps "
            "with an early stop at %.0f%% sequence accuracy (the paper: 100k fixed sequences of length 128, 100 "
            "epochs, curriculum), seeds 0..%d. S3's budget was 1,500 steps until a rerun left one seed of one "
            "layer with n_h = 2 short of the fit there; the runs that fit stop early, so the longer budget only "
            "changes the slow seeds and the runs that never fit. Sequence accuracy at length l = fraction of %d test sequences "
            "(length %d) whose first l predictions are all right. A configuration fits when its mean sequence "
            "accuracy at the training length is >= %.2f.\n\n",
            o->d_model, o->heads, o->d_model / o->heads, lrs[0], o->weight_decay, o->batch, o->seq_len, o->steps,
            os[6].steps, o->eval_every, 100 * o->target, p->seeds - 1, o->eval_n, o->test_max, GR_FIT);
    char desc[512];
    if (lina_task_describe(&os[1], desc, sizeof desc) == 0) {
        fprintf(f, "The model, as built for the runs (read from its config; n_h and layers vary): %s.\n\n", desc);
    }
    fprintf(f, "| group | layers | n_h | seq. acc. at %d (train length), mean +- sd [min, max] | fits | seq. acc. at %d "
               "(mean) | token acc. (mean) | paper | steps (mean) | wall per run (s) |\n"
               "|---|---|---|---|---|---|---|---|---|---|\n",
            o->seq_len, o->test_max);
    double wall = 0.0;
    for (int c = 0; c < GR_NCFG; c++) {
        const mq_cell *x = &cells[c];
        const int s5 = c >= 6, layers = (c % 6) < 3 ? 1 : 2, nh = c % 3 + 1;
        const char *paper = !s5 ? (layers == 1 ? (nh == 1 ? "fails (reflections only)" : "solves (~1.0)") : "-")
                                : (layers == 1 ? (nh < 3 ? "fails immediately" : "fails after ~30 tokens (n_h = 4 solves)")
                                               : "-");
        fprintf(f, "| %s | %d | %d |", s5 ? "S5" : "S3", layers, nh);
        if (!x->ran || !x->ok) {
            fprintf(f, " %s%s | - | - | - | - | %s | - | - |\n", x->ran ? "not run: " : "not run in this report",
                    x->ran ? x->why : "", paper);
            continue;
        }
        double sa = 0.0, ta = 0.0, steps = 0.0;
        int nsa = 0;
        for (int s2 = 0; s2 < x->sw.nseeds; s2++) {
            const lina_task_result *r = &x->sw.run[s2];
            if (r->seq_acc && r->seq_acc_n > 0) {
                sa += r->seq_acc[r->seq_acc_n - 1];
                nsa++;
            }
            ta += r->test_acc;
            steps += r->steps_done;
        }
        /* the fit measure of s3/s5 is the sequence accuracy at the training length (lina_task_fit) */
        double fm = x->sw.fit_mean, fmin_ = x->sw.fit_min, fmax_ = 0.0, f1 = 0.0, f2 = 0.0;
        for (int s2 = 0; s2 < x->sw.nseeds; s2++) {
            double v = x->sw.run[s2].train_acc;
            fmax_ = fmax(fmax_, v);
            f1 += v;
            f2 += v * v;
        }
        const int ns = x->sw.nseeds;
        double sd = ns > 1 ? sqrt(fmax(0.0, (f2 - f1 * f1 / ns) / (ns - 1))) : 0.0;
        fprintf(f, " %.3f +- %.3f [%.3f, %.3f] | %s | %s%.3f | %.3f | %s | %.0f | %.0f |\n", fm, sd, fmin_, fmax_,
                fm >= GR_FIT ? "yes" : "did not fit", nsa ? "" : "- ", nsa ? sa / nsa : 0.0, ta / ns, paper,
                steps / ns, x->sw.runs ? x->sw.wall_s / x->sw.runs : 0.0);
        wall += x->sw.wall_s;
        add_cpu(p, x->sw.cpu_s, x->sw.runs);
    }
    fprintf(f, "\n");
    /* verdicts: S3 in one layer needs n_h >= 2; S5 in one layer fails for n_h <= 2 */
    char v[1200];
    int n = 0;
    /* as MQAR's: a finding read from a configuration of fewer than 3 seeds is not decided */
    const mq_cell *s3one[3] = {&cells[0], &cells[1], &cells[2]}, *s5all[6];
    for (int c = 0; c < 6; c++) {
        s5all[c] = &cells[6 + c];
    }
    const int few3 = mq_min_seeds(s3one, 3), few5 = mq_min_seeds(s5all, 6);
    double s3_1 = gr_fit(&cells[0]), s3_2 = gr_fit(&cells[1]), s3_3 = gr_fit(&cells[2]);
    if (isnan(s3_1) || isnan(s3_2)) {
        n += snprintf(v + n, sizeof v - n, "S3, one layer: inconclusive (n_h = 1 or 2 not run). ");
    } else if (few3 < MQ_MIN_SEEDS) {
        n += snprintf(v + n, sizeof v - n, "S3, one layer: inconclusive -- a configuration ran %d seed(s) of %d. ",
                      few3, MQ_MIN_SEEDS);
    } else if (s3_2 < GR_FIT) {
        n += snprintf(v + n, sizeof v - n,
                      "S3, one layer: inconclusive -- n_h = 2 did not fit (%.2f), so n_h = 1's %.2f says nothing "
                      "about expressivity. ",
                      s3_2, s3_1);
    } else {
        n += snprintf(v + n, sizeof v - n, "S3, one layer: n_h = 2 fits (%.2f)%s, n_h = 1 %s (%.2f): %s. ", s3_2,
                      isnan(s3_3) ? "" : s3_3 >= GR_FIT ? ", n_h = 3 fits too" : ", n_h = 3 does not",
                      s3_1 < 0.5 ? "does not" : s3_1 >= GR_FIT ? "fits as well" : "only partly", s3_1,
                      s3_1 < 0.5 ? "reproduced (n_h = 1 only represents reflections)" : "not reproduced");
    }
    double s31_2l = gr_fit(&cells[3]);
    if (!isnan(s31_2l)) {
        char few[64] = "";
        if (cells[3].sw.nseeds < MQ_MIN_SEEDS) {
            snprintf(few, sizeof few, "; %d seed(s) of %d, not decided", cells[3].sw.nseeds, MQ_MIN_SEEDS);
        }
        n += snprintf(v + n, sizeof v - n, "S3, two layers: n_h = 1 %s (%.2f%s). ",
                      s31_2l >= GR_FIT ? "fits" : "does not fit", s31_2l, few);
    }
    double s5[6];
    int any5 = 0, fit5 = 0;
    for (int c = 0; c < 6; c++) {
        s5[c] = gr_fit(&cells[6 + c]);
        any5 |= !isnan(s5[c]);
        fit5 |= !isnan(s5[c]) && s5[c] >= GR_FIT;
    }
    if (!any5) {
        n += snprintf(v + n, sizeof v - n, "S5: not run.");
    } else if (few5 < MQ_MIN_SEEDS) {
        n += snprintf(v + n, sizeof v - n, "S5: inconclusive -- a configuration ran %d seed(s) of %d.", few5,
                      MQ_MIN_SEEDS);
    } else if (!fit5) {
        n += snprintf(v + n, sizeof v - n,
                      "S5: inconclusive -- no configuration fit the training length (best %.2f), so the budget, not "
                      "n_h, may be what fails (the paper needs n_h = 4 in one layer).",
                      fmax(fmax(fmax(s5[0], s5[1]), fmax(s5[2], s5[3])), fmax(s5[4], s5[5])));
    } else {
        n += snprintf(v + n, sizeof v - n, "S5: fits at the training length:");
        for (int c = 0; c < 6; c++) {
            if (!isnan(s5[c]) && s5[c] >= GR_FIT) {
                n += snprintf(v + n, sizeof v - n, " %d layer(s) n_h = %d (%.2f);", c < 3 ? 1 : 2, c % 3 + 1, s5[c]);
            }
        }
        int one_low = !isnan(s5[0]) && !isnan(s5[1]) && s5[0] < 0.5 && s5[1] < 0.5;
        n += snprintf(v + n, sizeof v - n, " one layer with n_h <= 2 %s.",
                      one_low ? "fails, as the paper" : "does not fail as the paper says");
    }
    fprintf(f, "**Verdict.** %s\n\n", v);
    summary(p, "S3/S5 (DeltaProduct, %d seeds): %s", p->seeds, v);
    fprintf(f, "Wall time: %.0f s of training (%.0f s in this invocation).\n\n", wall, lina_now() - t0);
    p->section_wall = wall;
    for (int c = 0; c < GR_NCFG; c++) {
        cell_free(&cells[c]);
    }
}

/* ================================================================ driver */


#define NEXP 6
static const char *const EXPS[NEXP] = {"mqar", "mom", "parity", "modarith", "s3s5", "icl"};

static void paper_icl(paper_ctx *p)
{
    if (p->quick) {
        fprintf(p->md, "## In-context linear regression\n\nskipped in --quick mode.\n\n");
        return;
    }
    const double ti = lina_now(), ci = lina_cpu_now();
    int rc = lina_icl_paper(p->out, p->threads, p->md);
    if (rc) {
        fprintf(stderr, "lina paper: icl: %s\n", lina_last_error());
        fprintf(p->md, "## In-context linear regression\n\nnot run: %s\n\n", lina_last_error());
        summary(p, "ICL regression: not run (%s)", lina_last_error());
    } else {
        /* the section runs nothing else: the process's CPU time over the call is its runs' */
        add_cpu(p, lina_cpu_now() - ci, 1);
        summary(p, "ICL regression: see its section (%.0f s)", lina_now() - ti);
    }
}

/* write FILE atomically from a callback-free buffer */
static int write_atomic(const char *path, const char *data, size_t n)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)time(NULL));
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "lina: paper: cannot write '%s': %s\n", tmp, strerror(errno));
        return -1;
    }
    int bad = fwrite(data, 1, n, f) != n;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        fprintf(stderr, "lina: paper: cannot write '%s'\n", path);
        remove(tmp);
        return -1;
    }
    return 0;
}

static char *slurp(FILE *f, size_t *n)
{
    size_t cap = 1 << 16;
    char *b = malloc(cap);
    *n = 0;
    if (!b) {
        return NULL;
    }
    size_t k;
    while ((k = fread(b + *n, 1, cap - *n - 1, f)) > 0) {
        *n += k;
        if (cap - *n - 1 == 0) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
    }
    b[*n] = '\0';
    return b;
}

/* the experiment's section (NAME.md) and its summary lines + wall time (NAME.sum) */
static int save_part(paper_ctx *p, const char *parts, const char *name, double wall)
{
    char path[4400];
    size_t n;
    rewind(p->md);
    char *sec = slurp(p->md, &n);
    if (!sec) {
        fprintf(stderr, "lina: paper: out of memory\n");
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s.md", parts, name);
    int rc = write_atomic(path, sec, n);
    free(sec);
    char sum[16 * 6060 + 64];
    /* "models 2": run with the task models and budgets of docs/tasks.md 6; "mode": which report */
    int k = snprintf(sum, sizeof sum, "wall %.1f\nmodels 2\nmode %s\n", wall,
                     p->quick ? "quick" : p->full ? "full" : "budget");
    /* "cpu SECONDS MISSING": the CPU time of the runs that recorded it, and how many did not */
    if (p->section_cpu > 0.0) {
        k += snprintf(sum + k, sizeof sum - k, "cpu %.1f %d\n", p->section_cpu, p->cpu_missing);
    }
    for (int i = 0; i < p->nsum && k < (int)sizeof sum; i++) {
        k += snprintf(sum + k, sizeof sum - k, "- %s%s\n", p->quick ? "[--quick run: not meaningful] " : "",
                      p->summary[i]);
    }
    snprintf(path, sizeof path, "%s/%s.sum", parts, name);
    return rc ? rc : write_atomic(path, sum, strlen(sum));
}

/* PAPER.md = title, the summary lines and the sections of every experiment on disk */
static int assemble(paper_ctx *p, const char *parts)
{
    char *sec[NEXP] = {0}, *sum[NEXP] = {0};
    double total = 0.0, cpu_total = 0.0;
    int have = 0, cpu_missing = 0, cpu_none = 0;
    for (int e = 0; e < NEXP; e++) {
        char path[4400];
        size_t n;
        snprintf(path, sizeof path, "%s/%s.md", parts, EXPS[e]);
        FILE *f = fopen(path, "r");
        if (f) {
            sec[e] = slurp(f, &n);
            fclose(f);
        }
        snprintf(path, sizeof path, "%s/%s.sum", parts, EXPS[e]);
        f = fopen(path, "r");
        if (f) {
            sum[e] = slurp(f, &n);
            fclose(f);
        }
        double w = 0.0;
        if (sec[e] && sum[e] && sscanf(sum[e], "wall %lf", &w) == 1) {
            total += w;
            have++;
        }
    }
    size_t cap = 4096;
    for (int e = 0; e < NEXP; e++) {
        cap += (sec[e] ? strlen(sec[e]) : 0) + 2 * (sum[e] ? strlen(sum[e]) : 0) + 1024;
    }
    char *doc = malloc(cap);
    if (!doc) {
        fprintf(stderr, "lina: paper: out of memory\n");
        return -1;
    }
    size_t k = 0;
    k += snprintf(doc + k, cap - k, "# lina: reduced reproductions of the linear-transformer papers' synthetic tasks\n\n");
    k += snprintf(doc + k, cap - k,
                  "Written by `lina paper`. Every model is lina's own (src/model, trained by src/tasks with lina's "
                  "AdamW); the settings were fixed before the runs and not tuned afterwards, except where a section says "
                  "so. Paper numbers come from "
                  "docs/tasks.md ([fig~] = read off a figure). Everything is far smaller than in the papers: compare "
                  "orderings, not absolute values.\n\n"
                  "`make paper` runs the budgeted report (one learning rate, MQAR at d = 64 and 32, fewer steps for "
                  "S5 and MoM; parity and mod-arith with 3 seeds, read back once kept) as four single-thread streams "
                  "side by side; `make paper-full` runs the full protocol (two learning rates, every MQAR width, parity and "
                  "mod-arith with 3 seeds), several CPU-hours. Times below are the wall time and the CPU time of "
                  "single-thread training runs on a shared 2-core machine with other jobs running (on a loaded "
                  "machine the wall time is the larger; the CPU time is what a quiet core needs). "
                  "`python3 tools/paper_time.py` adds the kept runs' CPU time up per stream of `make paper`: the "
                  "longest stream is about its wall time on four idle cores.\n\n"
                  "| section | run by | training wall time (s) | training CPU time (s) |\n|---|---|---|---|\n");
    for (int e = 0; e < NEXP; e++) {
        double w = 0.0;
        if (!sec[e] || !sum[e] || sscanf(sum[e], "wall %lf", &w) != 1) {
            continue;
        }
        const char *m = strstr(sum[e], "\nmode ");
        char mode[16] = "";
        if (m) {
            sscanf(m + 6, "%15s", mode);
        }
        double cpu = 0.0;
        int miss = 0;
        const char *cl = strstr(sum[e], "\ncpu ");
        char cpus[96] = "not recorded";
        if (cl && sscanf(cl + 5, "%lf %d", &cpu, &miss) == 2) {
            cpu_total += cpu;
            cpu_missing += miss;
            if (miss) {
                snprintf(cpus, sizeof cpus, "%.0f (+ %d run(s) kept from before it was recorded)", cpu, miss);
            } else {
                snprintf(cpus, sizeof cpus, "%.0f", cpu);
            }
        } else {
            cpu_none++;
        }
        k += snprintf(doc + k, cap - k, "| %s | %s | %.0f | %s |\n", EXPS[e],
                      !strcmp(mode, "budget") ? "the budgeted protocol (`make paper`'s settings)"
                      : !strcmp(mode, "full") ? "`make paper-full`"
                      : !strcmp(mode, "quick") ? "--quick (numbers NOT meaningful)"
                      : !strstr(sum[e], "\nmodels 2\n") ? "an earlier version (see the section)"
                                                         : "the two-rate protocol before the budgeted report",
                      w, cpus);
    }
    k += snprintf(doc + k, cap - k, "| all %d | | %.0f (%.1f min) | %.0f (%.1f min)%s |\n\n", have, total, total / 60.0,
                  cpu_total, cpu_total / 60.0,
                  cpu_none || cpu_missing ? ", of the runs that recorded it" : "");
    /* a part without the "models 2" line predates the task models of docs/tasks.md 6 */
    static const char OLD[] = "**Not rerun with the current task models**: this section comes from an earlier run "
                              "(FLA's LM layout with a GatedMLP per block, no short convolution on softmax or linear "
                              "attention, FLA's N(0, 0.02) Mamba2 init, fresh batches, one learning rate); its "
                              "set-up text describes that run.";
    int old[NEXP] = {0}, nold = 0;
    for (int e = 0; e < NEXP; e++) {
        old[e] = sec[e] && sum[e] && !strstr(sum[e], "\nmodels 2\n");
        nold += old[e];
    }
    if (nold) {
        k += snprintf(doc + k, cap - k, "%d of the %d sections below were not rerun after the task models changed "
                      "(docs/tasks.md 6); they are marked and their verdicts are those of the earlier run.\n\n",
                      nold, have);
    }
    k += snprintf(doc + k, cap - k, "## Summary\n\n");
    for (int e = 0; e < NEXP; e++) {
        const char *s = sum[e] && sec[e] ? strchr(sum[e], '\n') : NULL;
        while (s && (!strncmp(s + 1, "models ", 7) || !strncmp(s + 1, "mode ", 5) || !strncmp(s + 1, "cpu ", 4))) {
            s = strchr(s + 1, '\n'); /* the header lines before the summary lines */
        }
        if (s) {
            if (old[e]) {
                /* mark each summary line of an old part */
                for (const char *l = s + 1; *l;) {
                    const char *nl = strchr(l, '\n');
                    size_t len = nl ? (size_t)(nl - l) : strlen(l);
                    if (len > 2 && l[0] == '-') {
                        k += snprintf(doc + k, cap - k, "- [not rerun, earlier task models]%.*s\n", (int)(len - 1),
                                      l + 1);
                    }
                    l += len + (nl ? 1 : 0);
                }
            } else {
                k += snprintf(doc + k, cap - k, "%s", s + 1);
            }
        }
    }
    k += snprintf(doc + k, cap - k, "\n");
    for (int e = 0; e < NEXP; e++) {
        if (sec[e]) {
            const char *body = sec[e];
            if (old[e]) {
                const char *nl = strchr(body, '\n'); /* after the section's heading */
                size_t hl = nl ? (size_t)(nl - body) + 1 : strlen(body);
                k += snprintf(doc + k, cap - k, "%.*s\n%s\n", (int)hl, body, OLD);
                body += hl;
            }
            k += snprintf(doc + k, cap - k, "%s", body);
        }
        free(sec[e]);
        free(sum[e]);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/PAPER.md", p->out);
    int rc = write_atomic(path, doc, k);
    free(doc);
    return rc;
}

static int wants(const char *only, const char *name)
{
    return list_has(only, name);
}

int lina_paper_run(const char *out, const char *only, int threads, int quick)
{
    lina_paper_opts po;
    memset(&po, 0, sizeof po);
    po.out = out;
    po.only = only;
    po.threads = threads;
    po.quick = quick;
    po.seeds = 3;
    return lina_paper_run_opts(&po);
}

int lina_paper_run_opts(const lina_paper_opts *po)
{
    const char *out = po->out, *only = po->only;
    paper_ctx p;
    memset(&p, 0, sizeof p);
    p.threads = po->threads;
    p.quick = po->quick;
    p.seeds = po->seeds > 0 ? po->seeds : 3;
    p.mixers = po->mixers;
    p.widths = po->widths;
    p.full = po->full;
    p.cells = po->cells;
    p.resume = po->resume;
    if (po->lrs && *po->lrs) {
        for (const char *q = po->lrs; *q;) {
            char *end;
            double v = strtod(q, &end);
            if (end == q || !(v > 0.0) || !isfinite(v) || (*end && *end != ',') || p.nlrs >= LINA_TASK_MAX_LRS) {
                fprintf(stderr, "lina: paper: --lrs: '%s' is not a list of 1 to %d positive numbers\n", po->lrs,
                        LINA_TASK_MAX_LRS);
                return 2;
            }
            p.lrs[p.nlrs++] = v;
            q = *end ? end + 1 : end;
        }
    }
    if (p.mixers) {
        for (const char *q = p.mixers; *q;) {
            const char *e = strchr(q, ',');
            size_t len = e ? (size_t)(e - q) : strlen(q);
            int known = 0; /* a row of the table (one this build lacks is skipped when the table is made) */
            for (int i = 0; i < MQ_NMODELS; i++) {
                known |= strlen(MQ_TABLE[i].name) == len && !strncmp(MQ_TABLE[i].name, q, len);
            }
            if (!known) {
                fprintf(stderr, "lina: paper: --mixers: '%.*s' is not a model of the MQAR table\n", (int)len, q);
                return 2;
            }
            q = e ? e + 1 : q + len;
        }
    }
    if (p.widths) {
        for (const char *q = p.widths; *q;) {
            char *end;
            long d = strtol(q, &end, 10);
            int ok = end != q && (!*end || *end == ',');
            int known = 0;
            for (int j = 0; j < MQ_NWIDTHS; j++) {
                known |= d == MQ_WIDTHS[j];
            }
            if (!ok || !known) {
                fprintf(stderr, "lina: paper: --widths: '%s' is not a list of the widths 32, 64, 128\n", p.widths);
                return 2;
            }
            q = *end ? end + 1 : end;
        }
    }
    if (only && *only) {
        for (const char *s = only; *s;) {
            const char *e = strchr(s, ',');
            size_t len = e ? (size_t)(e - s) : strlen(s);
            int ok = 0;
            for (int k = 0; k < NEXP; k++) {
                ok |= strlen(EXPS[k]) == len && !strncmp(s, EXPS[k], len);
            }
            if (!ok) {
                fprintf(stderr, "lina: paper: --only: unknown experiment '%.*s' (mqar,mom,parity,modarith,s3s5,icl)\n",
                        (int)len, s);
                return 2;
            }
            s += len + (e ? 1 : 0);
        }
    }
    char parts[4096];
    snprintf(parts, sizeof parts, "%s/paper_parts", out);
    if ((mkdir(out, 0777) && errno != EEXIST) || (mkdir(parts, 0777) && errno != EEXIST)) {
        fprintf(stderr, "lina: paper: cannot create '%s': %s\n", parts, strerror(errno));
        return 1;
    }
    p.out = out;
    lina_set_threads(p.threads);
    const double t0 = lina_now();
    for (int e = 0; e < NEXP; e++) {
        if (!wants(only, EXPS[e])) {
            continue;
        }
        p.md = tmpfile();
        if (!p.md) {
            fprintf(stderr, "lina: paper: cannot create a temporary file: %s\n", strerror(errno));
            return 1;
        }
        p.nsum = 0;
        p.section_wall = 0.0;
        p.section_cpu = 0.0;
        p.cpu_missing = 0;
        const double te = lina_now();
        switch (e) {
        case 0:
            paper_mqar(&p);
            break;
        case 1:
            paper_mom(&p);
            break;
        case 2:
            paper_state(&p, LINA_TASK_PARITY);
            break;
        case 3:
            paper_state(&p, LINA_TASK_MODARITH);
            break;
        case 4:
            paper_groups(&p);
            break;
        default:
            paper_icl(&p);
            break;
        }
        if (save_part(&p, parts, EXPS[e], p.section_wall > 0 ? p.section_wall : lina_now() - te)) {
            fclose(p.md);
            return 1;
        }
        fclose(p.md);
        p.md = NULL;
    }
    const double wall = lina_now() - t0;
    if (assemble(&p, parts)) {
        return 1;
    }
    fprintf(stderr, "lina paper: wrote %s/PAPER.md (this run: %.0f s)\n", out, wall);
    return 0;
}
