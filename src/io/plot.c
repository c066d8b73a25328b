/* plot.c -- line plots rendered by lina itself into RGB PNG files.
 *
 * Sections: bitmap font, canvas and text, antialiased lines, axes and ticks,
 * the plot layout, the PNG encoder (fixed-Huffman deflate with run-length
 * matches, CRC32 and Adler32 by hand), and the training-log reader behind
 * `lina plot` and the loss plot the trainer writes next to its checkpoint. */
#include "plot.h"
#include "io_internal.h"
#include "lina.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- bitmap font */

/* 5x7 glyphs for printable ASCII (32..126): 7 rows, bit 4 = leftmost column.
 * g, p, q and y are drawn 2 rows lower (descenders). */
static const uint8_t font5x7[95][7] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ' ' */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}, /* ! */
    {0x0A, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00}, /* " */
    {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}, /* # */
    {0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04}, /* $ */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}, /* % */
    {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D}, /* & */
    {0x0C, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}, /* ' */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}, /* ( */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}, /* ) */
    {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00}, /* * */
    {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}, /* + */
    {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}, /* , */
    {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}, /* - */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}, /* . */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}, /* / */
    {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}, /* 0 */
    {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}, /* 1 */
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}, /* 2 */
    {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}, /* 3 */
    {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}, /* 4 */
    {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}, /* 5 */
    {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}, /* 6 */
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}, /* 7 */
    {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}, /* 8 */
    {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}, /* 9 */
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}, /* : */
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08}, /* ; */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}, /* < */
    {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}, /* = */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}, /* > */
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* ? */
    {0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E}, /* @ */
    {0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11}, /* A */
    {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}, /* B */
    {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}, /* C */
    {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}, /* D */
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}, /* E */
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}, /* F */
    {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}, /* G */
    {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}, /* H */
    {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}, /* I */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}, /* J */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, /* K */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}, /* L */
    {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}, /* M */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}, /* N */
    {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, /* O */
    {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}, /* P */
    {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}, /* Q */
    {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}, /* R */
    {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}, /* S */
    {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* T */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, /* U */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}, /* V */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}, /* W */
    {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}, /* X */
    {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}, /* Y */
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}, /* Z */
    {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}, /* [ */
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00}, /* \ */
    {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}, /* ] */
    {0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00}, /* ^ */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}, /* _ */
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00}, /* ` */
    {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}, /* a */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E}, /* b */
    {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}, /* c */
    {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}, /* d */
    {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}, /* e */
    {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}, /* f */
    {0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E, 0x00}, /* g */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}, /* h */
    {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}, /* i */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C}, /* j */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}, /* k */
    {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}, /* l */
    {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}, /* m */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}, /* n */
    {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}, /* o */
    {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x00}, /* p */
    {0x0F, 0x11, 0x11, 0x0F, 0x01, 0x01, 0x00}, /* q */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}, /* r */
    {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}, /* s */
    {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}, /* t */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}, /* u */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}, /* v */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}, /* w */
    {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}, /* x */
    {0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E, 0x00}, /* y */
    {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}, /* z */
    {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02}, /* { */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* | */
    {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08}, /* } */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00}, /* ~ */
};

#define GLYPH_W 5
#define GLYPH_H 7
#define GLYPH_ADV 6     /* horizontal advance per character */
#define TEXT_MAX 120    /* longer strings are cut */

/* ------------------------------------------------------------ canvas, text */

typedef struct rgb {
    uint8_t r, g, b;
} rgb;

typedef struct canvas {
    int w, h;
    uint8_t *px; /* (h, w, 3) */
} canvas;

static const rgb WHITE = {255, 255, 255};
static const rgb BLACK = {0, 0, 0};
static const rgb GRID = {228, 228, 228};
static const rgb FRAME = {150, 150, 150};

/* Distinct colours, one per series (repeated after 8). */
static const rgb PALETTE[8] = {
    {31, 119, 180},  /* blue */
    {255, 127, 14},  /* orange */
    {44, 160, 44},   /* green */
    {214, 39, 40},   /* red */
    {148, 103, 189}, /* purple */
    {140, 86, 75},   /* brown */
    {227, 119, 194}, /* pink */
    {23, 190, 207},  /* cyan */
};

static void put_px(canvas *c, int x, int y, rgb col)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) {
        return;
    }
    uint8_t *p = c->px + ((size_t)y * c->w + x) * 3;
    p[0] = col.r;
    p[1] = col.g;
    p[2] = col.b;
}

