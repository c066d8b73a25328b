/* task_cli.c -- `lina task NAME [options]`: parse the options, train and evaluate one
 * model on one synthetic task (or the MoM comparison), print the result (text or JSON). */
#include "tasks.h"
#include "icl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char TASK_USAGE[] =
    "usage: lina task NAME [options]\n"
    "  NAME: mqar | parity | modarith | s3 | s5 | icl-regression (lina task icl-regression --help)\n"
    "model:\n"
    "  --mixer M          gla retnet delta_net gated_deltanet hgrn2 transformer linear_attn mamba2\n"
    "                     gated_deltaproduct mom mlstm (default delta_net; s3/s5: gated_deltaproduct)\n"
    "  --d-model D --layers L --heads H [--head-dim K]   widths (defaults: 64, 2 (s3/s5: 1), 2 or 4)\n"
    "  --neg-eigval       eigenvalues in [-1, 1]: beta in (0, 2) for delta rules, decay in [-1, 1] (mamba2)\n"
    "                     (s3/s5 default on; --no-neg-eigval turns it off)\n"
    "  --householder N    gated_deltaproduct: Householder steps per token (s3/s5 default 2)\n"
    "  --mom              mqar: MoM (--memories E --topk K, shared memory unless --no-shared-mem) against\n"
    "                     one Gated DeltaNet memory of equal per-memory state and one of 4x the state\n"
    "data:\n"
    "  --seq-len L --vocab V --num-kv N [--power-a A] [--random-non-queries]   mqar (64, 256, 8, 0.01)\n"
    "  --train-min A --train-max B --test-min C --test-max E     parity/modarith lengths (3 40 40 256)\n"
    "  --seq-len L --test-len E     s3/s5 training and test lengths (32, 128)\n"
    "training:\n"
    "  --steps N --batch B --lr X --wd X --clip X --warmup N --seed S --threads N --eval N\n"
    "output:\n"
    "  --json             one JSON object on stdout\n"
    "  --quiet            no progress line\n";

static int usage_err(const char *msg, const char *arg)
{
    fprintf(stderr, "lina: task: ");
    fprintf(stderr, msg, arg);
    fprintf(stderr, " (lina task --help)\n");
    return 2;
}

