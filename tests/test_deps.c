/* test_deps.c -- tools/deps.sh, which `make test`, `make demo`, tools/test.sh
 * and .ci/run use to install missing Debian packages: with stand-in dpkg-query,
 * apt-get, id and sudo on PATH it installs exactly the missing packages as
 * root, names them with the command to run when it cannot install, and does
 * nothing when all are present. */
#include "harness.h"

#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char root[64];

static void put_exec(const char *name, const char *body)
{
    char p[256];
    snprintf(p, sizeof p, "%s/bin/%s", root, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fprintf(f, "#!/bin/sh\n%s\n", body);
        fclose(f);
    }
    chmod(p, 0755);
}

static void slurp(const char *name, char *buf, size_t n)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, name);
    FILE *f = fopen(p, "r");
    size_t got = f ? fread(buf, 1, n - 1, f) : 0;
    buf[got] = '\0';
    if (f) {
        fclose(f);
    }
}

/* run deps.sh with the stand-ins; `missing`: packages dpkg says are absent */
static int deps(const char *uid, const char *missing, const char *extra, char *err, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -f %s/apt.log; PATH=%s/bin:/usr/bin:/bin FAKE_UID=%s MISSING='%s' sh tools/deps.sh %s "
             "</dev/null >/dev/null 2>%s/err.txt", root, root, uid, missing, extra, root);
    int st = system(cmd);
    slurp("err.txt", err, n);
    return WEXITSTATUS(st);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/lina_deps_XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    char d[128];
    snprintf(d, sizeof d, "%s/bin", root);
    mkdir(d, 0755);
    /* dpkg-query -W -f=FMT PKG: "ii " for an installed package, nothing for a missing one */
    put_exec("dpkg-query", "for m in $MISSING; do [ \"$3\" = \"$m\" ] && exit 1; done; echo 'ii '");
    char body[512];
    snprintf(body, sizeof body, "echo \"$*\" >> %s/apt.log", root);
    put_exec("apt-get", body);
    put_exec("id", "echo \"$FAKE_UID\"");
    put_exec("sudo", "exit 1"); /* a sudo that asks for a password nobody can type */

    char err[2048], log[2048];
    int rc = deps("0", "libcjson-dev pkg-config", "", err, sizeof err);
    slurp("apt.log", log, sizeof log);
    CHECK(rc == 0 && strstr(log, "update") && strstr(log, "install") && strstr(log, "libcjson-dev") &&
              strstr(log, "pkg-config") && !strstr(log, "gcc") && strstr(err, "installing"),
          "as root: apt-get installs exactly the missing packages (\"%.*s\")", (int)strcspn(log, "\n"), log);
    rc = deps("0", "bible-kjv", "bible-kjv", err, sizeof err);
    slurp("apt.log", log, sizeof log);
    CHECK(rc == 0 && strstr(log, "bible-kjv"), "extra packages named on the command line are installed too");
    rc = deps("1000", "libopenblas-openmp-dev", "", err, sizeof err);
    slurp("apt.log", log, sizeof log);
    CHECK(rc == 1 && log[0] == '\0' && strstr(err, "missing Debian packages: libopenblas-openmp-dev") &&
              strstr(err, "sudo apt-get install libopenblas-openmp-dev"),
          "not root, no usable sudo: the missing packages and the command, exit 1 (\"%.*s\")",
          (int)strcspn(err, "\n"), err);
    rc = deps("1000", "", "", err, sizeof err);
    slurp("apt.log", log, sizeof log);
    CHECK(rc == 0 && log[0] == '\0' && err[0] == '\0', "everything present: nothing installed, nothing printed");

    /* make test and tools/test.sh go through it */
    char out[8192];
    FILE *p = popen("make -n test 2>&1", "r");
    size_t got = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[got] = '\0';
    if (p) {
        pclose(p);
    }
    CHECK(strstr(out, "tools/deps.sh") != NULL, "make test installs missing dependencies first (tools/deps.sh)");
    CHECK(access("tools/test.sh", R_OK) == 0, "tools/test.sh: the suite without make installed");

    snprintf(body, sizeof body, "rm -rf %s", root);
    if (system(body) != 0) {
        printf("# could not remove %s\n", root);
    }
    return th_exit();
}