static void blend_px(canvas *c, int x, int y, rgb col, float a)
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h || a <= 0.0f) {
        return;
    }
    if (a >= 1.0f) {
        put_px(c, x, y, col);
        return;
    }
    uint8_t *p = c->px + ((size_t)y * c->w + x) * 3;
    p[0] = (uint8_t)lrintf(p[0] + a * (col.r - p[0]));
    p[1] = (uint8_t)lrintf(p[1] + a * (col.g - p[1]));
    p[2] = (uint8_t)lrintf(p[2] + a * (col.b - p[2]));
}

/* Fill [x0, x1) x [y0, y1), clipped. */
static void fill_rect(canvas *c, int x0, int y0, int x1, int y1, rgb col)
{
    for (int y = y0; y < y1; y++) {
        for (int x = x0; x < x1; x++) {
            put_px(c, x, y, col);
        }
    }
}

/* Outline of [x0, x1] x [y0, y1] (inclusive). */
static void frame_rect(canvas *c, int x0, int y0, int x1, int y1, rgb col)
{
    fill_rect(c, x0, y0, x1 + 1, y0 + 1, col);
    fill_rect(c, x0, y1, x1 + 1, y1 + 1, col);
    fill_rect(c, x0, y0, x0 + 1, y1 + 1, col);
    fill_rect(c, x1, y0, x1 + 1, y1 + 1, col);
}

static int text_len(const char *s)
{
    int n = (int)strlen(s);
    return n > TEXT_MAX ? TEXT_MAX : n;
}

static int text_width(const char *s, int scale)
{
    int n = text_len(s);
    return n > 0 ? (n * GLYPH_ADV - 1) * scale : 0;
}

static int glyph_drop(char ch)
{
    return (ch == 'g' || ch == 'p' || ch == 'q' || ch == 'y') ? 2 : 0;
}

static const uint8_t *glyph(char ch)
{
    unsigned char u = (unsigned char)ch;
    return font5x7[(u >= 32 && u <= 126) ? u - 32 : '?' - 32];
}

/* Horizontal text with its top-left corner at (x, y). */
static void draw_text(canvas *c, int x, int y, const char *s, int scale, rgb col)
{
    int n = text_len(s);
    for (int i = 0; i < n; i++) {
        const uint8_t *g = glyph(s[i]);
        const int drop = glyph_drop(s[i]);
        for (int gy = 0; gy < GLYPH_H; gy++) {
            for (int gx = 0; gx < GLYPH_W; gx++) {
                if (g[gy] & (0x10 >> gx)) {
                    int px = x + (i * GLYPH_ADV + gx) * scale, py = y + (gy + drop) * scale;
                    fill_rect(c, px, py, px + scale, py + scale, col);
                }
            }
        }
    }
}

/* Text turned 90 degrees counter-clockwise (read bottom to top); (x, y) is
 * the bottom-left corner of the turned text. */
static void draw_text_up(canvas *c, int x, int y, const char *s, int scale, rgb col)
{
    int n = text_len(s);
    for (int i = 0; i < n; i++) {
        const uint8_t *g = glyph(s[i]);
        const int drop = glyph_drop(s[i]);
        for (int gy = 0; gy < GLYPH_H; gy++) {
            for (int gx = 0; gx < GLYPH_W; gx++) {
                if (g[gy] & (0x10 >> gx)) {
                    int px = x + (gy + drop) * scale, py = y - (i * GLYPH_ADV + gx + 1) * scale;
                    fill_rect(c, px, py, px + scale, py + scale, col);
                }
            }
        }
    }
}

/* --------------------------------------------------------- antialiased lines */

/* Coverage of a round-capped segment of half-width hw into cov (ch, cw),
 * max-combined so that joints of a polyline are not drawn twice. Pixel (i, j)
 * has its centre at (i + 0.5, j + 0.5). */
static void cov_segment(float *cov, int cw, int ch, double x0, double y0, double x1, double y1,
                        double hw)
{
    double r = hw + 1.0;
    int bx0 = (int)floor(fmin(x0, x1) - r), bx1 = (int)ceil(fmax(x0, x1) + r);
    int by0 = (int)floor(fmin(y0, y1) - r), by1 = (int)ceil(fmax(y0, y1) + r);
    bx0 = bx0 < 0 ? 0 : bx0;
    by0 = by0 < 0 ? 0 : by0;
    bx1 = bx1 > cw - 1 ? cw - 1 : bx1;
    by1 = by1 > ch - 1 ? ch - 1 : by1;
    const double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int j = by0; j <= by1; j++) {
        const double cy = j + 0.5;
        for (int i = bx0; i <= bx1; i++) {
            const double cx = i + 0.5;
            double t = len2 > 0 ? ((cx - x0) * dx + (cy - y0) * dy) / len2 : 0.0;
            t = t < 0 ? 0 : (t > 1 ? 1 : t);
            const double ex = x0 + t * dx - cx, ey = y0 + t * dy - cy;
            const double a = hw + 0.5 - sqrt(ex * ex + ey * ey);
            if (a > 0) {
                float fa = a >= 1 ? 1.0f : (float)a;
                float *p = cov + (size_t)j * cw + i;
                if (fa > *p) {
                    *p = fa;
                }
            }
        }
    }
}

