/* info.c -- `lina info DIR`: what a run or checkpoint directory holds: the config, the
 * parameter count per part, the tokenizer, the training state (trainer.json) and the
 * decode-state memory per layer and per token of context. */
#include "cli.h"
#include "lina.h"
#include "../io/io_internal.h" /* lina_read_file */

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_BYTES ((size_t)1 << 28)

/* DIR/name parsed as JSON, or NULL */
static cJSON *read_json(const char *dir, const char *name)
{
    char p[4200];
    char *buf = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (lina_read_file(p, JSON_MAX_BYTES, name, &buf, &len) != LINA_OK) {
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    return j;
}

/* the mixer of layer l: "attention" for softmax-attention layers, else the model type */
static const char *layer_kind(const lina_config *c, int l)
{
    if (c->model_type == LINA_MODEL_TRANSFORMER) {
        return "attention";
    }
    for (int i = 0; c->attn.enabled && i < c->attn.n_layers; i++) {
        if (c->attn.layers[i] == l) {
            return "attention";
        }
    }
    return lina_model_type_name(c->model_type);
}

enum { P_HEAD = 3 }; /* parts 0-3: embeddings, norms, MLP, head; then one per mixer kind */
#define MAX_PARTS 8

typedef struct parts {
    const char *name[MAX_PARTS];
    size_t count[MAX_PARTS];
    int n;
} parts;

static int part_index(parts *p, const char *name)
{
    for (int i = 0; i < p->n; i++) {
        if (!strcmp(p->name[i], name)) {
            return i;
        }
    }
    if (p->n == MAX_PARTS) {
        return p->n - 1;
    }
    p->name[p->n] = name;
    p->count[p->n] = 0;
    return p->n++;
}

/* the part a tensor belongs to, from its name: (model|backbone).layers.N.COMP.* is the
 * mixer (attn, mixer), the MLP (mlp) or a norm (COMP ending in "norm"); outside the
 * layers: embeddings, lm_head, norms, else the mixer (e.g. HGRN2's lower bounds) */
static const char *part_of(const lina_config *c, const char *name)
{
    const char *ls = strstr(name, "layers.");
    if (ls) {
        char *end;
        long l = strtol(ls + 7, &end, 10);
        if (end != ls + 7 && *end == '.') {
            const char *comp = end + 1;
            size_t n = strcspn(comp, ".");
            if (n == 3 && !strncmp(comp, "mlp", 3)) {
                return "MLP";
            }
            if (n >= 4 && !strncmp(comp + n - 4, "norm", 4)) {
                return "norms";
            }
            return layer_kind(c, (int)l);
        }
    }
    if (strstr(name, "embed")) {
        return "embeddings";
    }
    if (strstr(name, "lm_head")) {
        return "head";
    }
    if (strstr(name, "norm")) {
        return "norms";
    }
    return lina_model_type_name(c->model_type);
}

static void print_bytes(double b)
{
    if (b >= 1024.0 * 1024.0) {
        printf("%.2f MiB", b / (1024.0 * 1024.0));
    } else if (b >= 1024.0) {
        printf("%.1f KiB", b / 1024.0);
    } else {
        printf("%.0f B", b);
    }
}

static void print_config(const lina_config *c, const lina_model *m)
{
    printf("config: %s, hidden %d, %d layers, %d heads, vocab %d, MLP %d", lina_model_type_name(c->model_type),
           c->hidden_size, c->num_hidden_layers, c->num_heads, c->vocab_size, lina_config_mlp_size(c));
    if (c->num_experts > 0) {
        printf(" (%d experts, top %d)", c->num_experts, c->num_experts_per_tok);
    }
    printf(", %s embeddings\n", c->tie_word_embeddings ? "tied" : "untied");
    if (c->attn.enabled) {
        printf("  softmax-attention layers:");
        for (int i = 0; i < c->attn.n_layers; i++) {
            printf(" %d", c->attn.layers[i]);
        }
        printf("\n");
    }
    parts p = {{0}, {0}, 0};
    const char *fixed[] = {"embeddings", "norms", "MLP", "head"};
    for (int i = 0; i < 4; i++) {
        part_index(&p, fixed[i]);
    }
    for (int i = 0; i < lina_model_num_tensors(m); i++) {
        const char *name;
        int nd;
        const int64_t *shape;
        lina_model_tensor(m, i, &name, &nd, &shape, NULL, NULL);
        size_t n = 1;
        for (int d = 0; d < nd; d++) {
            n *= (size_t)shape[d];
        }
        p.count[part_index(&p, part_of(c, name))] += n;
    }
    printf("parameters: %zu\n", lina_model_num_params(m));
    for (int i = 0; i < p.n; i++) {
        if (i == P_HEAD && p.count[i] == 0 && c->tie_word_embeddings) {
            printf("  %-18s tied to the embeddings\n", "head");
            continue;
        }
        printf("  %-18s %zu\n", p.name[i], p.count[i]);
    }
}

static void print_tokenizer(const char *dir)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    lina_tokenizer *t = NULL;
    if (lina_tokenizer_load(p, &t) != LINA_OK) {
        printf("tokenizer: none (%s)\n", lina_last_error());
        return;
    }
    printf("tokenizer: vocab %d", lina_tokenizer_vocab_size(t));
    lina_tokenizer_free(t);
    cJSON *j = read_json(dir, "tokenizer.json");
    const cJSON *model = j ? cJSON_GetObjectItemCaseSensitive(j, "model") : NULL;
    const cJSON *type = model ? cJSON_GetObjectItemCaseSensitive(model, "type") : NULL;
    if (cJSON_IsString(type)) {
        printf(", %s", type->valuestring);
    }
    const cJSON *added = j ? cJSON_GetObjectItemCaseSensitive(j, "added_tokens") : NULL, *a;
    int ns = 0;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(a, "special");
        if (cJSON_IsString(content) && cJSON_IsNumber(id) && !cJSON_IsFalse(special)) {
            printf("%s%s = %d", ns++ ? ", " : "; special tokens: ", content->valuestring, id->valueint);
        }
    }
    printf("%s\n", ns ? "" : "; no special tokens");
    cJSON_Delete(j);
}

