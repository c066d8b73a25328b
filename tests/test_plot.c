/* test_plot.c -- PNG line plots and `lina plot`: the PNG is decoded back here
 * (chunks, CRCs, zlib, Adler32, filters) and checked pixel by pixel. */
#include "harness.h"
#include "lina.h"
#include "../src/io/plot.h"
#include "../src/cli/cli.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ PNG decoder */

typedef struct img {
    int w, h;
    uint8_t *px; /* (h, w, 3) */
    int ihdr_ok, crc_ok, adler_ok, zlib_ok;
    int btypes; /* bit k set: a deflate block of type k was seen */
    long file_size;
} img;

static uint32_t t_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc & 1) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
        }
    }
    return ~crc;
}

static uint32_t t_adler32(const uint8_t *p, size_t n)
{
    uint64_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) {
        a = (a + p[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (uint32_t)((b << 16) | a);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

typedef struct bitr {
    const uint8_t *p;
    size_t n, pos; /* pos in bits */
    int bad;
} bitr;

static uint32_t getbits(bitr *r, int n)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        if (r->pos >= r->n * 8) {
            r->bad = 1;
            return 0;
        }
        v |= (uint32_t)((r->p[r->pos >> 3] >> (r->pos & 7)) & 1) << i;
        r->pos++;
    }
    return v;
}

/* one fixed-Huffman literal/length symbol (codes are read MSB first) */
static int fixed_symbol(bitr *r)
{
    uint32_t c = 0;
    for (int i = 0; i < 7; i++) {
        c = (c << 1) | getbits(r, 1);
    }
    if (c <= 23) {
        return 256 + (int)c;
    }
    c = (c << 1) | getbits(r, 1);
    if (c >= 0x30 && c <= 0xBF) {
        return (int)c - 0x30;
    }
    if (c >= 0xC0 && c <= 0xC7) {
        return 280 + (int)c - 0xC0;
    }
    c = (c << 1) | getbits(r, 1);
    return 144 + (int)c - 0x190;
}

static const int LB[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                           31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const int LE[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                           2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const int DB[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,
                           33,  49,  65,  97,  129, 193,  257,  385,  513,  769,
                           1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const int DE[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                           6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* Inflate stored and fixed-Huffman blocks into out (capacity cap); returns
 * the length or -1. Dynamic blocks are not produced by lina and fail. */
static long inflate_simple(const uint8_t *z, size_t n, uint8_t *out, size_t cap, int *btypes)
{
    bitr r = {z, n, 0, 0};
    size_t o = 0;
    int final = 0;
    while (!final) {
        final = (int)getbits(&r, 1);
        int type = (int)getbits(&r, 2);
        *btypes |= 1 << type;
        if (r.bad) {
            return -1;
        }
        if (type == 0) {
            r.pos = (r.pos + 7) & ~(size_t)7;
            uint32_t len = getbits(&r, 16), nlen = getbits(&r, 16);
            if (r.bad || (len ^ 0xFFFFu) != nlen || r.pos / 8 + len > n || o + len > cap) {
                return -1;
            }
            memcpy(out + o, z + r.pos / 8, len);
            o += len;
            r.pos += (size_t)len * 8;
        } else if (type == 1) {
            for (;;) {
                int sym = fixed_symbol(&r);
                if (r.bad || sym > 285) {
                    return -1;
                }
                if (sym < 256) {
                    if (o >= cap) {
                        return -1;
                    }
                    out[o++] = (uint8_t)sym;
                } else if (sym == 256) {
                    break;
                } else {
                    int li = sym - 257;
                    size_t len = (size_t)LB[li] + getbits(&r, LE[li]);
                    uint32_t dc = 0;
                    for (int i = 0; i < 5; i++) {
                        dc = (dc << 1) | getbits(&r, 1);
                    }
                    if (dc > 29) {
                        return -1;
                    }
                    size_t dist = (size_t)DB[dc] + getbits(&r, DE[dc]);
                    if (r.bad || dist > o || o + len > cap) {
                        return -1;
                    }
                    for (size_t i = 0; i < len; i++, o++) {
                        out[o] = out[o - dist];
                    }
                }
            }
        } else {
            return -1;
        }
    }
    return (long)o;
}

static int paeth(int a, int b, int c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c);
}

/* Decode an RGB8 PNG; returns 0 on success. */
static int png_load(const char *path, img *im)
{
    memset(im, 0, sizeof *im);
    FILE *f = fopen(path, "rb");
    if (!f) {
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)sz + 1);
    if (!buf || fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        fclose(f);
        free(buf);
        return -1;
    }
    fclose(f);
    im->file_size = sz;
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    int rc = -1;
    uint8_t *idat = NULL, *raw = NULL;
    size_t nidat = 0;
    if (sz < 8 || memcmp(buf, sig, 8) != 0) {
        goto done;
    }
    im->crc_ok = 1;
    size_t pos = 8;
    int seen_end = 0, first = 1;
    idat = malloc((size_t)sz);
    while (pos + 12 <= (size_t)sz) {
        uint32_t len = be32(buf + pos);
        const uint8_t *type = buf + pos + 4, *data = buf + pos + 8;
        if (pos + 12 + len > (size_t)sz) {
            goto done;
        }
        if (t_crc32(0, type, 4 + len) != be32(data + len)) {
            im->crc_ok = 0;
        }
        if (first) {
            if (memcmp(type, "IHDR", 4) != 0 || len != 13) {
                goto done;
            }
            im->w = (int)be32(data);
            im->h = (int)be32(data + 4);
            im->ihdr_ok = data[8] == 8 && data[9] == 2 && data[10] == 0 && data[11] == 0 &&
                          data[12] == 0 && im->w > 0 && im->h > 0 && im->w < 10000 && im->h < 10000;
            first = 0;
        } else if (!memcmp(type, "IDAT", 4)) {
            memcpy(idat + nidat, data, len);
            nidat += len;
        } else if (!memcmp(type, "IEND", 4)) {
            seen_end = 1;
            pos += 12 + len;
            break;
        }
        pos += 12 + len;
    }
    if (!seen_end || !im->ihdr_ok || pos != (size_t)sz || nidat < 6) {
        goto done;
    }
    im->zlib_ok = (idat[0] & 0x0F) == 8 && ((idat[0] << 8) | idat[1]) % 31 == 0 && !(idat[1] & 0x20);
    const size_t stride = (size_t)im->w * 3, nraw = (stride + 1) * (size_t)im->h;
    raw = malloc(nraw + 1);
    long got = inflate_simple(idat + 2, nidat - 6, raw, nraw + 1, &im->btypes);
    if (got != (long)nraw) {
        goto done;
    }
    im->adler_ok = t_adler32(raw, nraw) == be32(idat + nidat - 4);
    im->px = malloc(stride * (size_t)im->h);
    for (int y = 0; y < im->h; y++) {
        const uint8_t *src = raw + (size_t)y * (stride + 1);
        uint8_t *row = im->px + (size_t)y * stride;
        const uint8_t *up = y > 0 ? row - stride : NULL;
        if (src[0] > 4) {
            goto done;
        }
        for (size_t i = 0; i < stride; i++) {
            int a = i >= 3 ? row[i - 3] : 0, b = up ? up[i] : 0, c = (up && i >= 3) ? up[i - 3] : 0;
            int pred = src[0] == 0 ? 0 : src[0] == 1 ? a : src[0] == 2 ? b
                     : src[0] == 3 ? (a + b) / 2 : paeth(a, b, c);
            row[i] = (uint8_t)(src[1 + i] + pred);
        }
    }
    rc = 0;
done:
    if (rc != 0) {
        free(im->px);
        im->px = NULL;
    }
    free(buf);
    free(idat);
    free(raw);
    return rc;
}

/* ------------------------------------------------------------ pixel facts */

static const uint8_t BLUE[3] = {31, 119, 180}, ORANGE[3] = {255, 127, 14};

static int is_col(const img *im, int x, int y, const uint8_t c[3])
{
    const uint8_t *p = im->px + ((size_t)y * im->w + x) * 3;
    return p[0] == c[0] && p[1] == c[1] && p[2] == c[2];
}

static long count_col(const img *im, const uint8_t c[3])
{
    long n = 0;
    for (int y = 0; y < im->h; y++) {
        for (int x = 0; x < im->w; x++) {
            n += is_col(im, x, y, c);
        }
    }
    return n;
}

/* the row holding the most pixels of colour c (and that count) */
static int best_row(const img *im, const uint8_t c[3], int *count)
{
    int best = -1, bc = 0;
    for (int y = 0; y < im->h; y++) {
        int n = 0;
        for (int x = 0; x < im->w; x++) {
            n += is_col(im, x, y, c);
        }
        if (n > bc) {
            bc = n;
            best = y;
        }
    }
    *count = bc;
    return best;
}

/* mean row of colour c in column x (-1 if absent) */
static double col_mean_row(const img *im, int x, const uint8_t c[3])
{
    double s = 0;
    int n = 0;
    for (int y = 0; y < im->h; y++) {
        if (is_col(im, x, y, c)) {
            s += y;
            n++;
        }
    }
    return n ? s / n : -1;
}

/* colour-c columns in [first, last] of the curve: the leftmost and rightmost */
static void col_extent(const img *im, const uint8_t c[3], int *first, int *last)
{
    *first = -1;
    *last = -1;
    for (int x = 0; x < im->w; x++) {
        if (col_mean_row(im, x, c) >= 0) {
            if (*first < 0) {
                *first = x;
            }
            *last = x;
        }
    }
}

static char tmpdir[256];

static const char *tpath(const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static int leftover_tmp(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        n += strstr(e->d_name, ".tmp") != NULL;
    }
    if (d) {
        closedir(d);
    }
    return n;
}

static void write_text(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(s, f);
        fclose(f);
    }
}

/* ------------------------------------------------------------------ tests */

static void test_basic(void)
{
    double x[101], y0[101], y1[101];
    for (int i = 0; i <= 100; i++) {
        x[i] = i;
        y0[i] = 1.0;
        y1[i] = 2.0;
    }
    lina_plot_series s[2] = {{"low", x, y0, 101}, {"high", x, y1, 101}};
    lina_plot_opts o = {"Two lines", "step", "value", 0, 0, 0, 0};
    const char *p = tpath("basic.png");
    int rc = lina_plot_png(p, &o, s, 2);
    CHECK(rc == 0, "plot: two series written (%s)", rc ? lina_last_error() : "");
    img im;
    int lr = png_load(p, &im);
    CHECK(lr == 0, "png: decodes (signature, chunks, inflate)");
    if (lr) {
        return;
    }
    CHECK(im.w == 800 && im.h == 500 && im.ihdr_ok, "png: IHDR 800x500, 8-bit RGB, no interlace");
    CHECK(im.crc_ok, "png: every chunk CRC matches");
    CHECK(im.zlib_ok && im.adler_ok, "png: zlib header and Adler32 match");
    CHECK(im.file_size < 100000, "png: compressed (%ld bytes for 800x500)", im.file_size);
    static const uint8_t W[3] = {255, 255, 255}, K[3] = {0, 0, 0}, FR[3] = {150, 150, 150};
    CHECK(is_col(&im, 0, 0, W) && is_col(&im, 799, 499, W) && is_col(&im, 799, 0, W) &&
              is_col(&im, 0, 499, W),
          "plot: white background in the corners");
    int n0, n1;
    int r0 = best_row(&im, BLUE, &n0), r1 = best_row(&im, ORANGE, &n1);
    CHECK(n0 > 550 && n1 > 550, "plot: each constant series is a long horizontal line (%d, %d px)",
          n0, n1);
    CHECK(r1 < r0 - 100, "plot: the larger value is drawn higher (rows %d, %d)", r1, r0);
    /* the line is about 2 px thick: the coverage summed across it */
    int thick = 0;
    for (int x = 100; x < 700; x++) {
        double cov = 0;
        for (int y = r0 - 4; y <= r0 + 4; y++) {
            cov += (255.0 - im.px[((size_t)y * im.w + x) * 3]) / (255.0 - BLUE[0]);
        }
        thick += cov >= 1.9 && cov <= 3.2;
    }
    CHECK(thick > 400, "plot: lines are 2 px thick");
    /* legend: a colour sample away from the curves, inside a grey frame */
    long off0 = 0;
    for (int y = 0; y < im.h; y++) {
        for (int x = 0; x < im.w; x++) {
            off0 += abs(y - r0) > 3 && is_col(&im, x, y, BLUE);
        }
    }
    CHECK(off0 >= 30, "plot: legend sample of series 0 (%ld px)", off0);
    CHECK(count_col(&im, FR) > 100, "plot: legend frame");
    long black_top = 0, black_left = 0;
    for (int y = 0; y < 30; y++) {
        for (int x = 0; x < im.w; x++) {
            black_top += is_col(&im, x, y, K);
        }
    }
    for (int y = 0; y < im.h; y++) {
        for (int x = 0; x < 22; x++) {
            black_left += is_col(&im, x, y, K);
        }
    }
    CHECK(black_top > 100, "plot: title drawn (%ld px)", black_top);
    CHECK(black_left > 30, "plot: y label drawn (%ld px)", black_left);
    free(im.px);

    /* no title and no labels: the top band stays white */
    lina_plot_opts o2 = {NULL, NULL, NULL, 0, 0, 320, 240};
    s[0].label = NULL;
    s[1].label = NULL;
    rc = lina_plot_png(p, &o2, s, 2);
    CHECK(rc == 0 && png_load(p, &im) == 0, "plot: 320x240 without labels");
    if (im.px) {
        CHECK(im.w == 320 && im.h == 240, "plot: custom size in IHDR");
        long top = 0;
        for (int y = 0; y < 10; y++) {
            for (int x = 0; x < im.w; x++) {
                top += !is_col(&im, x, y, W);
            }
        }
        CHECK(top == 0, "plot: no title -> white top band");
        CHECK(count_col(&im, FR) == 0, "plot: no labels -> no legend");
        free(im.px);
    }
    CHECK(leftover_tmp() == 0, "plot: no temporary files left");
}

static void test_nan_gap(void)
{
    double x[100], y[100];
    for (int i = 0; i < 100; i++) {
        x[i] = i;
        y[i] = (i >= 40 && i < 60) ? NAN : 3.0;
    }
    y[5] = INFINITY;
    lina_plot_series s = {NULL, x, y, 100};
    const char *p = tpath("gap.png");
    img im;
    CHECK(lina_plot_png(p, NULL, &s, 1) == 0 && png_load(p, &im) == 0, "gap: written and decoded");
    if (!im.px) {
        return;
    }
    int n, r = best_row(&im, BLUE, &n);
    int first = -1, last = -1, runs = 0, gap = 0, prev = 0, cur_gap = 0;
    for (int xx = 0; xx < im.w; xx++) {
        int on = is_col(&im, xx, r, BLUE);
        if (on) {
            if (first < 0) {
                first = xx;
            }
            last = xx;
            if (!prev) {
                runs++;
                if (cur_gap > gap) {
                    gap = cur_gap;
                }
            }
            cur_gap = 0;
        } else if (first >= 0) {
            cur_gap++;
        }
        prev = on;
    }
    double frac = (double)gap / (last - first);
    CHECK(runs >= 2 && frac > 0.15 && frac < 0.27,
          "gap: NaN points break the line (runs %d, gap %.2f of the span)", runs, frac);
    free(im.px);

    /* all-NaN and empty series, a single point */
    double nx[3] = {NAN, NAN, NAN}, one_x = 5, one_y = 7;
    lina_plot_series e[3] = {{"nan", nx, nx, 3}, {"empty", NULL, NULL, 0}, {"one", &one_x, &one_y, 1}};
    CHECK(lina_plot_png(p, NULL, e, 2) == 0 && png_load(p, &im) == 0,
          "gap: all-NaN and empty series give an empty plot");
    if (im.px) {
        int nb;
        best_row(&im, BLUE, &nb);
        CHECK(nb <= 22, "gap: nothing drawn but the legend sample (%d px)", nb);
        free(im.px);
    }
    CHECK(lina_plot_png(p, NULL, e, 3) == 0 && png_load(p, &im) == 0, "gap: single point plotted");
    if (im.px) {
        static const uint8_t GREEN[3] = {44, 160, 44};
        CHECK(count_col(&im, GREEN) > 44 + 4, "gap: a single point gets a marker");
        free(im.px);
    }
    CHECK(lina_plot_png(p, NULL, NULL, 0) == 0, "gap: zero series is an empty plot");
}

static void test_log(void)
{
    double x[101], y[101];
    for (int i = 0; i <= 100; i++) {
        x[i] = i;
        y[i] = pow(10.0, i / 25.0);
    }
    lina_plot_series s = {NULL, x, y, 101};
    const char *p = tpath("log.png");
    img im;
    double dev[2] = {0, 0};
    for (int logy = 0; logy < 2; logy++) {
        lina_plot_opts o = {"exp", "x", "y", 0, logy, 0, 0};
        int ok = lina_plot_png(p, &o, &s, 1) == 0 && png_load(p, &im) == 0;
        CHECK(ok, "log: logy=%d written and decoded", logy);
        if (!ok) {
            return;
        }
        int a, b;
        col_extent(&im, BLUE, &a, &b);
        double ra = col_mean_row(&im, a + 3, BLUE), rb = col_mean_row(&im, b - 3, BLUE);
        double rm = col_mean_row(&im, (a + b) / 2, BLUE);
        dev[logy] = fabs(rm - (ra + rb) / 2);
        free(im.px);
    }
    CHECK(dev[1] < 3.0, "log: exponential data is straight on a log y axis (%.1f px)", dev[1]);
    CHECK(dev[0] > 100.0, "log: and strongly curved on a linear one (%.1f px)", dev[0]);

    /* log x: y = log10(x) is straight; non-positive x and y are skipped */
    double lx[60], ly[60];
    for (int i = 0; i < 60; i++) {
        lx[i] = pow(10.0, i / 20.0);
        ly[i] = log10(lx[i]);
    }
    lx[10] = 0.0;
    lx[11] = -3.0;
    s = (lina_plot_series){"log10", lx, ly, 60};
    lina_plot_opts o = {NULL, NULL, NULL, 1, 0, 0, 0};
    int ok = lina_plot_png(p, &o, &s, 1) == 0 && png_load(p, &im) == 0;
    CHECK(ok, "log: logx with non-positive x written");
    if (ok) {
        int a, b;
        col_extent(&im, BLUE, &a, &b);
        double ra = col_mean_row(&im, b - 3, BLUE), rb = col_mean_row(&im, b - 200, BLUE);
        double rm = col_mean_row(&im, b - 100, BLUE);
        CHECK(ra >= 0 && rb >= 0 && rm >= 0 && fabs(rm - (ra + rb) / 2) < 3.0,
              "log: log x axis straightens a logarithm");
        free(im.px);
    }
    /* everything non-positive on a log axis: nothing to draw, still a plot */
    double neg[3] = {-1, 0, -5};
    s = (lina_plot_series){NULL, x, neg, 3};
    lina_plot_opts ol = {NULL, NULL, NULL, 0, 1, 0, 0};
    ok = lina_plot_png(p, &ol, &s, 1) == 0 && png_load(p, &im) == 0;
    CHECK(ok && count_col(&im, BLUE) == 0, "log: all points non-positive -> empty plot");
    free(im.px);
    /* a narrow positive range and a very wide one */
    double nx[2] = {1, 2}, ny[2] = {1.001, 1.002}, wy[2] = {1e-30, 1e30};
    s = (lina_plot_series){NULL, nx, ny, 2};
    CHECK(lina_plot_png(p, &ol, &s, 1) == 0, "log: narrow range");
    s = (lina_plot_series){NULL, nx, wy, 2};
    CHECK(lina_plot_png(p, &ol, &s, 1) == 0, "log: 60 decades");
}

static void test_misc(void)
{
    const char *p = tpath("misc.png");
    /* many series, constant data, big and noisy data */
    enum { N = 20000 };
    double *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) {
        x[i] = i;
        y[i] = th_normal() * 1e-6 + 5e-3;
    }
    lina_plot_series s[10];
    char lab[10][16];
    for (int k = 0; k < 10; k++) {
        snprintf(lab[k], sizeof lab[k], "series %d", k);
        s[k] = (lina_plot_series){lab[k], x, y, k == 0 ? N : 50};
    }
    clock_t t0 = clock();
    int rc = lina_plot_png(p, NULL, s, 10);
    double dt = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(rc == 0, "misc: 10 series, 20000 noisy points (%.2f s)", dt);
    double c[3] = {4, 4, 4};
    lina_plot_series cs = {"const", x, c, 3};
    CHECK(lina_plot_png(p, NULL, &cs, 1) == 0, "misc: constant series");
    double huge[2] = {-1e308, 1e308};
    cs = (lina_plot_series){"huge", x, huge, 2};
    rc = lina_plot_png(p, NULL, &cs, 1);
    CHECK(rc == LINA_OK || rc == LINA_EINVAL, "misc: +-1e308 handled (rc %d)", rc);
    free(x);
    free(y);
}

static void test_errors(void)
{
    double x[2] = {0, 1}, y[2] = {0, 1};
    lina_plot_series s = {"a", x, y, 2};
    lina_clear_error();
    CHECK(lina_plot_png(NULL, NULL, &s, 1) == LINA_EINVAL && *lina_last_error(), "err: NULL path");
    CHECK(lina_plot_png(tpath("e.png"), NULL, &s, -1) == LINA_EINVAL, "err: nseries < 0");
    CHECK(lina_plot_png(tpath("e.png"), NULL, NULL, 1) == LINA_EINVAL, "err: NULL series");
    lina_plot_series bad = {"a", x, y, -3};
    CHECK(lina_plot_png(tpath("e.png"), NULL, &bad, 1) == LINA_EINVAL, "err: n < 0");
    bad = (lina_plot_series){"a", NULL, y, 2};
    CHECK(lina_plot_png(tpath("e.png"), NULL, &bad, 1) == LINA_EINVAL, "err: NULL x");
    lina_plot_opts small = {NULL, NULL, NULL, 0, 0, 10, 10};
    CHECK(lina_plot_png(tpath("e.png"), &small, &s, 1) == LINA_EINVAL, "err: image too small");
    lina_plot_opts neg = {NULL, NULL, NULL, 0, 0, -800, 500};
    CHECK(lina_plot_png(tpath("e.png"), &neg, &s, 1) == LINA_EINVAL, "err: negative width");
    lina_plot_opts big = {NULL, NULL, NULL, 0, 0, 5000, 500};
    CHECK(lina_plot_png(tpath("e.png"), &big, &s, 1) == LINA_EINVAL, "err: width over 4096");
    struct stat st;
    CHECK(stat(tpath("e.png"), &st) != 0, "err: nothing written on bad input");
    CHECK(lina_plot_png("/nonexistent-lina-dir/x.png", NULL, &s, 1) == LINA_EIO &&
              strstr(lina_last_error(), "/nonexistent-lina-dir/x.png"),
          "err: unwritable directory -> LINA_EIO naming the path");
    CHECK(lina_plot_png(tmpdir, NULL, &s, 1) == LINA_EIO, "err: path is a directory");
    CHECK(leftover_tmp() == 0, "err: no temporary files left");
}

static int run_cli(const char *log, const char *out, const char *title)
{
    char *argv[8];
    int argc = 0;
    argv[argc++] = (char *)"plot";
    if (log) {
        argv[argc++] = (char *)"--log";
        argv[argc++] = (char *)log;
    }
    if (out) {
        argv[argc++] = (char *)"--out";
        argv[argc++] = (char *)out;
    }
    if (title) {
        argv[argc++] = (char *)"--title";
        argv[argc++] = (char *)title;
    }
    argv[argc] = NULL;
    return lina_cmd_plot(argc, argv);
}

static void test_cli(void)
{
    char log[512], out[512];
    snprintf(log, sizeof log, "%s", tpath("log.jsonl"));
    snprintf(out, sizeof out, "%s", tpath("loss.png"));
    FILE *f = fopen(log, "wb");
    for (int s = 1; s <= 60; s++) {
        double loss = 8.0 * exp(-s / 20.0) + 2.0;
        fprintf(f, "{\"step\":%d,\"loss\":%.17g,\"lr\":0.001,\"grad_norm\":1.5,\"tokens_per_s\":1234.5",
                s, loss);
        if (s % 10 == 0) {
            fprintf(f, ",\"val_loss\":%.17g", loss + 0.3);
        }
        fprintf(f, "}\n");
    }
    /* a resumed run appends steps 51..60 again, and a blank line */
    for (int s = 51; s <= 60; s++) {
        fprintf(f, "{\"step\":%d,\"loss\":%.17g,\"lr\":0.001,\"grad_norm\":1.5,\"tokens_per_s\":1.0}\n",
                s, 8.0 * exp(-s / 20.0) + 2.0);
    }
    fprintf(f, "\n");
    fclose(f);
    int rc = run_cli(log, out, "run 1");
    CHECK(rc == 0, "cli: lina plot on a training log (%s)", rc ? lina_last_error() : "");
    img im;
    if (rc == 0 && png_load(out, &im) == 0) {
        CHECK(im.crc_ok && im.adler_ok, "cli: valid PNG");
        CHECK(count_col(&im, BLUE) > 300, "cli: train loss curve drawn");
        CHECK(count_col(&im, ORANGE) > 100, "cli: val loss curve drawn");
        /* the train curve falls: its left end is lower on the image (higher row -> lower) */
        int a, b;
        col_extent(&im, BLUE, &a, &b);
        double ra = col_mean_row(&im, a + 2, BLUE), rb = col_mean_row(&im, b - 2, BLUE);
        CHECK(ra >= 0 && rb > ra + 100, "cli: the loss curve goes down (rows %.0f -> %.0f)", ra, rb);
        free(im.px);
    } else {
        CHECK(0, "cli: output decodes");
    }
    CHECK(lina_plot_train_log(log, tpath("loss2.png"), NULL) == 0, "cli: lina_plot_train_log");

    /* a resumed run: stale steps 51..60 first, then the resumed ones win;
     * the plot is byte-identical to that of the clean log */
    FILE *fa = fopen(tpath("clean.jsonl"), "wb"), *fb = fopen(tpath("resumed.jsonl"), "wb");
    for (int s = 1; s <= 60; s++) {
        fprintf(fa, "{\"step\":%d,\"loss\":%.17g}\n", s, 5.0 - s * 0.01);
        fprintf(fb, "{\"step\":%d,\"loss\":%.17g}\n", s, s > 50 ? 99.0 : 5.0 - s * 0.01);
    }
    for (int s = 51; s <= 60; s++) {
        fprintf(fb, "{\"step\":%d,\"loss\":%.17g}\n", s, 5.0 - s * 0.01);
    }
    fclose(fa);
    fclose(fb);
    int ra = lina_plot_train_log(tpath("clean.jsonl"), tpath("clean.png"), "t");
    int rb = lina_plot_train_log(tpath("resumed.jsonl"), tpath("resumed.png"), "t");
    FILE *pa = fopen(tpath("clean.png"), "rb"), *pb = fopen(tpath("resumed.png"), "rb");
    int same = ra == 0 && rb == 0 && pa && pb;
    while (same) {
        int ca = fgetc(pa), cb = fgetc(pb);
        same = ca == cb;
        if (ca == EOF) {
            break;
        }
    }
    if (pa) {
        fclose(pa);
    }
    if (pb) {
        fclose(pb);
    }
    CHECK(same, "cli: a step logged twice keeps its last value (resumed runs)");

    /* only val lines (eval-only log) */
    write_text(tpath("val.jsonl"), "{\"step\":5,\"val_loss\":3.5}\n{\"step\":10,\"val_loss\":3.1}\n");
    CHECK(run_cli(tpath("val.jsonl"), out, NULL) == 0, "cli: a log with only val_loss");

    /* errors */
    CHECK(run_cli(tpath("missing.jsonl"), out, NULL) != 0 && strstr(lina_last_error(), "missing.jsonl"),
          "cli: missing log file -> error naming it");
    write_text(tpath("bad.jsonl"), "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2.9}\n{\"step\":3,\"lo\n");
    CHECK(run_cli(tpath("bad.jsonl"), out, NULL) != 0 && strstr(lina_last_error(), "line 3"),
          "cli: malformed line -> error naming line 3 (%s)", lina_last_error());
    write_text(tpath("bad2.jsonl"), "{\"step\":1,\"loss\":\"x\"}\n");
    CHECK(run_cli(tpath("bad2.jsonl"), out, NULL) != 0 && strstr(lina_last_error(), "line 1"),
          "cli: non-numeric loss -> error");
    write_text(tpath("bad3.jsonl"), "{\"loss\":2}\n");
    CHECK(run_cli(tpath("bad3.jsonl"), out, NULL) != 0, "cli: line without step -> error");
    write_text(tpath("bad4.jsonl"), "[1,2]\n");
    CHECK(run_cli(tpath("bad4.jsonl"), out, NULL) != 0, "cli: non-object line -> error");
    write_text(tpath("empty.jsonl"), "");
    CHECK(run_cli(tpath("empty.jsonl"), out, NULL) != 0 && strstr(lina_last_error(), "no loss"),
          "cli: empty log -> no data error");
    write_text(tpath("noloss.jsonl"), "{\"step\":1,\"lr\":0.1}\n");
    CHECK(run_cli(tpath("noloss.jsonl"), out, NULL) != 0, "cli: log without losses -> error");
    CHECK(run_cli(log, NULL, NULL) == 2, "cli: missing --out -> usage error");
    CHECK(run_cli(NULL, out, NULL) == 2, "cli: missing --log -> usage error");
    char *argv[] = {(char *)"plot", (char *)"--bogus", NULL};
    CHECK(lina_cmd_plot(2, argv) == 2, "cli: unknown option");
    char *argv2[] = {(char *)"plot", (char *)"--log", NULL};
    CHECK(lina_cmd_plot(2, argv2) == 2, "cli: option without value");
    CHECK(run_cli(log, "/nonexistent-lina-dir/loss.png", NULL) != 0, "cli: unwritable output");
    CHECK(lina_plot_train_log(NULL, out, NULL) == LINA_EINVAL, "cli: NULL log path");
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lina_test_plot_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("FAIL plot: mkdtemp\n");
        return 1;
    }
    test_basic();
    test_nan_gap();
    test_log();
    test_misc();
    test_errors();
    test_cli();
    /* clean up */
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            unlink(tpath(e->d_name));
        }
    }
    if (d) {
        closedir(d);
    }
    rmdir(tmpdir);
    return th_exit();
}