/* ------------------------------------------------------------ axes and ticks */

#define MAX_TICKS 64
#define LINE_HW 1.2    /* half line width in pixels */

typedef struct axis {
    int log;
    double lo, hi;          /* limits, in log10 units on a log axis */
    int nt;
    double pos[MAX_TICKS];  /* tick positions in axis units */
    char lab[MAX_TICKS][24];
} axis;

/* A value is usable on an axis if finite (and positive on a log axis). */
static int usable(double v, int log)
{
    return isfinite(v) && (!log || v > 0);
}

static double to_axis(double v, int log)
{
    return log ? log10(v) : v;
}

/* 1, 2 or 5 times a power of ten, near raw. */
static double nice_step(double raw)
{
    double mag = pow(10.0, floor(log10(raw)));
    double m = raw / mag;
    return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * mag;
}

/* "1e+06" -> "1e6", "2e-05" -> "2e-5". */
static void compact_exp(char *s)
{
    char *e = strchr(s, 'e');
    if (!e) {
        return;
    }
    char *src = e + 1, *dst = e + 1;
    if (*src == '+') {
        src++;
    } else if (*src == '-') {
        *dst++ = *src++;
    }
    while (*src == '0' && src[1]) {
        src++;
    }
    memmove(dst, src, strlen(src) + 1);
}

static void fmt_general(char *buf, size_t n, double v)
{
    snprintf(buf, n, "%.4g", v);
    compact_exp(buf);
}

/* Linear ticks: multiples of a nice step inside [lo, hi]. */
static void linear_ticks(axis *a, double lo, double hi, int target, int in_log)
{
    a->nt = 0;
    double step = nice_step((hi - lo) / target);
    if (!(step > 0) || !isfinite(step)) {
        return;
    }
    double k0 = ceil(lo / step - 1e-9), k1 = floor(hi / step + 1e-9);
    double big = fmax(fabs(lo), fabs(hi));
    int dec = -(int)floor(log10(step) + 1e-9);
    for (int i = 0; i < 4 * MAX_TICKS && k0 + i <= k1 && a->nt < MAX_TICKS; i++) {
        double v = (k0 + i) * step;
        if (fabs(v) < step * 1e-6) {
            v = 0.0;
        }
        if (in_log) {
            if (v <= 0) {
                continue;
            }
            a->pos[a->nt] = log10(v);
        } else {
            a->pos[a->nt] = v;
        }
        char *lab = a->lab[a->nt];
        if (step >= 1e-4 && big < 1e7) {
            snprintf(lab, sizeof a->lab[0], "%.*f", dec > 0 ? dec : 0, v);
        } else {
            fmt_general(lab, sizeof a->lab[0], v);
        }
        a->nt++;
    }
}

/* Limits from the data range [mn, mx] (axis units, or nothing if mn > mx),
 * padded by 4% on each side, and ticks for about `len` pixels. */
static int make_axis(axis *a, int log, double mn, double mx, int len)
{
    a->log = log;
    if (mn > mx) { /* no usable point: an empty default range */
        mn = 0.0;
        mx = 1.0;
    }
    double span = mx - mn;
    if (!isfinite(span)) {
        return lina_set_error(LINA_EINVAL, "plot: data range too large to plot");
    }
    if (span <= fmax(fabs(mn), fabs(mx)) * 1e-12 || span == 0) {
        double d = log ? 0.5 : fmax(fabs(mn) * 0.05, 0.5);
        mn -= d;
        mx += d;
        span = mx - mn;
    }
    a->lo = mn - 0.04 * span;
    a->hi = mx + 0.04 * span;
    int target = len / 90;
    target = target < 2 ? 2 : (target > 10 ? 10 : target);
    if (!log) {
        linear_ticks(a, a->lo, a->hi, target, 0);
        return LINA_OK;
    }
    const double L = a->lo, H = a->hi;
    a->nt = 0;
    if (H - L > 8) { /* every k-th decade */
        double k = ceil((H - L) / 8);
        for (double e = ceil(L / k) * k; e <= H && a->nt < MAX_TICKS; e += k) {
            a->pos[a->nt] = e;
            fmt_general(a->lab[a->nt], sizeof a->lab[0], pow(10.0, e));
            a->nt++;
        }
        return LINA_OK;
    }
    static const int sets[3][10] = {{1, 0}, {1, 2, 5, 0}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 0}};
    for (int s = 0; s < 3; s++) {
        a->nt = 0;
        for (double e = floor(L); e <= ceil(H); e++) {
            for (int m = 0; sets[s][m] && a->nt < MAX_TICKS; m++) {
                double p = e + log10((double)sets[s][m]);
                if (p >= L - 1e-9 && p <= H + 1e-9) {
                    a->pos[a->nt] = p;
                    fmt_general(a->lab[a->nt], sizeof a->lab[0], sets[s][m] * pow(10.0, e));
                    a->nt++;
                }
            }
        }
        if (a->nt >= 3) {
            return LINA_OK;
        }
    }
    /* less than a factor of ~1.3: plain ticks in value space */
    linear_ticks(a, pow(10.0, L), pow(10.0, H), target, 1);
    return LINA_OK;
}

