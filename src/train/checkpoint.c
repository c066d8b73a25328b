/* checkpoint.c -- model / optimizer / trainer state on disk, and the atomic
 * switch of the checkpoint directory (layout in README.md).
 *
 * Every file is written with the temporary-file + fsync + rename mechanism;
 * the directory is assembled as OUT/checkpoint.tmp-<pid>/, fsynced, and then
 * exchanged with OUT/checkpoint in one renameat2(RENAME_EXCHANGE) (fallback:
 * rename the old one to OUT/checkpoint.old-<pid>, rename the new one in;
 * a reader that finds no OUT/checkpoint uses the .old one). */
#include "../io/io_internal.h"
#include "train_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TRAINER_VERSION 1
#define PATH_CAP 4096

/* ------------------------------------------------------------- state */

int lina_train_state_alloc(lina_train_state *s, int64_t cap)
{
    memset(s, 0, sizeof *s);
    if (cap < 1) {
        cap = 1;
    }
    s->losses = calloc((size_t)cap, sizeof(double));
    s->val_losses = malloc((size_t)cap * sizeof(double));
    if (!s->losses || !s->val_losses) {
        lina_train_state_free(s);
        return lina_set_error(LINA_ENOMEM, "trainer: out of memory for %lld steps", (long long)cap);
    }
    for (int64_t i = 0; i < cap; i++) {
        s->val_losses[i] = NAN;
    }
    s->cap = cap;
    return LINA_OK;
}

int lina_train_state_reserve(lina_train_state *s, int64_t n)
{
    if (n <= s->cap) {
        return LINA_OK;
    }
    int64_t cap = s->cap > 0 ? s->cap : 1;
    while (cap < n) {
        cap *= 2;
    }
    double *l = realloc(s->losses, (size_t)cap * sizeof(double));
    if (l) {
        s->losses = l;
    }
    double *v = l ? realloc(s->val_losses, (size_t)cap * sizeof(double)) : NULL;
    if (!l || !v) {
        return lina_set_error(LINA_ENOMEM, "trainer: out of memory for %lld steps", (long long)n);
    }
    s->val_losses = v;
    for (int64_t i = s->cap; i < cap; i++) {
        s->losses[i] = 0.0;
        s->val_losses[i] = NAN;
    }
    s->cap = cap;
    return LINA_OK;
}

void lina_train_state_free(lina_train_state *s)
{
    free(s->losses);
    free(s->val_losses);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------- paths */

static int join(char *dst, const char *a, const char *b)
{
    int n = snprintf(dst, PATH_CAP, "%s/%s", a, b);
    if (n < 0 || n >= PATH_CAP) {
        return lina_set_error(LINA_EINVAL, "%s/%s: path too long", a, b);
    }
    return LINA_OK;
}

int lina_mkdirs(const char *path)
{
    char buf[PATH_CAP];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        return lina_set_error(LINA_EINVAL, "'%s': bad directory name", path);
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                return lina_set_error(LINA_EIO, "%s: cannot create directory (%s)", buf, strerror(e));
            }
            buf[i] = c;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return lina_set_error(LINA_EIO, "%s: not a directory", path);
    }
    return LINA_OK;
}

static void fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Remove a flat directory (our checkpoint directories hold only files). */
static void rm_flat(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        return;
    }
    struct dirent *e;
    char p[PATH_CAP];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) {
            continue;
        }
        if (join(p, dir, e->d_name) == LINA_OK) {
            (void)unlink(p);
        }
    }
    closedir(d);
    (void)rmdir(dir);
}

