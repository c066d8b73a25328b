/* chunk.c -- chunkwise machinery shared by the mixers: cumulative log gates
 * restarted at chunk starts, computed in double so that differences of large
 * cumulative sums keep their precision, and exp of non-positive exponents. */
#include "ops_internal.h"
#include "../kern/isa.h"

#include <math.h>
#include <string.h>

void lina_chunk_cumgate(lina_gate_kind gk, const float *g, int b, int h, int t0, int L,
                        int T, int H, int K, double *bd)
{
    if (gk == LINA_GATE_VECTOR) {
        for (int r = 0; r < L; r++) {
            const float *gr = LINA_ROW(g, b, t0 + r, h, T, H, K);
            double *br = bd + (size_t)r * K;
            if (r == 0) {
                for (int i = 0; i < K; i++) {
                    br[i] = gr[i];
                }
            } else {
                const double *bp = br - K;
                for (int i = 0; i < K; i++) {
                    br[i] = bp[i] + gr[i];
                }
            }
        }
        return;
    }
    double acc = 0.0;
    for (int r = 0; r < L; r++) {
        double gv = 0.0;
        if (gk == LINA_GATE_SCALAR) {
            gv = g[((size_t)b * T + (size_t)(t0 + r)) * H + h];
        } else if (gk == LINA_GATE_HEAD) {
            gv = g[h];
        }
        acc += gv;
        bd[r] = acc;
    }
}

void lina_vexp_d(float *y, const double *x, size_t n)
{
    /* convert in blocks so lina_vexp vectorises */
    float tmp[256];
    while (n) {
        size_t m = n < 256 ? n : 256;
        for (size_t i = 0; i < m; i++) {
            double v = x[i];
            tmp[i] = v < -1e30 ? -1e30f : (float)v;
        }
        lina_vexp(y, tmp, m);
        y += m;
        x += m;
        n -= m;
    }
}

/* Which form runs a call faster (both are exact; the tests hold both to the same float64
 * reference). From CPU times of `lina bench OP --form chunk|recurrent [--backward]` at
 * B 1-8, T 64-8192, H 4, K = V 16-256, 1 thread (results/python_ops_bench.md), on two
 * machines: one whose AVX-512 units are full width (the first rules below were set
 * there) and an AMD EPYC of family 19h (Zen 4, 512-bit operations as two 256-bit halves),
 * least of 2-3 interleaved rounds of `lina bench --repeat 3-5` (2026-12-04):
 *  - diagonal decay: with a gate per key channel (gla) at K 64 the recurrent form takes
 *    0.65-0.78 of the chunk form's time forward and 0.72-0.91 forward + backward, at K 128
 *    0.78-0.91 forward and 0.93-1.04 forward + backward; with a scalar or head gate or none
 *    at K = V = 64, forward + backward, the recurrent form takes 0.88-0.91 (AVX-512) and
 *    0.94-0.97 (AVX2) of the chunk form's time at B=8 T=512, forward alone 0.93-1.08 (full
 *    width, before the recurrent forward's two-step tile pass); on Zen 4, after it, 0.69-0.75
 *    forward + backward and 0.58-0.72 forward alone (AVX2 path: 0.62-0.87). Everywhere else
 *    (those gates at K = 128 or <= 32) the chunk form is as fast or faster (up to 2x at
 *    K 16-32; Zen 4, K = V = 128, B=1 T=4096: forward 1.02-1.06, forward + backward 1.33-1.43);
 *  - delta rule, full width: the chunk form is faster from T*n = 128 rows on (0.9x of the
 *    recurrent form's time forward at T 128, 0.3-0.6x forward + backward at T 512-4096); a
 *    call of fewer rows than two chunks (decode steps) stays recurrent, and so does a forward
 *    alone at K <= 16 (the recurrent form 0.30-0.73x of the chunk form's time at B=8 T=512
 *    K=16; forward + backward there 0.95-1.18x);
 *  - delta rule, Zen 4 (lina_cpu_full512() 0; also the AVX2 and portable paths): the
 *    recurrent form takes 0.73-0.88 of the chunk form's time forward + backward at K = V = 64
 *    (B=8 T=128-512, B=1 T=4096; delta_rule and gated_delta_rule, 1 and 2 threads, AVX-512
 *    and AVX2), 0.36-0.50 at K = 32, 1.00 at K = 64 V = 128, 0.94 at K = V = 128 B=8 T=512
 *    and 1.40 at B=1 T=4096; forward alone 0.65-0.81 at K = V = 128 and 0.67-0.70 at 64;
 *  - diagonal decay, Zen 4, at the small models' shape (B=64 T=128 H=2), forward + backward:
 *    the recurrent form 0.82-0.92 of the chunk form's time at K = V = 32 (gla, simple_gla,
 *    retention), 1.04 at K = 32 V = 64 (simple_gla), 0.86 at K = 64 V = 128, 0.82 at
 *    K = V = 128 (gla; 1.07 at B=1 T=4096); MQAR models of `lina task mqar` (1 thread, least
 *    CPU ms per step of 3 interleaved runs): GLA d 64 (K = 32) 0.90x, Mamba2 d 64 (K = 32,
 *    V = 64) 0.92x, d 128 (K = 64, V = 128) 0.98x with the recurrent form;
 *  - gla with a backward, Zen 4 (2026-12-05, after the lazy decay's threshold at -4 and the
 *    recurrent forms' L2 prefetch): the recurrent form 0.74-0.86x the chunk form's time at
 *    K = V = 128 (B=8 T=512, B=2 T=1024, B=1 T=4096; 1 and 2 threads; AVX-512 and AVX2:
 *    72.9 against 83.5 ms at B=1 T=4096), 0.85x at K = 128 V = 256, 0.66x at K = 64 V = 128,
 *    1.00x at K = V = 256; the scalar gates at K = V = 128: simple_gla 0.90x, linear_attn
 *    1.04x (left with the chunk form then);
 *  - the scalar, head and no gates with a backward, Zen 4, AVX-512 path (2026-12-05, main at
 *    305c4a5, 3 interleaved rounds): the recurrent form 0.83-0.93x of the chunk form's time at
 *    K = V = 128 on 1 thread (linear_attn, retention, simple_gla; B=1 T=4096, B=2 T=2048, B=8
 *    T=512), 0.83-1.08x by wall time on 2 threads (about even); on the AVX2 path 1.04-1.29x
 *    (left with the chunk form there then);
 *  - the same after the recurrent backward's time blocks (2026-12-05, e62484b): on the AVX2
 *    path the recurrent form 0.88-0.96x of the chunk form's time at K = V = 128, 1 thread
 *    (linear_attn, retention, simple_gla; B=8 T=512, B=2 T=2048, B=1 T=4096), gla 0.75x;
 *    on 2 threads (B=1 T=4096, wall) linear_attn 1.05x, simple_gla 0.90x. The rule for these
 *    gates now holds on both vector paths; the portable path (and NEON, unmeasured) keeps the
 *    chunk form. */