/* ---------------------------------------------------------------- the plot */

static int count_valid(const lina_plot_series *s, int logx, int logy)
{
    int c = 0;
    for (int i = 0; i < s->n; i++) {
        c += usable(s->x[i], logx) && usable(s->y[i], logy);
    }
    return c;
}

static int render(canvas *c, const lina_plot_opts *o, const lina_plot_series *s, int ns)
{
    const int W = c->w, Hh = c->h;
    const int logx = o->logx != 0, logy = o->logy != 0;
    const char *title = o->title && *o->title ? o->title : NULL;
    const char *xlabel = o->xlabel && *o->xlabel ? o->xlabel : NULL;
    const char *ylabel = o->ylabel && *o->ylabel ? o->ylabel : NULL;

    /* data ranges */
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    for (int k = 0; k < ns; k++) {
        for (int i = 0; i < s[k].n; i++) {
            double x = s[k].x[i], y = s[k].y[i];
            if (usable(x, logx) && usable(y, logy)) {
                x = to_axis(x, logx);
                y = to_axis(y, logy);
                xmn = fmin(xmn, x);
                xmx = fmax(xmx, x);
                ymn = fmin(ymn, y);
                ymx = fmax(ymx, y);
            }
        }
    }

    /* layout: margins around the plot area [x0, x1) x [y0, y1) */
    const int tick = 5, pad = 10;
    int top = pad + (title ? 2 * GLYPH_H + pad : 4);
    int bottom = tick + 4 + GLYPH_H + (xlabel ? 8 + GLYPH_H : 0) + pad;
    axis ax, ay;
    int rc = make_axis(&ay, logy, ymn, ymx, Hh - top - bottom);
    if (rc != LINA_OK) {
        return rc;
    }
    int ytw = 0;
    for (int i = 0; i < ay.nt; i++) {
        int w = text_width(ay.lab[i], 1);
        ytw = w > ytw ? w : ytw;
    }
    int left = pad + (ylabel ? GLYPH_H + 8 : 0) + ytw + 4 + tick;
    int right = 24;
    const int x0 = left, y0 = top, x1 = W - right, y1 = Hh - bottom;
    const int pw = x1 - x0, ph = y1 - y0;
    if (pw < 40 || ph < 40) {
        return lina_set_error(LINA_EINVAL, "plot: image %dx%d too small for its labels", W, Hh);
    }
    rc = make_axis(&ax, logx, xmn, xmx, pw);
    if (rc != LINA_OK) {
        return rc;
    }
    const double sx = pw / (ax.hi - ax.lo), sy = ph / (ay.hi - ay.lo);

    /* background and grid */
    fill_rect(c, 0, 0, W, Hh, WHITE);
    for (int i = 0; i < ax.nt; i++) {
        int px = x0 + (int)floor((ax.pos[i] - ax.lo) * sx);
        fill_rect(c, px, y0, px + 1, y1, GRID);
    }
    for (int i = 0; i < ay.nt; i++) {
        int py = y1 - 1 - (int)floor((ay.pos[i] - ay.lo) * sy);
        fill_rect(c, x0, py, x1, py + 1, GRID);
    }

    /* series: coverage over the plot area, then composited in colour */
    float *cov = malloc((size_t)pw * ph * sizeof *cov);
    if (!cov) {
        return lina_set_error(LINA_ENOMEM, "plot: out of memory");
    }
    for (int k = 0; k < ns; k++) {
        const int nv = count_valid(&s[k], logx, logy);
        if (nv == 0) {
            continue;
        }
        memset(cov, 0, (size_t)pw * ph * sizeof *cov);
        const int markers = nv <= 60;
        int have = 0;
        double px = 0, py = 0;
        for (int i = 0; i < s[k].n; i++) {
            double x = s[k].x[i], y = s[k].y[i];
            if (!(usable(x, logx) && usable(y, logy))) {
                have = 0; /* a gap */
                continue;
            }
            double qx = (to_axis(x, logx) - ax.lo) * sx;
            double qy = ph - (to_axis(y, logy) - ay.lo) * sy;
            cov_segment(cov, pw, ph, have ? px : qx, have ? py : qy, qx, qy, LINE_HW);
            if (markers) {
                cov_segment(cov, pw, ph, qx, qy, qx, qy, 2.5);
            }
            px = qx;
            py = qy;
            have = 1;
        }
        const rgb col = PALETTE[k % 8];
        for (int j = 0; j < ph; j++) {
            for (int i = 0; i < pw; i++) {
                blend_px(c, x0 + i, y0 + j, col, cov[(size_t)j * pw + i]);
            }
        }
    }
    free(cov);

    /* frame, ticks, tick labels */
    frame_rect(c, x0 - 1, y0 - 1, x1, y1, BLACK);
    for (int i = 0; i < ax.nt; i++) {
        int px = x0 + (int)floor((ax.pos[i] - ax.lo) * sx);
        fill_rect(c, px, y1 + 1, px + 1, y1 + 1 + tick, BLACK);
        int tw = text_width(ax.lab[i], 1);
        draw_text(c, px - tw / 2, y1 + 1 + tick + 3, ax.lab[i], 1, BLACK);
    }
    for (int i = 0; i < ay.nt; i++) {
        int py = y1 - 1 - (int)floor((ay.pos[i] - ay.lo) * sy);
        fill_rect(c, x0 - 1 - tick, py, x0 - 1, py + 1, BLACK);
        int tw = text_width(ay.lab[i], 1);
        draw_text(c, x0 - 1 - tick - 4 - tw, py - GLYPH_H / 2, ay.lab[i], 1, BLACK);
    }

    /* title and axis labels */
    if (title) {
        int tw = text_width(title, 2);
        int tx = x0 + (pw - tw) / 2;
        draw_text(c, tx < 2 ? 2 : tx, pad, title, 2, BLACK);
    }
    if (xlabel) {
        int tw = text_width(xlabel, 1);
        draw_text(c, x0 + (pw - tw) / 2, Hh - pad - GLYPH_H, xlabel, 1, BLACK);
    }
    if (ylabel) {
        int tw = text_width(ylabel, 1);
        int by = y0 + (ph + tw) / 2;
        draw_text_up(c, pad, by > Hh - 2 ? Hh - 2 : by, ylabel, 1, BLACK);
    }

    /* legend: the corner of the plot area where it hides the fewest drawn
     * pixels (top right first on ties) */
    int nl = 0, lw = 0;
    for (int k = 0; k < ns; k++) {
        if (s[k].label && *s[k].label) {
            int w = text_width(s[k].label, 1);
            lw = w > lw ? w : lw;
            nl++;
        }
    }
    if (nl > 0) {
        const int row = 14, sample = 22;
        int bw = 8 + sample + 6 + lw + 8, bh = 6 + nl * row;
        const int cx[4] = {x1 - 8 - bw, x0 + 8, x1 - 8 - bw, x0 + 8};
        const int cy[4] = {y0 + 8, y0 + 8, y1 - 8 - bh, y1 - 8 - bh};
        long best_ink = -1;
        int bx = cx[0], by = cy[0];
        for (int q = 0; q < 4; q++) {
            long ink = 0;
            for (int y = cy[q]; y < cy[q] + bh; y++) {
                for (int x = cx[q]; x < cx[q] + bw; x++) {
                    if (x >= 0 && y >= 0 && x < W && y < Hh) {
                        const uint8_t *p = c->px + ((size_t)y * W + x) * 3;
                        ink += !(p[0] == p[1] && p[1] == p[2] && (p[0] == 255 || p[0] == GRID.r));
                    }
                }
            }
            if (best_ink < 0 || ink < best_ink) {
                best_ink = ink;
                bx = cx[q];
                by = cy[q];
            }
        }
        if (bx < x0 + 2) {
            bx = x0 + 2;
        }
        fill_rect(c, bx, by, bx + bw, by + bh, WHITE);
        frame_rect(c, bx, by, bx + bw - 1, by + bh - 1, FRAME);
        int r = 0;
        for (int k = 0; k < ns; k++) {
            if (!(s[k].label && *s[k].label)) {
                continue;
            }
            int ry = by + 3 + r * row + row / 2;
            fill_rect(c, bx + 8, ry - 1, bx + 8 + sample, ry + 1, PALETTE[k % 8]);
            draw_text(c, bx + 8 + sample + 6, ry - GLYPH_H / 2 - 1, s[k].label, 1, BLACK);
            r++;
        }
    }
    return LINA_OK;
}

