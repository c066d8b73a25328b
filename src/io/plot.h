/* plot.h -- PNG line plots (loss curves) and the `lina plot` subcommand.
 *
 * Not part of the public API (include/lina.h); used by the trainer and the
 * command-line tool. Everything is written by lina itself: a tiny rasteriser,
 * a built-in bitmap font and a PNG encoder with stored deflate blocks. */
#ifndef LINA_PLOT_H
#define LINA_PLOT_H

/* One curve: n points (x[i], y[i]). Points with a NaN/Inf coordinate, or a
 * non-positive one on a log axis, are skipped and break the line (gap).
 * label may be NULL (no legend entry). */
typedef struct lina_plot_series {
    const char *label;
    const double *x;
    const double *y;
    int n;
} lina_plot_series;

/* title/xlabel/ylabel may be NULL. logx/logy: logarithmic axis (base 10).
 * width/height 0 = 800x500; otherwise each in [64, 4096]. */
typedef struct lina_plot_opts {
    const char *title, *xlabel, *ylabel;
    int logx, logy;
    int width, height;
} lina_plot_opts;

/* Render the series (8 distinct colours, then they repeat; series with at
 * most 60 usable points also get a dot per point) into an RGB PNG at `path`,
 * written atomically: white background, grid, ticks with labels (decades and
 * 1-2-5 steps on log axes), title, axis labels, and a legend of the labelled
 * series in the emptiest corner. o may be NULL (defaults). Series without
 * usable points give an empty plot, not an error. Returns 0 or a lina error
 * code (LINA_EINVAL bad argument or a data range that overflows, LINA_ENOMEM,
 * LINA_EIO) with lina_last_error() set. */
int lina_plot_png(const char *path, const lina_plot_opts *o, const lina_plot_series *s, int nseries);

/* Read a training log written by `lina train` (JSON lines: "step" with
 * "loss" and/or "val_loss"; other keys ignored) and plot train loss and
 * validation loss against step into `png_path`. A step logged twice (a
 * resumed run appends) keeps its last value. title may be NULL ("loss").
 * Missing file, malformed line (named by number) or no loss data fail with
 * LINA_EIO / LINA_EFORMAT and lina_last_error() set. */
int lina_plot_train_log(const char *log_path, const char *png_path, const char *title);

#endif
