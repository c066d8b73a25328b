/* tokenizer.c -- byte-level BPE: training, encoding, decoding, HF tokenizer.json.
 *
 * One model serves two families of tokenizer.json:
 *   - byte-level (GPT-2 style, lina's own): every byte is a base symbol, written in
 *     the file through GPT-2's byte-to-unicode table; text is pre-tokenised by a
 *     hand-written version of GPT-2's split regex;
 *   - SentencePiece-style (Llama/Mistral): spaces become U+2581 ('▁'), base
 *     symbols are UTF-8 characters, characters missing from the vocabulary
 *     fall back to <0xXX> byte tokens (byte_fallback) or the unk token.
 * Encoding applies merges by rank (lowest first, leftmost on ties) with a heap
 * over a linked list of symbols, so long words cost O(n log n).
 *
 * Training: unique pre-tokenised words are counted in a hash map; pair counts
 * are kept in a hash map with, per pair, the list of words that contain it;
 * each merge rewrites only those words and adjusts their pair counts; the best
 * pair comes from a max-heap with lazy invalidation.
 */
#include "../io/io_internal.h"
#include "lina.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOK_MAX_FILE (512u * 1024u * 1024u)
#define TOK_MAX_VOCAB (1 << 24)
#define CACHE_MAX_ENTRIES (1u << 20)

enum { KIND_BYTELEVEL = 0, KIND_SP = 1 };

/* SentencePiece prepend modes */
enum { PREP_NONE = 0, PREP_ALWAYS = 1, PREP_IF_MISSING = 2, PREP_FIRST = 3 };

static const char META[] = "\xe2\x96\x81"; /* U+2581 */

/* ------------------------------------------------------------ hashing */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* u64 -> int32 (open addressing; keys never removed) */
typedef struct u64map {
    uint64_t *keys;
    int32_t *vals;
    uint8_t *used;
    size_t cap, n;
} u64map;

static int u64map_grow(u64map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 1024;
    uint64_t *k = malloc(ncap * sizeof *k);
    int32_t *v = malloc(ncap * sizeof *v);
    uint8_t *u = calloc(ncap, 1);
    if (!k || !v || !u) {
        free(k);
        free(v);
        free(u);
        return LINA_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->used[i]) {
            size_t j = hash_u64(m->keys[i]) & (ncap - 1);
            while (u[j]) {
                j = (j + 1) & (ncap - 1);
            }
            u[j] = 1;
            k[j] = m->keys[i];
            v[j] = m->vals[i];
        }
    }
    free(m->keys);
    free(m->vals);
    free(m->used);
    m->keys = k;
    m->vals = v;
    m->used = u;
    m->cap = ncap;
    return LINA_OK;
}

/* value or -1 */
static int32_t u64map_get(const u64map *m, uint64_t key)
{
    if (!m->cap) {
        return -1;
    }
    size_t j = hash_u64(key) & (m->cap - 1);
    while (m->used[j]) {
        if (m->keys[j] == key) {
            return m->vals[j];
        }
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

/* insert if absent; *val gets the stored value (the old one when present);
 * returns 1 when inserted, 0 when present, <0 on error */
static int u64map_put(u64map *m, uint64_t key, int32_t *val)
{
    if ((m->n + 1) * 2 > m->cap && u64map_grow(m)) {
        return LINA_ENOMEM;
    }
    size_t j = hash_u64(key) & (m->cap - 1);
    while (m->used[j]) {
        if (m->keys[j] == key) {
            *val = m->vals[j];
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->used[j] = 1;
    m->keys[j] = key;
    m->vals[j] = *val;
    m->n++;
    return 1;
}

static void u64map_free(u64map *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    memset(m, 0, sizeof *m);
}

/* byte string -> int32; keys point to storage that outlives the map */
typedef struct smap {
    const uint8_t **k;
    uint32_t *klen;
    uint64_t *h;
    int32_t *v;
    size_t cap, n;
} smap;

static int smap_grow(smap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 1024;
    const uint8_t **k = calloc(ncap, sizeof *k);
    uint32_t *kl = malloc(ncap * sizeof *kl);
    uint64_t *h = malloc(ncap * sizeof *h);
    int32_t *v = malloc(ncap * sizeof *v);
    if (!k || !kl || !h || !v) {
        free(k);
        free(kl);
        free(h);
        free(v);
        return LINA_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->k[i]) {
            size_t j = m->h[i] & (ncap - 1);
            while (k[j]) {
                j = (j + 1) & (ncap - 1);
            }
            k[j] = m->k[i];
            kl[j] = m->klen[i];
            h[j] = m->h[i];
            v[j] = m->v[i];
        }
    }
    free(m->k);
    free(m->klen);
    free(m->h);
    free(m->v);
    m->k = k;
    m->klen = kl;
    m->h = h;
    m->v = v;
    m->cap = ncap;
    return LINA_OK;
}

static int32_t smap_get_h(const smap *m, const uint8_t *p, size_t n, uint64_t h)
{
    if (!m->cap) {
        return -1;
    }
    size_t j = h & (m->cap - 1);
    while (m->k[j]) {
        if (m->h[j] == h && m->klen[j] == n && memcmp(m->k[j], p, n) == 0) {
            return m->v[j];
        }
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

static int32_t smap_get(const smap *m, const void *p, size_t n)
{
    return smap_get_h(m, p, n, hash_bytes(p, n));
}

/* insert if absent (see u64map_put); an empty key must point somewhere non-NULL */
static int smap_put_h(smap *m, const uint8_t *p, size_t n, uint64_t h, int32_t *val)
{
    if ((m->n + 1) * 2 > m->cap && smap_grow(m)) {
        return LINA_ENOMEM;
    }
    size_t j = h & (m->cap - 1);
    while (m->k[j]) {
        if (m->h[j] == h && m->klen[j] == n && memcmp(m->k[j], p, n) == 0) {
            *val = m->v[j];
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->k[j] = p;
    m->klen[j] = (uint32_t)n;
    m->h[j] = h;
    m->v[j] = *val;
    m->n++;
    return 1;
}

static int smap_put(smap *m, const void *p, size_t n, int32_t *val)
{
    return smap_put_h(m, p, n, hash_bytes(p, n), val);
}

static void smap_free(smap *m)
{
    free(m->k);
    free(m->klen);
    free(m->h);
    free(m->v);
    memset(m, 0, sizeof *m);
}

/* growable int32 vector */
typedef struct ivec {
    int32_t *p;
    size_t n, cap;
} ivec;

static int ivec_push(ivec *v, int32_t x)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 16;
        int32_t *q = realloc(v->p, nc * sizeof *q);
        if (!q) {
            return LINA_ENOMEM;
        }
        v->p = q;
        v->cap = nc;
    }
    v->p[v->n++] = x;
    return LINA_OK;
}

/* growable byte buffer */
typedef struct bbuf {
    uint8_t *p;
    size_t n, cap;
} bbuf;

static int bbuf_put(bbuf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (b->n + n + 1 > nc) {
            nc *= 2;
        }
        uint8_t *q = realloc(b->p, nc);
        if (!q) {
            return LINA_ENOMEM;
        }
        b->p = q;
        b->cap = nc;
    }
    if (n) {
        memcpy(b->p + b->n, s, n);
    }
    b->n += n;
    b->p[b->n] = 0;
    return LINA_OK;
}

/* ------------------------------------------------------- the tokenizer */

struct lina_tokenizer {
    int kind;
    int n;                 /* ids 0..n-1 */
    char **piece;          /* [n] tokenizer.json strings (NUL-terminated UTF-8) */
    uint8_t **bytes;       /* [n] what decode outputs */
    int32_t *nbytes;       /* [n] */
    uint8_t *is_added;     /* [n] */
    smap pmap;             /* piece -> id */
    int32_t (*merges)[3];  /* [nmerges] a, b, result (rank order) */
    int nmerges;
    u64map mmap;           /* (a << 32 | b) -> rank */
    int32_t byte_id[256];  /* byte-level: base symbol per byte; SP: <0xXX> token (-1: none) */
    int32_t *added;        /* ids of added tokens, longest content first */
    int nadded;
    uint8_t added_first[256]; /* first bytes of added-token contents */
    int unk_id, fuse_unk, byte_fallback, ignore_merges;
    int add_prefix_space;  /* byte-level */
    int use_regex;         /* byte-level */
    int sp_prepend;        /* PREP_* */
    int sp_strip_lead;     /* decode drops one leading space */
    int sp_split;          /* Metaspace split: a word starts at every U+2581 */
    int nspecial_trained;  /* trained: number of special tokens at the end */
    cJSON *json;           /* a loaded file, kept for save */
    /* encode cache: word -> ids */
    smap cache;
    ivec cache_ids;
    ivec cache_start;
    uint8_t **arena;
    size_t narena, arena_used, arena_cap;
};

/* ---------------------------------------------- GPT-2 byte <-> unicode */

/* byte b is written as code point bl_cp[b] */
static void bl_cp_table(int *cp)
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp[b] = printable ? b : 256 + n++;
    }
}

static int utf8_put(uint8_t *o, int cp)
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s[0..n) and its code point; 0 if invalid. */
static int utf8_len(const uint8_t *s, size_t n, int *cp)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len, v;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)len > n) {
        return 0;
    }
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF))) || (len == 4 && (v < 0x10000 || v > 0x10FFFF))) {
        return 0;
    }
    *cp = v;
    return len;
}

static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int cp, l = utf8_len(s + i, n - i, &cp);
        if (!l || cp == 0) {
            return 0;
        }
        i += (size_t)l;
    }
    return 1;
}