static int is_file(const char *dir, const char *name)
{
    char p[PATH_CAP];
    struct stat st;
    return join(p, dir, name) == LINA_OK && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* complete = trainer.json (written last) and the other three present */
static int ckpt_complete(const char *dir)
{
    return is_file(dir, "trainer.json") && is_file(dir, "model.safetensors") &&
           is_file(dir, "optimizer.safetensors") && is_file(dir, "config.json");
}

void lina_ckpt_cleanup(const char *out_dir)
{
    DIR *d = opendir(out_dir);
    if (!d) {
        return;
    }
    char keep[PATH_CAP] = "";
    char p[PATH_CAP];
    int have_main = join(p, out_dir, "checkpoint") == LINA_OK && ckpt_complete(p);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int tmp = !strncmp(e->d_name, "checkpoint.tmp-", 15);
        int old = !strncmp(e->d_name, "checkpoint.old-", 15);
        if (!tmp && !old) {
            continue;
        }
        if (join(p, out_dir, e->d_name) != LINA_OK) {
            continue;
        }
        if (old && !have_main && !keep[0] && ckpt_complete(p)) {
            memcpy(keep, p, strlen(p) + 1); /* the only complete one: keep it */
            continue;
        }
        rm_flat(p);
    }
    closedir(d);
}

/* --------------------------------------------------- params, optimizer */

static int view_of(const lina_trainable *m, int i, lina_st_view *v, size_t *off)
{
    const char *name;
    const int64_t *shape;
    int ndim, decay;
    size_t offset;
    int rc = m->tensor(m->self, i, &name, &ndim, &shape, &offset, &decay);
    if (rc != LINA_OK) {
        return rc;
    }
    if (ndim < 0 || ndim > LINA_MAX_DIMS) {
        return lina_set_error(LINA_EINVAL, "tensor %s: rank %d", name, ndim);
    }
    int64_t numel = 1;
    v->name = name;
    v->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        v->shape[d] = shape[d];
        numel *= shape[d];
    }
    if (numel < 0 || offset > m->num_params(m->self) ||
        (size_t)numel > m->num_params(m->self) - offset) {
        return lina_set_error(LINA_EINVAL, "tensor %s: view outside the parameter buffer", name);
    }
    *off = offset;
    return LINA_OK;
}

static int64_t view_numel(const lina_st_view *v)
{
    int64_t n = 1;
    for (int d = 0; d < v->ndim; d++) {
        n *= v->shape[d];
    }
    return n;
}

int lina_ckpt_save_params(const lina_trainable *m, const char *path)
{
    int nt = m->num_tensors(m->self);
    lina_st_view *v = calloc(nt > 0 ? (size_t)nt : 1, sizeof *v);
    if (!v) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    const float *p = m->params(m->self);
    int rc = LINA_OK;
    for (int i = 0; i < nt && rc == LINA_OK; i++) {
        size_t off = 0;
        rc = view_of(m, i, &v[i], &off);
        v[i].data = p + off;
    }
    if (rc == LINA_OK) {
        rc = lina_st_write(path, v, nt, NULL, 0, LINA_ST_F32);
    }
    free(v);
    return rc;
}

/* load every view i of m from f, named prefix + name, into base + offset */
static int load_views(const lina_trainable *m, const lina_st_file *f, const char *path,
                      const char *prefix, float *base)
{
    int nt = m->num_tensors(m->self);
    char name[1024];
    for (int i = 0; i < nt; i++) {
        lina_st_view v;
        size_t off = 0;
        int rc = view_of(m, i, &v, &off);
        if (rc != LINA_OK) {
            return rc;
        }
        int n = snprintf(name, sizeof name, "%s%s", prefix, v.name);
        if (n < 0 || n >= (int)sizeof name) {
            return lina_set_error(LINA_EINVAL, "tensor name too long: %s", v.name);
        }
        int j = lina_st_find(f, name);
        if (j < 0) {
            return lina_set_error(LINA_EFORMAT, "%s: tensor %s is missing", path, name);
        }
        int64_t shape[LINA_MAX_DIMS];
        int nd = lina_st_shape(f, j, shape);
        int same = nd == v.ndim;
        for (int d = 0; same && d < nd; d++) {
            same = shape[d] == v.shape[d];
        }
        if (!same) {
            return lina_set_error(LINA_EFORMAT, "%s: tensor %s has a different shape than the model's",
                                  path, name);
        }
        rc = lina_st_load(f, j, base + off, view_numel(&v));
        if (rc != LINA_OK) {
            return rc;
        }
    }
    return LINA_OK;
}

int lina_ckpt_load_params(const lina_trainable *m, const char *path)
{
    lina_st_file *f;
    int rc = lina_st_open(path, &f);
    if (rc != LINA_OK) {
        return rc;
    }
    rc = load_views(m, f, path, "", m->params(m->self));
    lina_st_close(f);
    return rc;
}

