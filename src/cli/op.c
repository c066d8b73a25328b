/* op.c -- `lina op NAME`: run one token mixer on .npy inputs (the op contract in the
 * README); `lina ops`: list the ops and their flags. */
#include "cli.h"
#include "lina.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_op_accepts(const lina_op_info *op, const char *flag)
{
    for (int i = 0; i < 4 && op->flags[i]; i++) {
        if (strcmp(op->flags[i], flag) == 0) {
            return 1;
        }
    }
    return 0;
}

const lina_op_info *cli_op_select(cli_cmd *c, int *rc)
{
    *rc = 2;
    if (c->npos < 1) {
        cli_fail(c, "missing op name (try 'lina ops')");
        return NULL;
    }
    const lina_op_info *op = lina_op_find(c->pos[0]);
    if (!op) {
        cli_fail(c, "unknown op '%s' (try 'lina ops')", c->pos[0]);
        return NULL;
    }
    const char *flags[] = {"--normalize", "--qk-l2norm", "--non-causal", "--window", "--delta-softplus"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (cli_given(c, flags[i]) && !cli_op_accepts(op, flags[i])) {
            cli_fail(c, "option %s does not apply to op '%s'", flags[i], op->name);
            return NULL;
        }
    }
    return op;
}

/* every DIR/NAME.npy into in */
static int load_dir(const char *dir, lina_tset *in)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "lina: cannot open input directory '%s' (%s)\n", dir, strerror(errno));
        return 2;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".npy") != 0) {
            continue;
        }
        if (n - 4 >= sizeof in->names[0]) {
            continue; /* not a name any op uses */
        }
        char name[16];
        memcpy(name, e->d_name, n - 4);
        name[n - 4] = '\0';
        size_t plen = strlen(dir) + n + 2;
        char *path = malloc(plen);
        if (!path) {
            rc = 2;
            break;
        }
        snprintf(path, plen, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            fprintf(stderr, "lina: input %s is %s, not a .npy file\n", path,
                    stat(path, &st) != 0 ? "unreadable" : S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
            free(path);
            rc = 2;
            break;
        }
        lina_tensor t;
        if (lina_npy_read(path, &t) != 0) {
            fprintf(stderr, "lina: %s\n", lina_last_error());
            free(path);
            rc = 2;
            break;
        }
        free(path);
        if (lina_tset_add(in, name, &t) != 0) {
            fprintf(stderr, "lina: %s\n", lina_last_error());
            lina_tensor_free(&t);
            rc = 2;
            break;
        }
    }
    closedir(d);
    return rc;
}

/* The outputs (names not starting with '_', which are scratch kept between calls):
 * every value must be finite (the inputs were checked finite, so a non-finite output is
 * an overflow); then all are written or none: each to a temporary directory inside
 * dout first, and renamed into place only when every one is written. */
static int write_outputs(const char *opname, const char *dout, const lina_tset *out)
{
    for (int i = 0; i < out->n; i++) {
        if (out->names[i][0] == '_') {
            continue;
        }
        int64_t n = lina_tensor_numel(&out->t[i]), bad = 0;
        for (int64_t j = 0; j < n; j++) {
            bad += !isfinite(out->t[i].data[j]);
        }
        if (bad) {
            fprintf(stderr, "lina: %s: output %s.npy has %lld non-finite values (of %lld) from finite inputs "
                            "(overflow); no output written\n", opname, out->names[i], (long long)bad, (long long)n);
            return 1;
        }
    }
    char tmp[4200], from[4300], to[4300];
    struct stat st;
    for (int i = 0; i < out->n; i++) {
        snprintf(to, sizeof to, "%s/%s.npy", dout, out->names[i]);
        if (out->names[i][0] != '_' && lstat(to, &st) == 0 && !S_ISREG(st.st_mode)) {
            fprintf(stderr, "lina: %s: %s exists and is not a regular file; no output written\n", opname, to);
            return 1;
        }
    }
    if (snprintf(tmp, sizeof tmp, "%s/.lina-op-XXXXXX", dout) >= (int)sizeof tmp || !mkdtemp(tmp)) {
        fprintf(stderr, "lina: %s: cannot write into %s (%s); no output written\n", opname, dout, strerror(errno));
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < out->n && rc == 0; i++) {
        if (out->names[i][0] == '_') {
            continue;
        }
        snprintf(from, sizeof from, "%s/%s.npy", tmp, out->names[i]);
        if (lina_npy_write(from, &out->t[i]) != 0) {
            fprintf(stderr, "lina: %s: %s; no output written\n", opname, lina_last_error());
            rc = 1;
        }
    }
    for (int i = 0; i < out->n; i++) {
        if (out->names[i][0] == '_') {
            continue;
        }
        snprintf(from, sizeof from, "%s/%s.npy", tmp, out->names[i]);
        snprintf(to, sizeof to, "%s/%s.npy", dout, out->names[i]);
        if (rc) {
            unlink(from); /* the ones written before the failure (if any) */
        } else if (rename(from, to) != 0) {
            fprintf(stderr, "lina: %s: cannot rename %s to %s (%s)\n", opname, from, to, strerror(errno));
            unlink(from);
            rc = 1;
        }
    }
    rmdir(tmp);
    return rc;
}

