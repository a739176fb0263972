/* tensorfile.c — opening (mmap + format detection), lookup, closing and writing of
 * named-tensor files; the shared helpers of the format readers and writers. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* open flags, pread, fsync, getpid */
#endif
#include "tensorfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------- */
/* numel                                                                              */
/* ---------------------------------------------------------------------------------- */

int64_t rp_shape_numel(const int64_t *shape, int ndim) {
    int64_t n = 1;
    int zero = 0;
    for (int d = 0; d < ndim; d++) {
        int64_t s = shape[d];
        if (s < 0) return -1;
        if (s == 0) {
            zero = 1;
            continue;
        }
        if (n > INT64_MAX / s) return -1;
        n *= s;
    }
    return zero ? 0 : n;
}

int64_t rp_tensor_numel(const rp_named_tensor *t) {
    if (!t || t->ndim < 0 || t->ndim > RP_MAX_DIMS) return -1;
    return rp_shape_numel(t->shape, t->ndim);
}

/* ---------------------------------------------------------------------------------- */
/* Open / find / close                                                                */
/* ---------------------------------------------------------------------------------- */

/* torch < 1.6 (and _use_new_zipfile_serialization=False): pickle protocol 2 of the magic
 * number 0x1950a86a20f9469cfc6c (PROTO 2, LONG1 10 bytes) */
