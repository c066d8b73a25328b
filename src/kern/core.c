/* core.c -- error state, thread count, workspace arena. */
#include "kern.h"
#include "lina.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static _Thread_local char g_err[512];

const char *lina_last_error(void) { return g_err; }

void lina_clear_error(void) { g_err[0] = '\0'; }

int lina_set_error(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return code;
}

/* ---------------------------------------------------------------- threads */

static int g_threads = 0;

void lina_set_threads(int n)
{
    g_threads = n > 0 ? n : 0;
#ifdef _OPENMP
    if (n > 0) {
        omp_set_num_threads(n);
    }
#endif
}

int lina_get_threads(void)
{
#ifdef _OPENMP
    return g_threads > 0 ? g_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

/* ------------------------------------------------------------------ random */

double lina_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double lina_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t lina_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* -------------------------------------------------------------- workspace */

void lina_ws_init(lina_ws *ws)
{
    memset(ws, 0, sizeof *ws);
}

void lina_ws_free(lina_ws *ws)
{
    if (!ws) {
        return;
    }
    for (int i = 0; i < ws->nblocks; i++) {
        free(ws->blocks[i]);
    }
    free(ws->blocks);
    free(ws->sizes);
    memset(ws, 0, sizeof *ws);
}

int lina_ws_reserve(lina_ws *ws, int nslots)
{
    if (nslots <= ws->nblocks) {
        return LINA_OK;
    }
    void **b = realloc(ws->blocks, (size_t)nslots * sizeof *b);
    if (!b) {
        return lina_set_error(LINA_ENOMEM, "out of memory (workspace)");
    }
    ws->blocks = b;
    size_t *s = realloc(ws->sizes, (size_t)nslots * sizeof *s);
    if (!s) {
        return lina_set_error(LINA_ENOMEM, "out of memory (workspace)");
    }
    ws->sizes = s;
    for (int i = ws->nblocks; i < nslots; i++) {
        ws->blocks[i] = NULL;
        ws->sizes[i] = 0;
    }
    ws->nblocks = nslots;
    return LINA_OK;
}

void *lina_ws_get(lina_ws *ws, int slot, size_t bytes)
{
    if (slot < 0 || slot >= ws->nblocks) {
        lina_set_error(LINA_EINVAL, "workspace slot %d not reserved", slot);
        return NULL;
    }
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) {
        bytes = 64;
    }
    if (ws->sizes[slot] < bytes) {
        free(ws->blocks[slot]);
        ws->blocks[slot] = aligned_alloc(64, bytes);
        ws->sizes[slot] = ws->blocks[slot] ? bytes : 0;
        if (!ws->blocks[slot]) {
            lina_set_error(LINA_ENOMEM, "out of memory (workspace, %zu bytes)", bytes);
            return NULL;
        }
    }
    return ws->blocks[slot];
}

/* ------------------------------------------------ workspace scopes (internal) */

int lina_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int lina_ws_extra_slot(void)
{
    int n = lina_get_threads();
#ifdef _OPENMP
    if (omp_get_max_threads() > n) {
        n = omp_get_max_threads();
    }
#endif
    return n;
}

int lina_ws_scope_open(lina_ws_scope *sc, lina_ws *ws, int nslots)
{
    lina_ws_init(&sc->local);
    sc->ws = ws ? ws : &sc->local;
#ifdef _OPENMP
    if (nslots < omp_get_max_threads()) {
        nslots = omp_get_max_threads();
    }
#endif
    return lina_ws_reserve(sc->ws, nslots);
}

void lina_ws_scope_close(lina_ws_scope *sc)
{
    lina_ws_free(&sc->local);
}