static int get_int(const char *flag, const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "lina: task: %s needs an integer in [%ld, %ld], got '%s'\n", flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int get_double(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "lina: task: %s needs a number in [%g, %g], got '%s'\n", flag, lo, hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_mixer(const char *v, lina_model_type *out)
{
    for (int t = 0; t < LINA_MODEL_COUNT; t++) {
        const char *n = lina_model_type_name((lina_model_type)t);
        if (n && v && !strcmp(n, v)) {
            *out = (lina_model_type)t;
            return 0;
        }
    }
    fprintf(stderr, "lina: task: unknown --mixer '%s'\n", v ? v : "");
    return -1;
}

static void print_json(const lina_task_opts *o, const lina_task_result *r, int first)
{
    printf("%s{\"task\": \"%s\", \"mixer\": \"%s\", \"d_model\": %d, \"layers\": %d, \"heads\": %d, ", first ? "" : ",\n",
           lina_task_name(o->kind), lina_model_type_name(o->mixer), o->d_model, o->layers, o->heads);
    if (o->kind == LINA_TASK_MQAR) {
        printf("\"seq_len\": %d, \"vocab\": %d, \"num_kv\": %d, ", o->seq_len, o->vocab, o->num_kv);
    }
    if (o->mixer == LINA_MODEL_MOM) {
        printf("\"memories\": %d, \"topk\": %d, \"shared_mem\": %d, ", o->mom_memories, o->mom_topk, o->mom_shared);
    }
    printf("\"neg_eigval\": %d, \"householder\": %d, \"steps\": %d, \"batch\": %d, \"lr\": %g, \"seed\": %llu, ",
           o->neg_eigval, o->householder, o->steps, o->batch, o->lr, (unsigned long long)o->seed);
    printf("\"params\": %zu, \"state_floats_per_layer\": %lld, \"final_loss\": %.6g, \"test_acc\": %.6g, ",
           r->num_params, (long long)r->state_floats, r->final_loss, r->test_acc);
    printf("\"test_scaled_acc\": %.6g, \"train_acc\": ", r->test_scaled);
    if (isnan(r->train_acc)) {
        printf("null");
    } else {
        printf("%.6g", r->train_acc);
    }
    printf(", \"by_length\": [");
    for (int i = 0; i < r->nlens; i++) {
        printf("%s{\"len\": %d, \"acc\": %.6g}", i ? ", " : "", r->lens[i], r->acc_at[i]);
    }
    printf("], \"wall_s\": %.3f}", r->wall_s);
}

static void print_text(const lina_task_opts *o, const lina_task_result *r)
{
    printf("%s %s d_model=%d layers=%d heads=%d", lina_task_name(o->kind), lina_model_type_name(o->mixer),
           o->d_model, o->layers, o->heads);
    if (o->neg_eigval) {
        printf(" neg-eigval");
    }
    if (o->mixer == LINA_MODEL_GATED_DELTAPRODUCT) {
        printf(" n_h=%d", o->householder);
    }
    if (o->mixer == LINA_MODEL_MOM) {
        printf(" memories=%d topk=%d shared=%d", o->mom_memories, o->mom_topk, o->mom_shared);
    }
    printf(" seed=%llu: %zu params, state %lld floats/layer, %d steps, final loss %.4f, %.1f s\n",
           (unsigned long long)o->seed, r->num_params, (long long)r->state_floats, r->steps_done, r->final_loss,
           r->wall_s);
    switch (o->kind) {
    case LINA_TASK_MQAR:
        printf("  query accuracy %.4f (L=%d, N=%d, V=%d, %d test sequences)\n", r->test_acc, o->seq_len,
               o->num_kv, o->vocab, o->eval_n);
        break;
    case LINA_TASK_PARITY:
    case LINA_TASK_MODARITH:
        printf("  test lengths %d-%d: accuracy %.4f, scaled accuracy %.4f; training lengths %d-%d: accuracy %.4f\n",
               o->test_min, o->test_max, r->test_acc, r->test_scaled, o->train_min, o->train_max, r->train_acc);
        printf("  accuracy by length:");
        for (int i = 0; i < r->nlens; i++) {
            printf(" %d:%.3f", r->lens[i], r->acc_at[i]);
        }
        printf("\n");
        break;
    case LINA_TASK_S3:
    case LINA_TASK_S5:
        printf("  sequence accuracy at the training length %d: %.4f; token accuracy over %d positions %.4f\n",
               o->seq_len, r->train_acc, o->test_max, r->test_acc);
        printf("  sequence accuracy by length:");
        for (int i = 0; i < r->nlens; i++) {
            printf(" %d:%.3f", r->lens[i], r->acc_at[i]);
        }
        printf("\n");
        break;
    }
}

static int run_one(lina_task_opts *o, int json, int first)
{
    lina_task_result r;
    int rc = lina_task_run(o, &r);
    if (rc) {
        fprintf(stderr, "lina: task %s (%s): %s\n", lina_task_name(o->kind), lina_model_type_name(o->mixer),
                lina_last_error());
        return 1;
    }
    if (json) {
        print_json(o, &r, first);
    } else {
        print_text(o, &r);
    }
    lina_task_result_free(&r);
    return 0;
}

int lina_task_main(int argc, char **argv)
{
    if (argc < 2) {
        return usage_err("missing task NAME%s", "");
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(TASK_USAGE, stdout);
        return 0;
    }
    const char *name = argv[1];
    if (!strcmp(name, "icl-regression")) {
        return lina_icl_main(argc - 1, argv + 1);
    }
    lina_task_kind kind;
    if (!strcmp(name, "mqar")) {
        kind = LINA_TASK_MQAR;
    } else if (!strcmp(name, "parity")) {
        kind = LINA_TASK_PARITY;
    } else if (!strcmp(name, "modarith")) {
        kind = LINA_TASK_MODARITH;
    } else if (!strcmp(name, "s3")) {
        kind = LINA_TASK_S3;
    } else if (!strcmp(name, "s5")) {
        kind = LINA_TASK_S5;
    } else {
        return usage_err("unknown task '%s'", name);
    }
    lina_task_opts o;
    lina_task_opts_default(&o, kind);
    int json = 0, mom = 0, hh_set = 0, neg_set = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(TASK_USAGE, stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o.progress = 0;
            continue;
        }
        if (!strcmp(a, "--neg-eigval")) {
            o.neg_eigval = 1;
            neg_set = 1;
            continue;
        }
        if (!strcmp(a, "--no-neg-eigval")) {
            o.neg_eigval = 0;
            neg_set = 1;
            continue;
        }
        if (!strcmp(a, "--random-non-queries")) {
            o.random_non_queries = 1;
            continue;
        }
        if (!strcmp(a, "--mom")) {
            mom = 1;
            continue;
        }
        if (!strcmp(a, "--no-shared-mem")) {
            o.mom_shared = 0;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            return usage_err("unexpected argument '%s'", a);
        }
        if (i + 1 >= argc) {
            return usage_err("option %s needs a value", a);
        }
        const char *v = argv[++i];
        int bad = 0, tmp = 0;
        if (!strcmp(a, "--mixer")) {
            bad = parse_mixer(v, &o.mixer);
        } else if (!strcmp(a, "--d-model")) {
            bad = get_int(a, v, 1, 65536, &o.d_model);
        } else if (!strcmp(a, "--layers")) {
            bad = get_int(a, v, 1, 64, &o.layers);
        } else if (!strcmp(a, "--heads")) {
            bad = get_int(a, v, 1, 1024, &o.heads);
        } else if (!strcmp(a, "--head-dim")) {
            bad = get_int(a, v, 1, 65536, &o.head_dim);
        } else if (!strcmp(a, "--seq-len")) {
            bad = get_int(a, v, 1, 100000, &o.seq_len);
        } else if (!strcmp(a, "--vocab")) {
            bad = get_int(a, v, 4, 1 << 20, &o.vocab);
        } else if (!strcmp(a, "--num-kv")) {
            bad = get_int(a, v, 1, 100000, &o.num_kv);
        } else if (!strcmp(a, "--power-a")) {
            bad = get_double(a, v, 1e-6, 1.0, &o.power_a);
        } else if (!strcmp(a, "--train-min")) {
            bad = get_int(a, v, 1, 100000, &o.train_min);
        } else if (!strcmp(a, "--train-max")) {
            bad = get_int(a, v, 1, 100000, &o.train_max);
        } else if (!strcmp(a, "--test-min")) {
            bad = get_int(a, v, 1, 100000, &o.test_min);
        } else if (!strcmp(a, "--test-max") || !strcmp(a, "--test-len")) {
            bad = get_int(a, v, 1, 100000, &o.test_max);
        } else if (!strcmp(a, "--steps")) {
            bad = get_int(a, v, 1, 100000000, &o.steps);
        } else if (!strcmp(a, "--batch")) {
            bad = get_int(a, v, 1, 4096, &o.batch);
        } else if (!strcmp(a, "--lr")) {
            bad = get_double(a, v, 1e-12, 10.0, &o.lr);
        } else if (!strcmp(a, "--wd")) {
            bad = get_double(a, v, 0.0, 10.0, &o.weight_decay);
        } else if (!strcmp(a, "--clip")) {
            bad = get_double(a, v, 0.0, 1e9, &o.clip);
        } else if (!strcmp(a, "--warmup")) {
            bad = get_int(a, v, 0, 100000000, &o.warmup);
        } else if (!strcmp(a, "--seed")) {
            bad = get_int(a, v, 0, 2147483647, &tmp);
            o.seed = (uint64_t)tmp;
        } else if (!strcmp(a, "--threads")) {
            bad = get_int(a, v, 1, 1024, &o.threads);
        } else if (!strcmp(a, "--eval")) {
            bad = get_int(a, v, 1, 1000000, &o.eval_n);
        } else if (!strcmp(a, "--householder")) {
            bad = get_int(a, v, 1, 16, &o.householder);
            hh_set = 1;
        } else if (!strcmp(a, "--memories")) {
            bad = get_int(a, v, 1, 64, &o.mom_memories);
        } else if (!strcmp(a, "--topk")) {
            bad = get_int(a, v, 1, 64, &o.mom_topk);
        } else {
            return usage_err("unknown option '%s'", a);
        }
        if (bad) {
            return 2;
        }
    }
    if (o.mixer != LINA_MODEL_GATED_DELTAPRODUCT && !hh_set) {
        o.householder = 1; /* the s3/s5 default only applies to gated_deltaproduct */
    }
    if (!neg_set && o.mixer != LINA_MODEL_DELTA_NET && o.mixer != LINA_MODEL_GATED_DELTANET &&
        o.mixer != LINA_MODEL_GATED_DELTAPRODUCT && o.mixer != LINA_MODEL_MAMBA2 && o.mixer != LINA_MODEL_MOM) {
        o.neg_eigval = 0; /* the s3/s5 default only applies where the mixer has the option */
    }
    if (!mom) {
        int rc = run_one(&o, json, 1);
        if (json && !rc) {
            printf("\n");
        }
        return rc;
    }
    if (kind != LINA_TASK_MQAR) {
        return usage_err("--mom applies to mqar only%s", "");
    }
    /* MoM against one memory of equal per-memory state and one of 4x the state */
    lina_task_opts runs[3] = {o, o, o};
    runs[0].mixer = LINA_MODEL_MOM;
    runs[1].mixer = LINA_MODEL_GATED_DELTANET;
    runs[2].mixer = LINA_MODEL_GATED_DELTANET;
    int hd = o.head_dim > 0 ? o.head_dim : o.d_model / o.heads;
    for (int k = 0; k < 3; k++) {
        runs[k].head_dim = k == 2 ? 2 * hd : hd;
        runs[k].householder = 1;
    }
    int fails = 0;
    if (json) {
        printf("[");
    }
    for (int k = 0; k < 3; k++) {
        fails += run_one(&runs[k], json, k == fails) != 0;
    }
    if (json) {
        printf("]\n");
    }
    return fails ? 1 : 0;
}
