/* test_probe.c -- the output probe of the mixer forwards (lina_dd_out.finite,
 * lina_delta_out.finite): for both engines, both forms, with and without packed
 * documents, the flag agrees with lina_mix_out_finite on the output the call wrote,
 * and the outputs are the same bits with and without it; a NaN or Inf placed in q, k,
 * v, a gate, beta or the initial state makes it 0. Run once per kernel path. */
#include "harness.h"
#include "lina.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { ENG_DD, ENG_DELTA };

typedef struct run {
    int eng, form, gk, B, T, H, K, V;
    float *q, *k, *v, *g, *beta, *h0, *o, *o2, *ht;
    size_t nq, nv, ng, nb, ns;
} run;

static float *rnd(size_t n, double lo, double hi)
{
    float *x = malloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)th_uniform(lo, hi);
    }
    return x;
}

static void run_init(run *r, int eng, int form, int gk, int B, int T, int H, int K, int V)
{
    memset(r, 0, sizeof *r);
    r->eng = eng, r->form = form, r->gk = gk;
    r->B = B, r->T = T, r->H = H, r->K = K, r->V = V;
    r->nq = (size_t)B * T * H * K;
    r->nv = (size_t)B * T * H * V;
    r->ns = (size_t)B * H * K * V;
    r->nb = eng == ENG_DELTA ? (size_t)B * T * H : 0;
    r->ng = eng == ENG_DD ? (gk == 3 ? r->nq : gk == 2 ? (size_t)B * T * H : gk == 1 ? (size_t)H : 0)
                           : (gk ? (size_t)B * T * H : 0);
    r->q = rnd(r->nq, -0.5, 0.5);
    r->k = rnd(r->nq, -0.5, 0.5);
    r->v = rnd(r->nv, -1.0, 1.0);
    r->g = rnd(r->ng, -0.3, 0.0);
    r->beta = rnd(r->nb, 0.0, 1.0);
    r->h0 = rnd(r->ns, -0.2, 0.2);
    r->o = calloc(r->nv + 1, sizeof(float));
    r->o2 = calloc(r->nv + 1, sizeof(float));
    r->ht = calloc(r->ns + 1, sizeof(float));
    if (eng == ENG_DELTA) { /* unit keys keep the delta rule stable */
        for (size_t i = 0; i < r->nq / K; i++) {
            double s = 0.0;
            for (int j = 0; j < K; j++) {
                s += (double)r->k[i * K + j] * r->k[i * K + j];
            }
            for (int j = 0; j < K; j++) {
                r->k[i * K + j] = (float)(r->k[i * K + j] / sqrt(s + 1e-12));
            }
        }
    }
}

static void run_free(run *r)
{
    free(r->q), free(r->k), free(r->v), free(r->g), free(r->beta), free(r->h0);
    free(r->o), free(r->o2), free(r->ht);
}

/* the forward into o (with the probe when fin) or o2; cu / ncu: packed documents */
static int fwd(const run *r, float *o, int *fin, const int64_t *cu, int64_t ncu, lina_ws *ws)
{
    lina_mix_dims d = {r->B, r->T, r->H, r->K, r->V, 0, 0.0f};
    if (r->eng == ENG_DD) {
        lina_dd_in in = {r->q, r->k, r->v, (lina_gate_kind)r->gk, r->gk ? r->g : NULL, cu ? NULL : r->h0};
        lina_dd_out out = {.o = o, .ht = cu ? NULL : r->ht, .finite = fin};
        return cu ? lina_dd_fwd_varlen(&d, cu, ncu, &in, &out, (lina_form)r->form, ws)
                  : lina_dd_fwd(&d, &in, &out, (lina_form)r->form, ws);
    }
    lina_delta_in in = {0};
    in.q = r->q, in.k = r->k, in.v = r->v, in.beta = r->beta, in.g = r->gk ? r->g : NULL;
    in.h0 = cu ? NULL : r->h0, in.n = 1;
    lina_delta_out out = {.o = o, .ht = cu ? NULL : r->ht, .finite = fin};
    return cu ? lina_delta_fwd_varlen(&d, cu, ncu, &in, &out, (lina_form)r->form, ws)
              : lina_delta_fwd(&d, &in, &out, (lina_form)r->form, ws);
}