/* ------------------------------------------------------------- PNG encoder */

typedef struct bytes {
    uint8_t *p;
    size_t len, cap;
    int oom;
} bytes;

static void by_put(bytes *b, const void *src, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) {
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void by_be32(bytes *b, uint32_t v)
{
    uint8_t q[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    by_put(b, q, 4);
}

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static uint32_t adler32(const uint8_t *p, size_t n)
{
    uint32_t a = 1, b = 0;
    while (n > 0) {
        size_t m = n < 5552 ? n : 5552; /* no overflow before the modulo */
        n -= m;
        while (m--) {
            a += *p++;
            b += a;
        }
        a %= 65521u;
        b %= 65521u;
    }
    return (b << 16) | a;
}

static void png_chunk(bytes *b, const char *type, const uint8_t *data, size_t n)
{
    by_be32(b, (uint32_t)n);
    by_put(b, type, 4);
    if (n) {
        by_put(b, data, n);
    }
    uint32_t crc = crc32_update(0, (const uint8_t *)type, 4);
    crc = crc32_update(crc, data, n);
    by_be32(b, crc);
}

/* Deflate bit writer: bits go out least significant first. */
typedef struct bitw {
    bytes *out;
    uint32_t acc;
    int n;
} bitw;

static void bw_bits(bitw *w, uint32_t v, int n)
{
    for (int i = 0; i < n; i++) {
        w->acc |= ((v >> i) & 1u) << w->n;
        if (++w->n == 8) {
            uint8_t byte = (uint8_t)w->acc;
            by_put(w->out, &byte, 1);
            w->acc = 0;
            w->n = 0;
        }
    }
}

/* A Huffman code goes out most significant bit first. */
static void bw_code(bitw *w, uint32_t code, int len)
{
    for (int i = len - 1; i >= 0; i--) {
        bw_bits(w, (code >> i) & 1u, 1);
    }
}

/* The fixed literal/length code of deflate. */
static void fixed_sym(bitw *w, int sym)
{
    if (sym < 144) {
        bw_code(w, 0x30u + (uint32_t)sym, 8);
    } else if (sym < 256) {
        bw_code(w, 0x190u + (uint32_t)(sym - 144), 9);
    } else if (sym < 280) {
        bw_code(w, (uint32_t)(sym - 256), 7);
    } else {
        bw_code(w, 0xC0u + (uint32_t)(sym - 280), 8);
    }
}

static const int LEN_BASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const int LEN_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};

/* zlib stream of `raw`: one fixed-Huffman block whose only matches are runs
 * (distance 1), which is what flat plot backgrounds and filtered rows need. */
static void zlib_compress(bytes *out, const uint8_t *raw, size_t n)
{
    const uint8_t hdr[2] = {0x78, 0x01};
    by_put(out, hdr, 2);
    bitw w = {out, 0, 0};
    bw_bits(&w, 1, 1); /* BFINAL */
    bw_bits(&w, 1, 2); /* BTYPE = 01, fixed Huffman */
    size_t i = 0;
    while (i < n) {
        size_t run = 0;
        if (i > 0) {
            while (run < 258 && i + run < n && raw[i + run] == raw[i - 1]) {
                run++;
            }
        }
        if (run >= 3) {
            int c = 28;
            while (LEN_BASE[c] > (int)run) {
                c--;
            }
            fixed_sym(&w, 257 + c);
            bw_bits(&w, (uint32_t)((int)run - LEN_BASE[c]), LEN_EXTRA[c]);
            bw_code(&w, 0, 5); /* distance code 0: distance 1 */
            i += run;
        } else {
            fixed_sym(&w, raw[i]);
            i++;
        }
    }
    fixed_sym(&w, 256);
    if (w.n > 0) {
        bw_bits(&w, 0, 8 - w.n);
    }
    by_be32(out, adler32(raw, n));
}

/* Scanlines with a per-row filter (None, Sub or Up: the smallest sum of
 * absolute residuals). */
static uint8_t *filter_rows(const canvas *c, size_t *n_out)
{
    const size_t stride = (size_t)c->w * 3;
    uint8_t *raw = malloc((stride + 1) * (size_t)c->h);
    uint8_t *tmp = malloc(stride * 3);
    if (!raw || !tmp) {
        free(raw);
        free(tmp);
        return NULL;
    }
    for (int y = 0; y < c->h; y++) {
        const uint8_t *row = c->px + (size_t)y * stride;
        const uint8_t *up = y > 0 ? row - stride : NULL;
        uint8_t *f[3] = {tmp, tmp + stride, tmp + 2 * stride};
        unsigned long cost[3] = {0, 0, 0};
        for (size_t i = 0; i < stride; i++) {
            uint8_t v[3];
            v[0] = row[i];
            v[1] = (uint8_t)(row[i] - (i >= 3 ? row[i - 3] : 0));
            v[2] = (uint8_t)(row[i] - (up ? up[i] : 0));
            for (int k = 0; k < 3; k++) {
                f[k][i] = v[k];
                cost[k] += v[k] < 128 ? v[k] : 256u - v[k];
            }
        }
        int best = 0;
        for (int k = 1; k < 3; k++) {
            if (cost[k] < cost[best]) {
                best = k;
            }
        }
        uint8_t *dst = raw + (size_t)y * (stride + 1);
        dst[0] = (uint8_t)best;
        memcpy(dst + 1, f[best], stride);
    }
    free(tmp);
    *n_out = (stride + 1) * (size_t)c->h;
    return raw;
}

static int write_png(const char *path, const canvas *c)
{
    size_t nraw = 0;
    uint8_t *raw = filter_rows(c, &nraw);
    if (!raw) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    bytes z = {0}, png = {0};
    zlib_compress(&z, raw, nraw);
    free(raw);
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    by_put(&png, sig, 8);
    uint8_t ihdr[13] = {0};
    for (int i = 0; i < 4; i++) {
        ihdr[i] = (uint8_t)((uint32_t)c->w >> (24 - 8 * i));
        ihdr[4 + i] = (uint8_t)((uint32_t)c->h >> (24 - 8 * i));
    }
    ihdr[8] = 8; /* bit depth */
    ihdr[9] = 2; /* colour type: RGB */
    png_chunk(&png, "IHDR", ihdr, sizeof ihdr);
    const size_t part = 1 << 16;
    for (size_t off = 0; off < z.len && !z.oom; off += part) {
        png_chunk(&png, "IDAT", z.p + off, z.len - off < part ? z.len - off : part);
    }
    png_chunk(&png, "IEND", NULL, 0);
    int rc = LINA_OK;
    if (z.oom || png.oom) {
        rc = lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    } else {
        lina_afile f;
        rc = lina_afile_open(&f, path);
        if (rc == LINA_OK) {
            lina_afile_write(&f, png.p, png.len);
            rc = lina_afile_commit(&f);
        }
    }
    free(z.p);
    free(png.p);
    return rc;
}

int lina_plot_png(const char *path, const lina_plot_opts *o, const lina_plot_series *s, int nseries)
{
    static const lina_plot_opts defaults = {NULL, NULL, NULL, 0, 0, 0, 0};
    if (!path || !*path) {
        return lina_set_error(LINA_EINVAL, "plot: no output path");
    }
    if (!o) {
        o = &defaults;
    }
    if (nseries < 0 || (nseries > 0 && !s)) {
        return lina_set_error(LINA_EINVAL, "%s: bad series count %d", path, nseries);
    }
    for (int k = 0; k < nseries; k++) {
        if (s[k].n < 0 || (s[k].n > 0 && (!s[k].x || !s[k].y))) {
            return lina_set_error(LINA_EINVAL, "%s: series %d: bad points (n = %d)", path, k,
                                  s[k].n);
        }
    }
    const int W = o->width ? o->width : 800, H = o->height ? o->height : 500;
    if (W < 64 || H < 64 || W > 4096 || H > 4096) {
        return lina_set_error(LINA_EINVAL, "%s: image size %dx%d out of range [64, 4096]", path,
                              W, H);
    }
    canvas c = {W, H, malloc((size_t)W * H * 3)};
    if (!c.px) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    int rc = render(&c, o, s, nseries);
    if (rc == LINA_OK) {
        rc = write_png(path, &c);
    }
    free(c.px);
    return rc;
}

/* ----------------------------------------------------- training-log plots */

typedef struct logpt {
    double step, v;
    size_t order; /* line order: the last line of a repeated step wins */
} logpt;

typedef struct logvec {
    logpt *p;
    size_t n, cap;
} logvec;

static int lv_push(logvec *v, double step, double val)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        logpt *q = realloc(v->p, cap * sizeof *q);
        if (!q) {
            return lina_set_error(LINA_ENOMEM, "plot: out of memory");
        }
        v->p = q;
        v->cap = cap;
    }
    v->p[v->n].step = step;
    v->p[v->n].v = val;
    v->p[v->n].order = v->n;
    v->n++;
    return LINA_OK;
}

