/* model_bench.h -- `lina bench --model CONFIG`: whole-model throughput. */
#ifndef LINA_MODEL_BENCH_H
#define LINA_MODEL_BENCH_H

#include <stddef.h>

enum { LINA_MB_ALL = 0, LINA_MB_TRAIN = 1, LINA_MB_PREFILL = 2, LINA_MB_DECODE = 3 };

typedef struct lina_model_bench_opts {
    const char *config; /* config.json of the model (required; random weights, seed 1) */
    int seq_len;        /* tokens per sequence for training and prefill (512) */
    int batch;          /* sequences per step (1) */
    int threads;        /* lina_set_threads(N) when > 0 (0: lina's default) */
    int steps;          /* timed training steps and prefill passes (3; one untimed
                           warm-up of each comes first) */
    int context;        /* tokens fed (chunk form, in pieces of at most 256) before the
                           decode steps are timed (64) */
    int decode_steps;   /* single-token decode steps timed (32) */
    int only;           /* LINA_MB_ALL, or measure only TRAIN, PREFILL or DECODE */
    int json;           /* print exactly one JSON object instead of the table */
    double lr;          /* AdamW learning rate of the training steps (1e-4) */
    double beta2;       /* AdamW beta2 (0.95; beta1 0.9, eps 1e-8, weight decay 0.1) */
    double clip;        /* > 0: global gradient-norm clipping as lina train / lina task (0) */
    int roofline;       /* also measure SGEMM and the streaming-read bandwidth in this process
                           and report the training and decode rates against them */
} lina_model_bench_opts;

void lina_model_bench_opts_default(lina_model_bench_opts *o);

/*
 * Runs the model benchmark (the front-end is src/cli/bench.c).
 *
 * Training = forward + backward (+ the gradient norm and clipping factor with
 * clip > 0) + AdamW update (lina_model_train_step, lina_adamw_step). Tokens/s = tokens per step / the median time of the timed
 * steps: B*T tokens per training step or prefill pass, B per decode step. The JSON object has model_type, params,
 * seq_len, batch, threads, train_tokens_per_s, train_ms_per_step, train_cpu_ms_per_step (median CPU time of
 * the process per step: robust to other jobs on a shared machine), prefill_tokens_per_s,
 * decode_tokens_per_s (null when not measured), plus context,
 * decode_ms_per_token, rss_mb and peak_rss_mb (VmRSS / VmHWM of
 * /proc/self/status after the last measurement). With roofline: sgemm_gflops,
 * read_gbs (512 MiB streaming read), train_sgemm_frac (6 x non-embedding
 * parameters x train tokens/s over SGEMM), decode_gflops (2 x weights outside
 * the embedding table x B per decode step time), decode_sgemm_frac,
 * decode_bw_frac (the B=1 bound, weight bytes / read bandwidth, over the step
 * time), decode_weight_mb, sgemm_cpu_gflops and train_sgemm_frac_cpu (the
 * training fraction with both in CPU time), the projections of a decode step
 * alone (decode_proj_gflops, _sgemm_frac, _sgemm_frac_cpu, _roof_frac: over
 * min(SGEMM, B/2 flops per byte x read), _roof_frac_cpu: the same by CPU
 * time), read_cpu_gbs (the read per CPU second), read_ws_gbs / read_ws_cpu_gbs
 * (a read over decode_weight_mb, which may stay in cache in part), and the
 * step by CPU time (decode_cpu_ms_per_step) against both reads:
 * decode_bw_frac_cpu, decode_ws_bw_frac_cpu.
 * Returns 0; on a bad option or a failure prints one "lina: bench: ..." line on
 * stderr and returns 2 (usage) or 1 (runtime).
 */
int lina_model_bench_run(const lina_model_bench_opts *o);

/* CPU time of the process (all its threads), seconds */
double lina_bench_cpu_now(void);

/* GFLOP/s of a 1024^3 OpenBLAS SGEMM on the current thread count: the best of 7
 * runs after a warm-up; *cpu_gflops (if not NULL): the same per second of the
 * process's CPU time */
double lina_bench_sgemm_gflops(double *cpu_gflops);

/* GB/s of a streaming read (a parallel sum) over a buffer of `bytes`: the best
 * of 5 passes after a warm-up; 0 when the buffer cannot be allocated;
 * *cpu_gbs (if not NULL): the same per second of the process's CPU time (NAN
 * when not measured) */
double lina_bench_read_gbs(size_t bytes, double *cpu_gbs);

#endif
