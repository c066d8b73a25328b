/* chunk.c -- chunkwise machinery shared by the mixers: cumulative log gates
 * restarted at chunk starts, computed in double so that differences of large
 * cumulative sums keep their precision, and exp of non-positive exponents. */
#include "ops_internal.h"

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
