#!/usr/bin/env python3
"""The CPU time `make paper` needs, per stream, from the runs it keeps.

usage: python3 tools/paper_time.py [RESULTS_DIR]   (default: results; run from the repository root)

`make paper` runs four single-thread streams side by side; this script reads them from the
commands `make -n paper` prints (each `{ ...; }` group is a stream, each `lina paper --only
SECTIONS [--mixers MODELS]` in it a part). Every configuration it runs is kept in
RESULTS_DIR/paper_parts/cells/NAME.txt with the process CPU seconds of its runs (`cpu` line);
the ICL section records its CPU time in paper_parts/icl.sum. The script adds them up per
stream. On a machine with four idle cores the wall time of `make paper` is about its longest
stream; on two cores at least half the total. Configurations kept without a CPU time, and the
ones `make paper` would run that are not kept, are listed: the figures are then lower bounds
(exit status 2).
"""
import os
import re
import subprocess
import sys

BUDGET_WIDTHS = ("32", "64")  # the widths `make paper` runs (MQ_WIDTHS_BUDGET in src/tasks/task_paper.c)
# the MQAR ablations' cells besides the table's (MQ_LONG and the decay-init ablation in task_paper.c)
MQ_LONG = ("transformer", "delta_net", "gated_deltanet", "gla", "linear_attn", "mamba2")
MQ_SLOW = ("gated_deltanet",)
SECTION_CELLS = {
    "parity": ["parity_%s_neg%d" % (m, n) for m in ("delta_net", "mamba2") for n in (0, 1)],
    "modarith": ["modarith_%s_neg%d" % (m, n) for m in ("delta_net", "mamba2") for n in (0, 1)],
    "s3s5": ["%s_l%d_nh%d" % (g, l, h) for g in ("s3", "s5") for l in (1, 2) for h in (1, 2, 3)],
    "mom": ["mom_%s%s" % (t, x) for t in ("mom", "gdn_equal_total", "gdn_equal_memory")
            for x in ("", "_slowdecay", "_long")],
}


def mqar_cells(model):
    cells = ["mqar_%s_d%s" % (model, d) for d in BUDGET_WIDTHS]
    if model in MQ_LONG:
        cells += ["mqar_%s_long_d%s" % (model, d) for d in BUDGET_WIDTHS]
    if model in MQ_SLOW:
        cells += ["mqar_%s_slowdecay_d%s" % (model, d) for d in BUDGET_WIDTHS]
    return cells


def streams():
    """[(stream text, [cell names], icl?)] from `make -n paper`"""
    out = subprocess.run(["make", "-n", "--no-print-directory", "paper"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("paper_time: make -n paper failed: " + out.stderr.strip())
    text = out.stdout.replace("\\\n", " ")
    groups = re.findall(r"\{([^{}]*)\}", text)
    if not groups:
        sys.exit("paper_time: no streams in the output of make -n paper")
    res = []
    for g in groups:
        cells, parts, icl = [], [], False
        for only, mixers in re.findall(r"lina paper [^;]*?--only ([^\s;]+)(?:[^;]*?--mixers ([^\s;]+))?", g):
            parts.append(only + (" " + mixers if mixers else ""))
            for sec in only.split(","):
                if sec == "mqar":
                    for m in (mixers or "").split(","):
                        if m:
                            cells += mqar_cells(m)
                elif sec == "icl":
                    icl = True
                else:
                    cells += SECTION_CELLS.get(sec, [])
        res.append(("; ".join(parts), cells, icl))
    return res


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
    icl = None
    try:
        with open(os.path.join(parts, "icl.sum")) as f:
            for line in f:
                if line.startswith("cpu "):
                    icl = float(line.split()[1])
    except OSError:
        pass
    missing, unrecorded, rows = [], [], []
    for what, names, has_icl in streams():
        cpu, n = 0.0, 0
        for name in names:
            path = os.path.join(cells, name + ".txt")
            if not os.path.exists(path):
                missing.append(name)
                continue
            c = cell_cpu(path)
            if c is None:
                unrecorded.append(name)
                continue
            cpu += c
            n += 1
        if has_icl:
            if icl is None:
                unrecorded.append("icl")
            else:
                cpu += icl
                n += 1
        rows.append((what, n, cpu))
    total = sum(r[2] for r in rows)
    print("| stream | lina paper --only ... (--mixers ...) | configurations | CPU (s) |")
    print("|---|---|---|---|")
    for i, (what, n, cpu) in enumerate(rows):
        print("| %d | %s | %d | %.0f |" % (i + 1, what, n, cpu))
    print("| all | | %d | %.0f (%.1f h) |" % (sum(r[1] for r in rows), total, total / 3600))
    longest = max(r[2] for r in rows)
    two = max(total / 2, longest)
    print()
    print("make paper, projected wall time: about %.0f s (%.1f h) on %d idle cores (the longest stream); "
          "at least %.0f s (%.1f h) on two (half the total)." % (longest, longest / 3600, len(rows), two, two / 3600))
    if unrecorded:
        print("kept without a CPU time (not counted): " + ", ".join(unrecorded))
    if missing:
        print("not kept (make paper would run them; not counted): " + ", ".join(missing))
    return 0 if not (missing or unrecorded) else 2


if __name__ == "__main__":
    sys.exit(main())
