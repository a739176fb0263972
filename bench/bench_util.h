/* bench_util.h — what the op micro-benchmarks (bench_wkv.c, bench_gemm.c) share: failing
 * loudly, the median's comparison, and opening a backend by name. */
#ifndef RWKVPEFT_BENCH_UTIL_H
#define RWKVPEFT_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

/* the program's name for messages; each benchmark defines it */
extern const char *const bench_prog;

static inline void die(const char *what, const rp_backend *be) {
    fprintf(stderr, "%s: %s: %s\n", bench_prog, what, be ? be->err.msg : "");
    exit(2);
}
#define OK(be, call)                       \
    do {                                   \
        if ((call) != 0) die(#call, (be)); \
    } while (0)

static inline int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The backend called `name` (its module loaded when it is a GPU one), created on device 0;
 * desc receives its description. Exits with status 2 when there is none. */
static inline rp_backend *bench_open_backend(const char *name, char *desc, size_t desc_size) {
    rp_err err;
    memset(&err, 0, sizeof err);
    int count = 0;
    const rp_backend_ops *ops = rp_backend_find(name, NULL, &count, desc, desc_size, &err);
    if (!ops || count < 1) {
        fprintf(stderr, "%s: backend %s: %s\n", bench_prog, name, err.msg[0] ? err.msg : desc);
        exit(2);
    }
    rp_backend *be = ops->create(0, 0, &err);
    if (!be) {
        fprintf(stderr, "%s: create %s: %s\n", bench_prog, name, err.msg);
        exit(2);
    }
    return be;
}

#endif