/* ------------------------------------------- GPT-2 pre-tokenisation */

enum { C_L, C_N, C_S, C_P };

/* Class of a non-ASCII code point: \s, \p{L}, \p{N} or anything else, by
 * binary search in the ranges of tokenizer_unicode.h (letters are the gaps). */
typedef struct urange {
    int lo, hi, cls;
} urange;

#include "tokenizer_unicode.h"

static int uni_class(int cp)
{
    int lo = 0, hi = (int)(sizeof uni_ranges / sizeof uni_ranges[0]) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < uni_ranges[mid].lo) {
            hi = mid - 1;
        } else if (cp > uni_ranges[mid].hi) {
            lo = mid + 1;
        } else {
            return uni_ranges[mid].cls;
        }
    }
    return C_L;
}

/* class and length of the character at s[0..n) (invalid UTF-8: a 1-byte letter) */
static int char_class(const uint8_t *s, size_t n, int *len)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *len = 1;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            return C_L;
        }
        if (c >= '0' && c <= '9') {
            return C_N;
        }
        if (c == ' ' || (c >= '\t' && c <= '\r')) {
            return C_S;
        }
        return C_P;
    }
    int cp, l = utf8_len(s, n, &cp);
    if (!l) {
        *len = 1;
        return C_L;
    }
    *len = l;
    return uni_class(cp);
}

/* end of the run of class `cls` starting at i */
static size_t run_end(const uint8_t *s, size_t n, size_t i, int cls)
{
    while (i < n) {
        int l, c = char_class(s + i, n - i, &l);
        if (c != cls) {
            break;
        }
        i += (size_t)l;
    }
    return i;
}

/* End of the pre-token starting at i (GPT-2's
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+). */
static size_t bl_next(const uint8_t *s, size_t n, size_t i)
{
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') {
            return i + 2;
        }
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
            return i + 3;
        }
    }
    int l, c = char_class(s + i, n - i, &l);
    if (s[i] == ' ' && i + 1 < n) {
        int l2, c2 = char_class(s + i + 1, n - i - 1, &l2);
        if (c2 != C_S) {
            return run_end(s, n, i + 1, c2);
        }
    }
    if (c != C_S) {
        return run_end(s, n, i, c);
    }
    size_t j = run_end(s, n, i, C_S);
    if (j == n) {
        return n;
    }
    /* whitespace followed by a non-space: all but the last whitespace character */
    size_t last = i;
    size_t k = i;
    while (k < j) {
        last = k;
        int lk;
        char_class(s + k, n - k, &lk);
        k += (size_t)lk;
    }
    return last > i ? last : j;
}

/* SentencePiece-style words: '▁'* followed by non-'▁' characters, or with
 * `split` (Metaspace's split = true) at most one leading '▁' */
static size_t sp_next(const uint8_t *s, size_t n, size_t i, int split)
{
    size_t j = i;
    while (j + 3 <= n && memcmp(s + j, META, 3) == 0) {
        j += 3;
        if (split) {
            break;
        }
    }
    while (j < n && !(j + 3 <= n && memcmp(s + j, META, 3) == 0)) {
        j++;
    }
    return j;
}

/* ------------------------------------------------------- BPE on a word */

typedef struct bpe_heap_ent {
    int32_t rank;
    int32_t pos;
} bpe_heap_ent;