/* one case: the flag on finite inputs, then with `bad` (NaN or Inf) at element i of
 * input x (restored afterwards) */
static void probe_case(run *r, const char *name, float *x, size_t i, float bad, const int64_t *cu, int64_t ncu,
                       lina_ws *ws)
{
    const char *eng = r->eng == ENG_DD ? "dd" : "delta";
    const char *form = r->form == LINA_FORM_RECURRENT ? "recurrent" : "chunk";
    int fin = -1;
    int rc = fwd(r, r->o, &fin, cu, ncu, ws);
    int rc2 = fwd(r, r->o2, NULL, cu, ncu, ws);
    CHECK(rc == 0 && rc2 == 0 && fin == 1 && memcmp(r->o, r->o2, r->nv * sizeof(float)) == 0,
          "probe %s %s gate %d T=%d V=%d%s: finite inputs give 1 and the same bits (rc %d %d, flag %d)", eng,
          form, r->gk, r->T, r->V, cu ? " varlen" : "", rc, rc2, fin);
    const float keep = x[i];
    x[i] = bad;
    fin = -1;
    rc = fwd(r, r->o, &fin, cu, ncu, ws);
    int whole = cu ? 0 : lina_mix_out_finite(r->o, r->B, r->T, r->H, r->V); /* one sequence per document: its own last row */
    CHECK(rc == 0 && fin == 0 && whole == 0, "probe %s %s gate %d%s: %s in %s[%zu] gives 0 (rc %d, flag %d, lina_mix_out_finite %d)",
          eng, form, r->gk, cu ? " varlen" : "", isnan(bad) ? "NaN" : "Inf", name, i, rc, fin, whole);
    x[i] = keep;
}

static void engine_cases(int eng, int form, int gk, int T, int V, lina_ws *ws)
{
    const int B = 2, H = 3, K = 16;
    run r;
    run_init(&r, eng, form, gk, B, T, H, K, V);
    const size_t mid = (size_t)(((1 * T) + T / 2) * H + 1); /* row (b 1, t T/2, h 1) */
    probe_case(&r, "q", r.q, mid * K + K - 1, NAN, NULL, 0, ws);
    probe_case(&r, "k", r.k, (size_t)((0 * T + 1) * H + 2) * K + 3, INFINITY, NULL, 0, ws);
    probe_case(&r, "v", r.v, mid * V + V - 1, NAN, NULL, 0, ws);
    probe_case(&r, "initial_state", r.h0, r.ns - 1, -INFINITY, NULL, 0, ws);
    if (r.ng) {
        /* a gate that is NaN: the recurrences carry it (the ops' gate check names it) */
        probe_case(&r, "g", r.g, r.ng / 3, NAN, NULL, 0, ws);
    }
    if (r.nb) {
        probe_case(&r, "beta", r.beta, r.nb / 2, NAN, NULL, 0, ws);
    }
    run_free(&r);
    /* packed documents: a NaN in the first document's v shows in that document's last row */
    run_init(&r, eng, form, gk, 1, T, H, K, V);
    const int64_t cu[3] = {0, T / 3, T};
    probe_case(&r, "v (document 0)", r.v, (size_t)(1 * H + 2) * V + V / 2, NAN, cu, 3, ws);
    run_free(&r);
}

int main(void)
{
    lina_ws ws;
    lina_ws_init(&ws);
    static const int Ts[] = {3, 37, 130};
    static const int Vs[] = {16, 40};
    for (int ti = 0; ti < 3; ti++) {
        for (int vi = 0; vi < 2; vi++) {
            for (int form = 0; form < 2; form++) {
                const int f = form ? LINA_FORM_RECURRENT : LINA_FORM_CHUNK;
                for (int gk = 0; gk < 4; gk++) {
                    engine_cases(ENG_DD, f, gk, Ts[ti], Vs[vi], &ws);
                }
                engine_cases(ENG_DELTA, f, 0, Ts[ti], Vs[vi], &ws);
                engine_cases(ENG_DELTA, f, 1, Ts[ti], Vs[vi], &ws);
            }
        }
    }
    lina_ws_free(&ws);
    return th_exit();
}