static int cmp_logpt(const void *a, const void *b)
{
    const logpt *p = a, *q = b;
    if (p->step != q->step) {
        return p->step < q->step ? -1 : 1;
    }
    return p->order < q->order ? -1 : (p->order > q->order);
}

/* Sort by step; a step logged twice (a resumed run appends to the log)
 * keeps its last value. */
static void lv_finish(logvec *v)
{
    if (v->n < 2) {
        return;
    }
    qsort(v->p, v->n, sizeof *v->p, cmp_logpt);
    size_t m = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (m > 0 && v->p[m - 1].step == v->p[i].step) {
            v->p[m - 1] = v->p[i];
        } else {
            v->p[m++] = v->p[i];
        }
    }
    v->n = m;
}

/* A numeric field: 1 found, 0 absent, error if present but not a finite number. */
static int get_num(const cJSON *obj, const char *key, double *out, const char *path, int line)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) {
        return 0;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
        return lina_set_error(LINA_EFORMAT, "%s: line %d: \"%s\" is not a finite number", path,
                              line, key);
    }
    *out = it->valuedouble;
    return 1;
}

static int read_log(const char *log_path, logvec *tr, logvec *va)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = lina_read_file(log_path, (size_t)1 << 30, "training log", &buf, &len);
    if (rc != LINA_OK) {
        return rc;
    }
    int line = 0;
    char *p = buf, *end = buf + len;
    while (rc == LINA_OK && p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        line++;
        size_t n = (size_t)(e - p);
        int blank = 1;
        for (size_t i = 0; i < n && blank; i++) {
            blank = p[i] == ' ' || p[i] == '\t' || p[i] == '\r';
        }
        if (!blank) {
            cJSON *obj = cJSON_ParseWithLength(p, n);
            double step = 0, v = 0;
            int has;
            if (!obj || !cJSON_IsObject(obj)) {
                rc = lina_set_error(LINA_EFORMAT, "%s: line %d: not a JSON object", log_path, line);
            } else if ((has = get_num(obj, "step", &step, log_path, line)) < 0) {
                rc = has;
            } else if (has == 0) {
                rc = lina_set_error(LINA_EFORMAT, "%s: line %d: no \"step\"", log_path, line);
            } else {
                if ((has = get_num(obj, "loss", &v, log_path, line)) < 0) {
                    rc = has;
                } else if (has) {
                    rc = lv_push(tr, step, v);
                }
                if (rc == LINA_OK && (has = get_num(obj, "val_loss", &v, log_path, line)) < 0) {
                    rc = has;
                } else if (rc == LINA_OK && has) {
                    rc = lv_push(va, step, v);
                }
            }
            cJSON_Delete(obj);
        }
        p = e + 1;
    }
    free(buf);
    if (rc == LINA_OK && tr->n == 0 && va->n == 0) {
        rc = lina_set_error(LINA_EFORMAT, "%s: no loss values in the log", log_path);
    }
    return rc;
}

