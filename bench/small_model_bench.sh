#!/bin/sh
# small_model_bench.sh -- the MQAR-sized models (2 layers, d_model 32-128, batch 64,
# T 64-256) trained by lina and by plain PyTorch, step time side by side.
#
#   sh bench/small_model_bench.sh [LINA_BIN] [OUT.md]
#
# For every mixer, width and length, the model is the one `lina task mqar` trains
# (`lina task mqar --mixer M --d-model D --seq-len T --write-config F`); lina
# (`lina bench --model F --only train`) and PyTorch (`bench/torch_train.py --model F`)
# then time the same training step on it: forward, cross-entropy, backward,
# global-norm clipping and AdamW with the task's hyper-parameters (lr 3e-3,
# betas 0.9 / 0.999, eps 1e-8, weight decay 0.1 on matrices, clip 1.0). Each pair
# runs REPEAT times, interleaved, on each thread count; the fastest step of each is
# kept. Writes a Markdown table (default results/small_model_bench.md) and the raw
# JSON lines next to it (.jsonl).
#
# Environment: MIXER_TYPES (transformer gla delta_net gated_deltanet mamba2), DMODELS (64),
# SEQS (128), BATCH (64), THREADS ("1 2"), STEPS (5 timed steps after one warm-up),
# REPEAT (2), PYTHON (/usr/bin/python3 with torch), BASE (another lina binary, e.g. a build
# of an earlier commit: timed in the same interleaved loop, its CPU ms per step in a
# "before" column next to lina's).
set -e
LINA=${1:-build/lina}
OUT=${2:-results/small_model_bench.md}
MIXER_TYPES=${MIXER_TYPES:-"transformer gla delta_net gated_deltanet mamba2"}
DMODELS=${DMODELS:-64}
SEQS=${SEQS:-128}
BATCH=${BATCH:-64}
THREADS=${THREADS:-"1 2"}
STEPS=${STEPS:-5}
REPEAT=${REPEAT:-2}
PYTHON=${PYTHON:-/usr/bin/python3}
here=$(dirname "$0")
OPT="--lr 3e-3 --beta2 0.999 --clip 1.0"

[ -x "$LINA" ] || { echo "small_model_bench.sh: $LINA not found (make first)" >&2; exit 1; }
"$PYTHON" -c 'import torch' 2>/dev/null || { echo "small_model_bench.sh: $PYTHON has no torch" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
JL=${OUT%.md}.jsonl
: >"$JL"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date -u "+%Y-%m-%d %H:%M")

for th in $THREADS; do
    "$LINA" bench gla --T 64 --threads "$th" --json | sed "s/^{/{\"name\": \"sgemm\", \"framework\": \"openblas\", /" >>"$JL"
done
# the FMA peak and the projection products' rates (bench/mm_rate.c, against the liblina.a next to LINA)
mm=""
if ${CC:-cc} -std=c11 -O2 -fopenmp -I"$here/../include" -I"$here/../src/kern" $(pkg-config --cflags openblas 2>/dev/null || echo "-I/usr/include/x86_64-linux-gnu/openblas-openmp") \
    "$here/mm_rate.c" "$(dirname "$LINA")/liblina.a" -lopenblas -lcjson $(pkg-config --libs ompi-c 2>/dev/null) -lm \
    -o "$tmp/mm_rate" 2>"$tmp/mm_rate.err"; then
    mm="$tmp/mm_rate"
    "$mm" $DMODELS | sed "s/^{/{\"name\": \"mm_rate\", \"framework\": \"probe\", /" >>"$JL"
else
    echo "small_model_bench.sh: bench/mm_rate.c did not build (no peak column): $(head -c 300 "$tmp/mm_rate.err")" >&2
fi
for m in $MIXER_TYPES; do
    for d in $DMODELS; do
        for T in $SEQS; do
            cfg="$tmp/$m-$d-$T.json"
            "$LINA" task mqar --mixer "$m" --d-model "$d" --seq-len "$T" --write-config "$cfg"
            tag="\"name\": \"$m\", \"d_model\": $d"
            for th in $THREADS; do
                r=0
                while [ $r -lt "$REPEAT" ]; do
                    "$LINA" bench --model "$cfg" --only train --batch "$BATCH" --seq-len "$T" --threads "$th" \
                        --steps "$STEPS" $OPT --json | sed "s/^{/{$tag, \"framework\": \"lina\", /" >>"$JL"
                    if [ -n "${BASE:-}" ]; then
                        "$BASE" bench --model "$cfg" --only train --batch "$BATCH" --seq-len "$T" --threads "$th" \
                            --steps "$STEPS" $OPT --json | sed "s/^{/{$tag, \"framework\": \"lina_base\", /" >>"$JL"
                    fi
                    OMP_NUM_THREADS=$th "$PYTHON" "$here/torch_train.py" --model "$cfg" --batch "$BATCH" --seq-len "$T" \
                        --threads "$th" --steps "$STEPS" $OPT --json | sed "s/^{/{$tag, /" >>"$JL"
                    r=$((r + 1))
                done
            done
        done
    done
