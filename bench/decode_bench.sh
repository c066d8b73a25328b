#!/bin/sh
# decode_bench.sh -- batch decode: tokens/s of `lina bench --model CONFIG --only decode
# --batch B --roofline` at each batch size, thread count and instruction-set path, with the
# projections of a step on their own against the SGEMM rate and the streaming-read
# bandwidth measured in the same process, all by CPU time (a shared machine disturbs it
# less than wall time). Writes a Markdown table and the raw JSON lines next to it.
#
#   sh bench/decode_bench.sh [LINA_BIN] [OUT.md]
#
# Environment: CONFIGS (configs/gla-10m.json configs/gated_deltanet-10m.json), BATCHES
# ("1 4 8 16 64"), THREADS ("1 2"), ISAS (every path the CPU has among avx512 avx2),
# REPEAT (2 interleaved runs, the least CPU time kept), CONTEXT (64 tokens before the
# timed steps), DSTEPS (32 timed steps), BASE (a second lina binary, e.g. a build of an
# earlier commit, timed in the same interleaved loop: its figures go to "before"
# columns), PYTHON (/usr/bin/python3). OMP_WAIT_POLICY is passed through (PASSIVE keeps
# the 2-thread CPU time from counting threads that spin at barriers).
set -e
LINA=${1:-build/lina}
OUT=${2:-results/decode_bench.md}
CONFIGS=${CONFIGS:-"configs/gla-10m.json configs/gated_deltanet-10m.json"}
BATCHES=${BATCHES:-"1 4 8 16 64"}
THREADS=${THREADS:-"1 2"}
REPEAT=${REPEAT:-2}
CONTEXT=${CONTEXT:-64}
DSTEPS=${DSTEPS:-32}
PYTHON=${PYTHON:-/usr/bin/python3}
BASE=${BASE:-}

[ -x "$LINA" ] || { echo "decode_bench.sh: $LINA not found (make first)" >&2; exit 1; }
[ -z "$BASE" ] || [ -x "$BASE" ] || { echo "decode_bench.sh: BASE $BASE not found" >&2; exit 1; }
if [ -z "${ISAS:-}" ]; then
    ISAS=""
    for i in avx512 avx2; do
        LINA_ISA=$i "$LINA" version >/dev/null 2>&1 && ISAS="$ISAS $i"
    done
    [ -n "$ISAS" ] || ISAS=portable
fi
mkdir -p "$(dirname "$OUT")"
JL=${OUT%.md}.jsonl
: >"$JL"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date -u "+%Y-%m-%d %H:%M")

for cfg in $CONFIGS; do
    name=$(basename "$cfg" .json)
    for isa in $ISAS; do
        for t in $THREADS; do
            for b in $BATCHES; do
                r=0
                while [ $r -lt "$REPEAT" ]; do
                    for which in lina base; do
                        bin=$LINA
                        if [ $which = base ]; then
                            [ -n "$BASE" ] || continue
                            bin=$BASE
                        fi
                        LINA_ISA=$isa "$bin" bench --model "$cfg" --only decode --batch "$b" --threads "$t" \
                            --context "$CONTEXT" --decode-steps "$DSTEPS" --roofline --json |
                            sed "s/^{/{\"name\": \"$name\", \"bin\": \"$which\", \"isa\": \"$isa\", /" >>"$JL"
                    done
                    r=$((r + 1))
                done
            done
        done
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$PYTHON" - "$JL" "$OUT" "$start" "$load_before" "$load_after" "$REPEAT" "$CONTEXT" "$DSTEPS" \
    "${OMP_WAIT_POLICY:-unset}" "${OPENBLAS_CORETYPE:-unset}" "$("$LINA" version | tr '\n' ' ')" <<'PY'