static int bpe_less(bpe_heap_ent a, bpe_heap_ent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void bpe_push(bpe_heap_ent *h, int *n, bpe_heap_ent e)
{
    int i = (*n)++;
    h[i] = e;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!bpe_less(h[i], h[p])) {
            break;
        }
        bpe_heap_ent t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static bpe_heap_ent bpe_pop(bpe_heap_ent *h, int *n)
{
    bpe_heap_ent top = h[0];
    h[0] = h[--(*n)];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && bpe_less(h[l], h[m])) {
            m = l;
        }
        if (r < *n && bpe_less(h[r], h[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        bpe_heap_ent t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
    return top;
}

static int32_t merge_rank(const lina_tokenizer *t, int32_t a, int32_t b)
{
    return u64map_get(&t->mmap, ((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
}

/* Apply merges to sym[0..m) in place; returns the new length (<0: no memory). */
static int bpe_word(const lina_tokenizer *t, int32_t *sym, int m)
{
    if (m < 2 || t->nmerges == 0) {
        return m;
    }
    int32_t *next = malloc((size_t)m * 3 * sizeof(int32_t));
    bpe_heap_ent *heap = malloc((size_t)m * 3 * sizeof *heap);
    if (!next || !heap) {
        free(next);
        free(heap);
        return LINA_ENOMEM;
    }
    int32_t *prev = next + m, *alive = next + 2 * m;
    int nh = 0;
    for (int i = 0; i < m; i++) {
        next[i] = i + 1 < m ? i + 1 : -1;
        prev[i] = i - 1;
        alive[i] = 1;
        if (i + 1 < m) {
            int32_t r = merge_rank(t, sym[i], sym[i + 1]);
            if (r >= 0) {
                bpe_push(heap, &nh, (bpe_heap_ent){r, i});
            }
        }
    }
    while (nh > 0) {
        bpe_heap_ent e = bpe_pop(heap, &nh);
        int p = e.pos, q = next[p];
        if (!alive[p] || q < 0) {
            continue;
        }
        if (merge_rank(t, sym[p], sym[q]) != e.rank) {
            continue; /* stale */
        }
        sym[p] = t->merges[e.rank][2];
        alive[q] = 0;
        next[p] = next[q];
        if (next[q] >= 0) {
            prev[next[q]] = p;
        }
        /* each merge pops one entry and pushes at most two: the heap stays
         * below (m - 1) + 2 (m - 1) entries */
        if (prev[p] >= 0) {
            int32_t r = merge_rank(t, sym[prev[p]], sym[p]);
            if (r >= 0 && nh < 3 * m) {
                bpe_push(heap, &nh, (bpe_heap_ent){r, prev[p]});
            }
        }
        if (next[p] >= 0) {
            int32_t r = merge_rank(t, sym[p], sym[next[p]]);
            if (r >= 0 && nh < 3 * m) {
                bpe_push(heap, &nh, (bpe_heap_ent){r, p});
            }
        }
    }
    int k = 0;
    for (int i = 0; i >= 0; i = next[i]) {
        sym[k++] = sym[i];
    }
    free(next);
    free(heap);
    return k;
}

/* ------------------------------------------------ allocation and lookups */

static lina_tokenizer *tok_alloc(int n)
{
    lina_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        return NULL;
    }
    t->n = n;
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->bytes = calloc((size_t)n, sizeof *t->bytes);
    t->nbytes = calloc((size_t)n, sizeof *t->nbytes);
    t->is_added = calloc((size_t)n, 1);
    if (!t->piece || !t->bytes || !t->nbytes || !t->is_added) {
        lina_tokenizer_free(t);
        return NULL;
    }
    t->unk_id = -1;
    t->use_regex = 1;
    for (int b = 0; b < 256; b++) {
        t->byte_id[b] = -1;
    }
    return t;
}

static void cache_clear(lina_tokenizer *t)
{
    smap_free(&t->cache);
    free(t->cache_ids.p);
    free(t->cache_start.p);
    memset(&t->cache_ids, 0, sizeof t->cache_ids);
    memset(&t->cache_start, 0, sizeof t->cache_start);
    for (size_t i = 0; i < t->narena; i++) {
        free(t->arena[i]);
    }
    free(t->arena);
    t->arena = NULL;
    t->narena = t->arena_used = t->arena_cap = 0;
}

void lina_tokenizer_free(lina_tokenizer *t)
{
    if (!t) {
        return;
    }
    for (int i = 0; i < t->n; i++) {
        if (t->piece) {
            free(t->piece[i]);
        }
        if (t->bytes) {
            free(t->bytes[i]);
        }
    }
    free(t->piece);
    free(t->bytes);
    free(t->nbytes);
    free(t->is_added);
    smap_free(&t->pmap);
    free(t->merges);
    u64map_free(&t->mmap);
    free(t->added);
    cJSON_Delete(t->json);
    cache_clear(t);
    free(t);
}

int lina_tokenizer_vocab_size(const lina_tokenizer *t)
{
    return t ? t->n : 0;
}

int lina_tokenizer_token_id(const lina_tokenizer *t, const char *piece)
{
    if (!t || !piece) {
        return -1;
    }
    return smap_get(&t->pmap, piece, strlen(piece));
}

const char *lina_tokenizer_piece(const lina_tokenizer *t, int id)
{
    if (!t || id < 0 || id >= t->n) {
        return NULL;
    }
    return t->piece[id];
}

/* note the added tokens, longest content first, and their first bytes */
static int build_added(lina_tokenizer *t)
{
    free(t->added);
    t->added = NULL;
    t->nadded = 0;
    memset(t->added_first, 0, sizeof t->added_first);
    for (int i = 0; i < t->n; i++) {
        if (t->is_added[i] && t->nbytes[i] > 0) {
            t->nadded++;
        }
    }
    if (!t->nadded) {
        return LINA_OK;
    }
    t->added = malloc((size_t)t->nadded * sizeof *t->added);
    if (!t->added) {
        return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
    }
    int k = 0;
    for (int i = 0; i < t->n; i++) {
        if (t->is_added[i] && t->nbytes[i] > 0) {
            t->added[k++] = i;
            t->added_first[t->bytes[i][0]] = 1;
        }
    }
    for (int i = 1; i < t->nadded; i++) { /* insertion sort: stable, by length */
        int32_t x = t->added[i];
        int j = i - 1;
        while (j >= 0 && t->nbytes[t->added[j]] < t->nbytes[x]) {
            t->added[j + 1] = t->added[j];
            j--;
        }
        t->added[j + 1] = x;
    }
    return LINA_OK;
}

/* ------------------------------------------------------------- encoding */

static uint8_t *arena_copy(lina_tokenizer *t, const uint8_t *p, size_t n)
{
    const size_t block = 1u << 20;
    if (n > block / 4) {
        return NULL; /* not cached */
    }
    if (!t->narena || t->arena_used + n > block) {
        if (t->narena == t->arena_cap) {
            size_t nc = t->arena_cap ? t->arena_cap * 2 : 8;
            uint8_t **q = realloc(t->arena, nc * sizeof *q);
            if (!q) {
                return NULL;
            }
            t->arena = q;
            t->arena_cap = nc;
        }
        t->arena[t->narena] = malloc(block);
        if (!t->arena[t->narena]) {
            return NULL;
        }
        t->narena++;
        t->arena_used = 0;
    }
    uint8_t *d = t->arena[t->narena - 1] + t->arena_used;
    memcpy(d, p, n);
    t->arena_used += n ? n : 1;
    return d;
}

/* Base symbols of a word. */
static int base_symbols(const lina_tokenizer *t, const uint8_t *w, size_t n, ivec *sym)
{
    sym->n = 0;
    if (t->kind == KIND_BYTELEVEL) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = t->byte_id[w[i]];
            if (id < 0) {
                id = t->unk_id;
                if (id < 0) {
                    return lina_set_error(LINA_EINVAL, "tokenizer: byte 0x%02X has no token and there is no unk token",
                                          w[i]);
                }
                if (t->fuse_unk && sym->n && sym->p[sym->n - 1] == id) {
                    continue;
                }
            }
            if (ivec_push(sym, id)) {
                return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
            }
        }
        return LINA_OK;
    }
    size_t i = 0;
    while (i < n) {
        int cp, l = utf8_len(w + i, n - i, &cp);
        if (!l) {
            l = 1;
        }
        int32_t id = smap_get(&t->pmap, w + i, (size_t)l);
        if (id >= 0 && t->is_added[id]) {
            id = -1; /* added tokens are matched before, never as characters */
        }
        if (id >= 0) {
            if (ivec_push(sym, id)) {
                return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
            }
        } else {
            int fell_back = 0;
            if (t->byte_fallback) {
                fell_back = 1;
                for (int k = 0; k < l; k++) {
                    if (t->byte_id[w[i + k]] < 0) {
                        fell_back = 0;
                    }
                }
                for (int k = 0; fell_back && k < l; k++) {
                    if (ivec_push(sym, t->byte_id[w[i + k]])) {
                        return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
                    }
                }
            }
            if (!fell_back) {
                if (t->unk_id < 0) {
                    return lina_set_error(LINA_EINVAL,
                                          "tokenizer: character at byte %zu has no token, no byte fallback "
                                          "and no unk token",
                                          i);
                }
                if (!(t->fuse_unk && sym->n && sym->p[sym->n - 1] == t->unk_id)) {
                    if (ivec_push(sym, t->unk_id)) {
                        return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
                    }
                }
            }
        }
        i += (size_t)l;
    }
    return LINA_OK;
}

/* Encode one pre-token, appending to out. */
static int encode_word(lina_tokenizer *t, const uint8_t *w, size_t n, ivec *out, ivec *sym)
{
    if (n == 0) {
        return LINA_OK;
    }
    uint64_t h = hash_bytes(w, n);
    int32_t e = smap_get_h(&t->cache, w, n, h);
    if (e >= 0) {
        int32_t s0 = t->cache_start.p[e], s1 = t->cache_start.p[e + 1];
        for (int32_t k = s0; k < s1; k++) {
            if (ivec_push(out, t->cache_ids.p[k])) {
                return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
            }
        }
        return LINA_OK;
    }
    int32_t whole = -1;
    if (t->ignore_merges) {
        if (t->kind == KIND_BYTELEVEL) {
            /* the vocabulary holds the byte-level string of the word */
            uint8_t tmp[256];
            int cp[256];
            size_t k = 0;
            bl_cp_table(cp);
            for (size_t i = 0; i < n && k + 4 <= sizeof tmp; i++) {
                k += (size_t)utf8_put(tmp + k, cp[w[i]]);
            }
            if (n * 2 <= sizeof tmp) {
                whole = smap_get(&t->pmap, tmp, k);
            }
        } else {
            whole = smap_get(&t->pmap, w, n);
        }
        if (whole >= 0 && t->is_added[whole]) {
            whole = -1;
        }
    }
    if (whole >= 0) {
        sym->n = 0;
        if (ivec_push(sym, whole)) {
            return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
        }
    } else {
        int rc = base_symbols(t, w, n, sym);
        if (rc) {
            return rc;
        }
        if (sym->n > (size_t)INT32_MAX / 4) {
            return lina_set_error(LINA_EINVAL, "tokenizer: word too long");
        }
        int m = bpe_word(t, sym->p, (int)sym->n);
        if (m < 0) {
            return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
        }
        sym->n = (size_t)m;
    }
    for (size_t k = 0; k < sym->n; k++) {
        if (ivec_push(out, sym->p[k])) {
            return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
        }
    }
    /* cache it */
    if (t->cache.n >= CACHE_MAX_ENTRIES) {
        cache_clear(t);
    }
    if (!t->cache_start.n && ivec_push(&t->cache_start, 0)) {
        return LINA_OK;
    }
    uint8_t *key = arena_copy(t, w, n);
    if (!key) {
        return LINA_OK;
    }
    int32_t idx = (int32_t)(t->cache_start.n - 1);
    size_t before = t->cache_ids.n;
    for (size_t k = 0; k < sym->n; k++) {
        if (ivec_push(&t->cache_ids, sym->p[k])) {
            t->cache_ids.n = before;
            return LINA_OK;
        }
    }
    if (ivec_push(&t->cache_start, (int32_t)t->cache_ids.n)) {
        t->cache_ids.n = before;
        return LINA_OK;
    }
    int rc = smap_put_h(&t->cache, key, n, h, &idx);
    if (rc < 0) {
        t->cache_ids.n = before;
        t->cache_start.n--;
    }
    return LINA_OK;
}

/* Encode a stretch of text free of added tokens; `first`: it starts the text. */
static int encode_plain(lina_tokenizer *t, const uint8_t *s, size_t n, int first, ivec *out, ivec *sym,
                        bbuf *norm)
{
    if (n == 0) {
        return LINA_OK;
    }
    norm->n = 0;
    if (t->kind == KIND_BYTELEVEL) {
        if (t->add_prefix_space && s[0] != ' ') {
            if (bbuf_put(norm, " ", 1) || bbuf_put(norm, s, n)) {
                return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
            }
            s = norm->p;
            n = norm->n;
        }
        if (!t->use_regex) {
            return encode_word(t, s, n, out, sym);
        }
        size_t i = 0;
        while (i < n) {
            size_t j = bl_next(s, n, i);
            int rc = encode_word(t, s + i, j - i, out, sym);
            if (rc) {
                return rc;
            }
            i = j;
        }
        return LINA_OK;
    }
    int pre = t->sp_prepend == PREP_ALWAYS ||
              (t->sp_prepend == PREP_IF_MISSING && !(n >= 1 && s[0] == ' ')) ||
              (t->sp_prepend == PREP_FIRST && first && !(n >= 1 && s[0] == ' '));
    if (pre && bbuf_put(norm, META, 3)) {
        return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        int rc = s[i] == ' ' ? bbuf_put(norm, META, 3) : bbuf_put(norm, s + i, 1);
        if (rc) {
            return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
        }
    }
    const uint8_t *q = norm->p;
    size_t m = norm->n, i = 0;
    while (i < m) {
        size_t j = sp_next(q, m, i, t->sp_split);
        int rc = encode_word(t, q + i, j - i, out, sym);
        if (rc) {
            return rc;
        }
        i = j;
    }
    return LINA_OK;
}

/* Next added token at or after i: its position, or n. */
static size_t find_added(const lina_tokenizer *t, const uint8_t *s, size_t n, size_t i, int32_t *id)
{
    for (; i < n; i++) {
        if (!t->added_first[s[i]]) {
            continue;
        }
        for (int k = 0; k < t->nadded; k++) {
            int32_t a = t->added[k];
            size_t l = (size_t)t->nbytes[a];
            if (l <= n - i && memcmp(s + i, t->bytes[a], l) == 0) {
                *id = a;
                return i;
            }
        }
    }
    return n;
}

int lina_tokenizer_encode(lina_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n)
{
    if (!t || (!text && len) || !ids || !n) {
        return lina_set_error(LINA_EINVAL, "lina_tokenizer_encode: NULL argument");
    }
    *ids = NULL;
    *n = 0;
    const uint8_t *s = (const uint8_t *)text;
    ivec out = {0}, sym = {0};
    bbuf norm = {0};
    int rc = LINA_OK;
    size_t i = 0;
    while (i < len && !rc) {
        int32_t id = -1;
        size_t j = t->nadded ? find_added(t, s, len, i, &id) : len;
        rc = encode_plain(t, s + i, j - i, i == 0, &out, &sym, &norm);
        if (!rc && j < len) {
            if (ivec_push(&out, id)) {
                rc = lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
            }
            j += (size_t)t->nbytes[id];
        }
        i = j;
    }
    free(sym.p);
    free(norm.p);
    if (rc) {
        free(out.p);
        return rc;
    }
    if (!out.p) {
        out.p = malloc(sizeof(int32_t));
        if (!out.p) {
            return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
        }
    }
    *ids = out.p;
    *n = out.n;
    return LINA_OK;
}

int lina_tokenizer_decode(const lina_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len)
{
    if (!t || (!ids && n) || !text || !len) {
        return lina_set_error(LINA_EINVAL, "lina_tokenizer_decode: NULL argument");
    }
    *text = NULL;
    *len = 0;
    bbuf b = {0};
    if (bbuf_put(&b, "", 0)) {
        return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n) {
            free(b.p);
            return lina_set_error(LINA_EINVAL, "tokenizer: id %d at position %zu is out of range [0, %d)", (int)id,
                                  i, t->n);
        }
        const uint8_t *p = t->bytes[id];
        size_t l = (size_t)t->nbytes[id];
        if (i == 0 && t->kind == KIND_SP && t->sp_strip_lead && l > 0 && p[0] == ' ' && !t->is_added[id]) {
            p++;
            l--;
        }
        if (bbuf_put(&b, p, l)) {
            free(b.p);
            return lina_set_error(LINA_ENOMEM, "tokenizer: out of memory");
        }
    }
    *text = (char *)b.p;
    *len = b.n;
    return LINA_OK;
}

/* ------------------------------------------------------ shared set-up */

/* Build the piece map, the merge map, the base-symbol table and the added
 * list from piece/bytes/merges. `name` is used in messages. */
static int tok_index(lina_tokenizer *t, const char *name)
{
    for (int i = 0; i < t->n; i++) {
        if (!t->piece[i]) {
            return lina_set_error(LINA_EFORMAT, "%s: id %d has no token (ids must be 0..%d without gaps)", name, i,
                                  t->n - 1);
        }
        int32_t v = i;
        int rc = smap_put(&t->pmap, t->piece[i], strlen(t->piece[i]), &v);
        if (rc < 0) {
            return lina_set_error(LINA_ENOMEM, "%s: out of memory", name);
        }
        if (rc == 0 && v != i) {
            return lina_set_error(LINA_EFORMAT, "%s: token '%s' has two ids (%d and %d)", name, t->piece[i], (int)v,
                                  i);
        }
    }
    for (int r = 0; r < t->nmerges; r++) {
        uint64_t key = ((uint64_t)(uint32_t)t->merges[r][0] << 32) | (uint32_t)t->merges[r][1];
        int32_t v = r;
        if (u64map_put(&t->mmap, key, &v) < 0) {
            return lina_set_error(LINA_ENOMEM, "%s: out of memory", name);
        }
    }
    if (t->kind == KIND_BYTELEVEL) {
        int cp[256];
        bl_cp_table(cp);
        for (int b = 0; b < 256; b++) {
            uint8_t u[4];
            int l = utf8_put(u, cp[b]);
            int32_t id = smap_get(&t->pmap, u, (size_t)l);
            t->byte_id[b] = (id >= 0 && !t->is_added[id]) ? id : -1;
        }
    } else {
        for (int b = 0; b < 256; b++) {
            char u[8];
            snprintf(u, sizeof u, "<0x%02X>", b);
            t->byte_id[b] = smap_get(&t->pmap, u, 6);
        }
    }
    return build_added(t);
}

/* piece string of a byte sequence (byte-level) */
static char *bl_piece(const uint8_t *p, size_t n)
{
    int cp[256];
    bl_cp_table(cp);
    char *s = malloc(n * 2 + 1);
    if (!s) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        k += (size_t)utf8_put((uint8_t *)s + k, cp[p[i]]);
    }
    s[k] = 0;
    return s;
}

/* ------------------------------------------------------------- training */

typedef struct pair_info {
    uint64_t key;
    int64_t count;
    int32_t *occ; /* words containing the pair (may hold stale entries) */
    int32_t nocc, capocc;
    int32_t stamp;
} pair_info;

typedef struct theap_ent {
    int64_t count;
    uint64_t key;
    int32_t pidx;
} theap_ent;

/* higher count first, then the smaller pair */
static int th_before(const theap_ent *a, const theap_ent *b)
{
    return a->count > b->count || (a->count == b->count && a->key < b->key);
}

typedef struct trainer {
    u64map pidx; /* key -> index into pairs */
    pair_info *pairs;
    int32_t npairs, cappairs;
    theap_ent *heap;
    size_t nheap, capheap;
    int32_t *sym;    /* all words' symbols */
    int64_t *wstart; /* [nwords] */
    int32_t *wlen;   /* [nwords] current length */
    int64_t *wfreq;  /* [nwords] */
    int32_t nwords;
} trainer;

static int heap_push(trainer *tr, theap_ent e)
{
    if (tr->nheap == tr->capheap) {
        size_t nc = tr->capheap ? tr->capheap * 2 : 4096;
        theap_ent *q = realloc(tr->heap, nc * sizeof *q);
        if (!q) {
            return LINA_ENOMEM;
        }
        tr->heap = q;
        tr->capheap = nc;
    }
    size_t i = tr->nheap++;
    tr->heap[i] = e;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!th_before(&tr->heap[i], &tr->heap[p])) {
            break;
        }
        theap_ent t = tr->heap[i];
        tr->heap[i] = tr->heap[p];
        tr->heap[p] = t;
        i = p;
    }
    return LINA_OK;
}