int lina_ckpt_save_optim(const lina_trainable *m, const lina_adamw *o, const char *path)
{
    if (o->n != m->num_params(m->self)) {
        return lina_set_error(LINA_EINVAL, "%s: optimizer holds %zu values, model %zu", path, o->n,
                              m->num_params(m->self));
    }
    int nt = m->num_tensors(m->self);
    lina_st_view *v = calloc(2 * (size_t)(nt > 0 ? nt : 1), sizeof *v);
    char **names = calloc(2 * (size_t)(nt > 0 ? nt : 1), sizeof *names);
    int rc = (!v || !names) ? lina_set_error(LINA_ENOMEM, "%s: out of memory", path) : LINA_OK;
    for (int i = 0; i < nt && rc == LINA_OK; i++) {
        size_t off = 0;
        lina_st_view w;
        rc = view_of(m, i, &w, &off);
        if (rc != LINA_OK) {
            break;
        }
        size_t len = strlen(w.name) + 16;
        names[2 * i] = malloc(len);
        names[2 * i + 1] = malloc(len);
        if (!names[2 * i] || !names[2 * i + 1]) {
            rc = lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
            break;
        }
        snprintf(names[2 * i], len, "exp_avg.%s", w.name);
        snprintf(names[2 * i + 1], len, "exp_avg_sq.%s", w.name);
        v[2 * i] = w;
        v[2 * i].name = names[2 * i];
        v[2 * i].data = o->m + off;
        v[2 * i + 1] = w;
        v[2 * i + 1].name = names[2 * i + 1];
        v[2 * i + 1].data = o->v + off;
    }
    if (rc == LINA_OK) {
        char step[32], b1[40], b2[40], eps[40], wd[40];
        snprintf(step, sizeof step, "%lld", (long long)o->step);
        snprintf(b1, sizeof b1, "%.17g", o->beta1);
        snprintf(b2, sizeof b2, "%.17g", o->beta2);
        snprintf(eps, sizeof eps, "%.17g", o->eps);
        snprintf(wd, sizeof wd, "%.17g", o->weight_decay);
        const char *meta[] = {"format", "lina-adamw-1", "step", step, "beta1", b1,
                              "beta2", b2, "eps", eps, "weight_decay", wd};
        rc = lina_st_write(path, v, 2 * nt, meta, 6, LINA_ST_F32);
    }
    if (names) {
        for (int i = 0; i < 2 * nt; i++) {
            free(names[i]);
        }
    }
    free(names);
    free(v);
    return rc;
}

static int meta_num(const lina_st_file *f, const char *path, const char *key, double *out)
{
    const char *s = lina_st_meta(f, key);
    char *end;
    if (!s) {
        return lina_set_error(LINA_EFORMAT, "%s: metadata '%s' is missing", path, key);
    }
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        return lina_set_error(LINA_EFORMAT, "%s: metadata '%s' is not a number: '%s'", path, key, s);
    }
    *out = v;
    return LINA_OK;
}

int lina_ckpt_load_optim(const lina_trainable *m, lina_adamw *o, const char *path)
{
    if (o->n != m->num_params(m->self)) {
        return lina_set_error(LINA_EINVAL, "%s: optimizer holds %zu values, model %zu", path, o->n,
                              m->num_params(m->self));
    }
    lina_st_file *f;
    int rc = lina_st_open(path, &f);
    if (rc != LINA_OK) {
        return rc;
    }
    double step = 0, b1 = 0, b2 = 0, eps = 0, wd = 0;
    const char *fmt = lina_st_meta(f, "format");
    if (!fmt || strcmp(fmt, "lina-adamw-1") != 0) {
        rc = lina_set_error(LINA_EFORMAT, "%s: not a lina AdamW state (metadata format '%s')", path,
                            fmt ? fmt : "");
    }
    if (rc == LINA_OK) {
        rc = meta_num(f, path, "step", &step);
    }
    if (rc == LINA_OK) {
        rc = meta_num(f, path, "beta1", &b1);
    }
    if (rc == LINA_OK) {
        rc = meta_num(f, path, "beta2", &b2);
    }
    if (rc == LINA_OK) {
        rc = meta_num(f, path, "eps", &eps);
    }
    if (rc == LINA_OK) {
        rc = meta_num(f, path, "weight_decay", &wd);
    }
    if (rc == LINA_OK && (step < 0 || step != floor(step) || step > 9e15)) {
        rc = lina_set_error(LINA_EFORMAT, "%s: bad step %g", path, step);
    }
    if (rc == LINA_OK) {
        rc = load_views(m, f, path, "exp_avg.", o->m);
    }
    if (rc == LINA_OK) {
        rc = load_views(m, f, path, "exp_avg_sq.", o->v);
    }
    lina_st_close(f);
    if (rc == LINA_OK) {
        o->step = (int64_t)step;
        o->beta1 = b1;
        o->beta2 = b2;
        o->eps = eps;
        o->weight_decay = wd;
    }
    return rc;
}