int lina_cmd_op(int argc, char **argv)
{
    const char *din = NULL, *dout = NULL, *cu_path = NULL;
    int form = -1, normalize = 0, qk_l2norm = 0, non_causal = 0, delta_softplus = 0;
    lina_op_opts o = {0};
    cli_opt opts[] = {
        CLI_OPT_STR("--in", NULL, "DIR", &din, "directory of input NAME.npy files (required)"),
        CLI_OPT_STR("--out", NULL, "DIR", &dout, "existing directory for the output NAME.npy files (required)"),
        CLI_OPT_CHOICE("--form", &form, "chunk|recurrent", "chunked parallel or token-by-token form (required)"),
        CLI_OPT_FLAG("--backward", NULL, &o.backward, "also the gradients (needs do.npy; dht.npy optional)"),
        CLI_OPT_INT("--chunk", NULL, "C", &o.chunk, 1, 1024, "chunk length of the chunk form (0: the op's own)"),
        CLI_OPT_STR("--cu-seqlens", NULL, "FILE", &cu_path,
                    "int32/int64 .npy offsets [0, t1, ..., T]: B = 1 packs documents, states one per document"),
        CLI_HEADING("op flags (only for the ops that list them in 'lina ops'):"),
        CLI_OPT_FLAG("--normalize", NULL, &normalize, "normalise the output by the key sum"),
        CLI_OPT_FLAG("--qk-l2norm", NULL, &qk_l2norm, "L2-normalise q and k per head"),
        CLI_OPT_FLAG("--non-causal", NULL, &non_causal, "bidirectional (no causal mask)"),
        CLI_OPT_INT("--window", NULL, "W", &o.window, 1, 1 << 30, "sliding-window length (0: none)"),
        CLI_OPT_FLAG("--delta-softplus", NULL, &delta_softplus, "dt = softplus(delta + delta_bias)"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "op",
                 .usage = "op NAME --in DIR --out DIR --form chunk|recurrent [--backward] [--cu-seqlens FILE] [op flags]",
                 .about = "  Runs the op NAME ('lina ops' lists them) on the inputs; the README's op contract\n"
                          "  names the inputs and outputs of each.\n",
                 .opts = opts,
                 .max_pos = 1};
    cli_default(&c, "--form", "none");
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    const lina_op_info *op = cli_op_select(&c, &r);
    if (!op) {
        return r;
    }
    o.normalize = normalize;
    o.qk_l2norm = qk_l2norm;
    o.non_causal = non_causal;
    o.delta_softplus = delta_softplus;
    if (!din) {
        return cli_fail(&c, "--in DIR is required");
    }
    if (!dout) {
        return cli_fail(&c, "--out DIR is required");
    }
    if (form < 0) {
        return cli_fail(&c, "--form chunk|recurrent is required");
    }
    o.form = form == 0 ? LINA_FORM_CHUNK : LINA_FORM_RECURRENT;
    struct stat st;
    if (stat(dout, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "lina: output directory '%s' does not exist\n", dout);
        return 2;
    }
    int64_t *cu = NULL, ncu = 0;
    if (cu_path && lina_npy_read_int(cu_path, &cu, &ncu) != 0) {
        fprintf(stderr, "lina: --cu-seqlens: %s\n", lina_last_error());
        return 2;
    }
    lina_tset in = {0}, out = {0};
    int rc = load_dir(din, &in);
    if (rc == 0 && (cu ? lina_op_run_varlen(op, &in, &out, &o, cu, ncu, NULL)
                       : lina_op_run(op, &in, &out, &o, NULL)) != 0) {
        fprintf(stderr, "lina: %s: %s\n", op->name, lina_last_error());
        rc = 1;
    }
    if (rc == 0) {
        rc = write_outputs(op->name, dout, &out);
    }
    lina_tset_free(&in);
    lina_tset_free(&out);
    free(cu);
    return rc;
}

int lina_cmd_ops(int argc, char **argv)
{
    cli_opt opts[] = {CLI_OPT_END};
    cli_cmd c = {.name = "ops", .usage = "ops", .about = "  Lists the ops of 'lina op' and 'lina bench' with the flags each accepts.\n",
                 .opts = opts};
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    for (const lina_op_info *const *p = lina_ops(); *p; p++) {
        printf("%-18s %s", (*p)->name, (*p)->summary);
        for (int i = 0; i < 4 && (*p)->flags[i]; i++) {
            printf("%s%s", i ? " " : "  [", (*p)->flags[i]);
        }
        printf("%s\n", (*p)->flags[0] ? "]" : "");
    }
    return 0;
}
