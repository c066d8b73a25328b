/* test_layers.c -- the source folders form layers (docs/architecture.md):
 *
 *   kern < ops, io, dist < nn < model < train, text, tasks, analyze < cli (src/cli, tools)
 *
 * A file may include headers of its own folder, the public include/lina.h and
 * headers of folders of a strictly lower rank; never one of a higher or equal
 * rank (peers stay independent). This test reads every `#include "..."` line
 * under src/ and tools/ (run from the repository root, as make test does) and
 * fails on any include that goes up or sideways, or into a folder missing from
 * the table below. It first checks itself on a small tree with a known
 * violation. */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct layer {
    const char *dir;
    int rank;
} layer;

static const layer k_layers[] = {
    {"src/kern", 0},  {"src/ops", 1},   {"src/io", 1},    {"src/dist", 1},  {"src/nn", 2},
    {"src/model", 3}, {"src/train", 4}, {"src/text", 4},  {"src/tasks", 4}, {"src/analyze", 4},
    {"src/cli", 5},   {"tools", 5},
};
#define N_LAYERS ((int)(sizeof k_layers / sizeof k_layers[0]))

typedef struct scan {
    const char *root;   /* tree root ("." for the repository) */
    int files, includes, violations;
    char first[1024];    /* first violation, for the report */
} scan;

/* The layer a repository-relative path belongs to (longest folder prefix), or -1. */
static int layer_of(const char *path)
{
    int best = -1;
    size_t best_len = 0;
    for (int i = 0; i < N_LAYERS; i++) {
        size_t n = strlen(k_layers[i].dir);
        if (strncmp(path, k_layers[i].dir, n) == 0 && (path[n] == '/' || path[n] == '\0') && n > best_len) {
            best = i;
            best_len = n;
        }
    }
    return best;
}

static int same_folder(int a, int b)
{
    return a == b || (k_layers[a].rank == 5 && k_layers[b].rank == 5);
}

/* Join dir + "/" + rel and normalise "." and ".." segments; -1 if it leaves the tree. */
static int resolve(const char *dir, const char *rel, char *out, size_t cap)
{
    char buf[1024];
    const char *seg[128];
    int nseg = 0;
    if (snprintf(buf, sizeof buf, "%s/%s", dir, rel) >= (int)sizeof buf) {
        return -1;
    }
    for (char *s = strtok(buf, "/"); s; s = strtok(NULL, "/")) {
        if (strcmp(s, ".") == 0) {
            continue;
        }
        if (strcmp(s, "..") == 0) {
            if (nseg == 0) {
                return -1;
            }
            nseg--;
            continue;
        }
        if (nseg == 128) {
            return -1;
        }
        seg[nseg++] = s;
    }
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < nseg; i++) {
        size_t n = strlen(seg[i]);
        if (len + n + 2 > cap) {
            return -1;
        }
        if (i) {
            out[len++] = '/';
        }
        memcpy(out + len, seg[i], n + 1);
        len += n;
    }
    return 0;
}

/* Record a violation: `file` (including `inc`, or NULL) and why. */
static void violation(scan *sc, const char *file, const char *inc, const char *why)
{
    char msg[1024];
    if (inc) {
        snprintf(msg, sizeof msg, "%.300s includes \"%.300s\": %.300s", file, inc, why);
    } else {
        snprintf(msg, sizeof msg, "%.300s: %.300s", file, why);
    }
    sc->violations++;
    printf("    %s\n", msg);
    if (!sc->first[0]) {
        snprintf(sc->first, sizeof sc->first, "%s", msg);
    }
}