/* ------------------------------------------------------ trainer.json */

/* cJSON prints doubles with 15 digits when they compare equal within an
 * epsilon, which does not round-trip exactly: print 17 digits ourselves. */
static cJSON *exact_number(double v)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    return cJSON_CreateRaw(buf);
}

static int write_trainer_json(const char *path, const lina_train_state *s)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *losses = cJSON_CreateArray();
    cJSON *val = cJSON_CreateArray();
    char buf[32];
    int rc = LINA_OK;
    if (!j || !losses || !val) {
        cJSON_Delete(j);
        cJSON_Delete(losses);
        cJSON_Delete(val);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    cJSON_AddItemToObject(j, "format", cJSON_CreateString("lina-trainer"));
    cJSON_AddItemToObject(j, "version", cJSON_CreateNumber(TRAINER_VERSION));
    cJSON_AddItemToObject(j, "step", cJSON_CreateNumber((double)s->step));
    cJSON_AddItemToObject(j, "total_steps", cJSON_CreateNumber((double)s->total_steps));
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->seed);
    cJSON_AddItemToObject(j, "seed", cJSON_CreateString(buf));
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->rng);
    cJSON_AddItemToObject(j, "rng_state", cJSON_CreateString(buf));
    cJSON_AddItemToObject(j, "batch", cJSON_CreateNumber(s->batch));
    cJSON_AddItemToObject(j, "seq_len", cJSON_CreateNumber(s->seq_len));
    cJSON_AddItemToObject(j, "accum", cJSON_CreateNumber(s->accum));
    /* the data position: windows drawn so far (rng_state is the sampler's state after them) */
    snprintf(buf, sizeof buf, "%llu",
             (unsigned long long)s->step * (unsigned long long)s->accum * (unsigned long long)s->batch);
    cJSON_AddItemToObject(j, "windows_drawn", cJSON_CreateString(buf));
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->tokens_seen);
    cJSON_AddItemToObject(j, "tokens_seen", cJSON_CreateString(buf));
    for (int64_t i = 0; i < s->step; i++) {
        cJSON_AddItemToArray(losses, exact_number(s->losses[i]));
        if (!isnan(s->val_losses[i])) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)(i + 1)));
            cJSON_AddItemToArray(pair, exact_number(s->val_losses[i]));
            cJSON_AddItemToArray(val, pair);
        }
    }
    const lina_train_opts *o = s->opts;
    cJSON *op = o ? cJSON_CreateObject() : NULL;
    if (op) {
        cJSON_AddItemToObject(op, "lr", exact_number(o->lr));
        cJSON_AddItemToObject(op, "min_lr_ratio", exact_number(o->min_lr_ratio));
        cJSON_AddItemToObject(op, "warmup", cJSON_CreateNumber((double)o->warmup));
        cJSON_AddItemToObject(op, "beta1", exact_number(o->beta1));
        cJSON_AddItemToObject(op, "beta2", exact_number(o->beta2));
        cJSON_AddItemToObject(op, "eps", exact_number(o->eps));
        cJSON_AddItemToObject(op, "weight_decay", exact_number(o->weight_decay));
        cJSON_AddItemToObject(op, "clip", exact_number(o->clip));
        cJSON_AddItemToObject(op, "eval_every", cJSON_CreateNumber(o->eval_every));
        cJSON_AddItemToObject(op, "eval_batches", cJSON_CreateNumber(o->eval_batches));
        cJSON_AddItemToObject(op, "save_every", cJSON_CreateNumber(o->save_every));
        cJSON_AddItemToObject(op, "save_minutes", exact_number(o->save_minutes));
        cJSON_AddItemToObject(op, "pack", cJSON_CreateBool(o->pack));
        const char *paths[3] = {o->data_path, o->val_path, o->tokenizer_path};
        const char *keys[3] = {"data", "val", "tokenizer"};
        for (int i = 0; i < 3; i++) {
            if (paths[i]) {
                cJSON_AddItemToObject(op, keys[i], cJSON_CreateString(paths[i]));
            }
        }
        cJSON_AddItemToObject(j, "options", op);
    }
    cJSON_AddItemToObject(j, "losses", losses);
    cJSON_AddItemToObject(j, "val_losses", val);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    lina_afile af;
    rc = lina_afile_open(&af, path);
    if (rc == LINA_OK) {
        lina_afile_write(&af, text, strlen(text));
        lina_afile_write(&af, "\n", 1);
        rc = lina_afile_commit(&af);
    }
    free(text);
    return rc;
}