static const unsigned char LEGACY_MAGIC[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                             0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

int rp_tensorfile_open(const char *path, rp_tensorfile **out, rp_err *err) {
    if (out) *out = NULL;
    if (!path || !out)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "rp_tensorfile_open: NULL argument");
    rp_tensorfile *f = (rp_tensorfile *)rp_calloc(1, sizeof *f);
    rp_tensorfile_impl *impl = (rp_tensorfile_impl *)rp_calloc(1, sizeof *impl);
    if (!f || !impl) {
        free(f);
        free(impl);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    f->impl = impl;
    int rc = rp_file_image_open(path, &impl->image, err);
    if (!rc && impl->image.size == 0) rc = rp_fail(err, RWKVPEFT_E_FORMAT, "%s: empty file", path);
    if (!rc) {
        const unsigned char *b = impl->image.data;
        size_t n = impl->image.size;
        if (n >= 4 && b[0] == 'P' && b[1] == 'K' &&
            ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6))) {
            f->kind = RP_FILE_PTH;
            rc = rp_pth_read(f, path, err);
        } else if (n >= sizeof LEGACY_MAGIC && memcmp(b, LEGACY_MAGIC, sizeof LEGACY_MAGIC) == 0) {
            rc = rp_fail(err, RWKVPEFT_E_UNSUPPORTED,
                         "%s: legacy (pre-1.6) torch format; re-save with torch.save(...)", path);
        } else {
            f->kind = RP_FILE_SAFETENSORS;
            rc = rp_safetensors_read(f, path, err);
        }
    }
    if (rc) {
        rp_tensorfile_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

const rp_named_tensor *rp_tensorfile_find(const rp_tensorfile *f, const char *name) {
    if (!f || !name) return NULL;
    const rp_tensorfile_impl *impl = (const rp_tensorfile_impl *)f->impl;
    if (impl && impl->sorted) {
        int lo = 0, hi = f->count;
        while (lo < hi) {
            int mid = lo + (hi - lo) / 2;
            const rp_named_tensor *t = &f->tensors[impl->sorted[mid]];
            int c = strcmp(t->name, name);
            if (c == 0) return t;
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        return NULL;
    }
    for (int i = 0; i < f->count; i++)
        if (f->tensors[i].name && strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

void rp_tensorfile_close(rp_tensorfile *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++) free((void *)(uintptr_t)f->tensors[i].name);
    free(f->tensors);
    rp_tensorfile_impl *impl = (rp_tensorfile_impl *)f->impl;
    if (impl) {
        for (size_t i = 0; i < impl->owned_count; i++) free(impl->owned[i]);
        free(impl->owned);
        free(impl->sorted);
        rp_file_image_close(&impl->image);
        free(impl);
    }
    free(f);
}

int64_t rp_tensorfile_skipped_count(const rp_tensorfile *f) {
    if (!f || !f->impl) return 0;
    return ((const rp_tensorfile_impl *)f->impl)->skipped;
}

int rp_tensorfile_own(rp_tensorfile *f, void *p, rp_err *err) {
    rp_tensorfile_impl *impl = (rp_tensorfile_impl *)f->impl;
    if (impl->owned_count == impl->owned_cap) {
        size_t nc = impl->owned_cap ? impl->owned_cap * 2 : 16;
        void **q = (void **)rp_realloc_array(impl->owned, nc, sizeof *q);
        if (!q) {
            free(p);
            return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
        }
        impl->owned = q;
        impl->owned_cap = nc;
    }
    impl->owned[impl->owned_count++] = p;
    return 0;
}

typedef struct name_idx {
    const char *name;
    int idx;
} name_idx;

static int cmp_name_idx(const void *a, const void *b) {
    const name_idx *x = (const name_idx *)a, *y = (const name_idx *)b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sorted (name, index) pairs of tensors[0..n); NULL on allocation failure. */
static name_idx *sorted_names(const rp_named_tensor *tensors, int n) {
    name_idx *v = (name_idx *)rp_calloc((size_t)(n > 0 ? n : 1), sizeof *v);
    if (!v) return NULL;
    for (int i = 0; i < n; i++) {
        v[i].name = tensors[i].name;
        v[i].idx = i;
    }
    if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_name_idx);
    return v;
}

int rp_tensorfile_index(rp_tensorfile *f, const char *label, rp_err *err) {
    rp_tensorfile_impl *impl = (rp_tensorfile_impl *)f->impl;
    name_idx *v = sorted_names(f->tensors, f->count);
    int *s = (int *)rp_calloc((size_t)(f->count > 0 ? f->count : 1), sizeof *s);
    if (!v || !s) {
        free(v);
        free(s);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
    }
    for (int i = 0; i < f->count; i++) {
        if (i > 0 && strcmp(v[i - 1].name, v[i].name) == 0) {
            int rc = rp_fail(err, RWKVPEFT_E_FORMAT, "%s: duplicate tensor name '%.200s'", label,
                             v[i].name);
            free(v);
            free(s);
            return rc;
        }
        s[i] = v[i].idx;
    }
    free(v);
    free(impl->sorted);
    impl->sorted = s;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Writing                                                                            */
/* ---------------------------------------------------------------------------------- */

int rp_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
            min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
            min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

int rp_tensors_validate_for_write(const rp_named_tensor *tensors, int n, int allow_fp8,
                                  rp_err *err) {
    if (n < 0 || (n > 0 && !tensors))
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "write: bad tensor list (n = %d)", n);
    for (int i = 0; i < n; i++) {
        const rp_named_tensor *t = &tensors[i];
        if (!t->name)
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "write: tensor %d has no name", i);
        const char *nm = t->name;
        if (!rp_utf8_valid(nm, strlen(nm)))
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "write: tensor %d: name is not valid UTF-8", i);
        int ok;
        switch (t->dtype) {
        case RP_F32: case RP_F16: case RP_BF16: case RP_F64: case RP_I8: case RP_U8:
        case RP_I16: case RP_I32: case RP_I64: case RP_BOOL: ok = 1; break;
        case RP_F8_E4M3: case RP_F8_E5M2: ok = allow_fp8; break;
        default: ok = 0; break;
        }
        if (!ok)
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "write: tensor '%.200s': element type %d (%s) cannot be written", nm,
                           (int)t->dtype, rp_dtype_name(t->dtype));
        if (t->ndim < 0 || t->ndim > RP_MAX_DIMS)
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "write: tensor '%.200s': ndim %d out of range 0..%d", nm, t->ndim,
                           RP_MAX_DIMS);
        int64_t numel = rp_shape_numel(t->shape, t->ndim);
        int64_t prod1 = 1; /* product with zeros counted as one: torch's strides need it */
        for (int d = 0; d < t->ndim && numel >= 0; d++) {
            int64_t s = t->shape[d] > 1 ? t->shape[d] : 1;
            if (prod1 > INT64_MAX / s)
                numel = -1;
            else
                prod1 *= s;
        }
        uint64_t nbytes;
        if (numel < 0 || !rp_u64_mul((uint64_t)numel, rp_dtype_size(t->dtype), &nbytes))
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "write: tensor '%.200s': negative dimension or element count overflow",
                           nm);
        if (nbytes != (uint64_t)t->nbytes)
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "write: tensor '%.200s': nbytes is %zu but %lld elements of %s need "
                           "%llu",
                           nm, t->nbytes, (long long)numel, rp_dtype_name(t->dtype),
                           (unsigned long long)nbytes);
        if (nbytes && !t->data)
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "write: tensor '%.200s': data is NULL",
                           nm);
    }
    name_idx *v = sorted_names(tensors, n);
    if (!v) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "write: out of memory");
    for (int i = 1; i < n; i++) {
        if (strcmp(v[i - 1].name, v[i].name) == 0) {
            int rc = rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                             "write: tensor name '%.200s' occurs twice", v[i].name);
            free(v);
            return rc;
        }
    }
    free(v);
    return 0;
}