lina_form lina_dd_fast_form(const lina_mix_dims *d, lina_gate_kind gate, int backward)
{
    if (!d || d->T < 2) {
        return LINA_FORM_RECURRENT;
    }
    if (gate == LINA_GATE_VECTOR && d->K > 48 && d->V > 48 && d->V <= 128 &&
        d->K <= (backward ? 64 : 128)) {
        return LINA_FORM_RECURRENT;
    }
    if (d->K > 48 && d->K <= 64 && d->V > 48 && d->V <= 64) {
        return LINA_FORM_RECURRENT; /* the other gates at K = V = 64 */
    }
    if (backward && !lina_cpu_full512() && d->K > 16 && d->K <= 64 && d->V > 16 && d->V <= 128) {
        return LINA_FORM_RECURRENT; /* split 512-bit units: K 17..64 with a backward */
    }
    if (backward && !lina_cpu_full512() && gate == LINA_GATE_VECTOR && d->K > 16 && d->K <= 128 &&
        d->V > 16 && d->V <= 256) {
        return LINA_FORM_RECURRENT; /* split 512-bit units, a gate per key channel: K to 128 */
    }
    if (backward && lina_isa_id() != LINA_ISA_PORTABLE && !lina_cpu_full512() && d->K > 16 && d->K <= 128 &&
        d->V > 16 && d->V <= 128) {
        return LINA_FORM_RECURRENT; /* 256-bit FMAs (AVX2, or AVX-512 in halves): the other gates to 128 */
    }
    return LINA_FORM_CHUNK;
}

lina_form lina_delta_fast_form(const lina_mix_dims *d, int n, int backward)
{
    if (!d || d->K <= 0 || (d->K <= 16 && !backward)) {
        return LINA_FORM_RECURRENT;
    }
    const int lim = backward ? 64 : 128;
    if (!lina_cpu_full512() && d->K <= lim && d->V <= lim) {
        return LINA_FORM_RECURRENT; /* dense products at 256-bit width */
    }
    const long rows = (long)d->T * (n > 1 ? n : 1);
    return rows >= 2L * lina_chunk_len(d->chunk, d->K) ? LINA_FORM_CHUNK : LINA_FORM_RECURRENT;
}