static int json_u64(const cJSON *j, const char *key, const char *path, uint64_t *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    char *end;
    if (!cJSON_IsString(it)) {
        return lina_set_error(LINA_EFORMAT, "%s: '%s' must be a decimal string", path, key);
    }
    errno = 0;
    unsigned long long v = strtoull(it->valuestring, &end, 10);
    if (errno || end == it->valuestring || *end || it->valuestring[0] == '-') {
        return lina_set_error(LINA_EFORMAT, "%s: '%s' is not a u64: '%s'", path, key, it->valuestring);
    }
    *out = v;
    return LINA_OK;
}

static int json_int(const cJSON *j, const char *key, const char *path, double lo, double hi,
                    int64_t *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < lo ||
        it->valuedouble > hi) {
        return lina_set_error(LINA_EFORMAT, "%s: '%s' must be an integer in [%g, %g]", path, key, lo,
                              hi);
    }
    *out = (int64_t)it->valuedouble;
    return LINA_OK;
}

static int read_text(const char *path, char **out, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        return lina_set_error(LINA_EIO, "%s: cannot open (%s)", path, strerror(errno));
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n - 1, fp);
        n += r;
        if (n + 1 < cap) {
            break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int err = ferror(fp);
    fclose(fp);
    if (!buf) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    if (err) {
        free(buf);
        return lina_set_error(LINA_EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return LINA_OK;
}

static int read_trainer_json(const char *path, lina_train_state *s)
{
    char *text = NULL;
    size_t len = 0;
    int rc = read_text(path, &text, &len);
    if (rc != LINA_OK) {
        return rc;
    }
    rc = lina_trainer_json_parse(text, len, path, s);
    free(text);
    return rc;
}

int lina_trainer_json_parse(const char *text, size_t len, const char *path, lina_train_state *s)
{
    int rc = LINA_OK;
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j) {
        return lina_set_error(LINA_EFORMAT, "%s: not valid JSON", path);
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    int64_t ver = 0, step = 0, total = 0, batch = 0, seq = 0, accum = 0;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "lina-trainer") != 0) {
        rc = lina_set_error(LINA_EFORMAT, "%s: not a lina trainer state", path);
    }
    if (rc == LINA_OK) {
        rc = json_int(j, "version", path, 1, 1e9, &ver);
    }
    if (rc == LINA_OK && ver != TRAINER_VERSION) {
        rc = lina_set_error(LINA_EFORMAT, "%s: trainer state version %lld (this build reads %d)", path,
                            (long long)ver, TRAINER_VERSION);
    }
    if (rc == LINA_OK) {
        rc = json_int(j, "step", path, 0, 9e15, &step);
    }
    if (rc == LINA_OK) {
        rc = json_int(j, "total_steps", path, 0, 9e15, &total);
    }
    if (rc == LINA_OK) {
        rc = json_int(j, "batch", path, 1, 2147483647.0, &batch);
    }
    if (rc == LINA_OK) {
        rc = json_int(j, "seq_len", path, 1, 2147483647.0, &seq);
    }
    if (rc == LINA_OK) {
        rc = json_int(j, "accum", path, 1, 2147483647.0, &accum);
    }
    if (rc == LINA_OK) {
        rc = json_u64(j, "seed", path, &s->seed);
    }
    if (rc == LINA_OK) {
        rc = json_u64(j, "rng_state", path, &s->rng);
    }
    if (rc == LINA_OK) {
        rc = json_u64(j, "tokens_seen", path, &s->tokens_seen);
    }
    /* the array's length is checked before any memory is sized by 'step', so a
     * file claiming 2^40 steps with a short array is refused, not allocated */
    const cJSON *losses = cJSON_GetObjectItemCaseSensitive(j, "losses");
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(j, "val_losses");
    if (rc == LINA_OK && (!cJSON_IsArray(losses) || cJSON_GetArraySize(losses) != step ||
                          !cJSON_IsArray(val))) {
        rc = lina_set_error(LINA_EFORMAT, "%s: 'losses' must hold one number per step", path);
    }
    if (rc == LINA_OK) {
        rc = lina_train_state_reserve(s, step);
    }
    if (rc == LINA_OK) {
        int64_t i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, losses)
        {
            if (!cJSON_IsNumber(it)) {
                rc = lina_set_error(LINA_EFORMAT, "%s: losses[%lld] is not a number", path,
                                    (long long)i);
                break;
            }
            s->losses[i++] = it->valuedouble;
        }
        cJSON_ArrayForEach(it, val)
        {
            if (rc != LINA_OK) {
                break;
            }
            const cJSON *a = cJSON_GetArrayItem(it, 0), *b = cJSON_GetArrayItem(it, 1);
            if (!cJSON_IsArray(it) || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) ||
                a->valuedouble != floor(a->valuedouble) || a->valuedouble < 1 ||
                a->valuedouble > (double)step) {
                rc = lina_set_error(LINA_EFORMAT, "%s: val_losses entries must be [step, loss]", path);
                break;
            }
            s->val_losses[(int64_t)a->valuedouble - 1] = b->valuedouble;
        }
    }
    cJSON_Delete(j);
    if (rc == LINA_OK) {
        s->step = step;
        s->total_steps = total;
        s->batch = (int)batch;
        s->seq_len = (int)seq;
        s->accum = (int)accum;
    }
    return rc;
}