static theap_ent heap_pop(trainer *tr)
{
    theap_ent top = tr->heap[0];
    tr->heap[0] = tr->heap[--tr->nheap];
    size_t i = 0, n = tr->nheap;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && th_before(&tr->heap[l], &tr->heap[m])) {
            m = l;
        }
        if (r < n && th_before(&tr->heap[r], &tr->heap[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        theap_ent t = tr->heap[i];
        tr->heap[i] = tr->heap[m];
        tr->heap[m] = t;
        i = m;
    }
    return top;
}

/* index of pair (a, b), created when absent; <0 on error */
static int32_t pair_get(trainer *tr, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    int32_t v = tr->npairs;
    int rc = u64map_put(&tr->pidx, key, &v);
    if (rc < 0) {
        return LINA_ENOMEM;
    }
    if (rc == 1) {
        if (tr->npairs == tr->cappairs) {
            int32_t nc = tr->cappairs ? tr->cappairs * 2 : 4096;
            pair_info *q = realloc(tr->pairs, (size_t)nc * sizeof *q);
            if (!q) {
                return LINA_ENOMEM;
            }
            tr->pairs = q;
            tr->cappairs = nc;
        }
        pair_info *p = &tr->pairs[tr->npairs++];
        memset(p, 0, sizeof *p);
        p->key = key;
        p->stamp = -1;
    }
    return v;
}

static int occ_add(pair_info *p, int32_t w)
{
    if (p->nocc && p->occ[p->nocc - 1] == w) {
        return LINA_OK;
    }
    if (p->nocc == p->capocc) {
        int32_t nc = p->capocc ? p->capocc * 2 : 4;
        int32_t *q = realloc(p->occ, (size_t)nc * sizeof *q);
        if (!q) {
            return LINA_ENOMEM;
        }
        p->occ = q;
        p->capocc = nc;
    }
    p->occ[p->nocc++] = w;
    return LINA_OK;
}

static void trainer_free(trainer *tr)
{
    for (int32_t i = 0; i < tr->npairs; i++) {
        free(tr->pairs[i].occ);
    }
    free(tr->pairs);
    free(tr->heap);
    u64map_free(&tr->pidx);
    free(tr->sym);
    free(tr->wstart);
    free(tr->wlen);
    free(tr->wfreq);
}

/* Find the next special token in text (as in encoding). */
static size_t find_special(const char *const *special, int nspecial, const uint8_t *s, size_t n, size_t i,
                           size_t *len)
{
    for (; i < n; i++) {
        size_t best = 0;
        for (int k = 0; k < nspecial; k++) {
            size_t l = strlen(special[k]);
            if (l > best && l <= n - i && memcmp(s + i, special[k], l) == 0) {
                best = l;
            }
        }
        if (best) {
            *len = best;
            return i;
        }
    }
    *len = 0;
    return n;
}

/* token bytes during training */
typedef struct tvocab {
    uint8_t **bytes;
    int32_t *nbytes;
    int32_t n, cap;
    smap map;
} tvocab;

static int tvocab_add(tvocab *v, uint8_t *b, int32_t nb, int32_t *id)
{
    int32_t nid = v->n;
    int rc = smap_put(&v->map, b, (size_t)nb, &nid);
    if (rc < 0) {
        return LINA_ENOMEM;
    }
    if (rc == 0) {
        *id = nid;
        free(b);
        return 0;
    }
    if (v->n == v->cap) {
        int32_t nc = v->cap ? v->cap * 2 : 512;
        uint8_t **q = realloc(v->bytes, (size_t)nc * sizeof *q);
        int32_t *r = q ? realloc(v->nbytes, (size_t)nc * sizeof *r) : NULL;
        if (q) {
            v->bytes = q;
        }
        if (!r) {
            return LINA_ENOMEM;
        }
        v->nbytes = r;
        v->cap = nc;
    }
    v->bytes[v->n] = b;
    v->nbytes[v->n] = nb;
    *id = v->n++;
    return 1;
}

static int train_core(trainer *tr, tvocab *tv, const uint8_t *s, size_t len, int target,
                      const char *const *special, int nspecial, int32_t (**merges_out)[3], int *nmerges_out)
{
    /* 1. unique words */
    smap words = {0};
    int64_t *freq = NULL;
    size_t nw = 0, capw = 0;
    const uint8_t **wptr = NULL;
    int32_t *wl = NULL;
    int rc = LINA_OK;
    size_t i = 0;
    while (i < len) {
        size_t sl = 0;
        size_t j = nspecial ? find_special(special, nspecial, s, len, i, &sl) : len;
        size_t k = i;
        while (k < j) {
            size_t e = bl_next(s, j, k);
            int32_t v = (int32_t)nw;
            int r = smap_put(&words, s + k, e - k, &v);
            if (r < 0) {
                rc = LINA_ENOMEM;
                goto done1;
            }
            if (r == 1) {
                if (nw == capw) {
                    capw = capw ? capw * 2 : 65536;
                    int64_t *f = realloc(freq, capw * sizeof *f);
                    if (f) {
                        freq = f;
                    }
                    const uint8_t **p = realloc(wptr, capw * sizeof *p);
                    if (p) {
                        wptr = p;
                    }
                    int32_t *q = realloc(wl, capw * sizeof *q);
                    if (q) {
                        wl = q;
                    }
                    if (!f || !p || !q) {
                        rc = LINA_ENOMEM;
                        goto done1;
                    }
                }
                if (e - k > (size_t)INT32_MAX / 2) {
                    rc = lina_set_error(LINA_EINVAL, "tokenizer train: a word is too long");
                    goto done1;
                }
                freq[nw] = 0;
                wptr[nw] = s + k;
                wl[nw] = (int32_t)(e - k);
                nw++;
            }
            freq[v]++;
            k = e;
        }
        i = j + sl;
    }
    if (nw > (size_t)INT32_MAX - 1) {
        rc = lina_set_error(LINA_EINVAL, "tokenizer train: too many distinct words");
        goto done1;
    }
    /* 2. symbols */
    int64_t total = 0;
    for (size_t w = 0; w < nw; w++) {
        total += wl[w];
    }
    tr->nwords = (int32_t)nw;
    tr->sym = malloc((size_t)(total ? total : 1) * sizeof *tr->sym);
    tr->wstart = malloc((nw ? nw : 1) * sizeof *tr->wstart);
    tr->wlen = malloc((nw ? nw : 1) * sizeof *tr->wlen);
    tr->wfreq = malloc((nw ? nw : 1) * sizeof *tr->wfreq);
    if (!tr->sym || !tr->wstart || !tr->wlen || !tr->wfreq) {
        rc = LINA_ENOMEM;
        goto done1;
    }
    {
        int64_t off = 0;
        for (size_t w = 0; w < nw; w++) {
            tr->wstart[w] = off;
            tr->wlen[w] = wl[w];
            tr->wfreq[w] = freq[w];
            for (int32_t c = 0; c < wl[w]; c++) {
                tr->sym[off + c] = wptr[w][c];
            }
            off += wl[w];
        }
    }
done1:
    smap_free(&words);
    free(freq);
    free(wptr);
    free(wl);
    if (rc) {
        return rc == LINA_ENOMEM ? lina_set_error(LINA_ENOMEM, "tokenizer train: out of memory") : rc;
    }

    /* 3. pair counts */
    for (int32_t w = 0; w < tr->nwords; w++) {
        const int32_t *q = tr->sym + tr->wstart[w];
        for (int32_t c = 0; c + 1 < tr->wlen[w]; c++) {
            int32_t p = pair_get(tr, q[c], q[c + 1]);
            if (p < 0 || occ_add(&tr->pairs[p], w)) {
                return lina_set_error(LINA_ENOMEM, "tokenizer train: out of memory");
            }
            tr->pairs[p].count += tr->wfreq[w];
        }
    }
    for (int32_t p = 0; p < tr->npairs; p++) {
        if (heap_push(tr, (theap_ent){tr->pairs[p].count, tr->pairs[p].key, p})) {
            return lina_set_error(LINA_ENOMEM, "tokenizer train: out of memory");
        }
    }

    /* 4. merges */
    int32_t (*merges)[3] = NULL;
    int nm = 0, capm = 0;
    int32_t *touched = NULL;
    size_t ntouched = 0, captouched = 0;
    int32_t step = 0;
    rc = LINA_OK;
    while (tv->n + nspecial < target && tr->nheap > 0) {
        theap_ent e = heap_pop(tr);
        pair_info *pi = &tr->pairs[e.pidx];
        if (pi->count != e.count) {
            if (pi->count > 0 && heap_push(tr, (theap_ent){pi->count, pi->key, e.pidx})) {
                rc = LINA_ENOMEM;
                break;
            }
            continue;
        }
        if (e.count < 2) {
            break;
        }
        int32_t a = (int32_t)(e.key >> 32), b = (int32_t)(e.key & 0xffffffffu);
        int32_t la = tv->nbytes[a], lb = tv->nbytes[b];
        uint8_t *nb = malloc((size_t)(la + lb));
        if (!nb) {
            rc = LINA_ENOMEM;
            break;
        }
        memcpy(nb, tv->bytes[a], (size_t)la);
        memcpy(nb + la, tv->bytes[b], (size_t)lb);
        int32_t t;
        if (tvocab_add(tv, nb, la + lb, &t) < 0) {
            free(nb);
            rc = LINA_ENOMEM;
            break;
        }
        if (nm == capm) {
            capm = capm ? capm * 2 : 1024;
            int32_t(*q)[3] = realloc(merges, (size_t)capm * sizeof *q);
            if (!q) {
                rc = LINA_ENOMEM;
                break;
            }
            merges = q;
        }
        merges[nm][0] = a;
        merges[nm][1] = b;
        merges[nm][2] = t;
        nm++;
        step++;
        ntouched = 0;
        /* rewrite the words that contain (a, b) */
        int32_t pid = e.pidx;
        for (int32_t k = 0; k < tr->pairs[pid].nocc && !rc; k++) {
            int32_t w = tr->pairs[pid].occ[k];
            int32_t *q = tr->sym + tr->wstart[w];
            int32_t n = tr->wlen[w], c;
            for (c = 0; c + 1 < n; c++) {
                if (q[c] == a && q[c + 1] == b) {
                    break;
                }
            }
            if (c + 1 >= n) {
                continue; /* stale entry */
            }
            int64_t f = tr->wfreq[w];
            for (c = 0; c + 1 < n; c++) {
                int32_t p = (int32_t)u64map_get(&tr->pidx, ((uint64_t)(uint32_t)q[c] << 32) | (uint32_t)q[c + 1]);
                tr->pairs[p].count -= f;
            }
            int32_t o = 0;
            for (c = 0; c < n; c++) {
                if (c + 1 < n && q[c] == a && q[c + 1] == b) {
                    q[o++] = t;
                    c++;
                } else {
                    q[o++] = q[c];
                }
            }
            tr->wlen[w] = n = o;
            for (c = 0; c + 1 < n; c++) {
                int32_t p = pair_get(tr, q[c], q[c + 1]);
                if (p < 0) {
                    rc = LINA_ENOMEM;
                    break;
                }
                tr->pairs[p].count += f;
                if (q[c] == t || q[c + 1] == t) {
                    if (occ_add(&tr->pairs[p], w)) {
                        rc = LINA_ENOMEM;
                        break;
                    }
                    if (tr->pairs[p].stamp != step) {
                        tr->pairs[p].stamp = step;
                        if (ntouched == captouched) {
                            captouched = captouched ? captouched * 2 : 256;
                            int32_t *tq = realloc(touched, captouched * sizeof *tq);
                            if (!tq) {
                                rc = LINA_ENOMEM;
                                break;
                            }
                            touched = tq;
                        }
                        touched[ntouched++] = p;
                    }
                }
            }
        }
        /* the merged pair's word list is no longer needed */
        free(tr->pairs[pid].occ);
        tr->pairs[pid].occ = NULL;
        tr->pairs[pid].nocc = tr->pairs[pid].capocc = 0;
        for (size_t k = 0; k < ntouched && !rc; k++) {
            pair_info *p = &tr->pairs[touched[k]];
            if (p->count > 0 && heap_push(tr, (theap_ent){p->count, p->key, touched[k]})) {
                rc = LINA_ENOMEM;
            }
        }
        if (rc) {
            break;
        }
    }
    free(touched);
    if (rc) {
        free(merges);
        return lina_set_error(LINA_ENOMEM, "tokenizer train: out of memory");
    }
    *merges_out = merges;
    *nmerges_out = nm;
    return LINA_OK;
}

int lina_tokenizer_train(const char *text, size_t len, int vocab_size, const char *const *special, int nspecial,
                         lina_tokenizer **out)
{
    if (!out || (!text && len) || nspecial < 0 || (nspecial && !special)) {
        return lina_set_error(LINA_EINVAL, "lina_tokenizer_train: bad argument");
    }
    *out = NULL;
    if (vocab_size < 256 + nspecial || vocab_size > TOK_MAX_VOCAB) {
        return lina_set_error(LINA_EINVAL, "tokenizer train: vocab size %d must be in [256 + %d specials, %d]",
                              vocab_size, nspecial, TOK_MAX_VOCAB);
    }
    for (int k = 0; k < nspecial; k++) {
        size_t l = special[k] ? strlen(special[k]) : 0;
        if (!l || !utf8_valid((const uint8_t *)special[k], l)) {
            return lina_set_error(LINA_EINVAL, "tokenizer train: special token %d is empty or not valid UTF-8", k);
        }
        for (int j = 0; j < k; j++) {
            if (!strcmp(special[j], special[k])) {
                return lina_set_error(LINA_EINVAL, "tokenizer train: special token '%s' given twice", special[k]);
            }
        }
    }
    trainer tr;
    memset(&tr, 0, sizeof tr);
    tvocab tv;
    memset(&tv, 0, sizeof tv);
    int rc = LINA_OK;
    for (int b = 0; b < 256 && !rc; b++) {
        uint8_t *p = malloc(1);
        int32_t id;
        if (!p) {
            rc = LINA_ENOMEM;
            break;
        }
        p[0] = (uint8_t)b;
        if (tvocab_add(&tv, p, 1, &id) < 0) {
            free(p);
            rc = LINA_ENOMEM;
        }
    }
    int32_t(*merges)[3] = NULL;
    int nm = 0;
    if (rc) {
        rc = lina_set_error(LINA_ENOMEM, "tokenizer train: out of memory");
    } else {
        rc = train_core(&tr, &tv, (const uint8_t *)text, len, vocab_size, special, nspecial, &merges, &nm);
    }
    trainer_free(&tr);
    lina_tokenizer *t = NULL;
    if (!rc) {
        t = tok_alloc(tv.n + nspecial);
        if (!t) {
            rc = lina_set_error(LINA_ENOMEM, "tokenizer train: out of memory");
        }
    }
    if (!rc) {
        t->kind = KIND_BYTELEVEL;
        t->nspecial_trained = nspecial;
        for (int32_t i = 0; i < tv.n && !rc; i++) {
            t->bytes[i] = tv.bytes[i];
            t->nbytes[i] = tv.nbytes[i];
            tv.bytes[i] = NULL;
            t->piece[i] = bl_piece(t->bytes[i], (size_t)t->nbytes[i]);
            if (!t->piece[i]) {
                rc = LINA_ENOMEM;
            }
        }
        for (int k = 0; k < nspecial && !rc; k++) {
            int id = tv.n + k;
            size_t l = strlen(special[k]);
            t->piece[id] = malloc(l + 1);
            t->bytes[id] = malloc(l + 1);
            if (!t->piece[id] || !t->bytes[id]) {
                rc = LINA_ENOMEM;
                break;
            }
            memcpy(t->piece[id], special[k], l + 1);
            memcpy(t->bytes[id], special[k], l + 1);
            t->nbytes[id] = (int32_t)l;
            t->is_added[id] = 1;
        }
        if (rc) {
            rc = lina_set_error(LINA_ENOMEM, "tokenizer train: out of memory");
        }
    }
    if (!rc) {
        t->merges = merges;
        t->nmerges = nm;
        merges = NULL;
        rc = tok_index(t, "tokenizer train");
    }
    for (int32_t i = 0; i < tv.n; i++) {
        free(tv.bytes[i]);
    }
    free(tv.bytes);
    free(tv.nbytes);
    smap_free(&tv.map);
    free(merges);
    if (rc) {
        lina_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return LINA_OK;
}

/* ------------------------------------------------------------ saving */

static cJSON *bytelevel_obj(int add_prefix_space)
{
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "type", "ByteLevel");
        cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
        cJSON_AddBoolToObject(o, "trim_offsets", 1);
        cJSON_AddBoolToObject(o, "use_regex", 1);
    }
    return o;
}