/* Split a point list into x and y arrays (caller frees *xy). */
static int lv_xy(const logvec *v, double **xy)
{
    *xy = malloc((v->n ? v->n : 1) * 2 * sizeof **xy);
    if (!*xy) {
        return lina_set_error(LINA_ENOMEM, "plot: out of memory");
    }
    for (size_t i = 0; i < v->n; i++) {
        (*xy)[i] = v->p[i].step;
        (*xy)[v->n + i] = v->p[i].v;
    }
    return LINA_OK;
}

int lina_plot_train_log(const char *log_path, const char *png_path, const char *title)
{
    if (!log_path || !png_path) {
        return lina_set_error(LINA_EINVAL, "plot: missing log or output path");
    }
    logvec tr = {0}, va = {0};
    double *txy = NULL, *vxy = NULL;
    int rc = read_log(log_path, &tr, &va);
    if (rc == LINA_OK && (tr.n > INT32_MAX || va.n > INT32_MAX)) {
        rc = lina_set_error(LINA_EFORMAT, "%s: too many log lines", log_path);
    }
    if (rc == LINA_OK) {
        lv_finish(&tr);
        lv_finish(&va);
        rc = lv_xy(&tr, &txy);
    }
    if (rc == LINA_OK) {
        rc = lv_xy(&va, &vxy);
    }
    if (rc == LINA_OK) {
        lina_plot_series s[2];
        int ns = 0;
        if (tr.n) {
            s[ns++] = (lina_plot_series){"train loss", txy, txy + tr.n, (int)tr.n};
        }
        if (va.n) {
            s[ns++] = (lina_plot_series){"val loss", vxy, vxy + va.n, (int)va.n};
        }
        lina_plot_opts o = {title ? title : "loss", "step", "loss", 0, 0, 0, 0};
        rc = lina_plot_png(png_path, &o, s, ns);
    }
    free(txy);
    free(vxy);
    free(tr.p);
    free(va.p);
    return rc;
}
