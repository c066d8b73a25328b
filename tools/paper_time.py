#!/usr/bin/env python3
"""The CPU time `make paper` needs, per stream, from the runs it keeps.

usage: python3 tools/paper_time.py [RESULTS_DIR]   (default: results)

`make paper` runs four single-thread streams side by side (see the Makefile's
`paper` target). Every configuration it runs is kept in
RESULTS_DIR/paper_parts/cells/NAME.txt with the process CPU seconds of its runs
(`cpu` line); the ICL section records its CPU time in paper_parts/icl.sum. This
script adds them up per stream. On a machine with four idle cores the wall
time of `make paper` is about its longest stream; on two cores at least half
the total. Configurations kept without a CPU time, and the ones `make paper`
would run that are not kept, are listed: the figures are then lower bounds.
"""
import os
import sys

# the Makefile's streams: MQAR models by stream (PAPER_MQ_MORE1 / PAPER_MQ_MORE2 included)
MQ_STREAM = {
    "transformer": 1, "delta_net": 1, "gated_deltanet": 1, "gla": 1, "kda": 1, "gsa": 1, "rwkv7": 1,
    "linear_attn": 2, "mamba2": 2, "retnet": 2, "mamba": 2, "forgetting_transformer": 2, "hgrn": 2,
}
STREAM_NAME = {
    1: "MQAR: transformer, delta_net, gated_deltanet, gla, then kda, gsa, rwkv7",
    2: "MQAR: linear_attn, mamba2, retnet, then mamba, forgetting_transformer, hgrn",
    3: "S3/S5, then parity and mod-arith",
    4: "ICL, then MoM",
}
BUDGET_WIDTHS = ("32", "64")  # the widths `make paper` runs (MQ_WIDTHS_BUDGET)
# the cells `make paper` runs besides the MQAR table's (models x widths)
MQ_EXTRA = ["mqar_gated_deltanet_slowdecay_d32", "mqar_gated_deltanet_slowdecay_d64"] + [
    "mqar_%s_long_d%s" % (m, d)
    for m in ("transformer", "delta_net", "gated_deltanet", "gla", "linear_attn") for d in BUDGET_WIDTHS
] + ["mqar_mamba2_long_d64"]
OTHER = (
    ["%s_%s_neg%d" % (t, m, n) for t in ("parity", "modarith") for m in ("delta_net", "mamba2") for n in (0, 1)]
    + ["%s_l%d_nh%d" % (g, l, h) for g in ("s3", "s5") for l in (1, 2) for h in (1, 2, 3)]
    + ["mom_%s%s" % (t, s) for t in ("mom", "gdn_equal_total", "gdn_equal_memory")
       for s in ("", "_slowdecay", "_long")]
)


def stream_of(name):
    if name.startswith("mqar_"):
        body = name[5:]
        for m in sorted(MQ_STREAM, key=len, reverse=True):
            if body.startswith(m + "_"):
                return MQ_STREAM[m]
        return None
    if name.startswith(("s3_", "s5_", "parity_", "modarith_")):
        return 3
    if name.startswith("mom_"):
        return 4
    return None


def cell_cpu(path):
    """CPU seconds of a kept cell, or None when it was kept without them"""
    with open(path) as f:
        for line in f:
            if line.startswith("cpu "):
                return float(line.split()[1])
    return None


def main():
    res = sys.argv[1] if len(sys.argv) > 1 else "results"
    parts = os.path.join(res, "paper_parts")
    cells = os.path.join(parts, "cells")
    if not os.path.isdir(cells):
        sys.exit("paper_time: no folder %s (run `make paper` first)" % cells)
    want = ["mqar_%s_d%s" % (m, d) for m in MQ_STREAM for d in BUDGET_WIDTHS] + MQ_EXTRA + OTHER
    cpu = {s: 0.0 for s in STREAM_NAME}
    runs = {s: 0 for s in STREAM_NAME}
    missing, unrecorded = [], []
    for name in want:
        path = os.path.join(cells, name + ".txt")
        if not os.path.exists(path):
            missing.append(name)
            continue
        c = cell_cpu(path)
        if c is None:
            unrecorded.append(name)
            continue
        cpu[stream_of(name)] += c
        runs[stream_of(name)] += 1
    icl = None
    try:
        with open(os.path.join(parts, "icl.sum")) as f:
            for line in f:
                if line.startswith("cpu "):
                    icl = float(line.split()[1])
    except OSError:
        pass
    if icl is None:
        unrecorded.append("icl")
    else:
        cpu[4] += icl
        runs[4] += 1
    total = sum(cpu.values())
    print("| stream | what | configurations | CPU (s) |")
    print("|---|---|---|---|")
    for s in STREAM_NAME:
        print("| %d | %s | %d | %.0f |" % (s, STREAM_NAME[s], runs[s], cpu[s]))
    print("| all | | %d | %.0f (%.1f h) |" % (sum(runs.values()), total, total / 3600))
    longest = max(cpu.values())
    print()
    print("make paper, projected wall time: about %.0f s (%.1f h) on four idle cores (the longest stream); "
          "at least %.0f s (%.1f h) on two (half the total)." % (longest, longest / 3600, max(total / 2, longest),
                                                                 max(total / 2, longest) / 3600))
    if unrecorded:
        print("kept without a CPU time (not counted): " + ", ".join(unrecorded))
    if missing:
        print("not kept (make paper would run them; not counted): " + ", ".join(missing))
    return 0 if not (missing or unrecorded) else 2


if __name__ == "__main__":
    sys.exit(main())