static cJSON *tok_json(const lina_tokenizer *t)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        return NULL;
    }
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; added && i < t->n; i++) {
        if (!t->is_added[i]) {
            continue;
        }
        cJSON *a = cJSON_CreateObject();
        if (!a) {
            cJSON_Delete(root);
            return NULL;
        }
        cJSON_AddNumberToObject(a, "id", i);
        cJSON_AddStringToObject(a, "content", t->piece[i]);
        cJSON_AddBoolToObject(a, "single_word", 0);
        cJSON_AddBoolToObject(a, "lstrip", 0);
        cJSON_AddBoolToObject(a, "rstrip", 0);
        cJSON_AddBoolToObject(a, "normalized", 0);
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddItemToArray(added, a);
    }
    cJSON_AddNullToObject(root, "normalizer");
    cJSON_AddItemToObject(root, "pre_tokenizer", bytelevel_obj(t->add_prefix_space));
    cJSON_AddNullToObject(root, "post_processor");
    cJSON_AddItemToObject(root, "decoder", bytelevel_obj(t->add_prefix_space));
    cJSON *m = cJSON_AddObjectToObject(root, "model");
    if (!m) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddNullToObject(m, "continuing_subword_prefix");
    cJSON_AddNullToObject(m, "end_of_word_suffix");
    cJSON_AddBoolToObject(m, "fuse_unk", 0);
    cJSON_AddBoolToObject(m, "byte_fallback", 0);
    cJSON *v = cJSON_AddObjectToObject(m, "vocab");
    cJSON *mg = cJSON_AddArrayToObject(m, "merges");
    if (!v || !mg) {
        cJSON_Delete(root);
        return NULL;
    }
    for (int i = 0; i < t->n; i++) {
        cJSON *num = cJSON_CreateNumber(i);
        if (!num) {
            cJSON_Delete(root);
            return NULL;
        }
        cJSON_AddItemToObject(v, t->piece[i], num);
    }
    bbuf b = {0};
    for (int r = 0; r < t->nmerges; r++) {
        const char *pa = t->piece[t->merges[r][0]], *pb = t->piece[t->merges[r][1]];
        b.n = 0;
        cJSON *s = NULL;
        if (!bbuf_put(&b, pa, strlen(pa)) && !bbuf_put(&b, " ", 1) && !bbuf_put(&b, pb, strlen(pb))) {
            s = cJSON_CreateString((const char *)b.p);
        }
        if (!s) {
            free(b.p);
            cJSON_Delete(root);
            return NULL;
        }
        cJSON_AddItemToArray(mg, s);
    }
    free(b.p);
    return root;
}