int rp_tensorfile_write(const char *path, rp_file_kind kind, const rp_named_tensor *tensors, int n,
                        rp_err *err) {
    if (!path || !*path)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "rp_tensorfile_write: no path");
    if (kind == RP_FILE_AUTO) {
        size_t l = strlen(path);
        kind = (l >= 12 && strcmp(path + l - 12, ".safetensors") == 0) ? RP_FILE_SAFETENSORS
                                                                        : RP_FILE_PTH;
    }
    switch (kind) {
    case RP_FILE_PTH: return rp_pth_write(path, tensors, n, err);
    case RP_FILE_SAFETENSORS: return rp_safetensors_write(path, tensors, n, err);
    default:
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "%s: unknown file kind %d", path, (int)kind);
    }
}

/* ---------------------------------------------------------------------------------- */
/* Output files: temporary name, checked writes, rename                               */
/* ---------------------------------------------------------------------------------- */

static atomic_uint tmp_counter;

int rp_outfile_open(rp_outfile *o, const char *path, rp_err *err) {
    memset(o, 0, sizeof *o);
    size_t l = strlen(path);
    o->path = rp_strdup(path);
    o->tmp_path = (char *)rp_malloc(l + 64);
    if (!o->path || !o->tmp_path) {
        free(o->path);
        free(o->tmp_path);
        o->path = o->tmp_path = NULL;
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    int fd = -1;
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned k = atomic_fetch_add(&tmp_counter, 1u);
        snprintf(o->tmp_path, l + 64, "%s.tmp.%ld.%u", path, (long)getpid(), k);
        fd = open(o->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) break;
    }
    if (fd < 0) {
        int rc = rp_fail(err, RWKVPEFT_E_IO, "%s: cannot create temporary file '%s': %s", path,
                         o->tmp_path, strerror(errno));
        free(o->path);
        free(o->tmp_path);
        o->path = o->tmp_path = NULL;
        return rc;
    }
    o->fp = fdopen(fd, "wb");
    if (!o->fp) {
        int e = errno;
        close(fd);
        unlink(o->tmp_path);
        int rc = rp_fail(err, RWKVPEFT_E_IO, "%s: fdopen failed: %s", path, strerror(e));
        free(o->path);
        free(o->tmp_path);
        o->path = o->tmp_path = NULL;
        return rc;
    }
    setvbuf(o->fp, NULL, _IOFBF, 1u << 20);
    return 0;
}

int rp_outfile_write(rp_outfile *o, const void *data, size_t n, rp_err *err) {
    if (!n) return 0;
    errno = 0;
    if (fwrite(data, 1, n, o->fp) != n) {
        int e = errno;
        return rp_fail(err, RWKVPEFT_E_IO, "%s: write failed after %llu bytes: %s", o->path,
                       (unsigned long long)o->written, e ? strerror(e) : "short write");
    }
    o->written += n;
    return 0;
}

void rp_outfile_abort(rp_outfile *o) {
    if (o->fp) fclose(o->fp);
    if (o->tmp_path) unlink(o->tmp_path);
    free(o->tmp_path);
    free(o->path);
    memset(o, 0, sizeof *o);
}

int rp_outfile_commit(rp_outfile *o, rp_err *err) {
    int rc = 0;
    errno = 0;
    if (fflush(o->fp) != 0) {
        rc = rp_fail(err, RWKVPEFT_E_IO, "%s: write failed: %s", o->path, strerror(errno));
    } else if (fsync(fileno(o->fp)) != 0 && errno != EINVAL && errno != EROFS) {
        rc = rp_fail(err, RWKVPEFT_E_IO, "%s: fsync failed: %s", o->path, strerror(errno));
    }
    FILE *fp = o->fp;
    o->fp = NULL;
    if (fclose(fp) != 0 && !rc)
        rc = rp_fail(err, RWKVPEFT_E_IO, "%s: close failed: %s", o->path, strerror(errno));
    if (!rc && rename(o->tmp_path, o->path) != 0)
        rc = rp_fail(err, RWKVPEFT_E_IO, "%s: cannot rename '%s' over it: %s", o->path, o->tmp_path,
                     strerror(errno));
    if (rc) {
        rp_outfile_abort(o);
        return rc;
    }
    free(o->tmp_path);
    free(o->path);
    memset(o, 0, sizeof *o);
    return 0;
}
