/* test_lib.c -- the shared library as a user gets it: liblina.so exports
 * exactly the functions declared in include/lina.h (nothing internal), carries
 * a SONAME with the version, and `make install` gives a `pkg-config --cflags
 * --libs lina` that builds a program which runs without LD_LIBRARY_PATH. */
#include "harness.h"
#include "lina.h"

#include <ctype.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAXSYM 1024

static char bdir[256]; /* the build directory (LINA_BUILD_DIR, else LINA_BIN's) */
/* a cross build (tools/test_aarch64.sh) names its tools: LINA_TEST_NM (nm), LINA_TEST_CC (cc),
 * LINA_TEST_RUN (the emulator a target program runs under; none), LINA_TEST_MAKEFLAGS (the build's
 * make variables, so `make install` finds it up to date) */
static const char *tool(const char *var, const char *def)
{
    const char *v = getenv(var);
    return v && *v ? v : def;
}
static char root[64];

static int has(char **v, int n, const char *s)
{
    for (int i = 0; i < n; i++) {
        if (!strcmp(v[i], s)) {
            return 1;
        }
    }
    return 0;
}

/* functions declared in lina.h: a line at column 0 that is not a comment,
 * holding "lina_name(" after a type */
static int declared(char **v)
{
    FILE *f = fopen("include/lina.h", "r");
    char line[1024];
    int n = 0;
    while (f && fgets(line, sizeof line, f) && n < MAXSYM) {
        if (!isalpha((unsigned char)line[0]) && line[0] != '_') {
            continue;
        }
        for (char *p = strstr(line, "lina_"); p; p = strstr(p + 1, "lina_")) {
            if (p == line || (p[-1] != ' ' && p[-1] != '*')) {
                continue;
            }
            size_t k = 5;
            while (isalnum((unsigned char)p[k]) || p[k] == '_') {
                k++;
            }
            if (p[k] == '(') {
                char *s = strndup(p, k);
                if (has(v, n, s)) {
                    free(s);
                } else {
                    v[n++] = s;
                }
                break;
            }
        }
    }
    if (f) {
        fclose(f);
    }
    return n;
}

/* defined dynamic symbols of a type in `types` (nm -D) */
static int exported(const char *lib, char **v, int *n_text, int *asan)
{
    char cmd[512], line[512];
    snprintf(cmd, sizeof cmd, "%s -D %s 2>/dev/null", tool("LINA_TEST_NM", "nm"), lib);
    FILE *p = popen(cmd, "r");
    int n = 0;
    *n_text = 0;
    *asan = 0;
    while (p && fgets(line, sizeof line, p) && n < MAXSYM) {
        char a[128], t[128], name[256];
        /* "ADDRESS TYPE NAME", or "TYPE NAME" after blanks for an undefined symbol */
        if (line[0] == ' ') {
            if (sscanf(line, "%127s %255s", t, name) == 2 && !strcmp(name, "__asan_init")) {
                *asan = 1;
            }
            continue;
        }
        if (sscanf(line, "%127s %127s %255s", a, t, name) != 3) {
            continue;
        }
        if (!strcmp(t, "U") || !strcmp(t, "w") || !strcmp(t, "v")) {
            continue;
        }
        *n_text += !strcmp(t, "T");
        v[n++] = strdup(name);
    }
    if (p) {
        pclose(p);
    }
    return n;
}

static int cmd_out(const char *cmd, char *out, size_t n)
{
    FILE *p = popen(cmd, "r");
    size_t got = p ? fread(out, 1, n - 1, p) : 0;
    out[got] = '\0';
    return p ? pclose(p) : -1;
}

static void test_exports(void)
{
    static char *dec[MAXSYM], *exp_[MAXSYM];
    char lib[512];
    snprintf(lib, sizeof lib, "%s/liblina.so", bdir);
    int nd = declared(dec), nt, asan;
    int ne = exported(lib, exp_, &nt, &asan);
    int missing = 0, extra = 0;
    for (int i = 0; i < nd; i++) {
        if (!has(exp_, ne, dec[i])) {
            printf("    declared but not exported: %s\n", dec[i]);
            missing++;
        }
    }
    for (int i = 0; i < ne; i++) {
        if (!strncmp(exp_[i], "lina_", 5) && !has(dec, nd, exp_[i])) {
            if (extra < 5) {
                printf("    exported but not in lina.h: %s\n", exp_[i]);
            }
            extra++;
        }
    }
    CHECK(nd > 100 && missing == 0, "every function declared in lina.h is exported (%d declared, %d missing)", nd,
          missing);
    CHECK(extra == 0 && nt == nd, "nothing else is exported (%d internal lina_ symbols, %d text symbols for %d "
          "declared functions)", extra, nt, nd);
    for (int i = 0; i < nd; i++) {
        free(dec[i]);
    }
    for (int i = 0; i < ne; i++) {
        free(exp_[i]);
    }
}