int lina_tokenizer_save(const lina_tokenizer *t, const char *path)
{
    if (!t || !path) {
        return lina_set_error(LINA_EINVAL, "lina_tokenizer_save: NULL argument");
    }
    char *js;
    if (t->json) {
        js = cJSON_PrintUnformatted(t->json);
    } else {
        cJSON *root = tok_json(t);
        js = root ? cJSON_PrintUnformatted(root) : NULL;
        cJSON_Delete(root);
    }
    if (!js) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory building the JSON", path);
    }
    lina_afile f;
    int rc = lina_afile_open(&f, path);
    if (rc == LINA_OK) {
        lina_afile_write(&f, js, strlen(js));
        lina_afile_write(&f, "\n", 1);
        rc = lina_afile_commit(&f);
    }
    free(js);
    return rc;
}

/* ------------------------------------------------------------ loading */

/* "type" of a component object, or NULL */
static const char *comp_type(const cJSON *o)
{
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}

static int is_meta_str(const cJSON *s)
{
    return cJSON_IsString(s) && strcmp(s->valuestring, META) == 0;
}

/* the configuration read from normalizer / pre_tokenizer / decoder */
typedef struct tj_conf {
    int bytelevel_pre, bytelevel_dec, add_prefix_space, use_regex;
    int sp_replace, sp_prepend, sp_strip_lead, metaspace, sp_split;
} tj_conf;

static int read_normalizer(const cJSON *o, tj_conf *c, const char *name, int depth)
{
    if (!o || cJSON_IsNull(o)) {
        return LINA_OK;
    }
    const char *ty = comp_type(o);
    if (!cJSON_IsObject(o) || !ty) {
        return lina_set_error(LINA_EFORMAT, "%s: normalizer is not an object with a \"type\"", name);
    }
    if (!strcmp(ty, "Sequence") && depth == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "normalizers");
        if (!cJSON_IsArray(arr)) {
            return lina_set_error(LINA_EFORMAT, "%s: normalizer Sequence has no \"normalizers\" array", name);
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, arr)
        {
            int rc = read_normalizer(it, c, name, 1);
            if (rc) {
                return rc;
            }
        }
        return LINA_OK;
    }
    if (!strcmp(ty, "Prepend")) {
        if (!is_meta_str(cJSON_GetObjectItemCaseSensitive(o, "prepend"))) {
            return lina_set_error(LINA_EFORMAT, "%s: normalizer Prepend supports only \"prepend\": \"\\u2581\"", name);
        }
        c->sp_prepend = PREP_ALWAYS;
        return LINA_OK;
    }
    if (!strcmp(ty, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(pat, "String");
        if (!cJSON_IsString(ps) || strcmp(ps->valuestring, " ") != 0 ||
            !is_meta_str(cJSON_GetObjectItemCaseSensitive(o, "content"))) {
            return lina_set_error(LINA_EFORMAT,
                                  "%s: normalizer Replace supports only {\"String\": \" \"} -> \"\\u2581\"", name);
        }
        c->sp_replace = 1;
        return LINA_OK;
    }
    return lina_set_error(LINA_EFORMAT, "%s: normalizer '%s' is not supported (only Prepend/Replace with U+2581)",
                          name, ty);
}

static int read_metaspace(const cJSON *o, tj_conf *c, const char *name, const char *what)
{
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(o, "replacement");
    if (rep && !is_meta_str(rep)) {
        return lina_set_error(LINA_EFORMAT, "%s: %s Metaspace supports only \"replacement\": \"\\u2581\"", name, what);
    }
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(o, "prepend_scheme");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(o, "add_prefix_space");
    int prep = PREP_IF_MISSING;
    if (cJSON_IsString(ps)) {
        if (!strcmp(ps->valuestring, "always")) {
            prep = PREP_IF_MISSING;
        } else if (!strcmp(ps->valuestring, "first")) {
            prep = PREP_FIRST;
        } else if (!strcmp(ps->valuestring, "never")) {
            prep = PREP_NONE;
        } else {
            return lina_set_error(LINA_EFORMAT, "%s: %s Metaspace has an unknown prepend_scheme '%s'", name, what,
                                  ps->valuestring);
        }
    } else if (ps && !cJSON_IsNull(ps)) {
        return lina_set_error(LINA_EFORMAT, "%s: %s Metaspace prepend_scheme is not a string", name, what);
    } else if (cJSON_IsBool(ap)) {
        prep = cJSON_IsTrue(ap) ? PREP_IF_MISSING : PREP_NONE;
    }
    c->metaspace = 1;
    return prep;
}