/* ------------------------------------------------- directory switch */

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static int exchange(const char *a, const char *b)
{
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
#else
    (void)a;
    (void)b;
    errno = ENOSYS;
    return -1;
#endif
}

/* copy src to path with the atomic writer */
static int copy_file(const char *src, const char *path)
{
    char *buf = NULL;
    size_t n = 0;
    int rc = lina_read_file(src, 256u << 20, "tokenizer", &buf, &n);
    lina_afile f;
    if (rc == LINA_OK) {
        rc = lina_afile_open(&f, path);
    }
    if (rc == LINA_OK) {
        lina_afile_write(&f, buf, n);
        rc = lina_afile_commit(&f);
    }
    free(buf);
    return rc;
}

int lina_ckpt_write(const char *out_dir, const lina_trainable *m, const lina_adamw *o,
                    const lina_train_state *s, const char *tokenizer_path)
{
    char tmp[PATH_CAP], fin[PATH_CAP], old[PATH_CAP], file[PATH_CAP], name[64];
    snprintf(name, sizeof name, "checkpoint.tmp-%d", (int)getpid());
    int rc = join(tmp, out_dir, name);
    if (rc == LINA_OK) {
        snprintf(name, sizeof name, "checkpoint.old-%d", (int)getpid());
        rc = join(old, out_dir, name);
    }
    if (rc == LINA_OK) {
        rc = join(fin, out_dir, "checkpoint");
    }
    if (rc != LINA_OK) {
        return rc;
    }
    rm_flat(tmp);
    if (mkdir(tmp, 0755) != 0) {
        return lina_set_error(LINA_EIO, "%s: cannot create directory (%s)", tmp, strerror(errno));
    }
    rc = m->save(m->self, tmp); /* config.json + model.safetensors */
    if (rc == LINA_OK && tokenizer_path) {
        rc = join(file, tmp, "tokenizer.json");
        rc = rc ? rc : copy_file(tokenizer_path, file);
    }
    if (rc == LINA_OK) {
        rc = join(file, tmp, "optimizer.safetensors");
    }
    if (rc == LINA_OK) {
        rc = lina_ckpt_save_optim(m, o, file);
    }
    if (rc == LINA_OK) {
        rc = join(file, tmp, "trainer.json");
    }
    if (rc == LINA_OK) {
        rc = write_trainer_json(file, s); /* last: marks the directory complete */
    }
    if (rc == LINA_OK && !ckpt_complete(tmp)) {
        rc = lina_set_error(LINA_EIO, "%s: model save did not write config.json and "
                                      "model.safetensors", tmp);
    }
    if (rc != LINA_OK) {
        rm_flat(tmp);
        return rc;
    }
    fsync_path(tmp);
    struct stat st;
    if (stat(fin, &st) != 0) {
        if (rename(tmp, fin) != 0) {
            rc = lina_set_error(LINA_EIO, "%s: cannot rename to %s (%s)", tmp, fin, strerror(errno));
        }
    } else if (exchange(tmp, fin) == 0) {
        fsync_path(out_dir);
        rm_flat(tmp); /* now the previous checkpoint */
    } else {
        /* no RENAME_EXCHANGE: a crash between the two renames leaves the
         * complete previous checkpoint as checkpoint.old-<pid> (and the new
         * one as checkpoint.tmp-<pid>); lina_ckpt_read falls back to it */
        rm_flat(old);
        if (rename(fin, old) != 0) {
            rc = lina_set_error(LINA_EIO, "%s: cannot rename to %s (%s)", fin, old, strerror(errno));
        } else {
            fsync_path(out_dir);
            if (rename(tmp, fin) != 0) {
                rc = lina_set_error(LINA_EIO, "%s: cannot rename to %s (%s)", tmp, fin,
                                    strerror(errno));
                (void)rename(old, fin);
            } else {
                fsync_path(out_dir);
                rm_flat(old);
            }
        }
    }
    if (rc != LINA_OK) {
        rm_flat(tmp);
        return rc;
    }
    fsync_path(out_dir);
    return LINA_OK;
}