import json, sys
jl, out, start, lb, la, repeat, context, dsteps, wait, core, version = sys.argv[1:]
rows = [json.loads(l) for l in open(jl) if l.strip()]
def pick(bin_, name, isa, t, b):
    # the run with the least CPU time per step: the least disturbed one
    v = [r for r in rows if r["bin"] == bin_ and r["name"] == name and r["isa"] == isa
         and r["threads"] == t and r["batch"] == b and r.get("decode_cpu_ms_per_step")]
    return min(v, key=lambda r: r["decode_cpu_ms_per_step"]) if v else None
def pct(v):
    return "-" if v is None else "%.0f %%" % (100 * v)
def num(v, fmt="%.0f"):
    return "-" if v is None else fmt % v
has_base = any(r["bin"] == "base" for r in rows)
L = ["# Batch decode: tokens/s and the projections against SGEMM and bandwidth\n"]
L.append("Written by `sh bench/decode_bench.sh` (%s UTC), `lina version`: %s. Each row: `lina bench --model CONFIG --only "
         "decode --batch B --threads N --context %s --decode-steps %s --roofline --json` with `LINA_ISA` set to the "
         "path named, the run with the least CPU time of %s interleaved ones. OMP_WAIT_POLICY: %s; "
         "OPENBLAS_CORETYPE: %s (the SGEMM the percentages are against). Load average before / after: %s / %s.\n"
         % (start, version.strip(), context, dsteps, repeat, wait, core, lb, la))
L.append("Columns, all by CPU time of the process (the figures of a shared machine's wall clock are not "
         "comparable): tokens per CPU second = B / CPU seconds per decode step; projections = every weight "
         "matrix of a step as its own product (`decode_proj_*`), as % of the OpenBLAS SGEMM 1024^3 rate and as % of "
         "min(SGEMM, B/2 flops per byte x the streaming read), both measured in the same process; step vs "
         "bandwidth = the step's weight bytes per CPU second over the streaming read's (512 MiB) and over a "
         "read of a buffer of the weights' size (which may stay in the last-level cache in part)."
         + (" \"before\": the BASE binary in the same loop." if has_base else "") + "\n")
hdr = ["model", "ISA", "threads", "B", "tok / CPU s", "tok/s (wall)", "proj % SGEMM", "proj % roof",
       "step % read bw", "step % weight-sized read", "SGEMM GF/CPU s", "read GB/CPU s"]
if has_base:
    hdr[5:5] = ["before tok / CPU s", "after / before"]
    hdr.append("before proj % SGEMM")
L.append("| " + " | ".join(hdr) + " |")
L.append("|" + "---|" * len(hdr))
keys = sorted({(r["name"], r["isa"], r["threads"], r["batch"]) for r in rows},
              key=lambda k: (k[0], k[1] != "avx512", k[1], k[2], k[3]))
for name, isa, t, b in keys:
    a = pick("lina", name, isa, t, b)
    if not a:
        continue
    tps = b / (1e-3 * a["decode_cpu_ms_per_step"])
    cells = [name, isa, str(t), str(b), num(tps), num(a.get("decode_tokens_per_s")),
             pct(a.get("decode_proj_sgemm_frac_cpu")), pct(a.get("decode_proj_roof_frac_cpu")),
             pct(a.get("decode_bw_frac_cpu")), pct(a.get("decode_ws_bw_frac_cpu")),
             num(a.get("sgemm_cpu_gflops")), num(a.get("read_cpu_gbs"), "%.1f")]
    if has_base:
        z = pick("base", name, isa, t, b)
        btps = b / (1e-3 * z["decode_cpu_ms_per_step"]) if z and z.get("decode_cpu_ms_per_step") else None
        cells[5:5] = [num(btps), "%.2fx" % (tps / btps) if btps else "-"]
        cells.append(pct(z.get("decode_proj_sgemm_frac_cpu")) if z else "-")
    L.append("| " + " | ".join(cells) + " |")
L.append("")
L.append("Raw JSON lines: `%s`." % jl.split("/")[-1])
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