static int read_pre(const cJSON *o, tj_conf *c, const char *name, int depth)
{
    if (!o || cJSON_IsNull(o)) {
        return LINA_OK;
    }
    const char *ty = comp_type(o);
    if (!cJSON_IsObject(o) || !ty) {
        return lina_set_error(LINA_EFORMAT, "%s: pre_tokenizer is not an object with a \"type\"", name);
    }
    if (!strcmp(ty, "Sequence") && depth == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers");
        if (!cJSON_IsArray(arr)) {
            return lina_set_error(LINA_EFORMAT, "%s: pre_tokenizer Sequence has no \"pretokenizers\" array", name);
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, arr)
        {
            int rc = read_pre(it, c, name, 1);
            if (rc) {
                return rc;
            }
        }
        return LINA_OK;
    }
    if (!strcmp(ty, "ByteLevel")) {
        const cJSON *ap = cJSON_GetObjectItemCaseSensitive(o, "add_prefix_space");
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(o, "use_regex");
        c->bytelevel_pre = 1;
        c->add_prefix_space = cJSON_IsTrue(ap);
        c->use_regex = ur ? cJSON_IsTrue(ur) : 1;
        return LINA_OK;
    }
    if (!strcmp(ty, "Metaspace")) {
        int p = read_metaspace(o, c, name, "pre_tokenizer");
        if (p < 0) {
            return p;
        }
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "split");
        if (sp && !cJSON_IsBool(sp)) {
            return lina_set_error(LINA_EFORMAT, "%s: pre_tokenizer Metaspace split is not a boolean", name);
        }
        c->sp_replace = 1;
        c->sp_prepend = p;
        c->sp_split = sp ? cJSON_IsTrue(sp) : 1;
        return LINA_OK;
    }
    return lina_set_error(LINA_EFORMAT,
                          "%s: pre_tokenizer '%s' is not supported (only ByteLevel with GPT-2's split, or Metaspace)",
                          name, ty);
}

static int read_decoder(const cJSON *o, tj_conf *c, const char *name, int depth)
{
    if (!o || cJSON_IsNull(o)) {
        return LINA_OK;
    }
    const char *ty = comp_type(o);
    if (!cJSON_IsObject(o) || !ty) {
        return lina_set_error(LINA_EFORMAT, "%s: decoder is not an object with a \"type\"", name);
    }
    if (!strcmp(ty, "Sequence") && depth == 0) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "decoders");
        if (!cJSON_IsArray(arr)) {
            return lina_set_error(LINA_EFORMAT, "%s: decoder Sequence has no \"decoders\" array", name);
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, arr)
        {
            int rc = read_decoder(it, c, name, 1);
            if (rc) {
                return rc;
            }
        }
        return LINA_OK;
    }
    if (!strcmp(ty, "ByteLevel")) {
        c->bytelevel_dec = 1;
        return LINA_OK;
    }
    if (!strcmp(ty, "Metaspace")) {
        int p = read_metaspace(o, c, name, "decoder");
        if (p < 0) {
            return p;
        }
        c->sp_strip_lead = p != PREP_NONE;
        return LINA_OK;
    }
    if (!strcmp(ty, "ByteFallback") || !strcmp(ty, "Fuse")) {
        return LINA_OK;
    }
    if (!strcmp(ty, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const cJSON *cont = cJSON_GetObjectItemCaseSensitive(o, "content");
        if (!is_meta_str(cJSON_GetObjectItemCaseSensitive(pat, "String")) || !cJSON_IsString(cont) ||
            strcmp(cont->valuestring, " ") != 0) {
            return lina_set_error(LINA_EFORMAT, "%s: decoder Replace supports only \"\\u2581\" -> \" \"", name);
        }
        return LINA_OK;
    }
    if (!strcmp(ty, "Strip")) {
        const cJSON *cont = cJSON_GetObjectItemCaseSensitive(o, "content");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "start");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "stop");
        if (!cJSON_IsString(cont) || strcmp(cont->valuestring, " ") != 0 || !cJSON_IsNumber(st) ||
            st->valuedouble < 0 || st->valuedouble > 1 || (sp && (!cJSON_IsNumber(sp) || sp->valuedouble != 0))) {
            return lina_set_error(LINA_EFORMAT, "%s: decoder Strip supports only content \" \", start 0/1, stop 0",
                                  name);
        }
        c->sp_strip_lead = st->valuedouble == 1;
        return LINA_OK;
    }
    return lina_set_error(LINA_EFORMAT, "%s: decoder '%s' is not supported", name, ty);
}

/* integer id in [0, TOK_MAX_VOCAB) or -1 */
static int json_id(const cJSON *v)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= TOK_MAX_VOCAB ||
        v->valuedouble != (double)(int)v->valuedouble) {
        return -1;
    }
    return (int)v->valuedouble;
}

static char *dup_str(const char *s)
{
    size_t l = strlen(s);
    char *d = malloc(l + 1);
    if (d) {
        memcpy(d, s, l + 1);
    }
    return d;
}

static int isxdigit_ascii(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

/* decoded bytes of a vocabulary piece; 1 ok, 0 not representable, <0 no memory */
static int piece_bytes(const lina_tokenizer *t, const char *piece, const int *inv, uint8_t **out, int32_t *nout)
{
    size_t l = strlen(piece);
    uint8_t *b = malloc(l + 1);
    if (!b) {
        return LINA_ENOMEM;
    }
    size_t k = 0;
    const uint8_t *s = (const uint8_t *)piece;
    if (t->kind == KIND_BYTELEVEL) {
        size_t i = 0;
        while (i < l) {
            int cp, n = utf8_len(s + i, l - i, &cp);
            if (!n || cp >= 0x144 || inv[cp] < 0) {
                free(b);
                return 0;
            }
            b[k++] = (uint8_t)inv[cp];
            i += (size_t)n;
        }
    } else {
        unsigned hx;
        char tail;
        if (t->byte_fallback && l == 6 && sscanf(piece, "<0x%2X%c", &hx, &tail) == 2 && tail == '>' &&
            isxdigit_ascii(piece[3]) && isxdigit_ascii(piece[4])) {
            b[k++] = (uint8_t)hx;
        } else {
            for (size_t i = 0; i < l; i++) {
                if (i + 3 <= l && memcmp(s + i, META, 3) == 0) {
                    b[k++] = ' ';
                    i += 2;
                } else {
                    b[k++] = s[i];
                }
            }
        }
    }
    b[k] = 0;
    *out = b;
    *nout = (int32_t)k;
    return 1;
}

/* split a merge entry ("a b" or ["a", "b"]) into two pieces */
static int merge_parts(const cJSON *it, char **a, char **b)
{
    *a = *b = NULL;
    if (cJSON_IsString(it)) {
        const char *s = it->valuestring;
        const char *sp = strchr(s, ' ');
        if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' ')) {
            return 0;
        }
        size_t la = (size_t)(sp - s);
        *a = malloc(la + 1);
        *b = dup_str(sp + 1);
        if (!*a || !*b) {
            free(*a);
            free(*b);
            return LINA_ENOMEM;
        }
        memcpy(*a, s, la);
        (*a)[la] = 0;
        return 1;
    }
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2) {
        const cJSON *x = cJSON_GetArrayItem(it, 0), *y = cJSON_GetArrayItem(it, 1);
        if (!cJSON_IsString(x) || !cJSON_IsString(y)) {
            return 0;
        }
        *a = dup_str(x->valuestring);
        *b = dup_str(y->valuestring);
        if (!*a || !*b) {
            free(*a);
            free(*b);
            return LINA_ENOMEM;
        }
        return 1;
    }
    return 0;
}

