/* model_bench.h -- `lina bench --model CONFIG`: whole-model throughput. */
#ifndef LINA_MODEL_BENCH_H
#define LINA_MODEL_BENCH_H

/*
 * Runs the model benchmark. argv holds the arguments after "bench" (argv[0] is
 * the first option), argc their count:
 *
 *   --model CONFIG   config.json of the model (required; random weights, seed 1)
 *   --seq-len T      tokens per sequence for training and prefill (default 512)
 *   --batch B        sequences per step (default 1)
 *   --threads N      lina_set_threads(N) (default: lina's default)
 *   --steps N        timed training steps and prefill passes (default 3; one
 *                    untimed warm-up of each comes first)
 *   --context N      tokens fed (chunk form, in pieces of at most 256) before the
 *                    decode steps are timed (default 64)
 *   --decode-steps N single-token decode steps timed (default 32)
 *   --only WHAT      train | prefill | decode: measure only that (default: all)
 *   --json           print exactly one JSON object instead of the table
 *
 * Training = forward + backward + AdamW update (lina_model_train_step,
 * lina_adamw_step). Tokens/s = tokens per step / the median time of the timed
 * steps: B*T tokens per training step or prefill pass, B per decode step. The JSON object has model_type, params,
 * seq_len, batch, threads, train_tokens_per_s, prefill_tokens_per_s,
 * decode_tokens_per_s (null when not measured), plus context,
 * decode_ms_per_token, rss_mb and peak_rss_mb (VmRSS / VmHWM of
 * /proc/self/status after the last measurement).
 * Returns 0; on a bad option or a failure prints one "lina: bench: ..." line on
 * stderr and returns 2 (usage) or 1 (runtime).
 */
int lina_model_bench_main(int argc, char **argv);

#endif