static int find_ckpt(const char *out_dir, char *dir)
{
    int rc = join(dir, out_dir, "checkpoint");
    if (rc != LINA_OK) {
        return rc;
    }
    if (ckpt_complete(dir)) {
        return LINA_OK;
    }
    DIR *d = opendir(out_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (!strncmp(e->d_name, "checkpoint.old-", 15) && join(dir, out_dir, e->d_name) == LINA_OK &&
            ckpt_complete(dir)) {
            closedir(d);
            return LINA_OK;
        }
    }
    if (d) {
        closedir(d);
    }
    return lina_set_error(LINA_EIO, "%s: no complete checkpoint to resume from (checkpoint/ needs "
                                    "config.json, model.safetensors, optimizer.safetensors and "
                                    "trainer.json)", out_dir);
}

/* options.<key> as a number into *out when present */
static void opt_num(const cJSON *op, const char *key, double *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(op, key);
    if (cJSON_IsNumber(it)) {
        *out = it->valuedouble;
    }
}

int lina_ckpt_read_opts(const char *out_dir, lina_train_opts *o, char *strs[3])
{
    char dir[PATH_CAP], file[PATH_CAP];
    lina_train_state st;
    strs[0] = strs[1] = strs[2] = NULL;
    int rc = find_ckpt(out_dir, dir);
    rc = rc ? rc : join(file, dir, "trainer.json");
    rc = rc ? rc : lina_train_state_alloc(&st, 1);
    if (rc != LINA_OK) {
        return rc;
    }
    rc = read_trainer_json(file, &st);
    lina_train_state_free(&st);
    char *text = NULL;
    size_t len = 0;
    rc = rc ? rc : read_text(file, &text, &len);
    if (rc != LINA_OK) {
        return rc;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j) {
        return lina_set_error(LINA_EFORMAT, "%s: not valid JSON", file);
    }
    o->steps = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "total_steps")->valuedouble;
    o->batch = (int)cJSON_GetObjectItemCaseSensitive(j, "batch")->valuedouble;
    o->seq_len = (int)cJSON_GetObjectItemCaseSensitive(j, "seq_len")->valuedouble;
    o->accum = (int)cJSON_GetObjectItemCaseSensitive(j, "accum")->valuedouble;
    o->seed = strtoull(cJSON_GetObjectItemCaseSensitive(j, "seed")->valuestring, NULL, 10);
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(j, "options");
    if (cJSON_IsObject(op)) {
        double warmup = (double)o->warmup, ee = o->eval_every, eb = o->eval_batches, se = o->save_every;
        opt_num(op, "lr", &o->lr);
        opt_num(op, "min_lr_ratio", &o->min_lr_ratio);
        opt_num(op, "warmup", &warmup);
        opt_num(op, "beta1", &o->beta1);
        opt_num(op, "beta2", &o->beta2);
        opt_num(op, "eps", &o->eps);
        opt_num(op, "weight_decay", &o->weight_decay);
        opt_num(op, "clip", &o->clip);
        opt_num(op, "eval_every", &ee);
        opt_num(op, "eval_batches", &eb);
        opt_num(op, "save_every", &se);
        opt_num(op, "save_minutes", &o->save_minutes);
        const cJSON *pk = cJSON_GetObjectItemCaseSensitive(op, "pack");
        if (cJSON_IsBool(pk)) { /* checkpoints before the key: the caller's value */
            o->pack = cJSON_IsTrue(pk) ? 1 : 0;
        }
        /* out-of-range values are caught by lina_train's checks */
        o->warmup = warmup >= -1 && warmup < 9e15 ? (int64_t)warmup : -1;
        o->eval_every = ee >= 0 && ee < 2e9 ? (int)ee : -1;
        o->eval_batches = eb >= 0 && eb < 2e9 ? (int)eb : -1;
        o->save_every = se >= 0 && se < 2e9 ? (int)se : -1;
        const char *keys[3] = {"data", "val", "tokenizer"};
        const char **dst[3] = {&o->data_path, &o->val_path, &o->tokenizer_path};
        for (int i = 0; i < 3 && rc == LINA_OK; i++) {
            const cJSON *it = cJSON_GetObjectItemCaseSensitive(op, keys[i]);
            if (cJSON_IsString(it)) {
                strs[i] = strdup(it->valuestring);
                if (!strs[i]) {
                    rc = lina_set_error(LINA_ENOMEM, "%s: out of memory", file);
                }
                *dst[i] = strs[i];
            }
        }
    }
    cJSON_Delete(j);
    return rc;
}

