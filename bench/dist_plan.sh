#!/bin/sh
# dist_plan.sh -- sequence-parallel training past one machine, on paper: the step time and
# scaling efficiency of LASP-2 (lina --sp) from a per-node compute rate and the communication
# formula, next to ring attention's K/V passing, for S = 8, 64, 512 nodes and T = 32K..4M.
#   sh bench/dist_plan.sh [GFLOPS_PER_NODE] [GBIT_PER_S] [LATENCY_US]
# Model: a 1.3B GLA (hidden 2048, 24 layers, 16 heads, key dim 64, value dim 128 per head,
# SwiGLU 5632): 1.24e9 non-embedding parameters, 6 N FLOP per trained token. One sequence of
# T tokens split over S nodes (pure sequence parallelism, one sp group); no overlap of
# communication with compute.
#   LASP-2, per layer and pass, each node receives (S - 1) summaries of H (K + K V) floats
#   (ring all-gather: S - 1 steps); two passes (forward, backward) per layer.
#   Ring attention, per layer and pass, each node receives the K and V of the other S - 1
#   pieces: (S - 1) (T / S) H (K + V) floats, in S - 1 steps; the backward passes K, V and
#   their gradients (twice the forward's volume), so 3 x the forward volume per layer.
set -eu
GF=${1:-100}
GB=${2:-100}
LAT=${3:-5}
awk -v gf="$GF" -v gb="$GB" -v lat="$LAT" 'BEGIN {
    N = 1.24e9; L = 24; H = 16; K = 64; V = 128
    rate = gf * 1e9; bw = gb * 1e9 / 8; a = lat * 1e-6
    sum = H * (K + K * V) * 4                      # bytes of one summary
    printf "node: %g GFLOP/s, network %g Gb/s, latency %g us; summary %.0f KB per layer per node\n\n", gf, gb, lat, sum / 1e3
    printf "| nodes S | T | tokens per node | compute s/step | LASP-2 bytes per layer per node (both passes) | LASP-2 comm s/step | LASP-2 step s | LASP-2 efficiency | ring-attention bytes per layer per node (both passes) | ring comm s/step | ring efficiency |\n"
    printf "|---|---|---|---|---|---|---|---|---|---|---|\n"
    split("8 64 512", Ss, " "); split("32768 262144 1048576 4194304", Ts, " ")
    for (i = 1; i <= 3; i++) for (j = 1; j <= 4; j++) {
        S = Ss[i]; T = Ts[j]; Tp = T / S
        comp = 6 * N * Tp / rate
        lb = 2 * (S - 1) * sum                     # bytes received per layer, both passes
        lc = L * (lb / bw + 2 * (S - 1) * a)
        rb = 3 * (S - 1) * Tp * H * (K + V) * 4
        rc = L * (rb / bw + 3 * (S - 1) * a)
        printf "| %d | %dK | %d | %.3g | %.3g MB | %.3g | %.3g | %.1f%% | %.3g MB | %.3g | %.1f%% |\n", S, T / 1024, Tp, comp, lb / 1e6, lc, comp + lc, 100 * comp / (comp + lc), rb / 1e6, rc, 100 * comp / (comp + rc)
    }
}'