done
for th in $THREADS; do
    "$LINA" bench gla --T 64 --threads "$th" --json | sed "s/^{/{\"name\": \"sgemm\", \"framework\": \"openblas\", /" >>"$JL"
done
[ -z "$mm" ] || "$mm" $DMODELS | sed "s/^{/{\"name\": \"mm_rate\", \"framework\": \"probe\", /" >>"$JL"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

"$PYTHON" - "$JL" "$OUT" "$start" "$load_before" "$load_after" "$BATCH" "$STEPS" "$REPEAT" "$("$LINA" version)" <<'EOF'
import json, sys
jl, out, start, lb, la, batch, steps, repeat, ver = sys.argv[1:]
ver = "; ".join(l.strip() for l in ver.splitlines() if l.strip())
rows = [json.loads(l) for l in open(jl) if l.strip()]
cpu, flags = "?", ""
for l in open("/proc/cpuinfo"):
    if l.startswith("model name") and cpu == "?":
        cpu = l.split(":", 1)[1].strip()
    if (l.startswith("flags") or l.startswith("Features")) and not flags:
        flags = l.rstrip("\n") + " "
isa = ("AVX-512" if " avx512f " in flags else "AVX2" if " avx2 " in flags else
       "NEON (Advanced SIMD)" if " asimd " in flags else "other")
torch_ver = next((r.get("torch") for r in rows if r["framework"] == "torch"), "?")
sg, sgc = {}, {}
for r in rows:
    if r["name"] == "sgemm":
        sg[r["threads"]] = max(sg.get(r["threads"], 0), r.get("sgemm_gflops") or 0)
        sgc[r["threads"]] = max(sgc.get(r["threads"], 0), r.get("sgemm_cpu_gflops") or 0)
mmr = {}  # bench/mm_rate.c: the best of its runs per key
for r in rows:
    if r["name"] == "mm_rate":
        for k, v in r.items():
            if k.endswith("gflops"):
                mmr[k] = max(mmr.get(k, 0), v)
peak = mmr.get("fma_peak_cpu_gflops")
core = next((r.get("blas_core") for r in rows if r["name"] == "sgemm" and r.get("blas_core")), "unknown")
def best(fw, key="train_ms_per_step", **kw):
    v = [r[key] for r in rows if r["framework"] == fw and r.get(key) is not None
         and all(r.get(k) == x for k, x in kw.items())]
    return min(v) if v else None
L = ["# Small models: lina vs plain PyTorch, training step\n"]
L.append("Written by `sh bench/small_model_bench.sh` (%s UTC). CPU: %s, ISA %s (%s). "
         "PyTorch %s, float32, the chunkwise / dense mixers of `bench/torch_train.py`, each chunkwise mixer at the chunk length of "
         "32-256 (at most T) that trained fastest in a short run before the timed steps (`--chunk best`; the chunk column). The models are those of "
         "`lina task mqar` (2 layers, mixer-only blocks as the task builds them (`no_mlp`), vocabulary 256, short convolutions in every model (the transformer's SiLU convolutions on q, k, v included) on both sides). One step = forward + "
         "cross-entropy + backward + global-norm clipping + AdamW (lr 3e-3, betas 0.9/0.999, wd 0.1, clip 1.0) on "
         "B=%s random sequences; ms per step is the median of %s timed steps after a warm-up, best of %s interleaved "
         "runs. OpenBLAS SGEMM (1024^3, best of a measurement before and after the loop) in the same run: %s GFLOP/s of wall time, "
         "%s GFLOP per CPU second (OpenBLAS kernel set: %s). Load average before / after: %s / %s.\n"
         % (start, cpu, isa, ver, torch_ver, batch, steps, repeat,
            ", ".join("%s on %s thread%s" % (v, t, "" if t == 1 else "s") for t, v in sorted(sg.items())),
            ", ".join("%s on %s thread%s" % (v, t, "" if t == 1 else "s") for t, v in sorted(sgc.items())), core, lb, la))
L.append("Wall: the step's elapsed time; CPU: the process's CPU time per step (all threads), which other jobs on a "
         "shared machine disturb less (on one thread and an idle machine the two agree).\n")
has_base = any(r["framework"] == "lina_base" for r in rows)
L.append("Roofline columns: GFLOP = the step's products as `step_flops` in `bench/torch_train.py` counts them "
         "(every weight matrix, head and short convolutions included, 6 FLOP per weight per token; the mixer's products "
         "in chunk form with C = 64, causal halves, backward = 2x forward; softmax attention over the causal half; "
         "elementwise work not counted), the same count for both sides. % of SGEMM = that count per CPU second of the "
         "step / OpenBLAS SGEMM's GFLOP per CPU second on the same thread count. 3x needs = the rate lina "
         "would need for PyTorch / lina (CPU) = 3 (3 x PyTorch's): above 100 % of SGEMM the goal needs lina's "
         "whole step faster than OpenBLAS's large SGEMM, and it cannot exceed 100 % of the FMA peak (elementwise "
         "work included, which the count leaves out).\n")