int lina_ckpt_exists(const char *out_dir)
{
    char dir[PATH_CAP];
    int rc = find_ckpt(out_dir, dir);
    lina_clear_error();
    return rc == LINA_OK;
}

int lina_ckpt_read(const char *out_dir, const lina_trainable *m, lina_adamw *o,
                   lina_train_state *s)
{
    char dir[PATH_CAP], file[PATH_CAP];
    int rc = find_ckpt(out_dir, dir);
    if (rc == LINA_OK) {
        rc = join(file, dir, "trainer.json");
    }
    if (rc == LINA_OK) {
        rc = read_trainer_json(file, s);
    }
    if (rc == LINA_OK) {
        rc = join(file, dir, "model.safetensors");
    }
    if (rc == LINA_OK) {
        rc = lina_ckpt_load_params(m, file);
    }
    if (rc == LINA_OK) {
        rc = join(file, dir, "optimizer.safetensors");
    }
    if (rc == LINA_OK) {
        rc = lina_ckpt_load_optim(m, o, file);
    }
    if (rc == LINA_OK && o->step != s->step) {
        rc = lina_set_error(LINA_EFORMAT, "%s: optimizer step %lld differs from trainer step %lld", dir,
                            (long long)o->step, (long long)s->step);
    }
    return rc;
}