/* a number that trainer.json may hold as a number or a decimal string */
static int json_number(const cJSON *o, const char *key, double *v)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsNumber(x)) {
        *v = x->valuedouble;
        return 1;
    }
    if (cJSON_IsString(x)) {
        char *end;
        *v = strtod(x->valuestring, &end);
        return end != x->valuestring;
    }
    return 0;
}

static void print_training(const char *dir)
{
    cJSON *j = read_json(dir, "trainer.json");
    if (!j) {
        printf("training state: none (no readable trainer.json)\n");
        return;
    }
    double v;
    printf("training state:");
    if (json_number(j, "step", &v)) {
        printf(" step %.0f", v);
    }
    if (json_number(j, "total_steps", &v)) {
        printf(" of %.0f", v);
    }
    if (json_number(j, "tokens_seen", &v)) {
        printf(", %.0f tokens seen", v);
    }
    double b, t, a;
    if (json_number(j, "batch", &b) && json_number(j, "seq_len", &t)) {
        printf(", batch %.0f x %.0f tokens", b, t);
        if (json_number(j, "accum", &a) && a > 1) {
            printf(" x %.0f", a);
        }
    }
    printf("\n");
    const cJSON *losses = cJSON_GetObjectItemCaseSensitive(j, "losses");
    int n = cJSON_GetArraySize(losses);
    if (n > 0) {
        printf("  last losses:");
        for (int i = n > 5 ? n - 5 : 0; i < n; i++) {
            const cJSON *x = cJSON_GetArrayItem(losses, i);
            printf(" %.4f", cJSON_IsNumber(x) ? x->valuedouble : cJSON_IsString(x) ? strtod(x->valuestring, NULL) : NAN);
        }
        printf("\n");
    }
    const cJSON *val = cJSON_GetObjectItemCaseSensitive(j, "val_losses");
    int nv = cJSON_GetArraySize(val);
    if (nv > 0) {
        const cJSON *pair = cJSON_GetArrayItem(val, nv - 1);
        const cJSON *s = cJSON_GetArrayItem(pair, 0), *l = cJSON_GetArrayItem(pair, 1);
        if (cJSON_IsNumber(s) && (cJSON_IsNumber(l) || cJSON_IsString(l))) {
            printf("  last validation loss: %.4f at step %.0f\n",
                   cJSON_IsNumber(l) ? l->valuedouble : strtod(l->valuestring, NULL), s->valuedouble);
        }
    }
    cJSON_Delete(j);
}

/* per layer: the decode state's bytes that do not depend on the context length, and the
 * bytes added per token of context (softmax attention's key/value cache) */
static int print_state(const lina_config *c, const lina_model *m)
{
    lina_model_state *s1 = NULL, *s2 = NULL;
    if (lina_model_state_create(m, 1, 1, &s1) || lina_model_state_create(m, 1, 2, &s2)) {
        lina_model_state_free(s1);
        return 1;
    }
    double fixed_total = 0, per_tok_total = 0;
    printf("decode state (batch 1, float32):\n");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        double f1 = (double)lina_model_state_layer_floats(s1, l) * 4;
        double f2 = (double)lina_model_state_layer_floats(s2, l) * 4;
        double per_tok = f2 - f1, fixed = f1 - per_tok;
        printf("  layer %-3d %-18s ", l, layer_kind(c, l));
        print_bytes(fixed);
        printf(" + %.0f B per token of context\n", per_tok);
        fixed_total += fixed;
        per_tok_total += per_tok;
    }
    printf("  total: ");
    print_bytes(fixed_total);
    printf(" + %.0f B per token of context (", per_tok_total);
    print_bytes(fixed_total + 4096 * per_tok_total);
    printf(" at 4096 tokens)\n");
    lina_model_state_free(s1);
    lina_model_state_free(s2);
    return 0;
}

int lina_cmd_info(int argc, char **argv)
{
    cli_opt opts[] = {CLI_OPT_END};
    cli_cmd c = {.name = "info", .usage = "info DIR",
                 .about = "  DIR: a run directory of lina train (its checkpoint/ is read) or a checkpoint directory.\n"
                          "  Prints the config, the parameter count per part (embeddings, each mixer kind, MLP,\n"
                          "  norms, head), the tokenizer (vocabulary, special tokens), the training state\n"
                          "  (trainer.json: step, tokens seen, last losses) and the decode-state memory per layer:\n"
                          "  constant for the linear mixers, plus the key/value cache per token of context for\n"
                          "  softmax attention.\n",
                 .opts = opts, .max_pos = 1};
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (c.npos != 1) {
        return cli_fail(&c, "a run or checkpoint DIR is required");
    }
    char buf[4096];
    const char *dir = cli_checkpoint_dir(c.pos[0], buf, sizeof buf);
    lina_model *m = NULL;
    if (lina_model_load(dir, &m) != LINA_OK) {
        fprintf(stderr, "lina: info: %s\n", lina_last_error());
        return 1;
    }
    const lina_config *cfg = lina_model_config(m);
    printf("%s\n", dir);
    print_config(cfg, m);
    print_tokenizer(dir);
    print_training(dir);
    int rc = print_state(cfg, m);
    if (rc) {
        fprintf(stderr, "lina: info: %s\n", lina_last_error());
    }
    lina_model_free(m);
    return rc;
}