if mmr:
    L.append("Product rates by CPU time on one thread, same run (`bench/mm_rate.c`, best of its runs before and after the "
             "loop): FP32 FMA peak %.0f GFLOP/s (%s path; %.0f with 8-lane AVX2 FMAs), OpenBLAS SGEMM 1024^3 %.0f; the "
             "layers' products at the step's shapes (8192 rows x d x d, and x 256 for the head): %s.\n"
             % (peak or 0, next((r["isa"] for r in rows if r["name"] == "mm_rate"), "?"),
                mmr.get("fma256_peak_cpu_gflops", 0), mmr.get("sgemm_cpu_gflops", 0),
                "; ".join("d %s: lina %.0f / %.0f, OpenBLAS %.0f / %.0f" % (
                    d, mmr.get("d%s_n%s_layer_cpu_gflops" % (d, d), 0), mmr.get("d%s_n256_layer_cpu_gflops" % d, 0),
                    mmr.get("d%s_n%s_openblas_cpu_gflops" % (d, d), 0), mmr.get("d%s_n256_openblas_cpu_gflops" % d, 0))
                    for d in sorted({k.split("_")[0][1:] for k in mmr if k.startswith("d")}, key=int))))
L.append("| model | d | T | params | threads | PyTorch chunk | lina ms/step | PyTorch ms/step | PyTorch / lina | lina CPU ms | PyTorch CPU ms | PyTorch / lina (CPU) |"
         " GFLOP/step | lina GFLOP/CPU-s (% of SGEMM) | PyTorch GFLOP/CPU-s (% of SGEMM) | 3x needs GFLOP/CPU-s (% of SGEMM, % of FMA peak) |"
         + (" before: lina CPU ms | before / after (CPU) |" if has_base else ""))
L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if has_base else ""))
keys = sorted({(r["name"], r["d_model"], r["seq_len"], r["threads"]) for r in rows if r["framework"] == "lina"},
              key=lambda k: (k[1], k[2], k[3]))
order = list(dict.fromkeys(r["name"] for r in rows if r["framework"] == "lina"))
keys.sort(key=lambda k: (order.index(k[0]), k[1], k[2], k[3]))
for n, d, T, th in keys:
    kw = dict(name=n, d_model=d, seq_len=T, threads=th)
    lm, tm = best("lina", **kw), best("torch", **kw)
    lc, tc = best("lina", "train_cpu_ms_per_step", **kw), best("torch", "train_cpu_ms_per_step", **kw)
    bc = best("lina_base", "train_cpu_ms_per_step", **kw)
    p = next((r["params"] for r in rows if r["framework"] == "lina" and r["name"] == n and r["d_model"] == d), 0)
    gf = next((r["step_gflop"] for r in rows if r["framework"] == "torch" and r.get("step_gflop")
               and r["name"] == n and r["d_model"] == d and r["seq_len"] == T), None)
    rate = lambda ms: gf / (ms / 1e3) if gf and ms else None
    lr, tr = rate(lc), rate(tc)
    pct = lambda x: " (%.0f %%)" % (100.0 * x / sgc[th]) if sgc.get(th) else ""
    trs = [r for r in rows if r["framework"] == "torch" and all(r.get(k) == x for k, x in kw.items())]
    ck = min(trs, key=lambda r: r["train_ms_per_step"]).get("chunk") if trs else None
    ck = "-" if ck is None or n == "transformer" else str(ck)
    L.append("| %s | %d | %d | %.0fK | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (n, d, T, p / 1e3, th, ck,
             "%.1f" % lm if lm else "-", "%.1f" % tm if tm else "-", "%.2fx" % (tm / lm) if lm and tm else "-",
             "%.1f" % lc if lc else "-", "%.1f" % tc if tc else "-", "%.2fx" % (tc / lc) if lc and tc else "-",
             "%.2f" % gf if gf else "-", "%.0f%s" % (lr, pct(lr)) if lr else "-", "%.0f%s" % (tr, pct(tr)) if tr else "-",
             "%.0f (%.0f %%%s)" % (3 * tr, 300.0 * tr / sgc[th] if sgc.get(th) else 0,
                                  ", %.0f %%" % (300.0 * tr / peak) if peak else "") if tr else "-")
             + (" %s | %s |" % ("%.1f" % bc if bc else "-", "%.2fx" % (bc / lc) if bc and lc else "-")
                if has_base else ""))
L.append("")
L.append("Reproduce: `make && sh bench/small_model_bench.sh build/lina results/small_model_bench.md` "
         "(environment MIXER_TYPES, DMODELS, SEQS, THREADS, REPEAT, BASE). Raw JSON lines: `%s`." % jl.split("/")[-1])
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
EOF
