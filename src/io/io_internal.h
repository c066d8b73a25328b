/* io_internal.h -- helpers shared by the file formats (not public API). */
#ifndef LINA_IO_INTERNAL_H
#define LINA_IO_INTERNAL_H

#include <stddef.h>

/* Atomic file output: data goes to "<path>.tmp.<pid>"; commit fsyncs it,
 * renames it over `path` and fsyncs the directory, so a reader (or a crash at
 * any moment) sees either the old file or the complete new one. */
typedef struct lina_afile {
    int fd;
    int ok;        /* no write has failed so far */
    int err;       /* errno of the first failure (0: short write) */
    char *tmp;
    const char *path;
} lina_afile;

/* Create the temporary file; on failure sets an error naming `path`. */
int lina_afile_open(lina_afile *f, const char *path);
/* Append bytes; failures are remembered and reported by commit. */
void lina_afile_write(lina_afile *f, const void *buf, size_t n);
/* fsync + close + rename + directory fsync; on any failure the temporary
 * file is removed, `path` is untouched and LINA_EIO is returned. */
int lina_afile_commit(lina_afile *f);
/* Give up: close and remove the temporary file. */
void lina_afile_abort(lina_afile *f);

/* Read a whole regular file into a NUL-terminated buffer (caller frees).
 * Files larger than max_bytes are rejected with LINA_EFORMAT naming `what`
 * ("config file", ...); every failure sets an error naming `path`. */
int lina_read_file(const char *path, size_t max_bytes, const char *what, char **buf, size_t *len);

#endif