static int parse_model(lina_tokenizer **out, cJSON *root, const char *name)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        return lina_set_error(LINA_EFORMAT, "%s: no \"model\" object", name);
    }
    const char *mty = comp_type(model);
    if (cJSON_GetObjectItemCaseSensitive(model, "type") && !mty) {
        return lina_set_error(LINA_EFORMAT, "%s: model \"type\" is not a string", name);
    }
    if (mty && strcmp(mty, "BPE") != 0) {
        return lina_set_error(LINA_EFORMAT, "%s: model type '%s' is not supported (only BPE)", name, mty);
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab)) {
        return lina_set_error(LINA_EFORMAT, "%s: model has no \"vocab\" object", name);
    }
    if (!cJSON_IsArray(merges)) {
        return lina_set_error(LINA_EFORMAT, "%s: model has no \"merges\" array", name);
    }
    const char *strkeys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(model, strkeys[k]);
        if (x && !cJSON_IsNull(x) && !(cJSON_IsString(x) && !x->valuestring[0])) {
            return lina_set_error(LINA_EFORMAT, "%s: model %s is not supported", name, strkeys[k]);
        }
    }
    const char *boolkeys[] = {"byte_fallback", "fuse_unk", "ignore_merges"};
    int bools[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(model, boolkeys[k]);
        if (x && !cJSON_IsNull(x) && !cJSON_IsBool(x)) {
            return lina_set_error(LINA_EFORMAT, "%s: model %s is not a boolean", name, boolkeys[k]);
        }
        bools[k] = cJSON_IsTrue(x);
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (unk && !cJSON_IsNull(unk) && !cJSON_IsString(unk)) {
        return lina_set_error(LINA_EFORMAT, "%s: model unk_token is not a string", name);
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        return lina_set_error(LINA_EFORMAT, "%s: \"added_tokens\" is not an array", name);
    }

    /* the pipeline */
    tj_conf c;
    memset(&c, 0, sizeof c);
    c.use_regex = 1;
    int rc = read_normalizer(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), &c, name, 0);
    if (!rc) {
        rc = read_pre(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &c, name, 0);
    }
    if (!rc) {
        rc = read_decoder(cJSON_GetObjectItemCaseSensitive(root, "decoder"), &c, name, 0);
    }
    if (rc) {
        return rc;
    }
    int kind;
    if (c.bytelevel_pre) {
        if (c.sp_replace || c.metaspace) {
            return lina_set_error(LINA_EFORMAT, "%s: mixes ByteLevel with Metaspace/U+2581 components", name);
        }
        kind = KIND_BYTELEVEL;
    } else if (c.sp_replace) {
        kind = KIND_SP;
    } else {
        return lina_set_error(LINA_EFORMAT,
                              "%s: unsupported pipeline: needs a ByteLevel pre_tokenizer or SentencePiece-style "
                              "U+2581 handling (Metaspace, or Prepend/Replace normalizers)",
                              name);
    }

    /* ids */
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab)
    {
        int id = json_id(it);
        if (id < 0) {
            return lina_set_error(LINA_EFORMAT, "%s: vocab entry '%s' has no valid id", name,
                                  it->string ? it->string : "");
        }
        n = id + 1 > n ? id + 1 : n;
    }
    if (cJSON_IsArray(added)) {
        int k = 0;
        cJSON_ArrayForEach(it, added)
        {
            const cJSON *cont = cJSON_GetObjectItemCaseSensitive(it, "content");
            int id = json_id(cJSON_GetObjectItemCaseSensitive(it, "id"));
            if (!cJSON_IsObject(it) || !cJSON_IsString(cont) || !cont->valuestring[0] || id < 0) {
                return lina_set_error(LINA_EFORMAT,
                                      "%s: added_tokens[%d] needs a non-empty \"content\" and a valid \"id\"", name, k);
            }
            n = id + 1 > n ? id + 1 : n;
            k++;
        }
    }
    if (n == 0) {
        return lina_set_error(LINA_EFORMAT, "%s: empty vocab", name);
    }
    size_t ntokens = (size_t)cJSON_GetArraySize(vocab) + (size_t)(cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0);
    if ((size_t)n > ntokens) {
        return lina_set_error(LINA_EFORMAT,
                              "%s: ids run to %d but there are only %zu tokens (ids must be 0..%d without gaps)", name,
                              n - 1, ntokens, n - 1);
    }
    lina_tokenizer *t = tok_alloc(n);
    if (!t) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", name);
    }
    t->kind = kind;
    t->byte_fallback = bools[0];
    t->fuse_unk = bools[1];
    t->ignore_merges = bools[2];
    t->add_prefix_space = c.add_prefix_space;
    t->use_regex = c.use_regex;
    t->sp_prepend = c.sp_prepend;
    t->sp_strip_lead = c.sp_strip_lead;
    t->sp_split = c.sp_split;
    cJSON_ArrayForEach(it, vocab)
    {
        int id = json_id(it);
        if (t->piece[id]) {
            rc = lina_set_error(LINA_EFORMAT, "%s: vocab id %d is used by both '%s' and '%s'", name, id, t->piece[id],
                                it->string);
            goto fail;
        }
        t->piece[id] = dup_str(it->string);
        if (!t->piece[id]) {
            goto nomem;
        }
    }
    if (cJSON_IsArray(added)) {
        cJSON_ArrayForEach(it, added)
        {
            const char *cont = cJSON_GetObjectItemCaseSensitive(it, "content")->valuestring;
            int id = json_id(cJSON_GetObjectItemCaseSensitive(it, "id"));
            if (t->piece[id] && strcmp(t->piece[id], cont) != 0) {
                rc = lina_set_error(LINA_EFORMAT, "%s: added token '%s' has id %d, which the vocab gives to '%s'", name,
                                    cont, id, t->piece[id]);
                goto fail;
            }
            if (t->is_added[id]) {
                rc = lina_set_error(LINA_EFORMAT, "%s: added_tokens lists id %d twice", name, id);
                goto fail;
            }
            if (!t->piece[id]) {
                t->piece[id] = dup_str(cont);
                if (!t->piece[id]) {
                    goto nomem;
                }
            }
            t->is_added[id] = 1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (!t->piece[i]) {
            rc = lina_set_error(LINA_EFORMAT, "%s: id %d has no token (ids must be 0..%d without gaps)", name, i,
                                n - 1);
            goto fail;
        }
    }
    /* decoded bytes */
    int inv[0x144];
    {
        int cp[256];
        bl_cp_table(cp);
        for (int i = 0; i < 0x144; i++) {
            inv[i] = -1;
        }
        for (int b = 0; b < 256; b++) {
            inv[cp[b]] = b;
        }
    }
    for (int i = 0; i < n; i++) {
        int r = 0;
        if (!t->is_added[i]) {
            r = piece_bytes(t, t->piece[i], inv, &t->bytes[i], &t->nbytes[i]);
            if (r < 0) {
                goto nomem;
            }
        }
        if (r == 0) {
            if (!t->is_added[i]) {
                rc = lina_set_error(LINA_EFORMAT,
                                    "%s: vocab token '%s' (id %d) has characters outside the byte-level alphabet",
                                    name, t->piece[i], i);
                goto fail;
            }
            size_t l = strlen(t->piece[i]);
            t->bytes[i] = malloc(l + 1);
            if (!t->bytes[i]) {
                goto nomem;
            }
            memcpy(t->bytes[i], t->piece[i], l + 1);
            t->nbytes[i] = (int32_t)l;
        }
    }
    rc = tok_index(t, name);
    if (rc) {
        goto fail;
    }
    if (cJSON_IsString(unk)) {
        t->unk_id = smap_get(&t->pmap, unk->valuestring, strlen(unk->valuestring));
        if (t->unk_id < 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: unk_token '%s' is not in the vocab", name, unk->valuestring);
            goto fail;
        }
    }
    /* merges */
    int nm = cJSON_GetArraySize(merges);
    t->merges = malloc((size_t)(nm ? nm : 1) * sizeof *t->merges);
    if (!t->merges) {
        goto nomem;
    }
    int k = 0;
    bbuf cat = {0};
    cJSON_ArrayForEach(it, merges)
    {
        char *a, *b;
        int r = merge_parts(it, &a, &b);
        if (r < 0) {
            free(cat.p);
            goto nomem;
        }
        if (r == 0) {
            free(cat.p);
            rc = lina_set_error(LINA_EFORMAT, "%s: merges[%d] is not \"a b\" or [\"a\", \"b\"]", name, k);
            goto fail;
        }
        int32_t ia = smap_get(&t->pmap, a, strlen(a)), ib = smap_get(&t->pmap, b, strlen(b));
        cat.n = 0;
        int32_t ir = -1;
        if (!bbuf_put(&cat, a, strlen(a)) && !bbuf_put(&cat, b, strlen(b))) {
            ir = smap_get(&t->pmap, cat.p, cat.n);
        }
        if (ia < 0 || ib < 0 || ir < 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: merges[%d] '%s %s': %s '%s' is not in the vocab", name, k, a, b,
                                ia < 0 ? "token" : ib < 0 ? "token" : "the merged token",
                                ia < 0 ? a : ib < 0 ? b : (const char *)cat.p);
            free(a);
            free(b);
            free(cat.p);
            goto fail;
        }
        free(a);
        free(b);
        uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
        int32_t v = t->nmerges;
        r = u64map_put(&t->mmap, key, &v);
        if (r < 0) {
            free(cat.p);
            goto nomem;
        }
        if (r == 1) { /* a repeated merge keeps its first rank */
            t->merges[t->nmerges][0] = ia;
            t->merges[t->nmerges][1] = ib;
            t->merges[t->nmerges][2] = ir;
            t->nmerges++;
        }
        k++;
    }
    free(cat.p);
    *out = t;
    return LINA_OK;
nomem:
    rc = lina_set_error(LINA_ENOMEM, "%s: out of memory", name);
fail:
    lina_tokenizer_free(t);
    return rc;
}

int lina_tokenizer_parse(const char *json, size_t len, const char *name, lina_tokenizer **out)
{
    if (!json || !out) {
        return lina_set_error(LINA_EINVAL, "lina_tokenizer_parse: NULL argument");
    }
    *out = NULL;
    name = name ? name : "tokenizer.json";
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t at = (e && e >= json && e <= json + len) ? (size_t)(e - json) : 0;
        return lina_set_error(LINA_EFORMAT, "%s: not valid JSON (near byte %zu)", name, at);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lina_set_error(LINA_EFORMAT, "%s: top level is not a JSON object", name);
    }
    lina_tokenizer *t = NULL;
    int rc = parse_model(&t, root, name);
    if (rc) {
        cJSON_Delete(root);
        return rc;
    }
    t->json = root;
    *out = t;
    return LINA_OK;
}

int lina_tokenizer_load(const char *path, lina_tokenizer **out)
{
    if (!path || !out) {
        return lina_set_error(LINA_EINVAL, "lina_tokenizer_load: NULL argument");
    }
    *out = NULL;
    char *buf;
    size_t n;
    int rc0 = lina_read_file(path, TOK_MAX_FILE, "tokenizer.json", &buf, &n);
    if (rc0) {
        return rc0;
    }
    int rc = lina_tokenizer_parse(buf, n, path, out);
    free(buf);
    return rc;
}
