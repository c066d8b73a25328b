/* fuzz.h -- shared by the fuzz targets: each fuzz_<name>.c defines
 * fuzz_<name>(data, size) and, unless LINA_FUZZ_NO_ENTRY is defined (the corpus
 * replay in tests/test_fuzz_corpus.c includes every target in one program),
 * libFuzzer's entry point calling it. */
#ifndef LINA_FUZZ_H
#define LINA_FUZZ_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif

#include "lina.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef LINA_FUZZ_NO_ENTRY
#define LINA_FUZZ_ENTRY(fn)
#else
#define LINA_FUZZ_ENTRY(fn)                                                                                          \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                                                   \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)                                                    \
    {                                                                                                                \
        return fn(data, size);                                                                                       \
    }
#endif

/* the input as a file (for parsers that read paths): an in-memory file
 * (memfd, reached through /proc/self/fd) rewritten for each input */
static inline const char *fuzz_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("lina_fuzz", 0);
        if (fd < 0) {
            return NULL;
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        return NULL;
    }
    return path;
}

#endif
