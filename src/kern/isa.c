/* isa.c -- which instruction-set path the hot kernels take (see isa.h).
 * Chosen once, before main: the one named by the environment variable
 * LINA_ISA when this CPU can run it, else the best path it supports. A name
 * that is unknown or that the CPU lacks is not used, and lina_isa_init()
 * reports it (the library itself never stops the host program). */
#include "isa.h"
#include "lina.h"

#include <stdlib.h>
#include <string.h>
#if LINA_ISA_X86
#include <cpuid.h>
#endif

static const char *const isa_names[] = {"portable", "avx2", "avx512", "neon"};
#define NISA ((int)(sizeof isa_names / sizeof isa_names[0]))

static _Atomic int g_isa = -1;
static _Atomic int g_env_bad; /* LINA_ISA was set to an unusable path */

/* Whether this build has path `id` and the CPU (and OS) can run it. */
static int isa_usable(int id)
{
    if (id == LINA_ISA_PORTABLE) {
        return 1;
    }
#if LINA_ISA_X86
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (id == LINA_ISA_AVX2) {
        return avx2;
    }
    if (id == LINA_ISA_AVX512) {
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    }
#endif
#if defined(__aarch64__)
    if (id == LINA_ISA_NEON) {
        return 1; /* Advanced SIMD is part of every AArch64 CPU */
    }
#endif
    return 0;
}

static int isa_lookup(const char *name)
{
    for (int i = 0; i < NISA; i++) {
        if (!strcmp(name, isa_names[i])) {
            return i;
        }
    }
    return -1;
}

const char *lina_isa_supported(void)
{
    static char buf[64];
    if (!buf[0]) {
        char tmp[64] = "";
        for (int i = NISA - 1; i >= 0; i--) {
            if (isa_usable(i)) {
                strcat(tmp, tmp[0] ? " " : "");
                strcat(tmp, isa_names[i]);
            }
        }
        memcpy(buf, tmp, sizeof buf);
    }
    return buf;
}

int lina_isa_set(const char *name)
{
    int id = name ? isa_lookup(name) : -1;
    if (id < 0) {
        return lina_set_error(LINA_EINVAL, "unknown kernel path '%s' (one of: avx512, avx2, neon, portable)",
                              name ? name : "(null)");
    }
    if (!isa_usable(id)) {
        return lina_set_error(LINA_EINVAL, "kernel path '%s' is not supported on this CPU or build (supported: %s)",
                              name, lina_isa_supported());
    }
    g_isa = id;
    return LINA_OK;
}

static int isa_best(void)
{
    for (int i = NISA - 1; i > 0; i--) {
        if (isa_usable(i)) {
            return i;
        }
    }
    return LINA_ISA_PORTABLE;
}

/* The environment's choice if usable, else the best usable path. */
static int isa_pick(void)
{
    const char *env = getenv("LINA_ISA");
    int id = env && env[0] ? isa_lookup(env) : -1;
    if (env && env[0] && (id < 0 || !isa_usable(id))) {
        g_env_bad = 1;
        id = -1;
    }
    if (id < 0) {
        id = isa_best();
    }
    g_isa = id;
    return id;
}

__attribute__((constructor)) static void isa_init(void)
{
    if (g_isa < 0) {
        isa_pick();
    }
}

int lina_isa_init(void)
{
    lina_isa_id();
    if (g_env_bad) {
        int rc = lina_isa_set(getenv("LINA_ISA"));
        return rc ? rc : LINA_OK;
    }
    return LINA_OK;
}

/* AMD family 19h with AVX-512 is Zen 4, which runs 512-bit operations as two 256-bit
 * halves (Zen 3, the same family, has no AVX-512 and never takes that path) */
static int cpu_split512(void)
{
#if LINA_ISA_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) {
        return 0;
    }
    const int amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u; /* "AuthenticAMD" */
    if (!amd || !__get_cpuid(1, &a, &b, &c, &d)) {
        return 0;
    }
    unsigned family = (a >> 8) & 0xfu;
    if (family == 0xfu) {
        family += (a >> 20) & 0xffu;
    }
    return family == 0x19u;
#else
    return 0;
#endif
}

int lina_cpu_full512(void)
{
    static _Atomic int split = -1;
    if (lina_isa_id() != LINA_ISA_AVX512) {
        return 0;
    }
    if (split < 0) {
        split = cpu_split512();
    }
    return !split;
}

int lina_isa_id(void)
{
    int id = g_isa;
    return id >= 0 ? id : isa_pick();
}

const char *lina_isa_name(void)
{
    return isa_names[lina_isa_id()];
}