/* Check one source file (path relative to sc->root). */
static void check_file(scan *sc, const char *rel)
{
    char full[2100], dir[1024], line[1024];
    snprintf(full, sizeof full, "%s/%s", sc->root, rel);
    FILE *f = fopen(full, "r");
    if (!f) {
        violation(sc, rel, NULL, strerror(errno));
        return;
    }
    sc->files++;
    int from = layer_of(rel);
    snprintf(dir, sizeof dir, "%s", rel);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
    }
    while (fgets(line, sizeof line, f)) {
        const char *p = line;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p != '#') {
            continue;
        }
        p++;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (strncmp(p, "include", 7) != 0) {
            continue;
        }
        p += 7;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p != '"') {
            continue; /* <system> headers */
        }
        const char *q = strchr(p + 1, '"');
        if (!q) {
            continue;
        }
        char inc[512], target[1024], own[1024];
        snprintf(inc, sizeof inc, "%.*s", (int)(q - p - 1), p + 1);
        sc->includes++;
        /* a quoted name is looked up next to the file first, then in include/ */
        if (resolve(dir, inc, own, sizeof own) == 0) {
            char ownfull[1200];
            struct stat st;
            snprintf(ownfull, sizeof ownfull, "%s/%s", sc->root, own);
            if (stat(ownfull, &st) == 0) {
                snprintf(target, sizeof target, "%s", own);
            } else if (resolve("include", inc, target, sizeof target) != 0) {
                violation(sc, rel, inc, "outside the tree");
                continue;
            }
        } else {
            violation(sc, rel, inc, "outside the tree");
            continue;
        }
        if (strncmp(target, "include/", 8) == 0) {
            continue; /* the public header: everyone may include it */
        }
        int to = layer_of(target);
        if (to < 0) {
            violation(sc, rel, inc,
                      "a folder that is not in the layer table");
            continue;
        }
        if (same_folder(from, to) || k_layers[to].rank < k_layers[from].rank) {
            continue;
        }
        char why[256];
        snprintf(why, sizeof why, "%s (rank %d) may not include %s (rank %d)",
                 k_layers[from].dir, k_layers[from].rank, k_layers[to].dir, k_layers[to].rank);
        violation(sc, rel, inc, why);
    }
    fclose(f);
}

static int is_source(const char *name)
{
    size_t n = strlen(name);
    return n > 2 && name[n - 2] == '.' && (name[n - 1] == 'c' || name[n - 1] == 'h');
}

/* Walk folder `rel` (relative to the root) recursively. */
static void walk(scan *sc, const char *rel)
{
    char full[1024];
    snprintf(full, sizeof full, "%s/%s", sc->root, rel);
    DIR *d = opendir(full);
    if (!d) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char sub[1024], subfull[1200];
        snprintf(sub, sizeof sub, "%s/%s", rel, e->d_name);
        snprintf(subfull, sizeof subfull, "%s/%s", sc->root, sub);
        struct stat st;
        if (stat(subfull, &st) != 0) {
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (layer_of(sub) < 0 && strcmp(rel, "src") == 0) {
                violation(sc, sub, NULL, "a source folder that is not in the layer table");
                continue;
            }
            walk(sc, sub);
        } else if (is_source(e->d_name) && layer_of(sub) >= 0) {
            check_file(sc, sub);
        }
    }
    closedir(d);
}

static void run_scan(scan *sc)
{
    walk(sc, "src");
    walk(sc, "tools");
}

/* ----------------------------------------------------------- self-check */

static void put(const char *root, const char *rel, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *s = path + strlen(root) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                char sub[1024];
                snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
                rm_tree(sub);
            }
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void self_check(void)
{
    char root[] = "/tmp/lina_layers_XXXXXX";
    if (!mkdtemp(root)) {
        CHECK(0, "layers self-check: temporary folder (%s)", strerror(errno));
        return;
    }
    put(root, "include/lina.h", "\n");
    put(root, "src/kern/kern.h", "#include \"lina.h\"\n");
    put(root, "src/ops/ops.h", "#include \"../kern/kern.h\"\n");
    put(root, "src/nn/nn.h", "#include \"../ops/ops.h\"\n#include <stdio.h>\n");
    put(root, "src/model/m.c", "#include \"../nn/nn.h\"\n#include \"../io/io.h\"\n");
    put(root, "src/io/io.h", "#include \"../kern/kern.h\"\n");
    put(root, "tools/lina.c", "#include \"../src/nn/nn.h\"\n#include \"lina.h\"\n");
    scan clean = {.root = root};
    run_scan(&clean);
    CHECK(clean.violations == 0 && clean.files == 6 && clean.includes == 8,
          "layers self-check: a well-layered tree passes (%d files, %d includes, %d violations)",
          clean.files, clean.includes, clean.violations);

    put(root, "src/kern/core.c", "#  include \"../ops/ops.h\"\n");    /* up */
    put(root, "src/ops/x.c", "#include \"../io/io.h\"\n");             /* sideways */
    put(root, "src/io/y.c", "#include \"../../outside.h\"\n");         /* out of the tree */
    put(root, "src/extra/z.c", "\n");                                  /* unknown folder */
    scan bad = {.root = root};
    run_scan(&bad);
    CHECK(bad.violations == 4, "layers self-check: up, sideways, outside and unknown are caught "
                               "(%d of 4)", bad.violations);
    rm_tree(root);
}

int main(void)
{
    self_check();

    scan sc = {.root = "."};
    run_scan(&sc);
    CHECK(sc.files > 50 && sc.violations == 0,
          "layers: %d files under src/ and tools/, %d quoted includes, %d going up or sideways%s%s",
          sc.files, sc.includes, sc.violations, sc.first[0] ? "; first: " : "", sc.first);
    return th_exit();
}