static void test_soname(char *soname, size_t n)
{
    int maj = 0, min = 0;
    sscanf(LINA_VERSION, "%d.%d", &maj, &min);
    char want_file[64];
    snprintf(want_file, sizeof want_file, "liblina.so.%d.%d", maj, min);
    if (maj == 0) {
        snprintf(soname, n, "%s", want_file);
    } else {
        snprintf(soname, n, "liblina.so.%d", maj);
    }
    char cmd[512], out[8192], want[128];
    snprintf(cmd, sizeof cmd, "readelf -d %s/liblina.so 2>&1", bdir);
    cmd_out(cmd, out, sizeof out);
    snprintf(want, sizeof want, "Library soname: [%s]", soname);
    CHECK(strstr(out, want) != NULL, "liblina.so carries the SONAME %s (version %s)", soname, LINA_VERSION);
    char link[512], target[PATH_MAX], real[PATH_MAX];
    snprintf(link, sizeof link, "%s/liblina.so", bdir);
    snprintf(cmd, sizeof cmd, "%s/%s", bdir, want_file);
    CHECK(realpath(link, target) && realpath(cmd, real) && !strcmp(target, real),
          "liblina.so is a link to %s", want_file);
}

static void test_install(const char *soname)
{
    char cmd[2048], out[8192];
    snprintf(cmd, sizeof cmd, "make -s install PREFIX=%s/usr BUILD=%s %s >%s/install.log 2>&1", root, bdir,
             tool("LINA_TEST_MAKEFLAGS", ""), root);
    int st = system(cmd);
    CHECK(st == 0, "make install PREFIX=%s/usr", root);
    if (st) {
        return;
    }
    char lib[512], tmp[512];
    snprintf(lib, sizeof lib, "%s/usr/lib/%s", root, soname);
    snprintf(tmp, sizeof tmp, "%s/usr/lib/liblina.so", root);
    struct stat sb;
    CHECK(stat(lib, &sb) == 0 && stat(tmp, &sb) == 0, "installed %s and the liblina.so link", soname);
    /* a user's program through pkg-config, run without LD_LIBRARY_PATH */
    snprintf(tmp, sizeof tmp, "%s/prog.c", root);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fputs("#include <lina.h>\n#include <stdio.h>\n"
              "int main(void) {\n"
              "    lina_config c; lina_model *m = NULL;\n"
              "    lina_config_default(&c, LINA_MODEL_GLA);\n"
              "    c.hidden_size = 32; c.num_heads = 2; c.num_hidden_layers = 1; c.vocab_size = 50;\n"
              "    if (lina_model_create(&c, 1, &m)) { printf(\"%s\\n\", lina_last_error()); return 1; }\n"
              "    printf(\"params %zu\\n\", lina_model_num_params(m));\n"
              "    lina_model_free(m);\n"
              "    return 0;\n}\n",
              f);
        fclose(f);
    }
    char lib_so[512];
    snprintf(lib_so, sizeof lib_so, "%s/liblina.so", bdir);
    static char *syms[MAXSYM];
    int nt, asan;
    int ns = exported(lib_so, syms, &nt, &asan);
    for (int i = 0; i < ns; i++) {
        free(syms[i]);
    }
    snprintf(cmd, sizeof cmd,
             "cd %s && PKG_CONFIG_PATH=%s/usr/lib/pkgconfig %s %s prog.c $(PKG_CONFIG_PATH=%s/usr/lib/pkgconfig "
             "pkg-config --cflags --libs lina) -o prog >cc.log 2>&1 && env -u LD_LIBRARY_PATH %s ./prog 2>&1",
             root, root, tool("LINA_TEST_CC", "cc"), asan ? "-fsanitize=address,undefined" : "", root,
             tool("LINA_TEST_RUN", ""));
    st = cmd_out(cmd, out, sizeof out);
    CHECK(st == 0 && strstr(out, "params "), "a program built with pkg-config --cflags --libs lina runs without "
          "LD_LIBRARY_PATH (\"%.*s\")", (int)strcspn(out, "\n"), out);
    snprintf(cmd, sizeof cmd, "readelf -d %s/prog 2>&1", root);
    cmd_out(cmd, out, sizeof out);
    char want[128];
    snprintf(want, sizeof want, "Shared library: [%s]", soname);
    CHECK(strstr(out, want) != NULL, "the program is linked against %s (the SONAME), not the static library",
          soname);
}

int main(void)
{
    const char *bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    const char *dir = tool("LINA_BUILD_DIR", NULL);
    snprintf(bdir, sizeof bdir, "%s", dir ? dir : bin);
    char *slash = strrchr(bdir, '/');
    if (!dir) { /* LINA_BIN's directory */
        if (slash) {
            *slash = '\0';
        } else {
            snprintf(bdir, sizeof bdir, ".");
        }
    }
    snprintf(root, sizeof root, "/tmp/lina_lib_XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    char soname[64];
    test_exports();
    test_soname(soname, sizeof soname);
    test_install(soname);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", root);
    }
    return th_exit();
}
