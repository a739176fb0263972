/* binidx.c — reader and writer of Megatron mmap indexed datasets (spec §5.1).
 *
 * <prefix>.idx (little endian):
 *     0  magic "MMIDIDX\0\0"      9  u64 version = 1      17  u8 dtype code
 *    18  u64 len (sequences)     26  u64 doc_count        34  i32 sizes[len]
 *        i64 pointers[len] (byte offsets in .bin)          i64 doc_idx[doc_count]
 * <prefix>.bin: the tokens of every sequence, one after the other.
 *
 * The reader memory-maps both files and validates everything before use: exact .idx size,
 * magic, version, dtype code, non-negative sizes, pointers equal to the prefix sums of
 * size*itemsize (which implies monotonicity), the sum equal to the .bin size, doc_idx
 * starting at 0, non-decreasing and ending at len. Every error names the file and the byte
 * offset of the offending field. Token values are checked when they are read.
 *
 * The writer produces what json2binidx produces: one sequence per document, doc_idx =
 * 0, 1, ..., ndocs. It writes <prefix>.bin.tmp-<pid>-<k> / .idx.tmp-…, and renames them to
 * <prefix>.bin / <prefix>.idx only in finish(); an unfinished or failed writer removes them.
 */
#include "binidx.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const unsigned char BINIDX_MAGIC[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

size_t rp_binidx_itemsize(int code) {
    switch (code) {
    case 1: case 2: return 1;
    case 3: case 8: return 2;
    case 4: case 6: return 4;
    case 5: case 7: return 8;
    default: return 0;
    }
}

const char *rp_binidx_dtype_name(int code) {
    static const char *n[] = {"unknown", "uint8", "int8", "int16", "int32",
                              "int64", "float32", "float64", "uint16"};
    return code >= 1 && code <= 8 ? n[code] : n[0];
}

static uint64_t rd_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--) v = (v << 8) | p[k];
    return v;
}

static uint32_t rd_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void wr_u64(unsigned char *p, uint64_t v) {
    for (int k = 0; k < 8; k++) p[k] = (unsigned char)(v >> (8 * k));
}

static void wr_u32(unsigned char *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (unsigned char)(v >> (8 * k));
}

/* ------------------------------------------------------------------------------------ */
/* Reader                                                                               */
/* ------------------------------------------------------------------------------------ */

struct rwkvpeft_dataset {
    char *idx_path, *bin_path;
    rp_file_image idx; /* the .idx file */
    rp_file_image bin; /* the .bin file (data NULL when empty) */
    int dtype_code;
    size_t itemsize;
    int64_t n_seqs;
    int64_t n_tokens;
    size_t sizes_off, ptrs_off;
    rp_err err;
};

void rp_dataset_close(rwkvpeft_dataset *ds) {
    if (!ds) return;
    rp_file_image_close(&ds->idx);
    rp_file_image_close(&ds->bin);
    free(ds->idx_path);
    free(ds->bin_path);
    free(ds);
}

static char *concat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = rp_malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

static int validate(rwkvpeft_dataset *ds, rp_err *err) {
    const unsigned char *p = ds->idx.data;
    const char *ip = ds->idx_path;
    size_t n = ds->idx.size;
    if (n < RP_BINIDX_HEADER_SIZE)
        return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: truncated header: %zu bytes, need %d", ip, n,
                       RP_BINIDX_HEADER_SIZE);
    if (memcmp(p, BINIDX_MAGIC, 9) != 0)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: offset 0: bad magic (not a Megatron mmap .idx file, expected "
                       "\"MMIDIDX\\0\\0\")", ip);
    uint64_t version = rd_u64(p + 9);
    if (version != 1)
        return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: offset 9: version %llu, expected 1", ip,
                       (unsigned long long)version);
    int code = p[17];
    if (rp_binidx_itemsize(code) == 0)
        return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: offset 17: unknown dtype code %d (expected 1..8)",
                       ip, code);
    ds->dtype_code = code;
    ds->itemsize = rp_binidx_itemsize(code);
    uint64_t len = rd_u64(p + 18);
    uint64_t dc = rd_u64(p + 26);
    /* exact size: 34 + 4 len + 8 len + 8 dc, computed without overflow */
    uint64_t avail = n - RP_BINIDX_HEADER_SIZE;
    if (len > avail / 12)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: offset 18: %llu sequences need %s bytes of sizes and pointers, the file "
                       "has %llu after the header", ip, (unsigned long long)len, "12 x len",
                       (unsigned long long)avail);
    uint64_t rest = avail - 12 * len;
    if (dc > rest / 8 || rest != 8 * dc)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: offset 26: doc_count %llu with %llu sequences needs a file of %s bytes, "
                       "it has %zu", ip, (unsigned long long)dc, (unsigned long long)len,
                       dc > rest / 8 ? "more" : "fewer", n);
    if (len > INT64_MAX / 16)
        return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: offset 18: absurd sequence count", ip);
    ds->n_seqs = (int64_t)len;
    ds->sizes_off = RP_BINIDX_HEADER_SIZE;
    ds->ptrs_off = RP_BINIDX_HEADER_SIZE + 4 * (size_t)len;
    size_t doc_off = ds->ptrs_off + 8 * (size_t)len;
    /* sizes and pointers */
    uint64_t expect = 0;
    for (uint64_t i = 0; i < len; i++) {
        int32_t sz = (int32_t)rd_u32(p + ds->sizes_off + 4 * i);
        if (sz < 0)
            return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: offset %zu: size of sequence %llu is %d (negative)",
                           ip, ds->sizes_off + 4 * (size_t)i, (unsigned long long)i, (int)sz);
        uint64_t ptr = rd_u64(p + ds->ptrs_off + 8 * i);
        if (ptr != expect)
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: offset %zu: pointer of sequence %llu is %lld, expected %llu (the sum "
                           "of the previous sizes x %zu bytes)", ip, ds->ptrs_off + 8 * (size_t)i,
                           (unsigned long long)i, (long long)ptr, (unsigned long long)expect,
                           ds->itemsize);
        expect += (uint64_t)sz * ds->itemsize;
        if (expect > ds->bin.size)
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: offset %zu: sequence %llu (%d tokens at byte %llu) ends past the "
                           "end of %s (%zu bytes)", ip, ds->sizes_off + 4 * (size_t)i,
                           (unsigned long long)i, (int)sz, (unsigned long long)ptr, ds->bin_path,
                           ds->bin.size);
    }
    if (expect != ds->bin.size)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: %zu bytes, but the index %s describes %llu bytes of tokens "
                       "(mismatched .bin/.idx pair?)", ds->bin_path, ds->bin.size, ip,
                       (unsigned long long)expect);
    ds->n_tokens = (int64_t)(ds->bin.size / ds->itemsize);
    /* doc_idx */
    if (dc == 0)
        return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: offset 26: doc_count is 0 (doc_idx must hold at "
                       "least the leading 0)", ip);
    uint64_t prev = 0;
    for (uint64_t k = 0; k < dc; k++) {
        uint64_t v = rd_u64(p + doc_off + 8 * k);
        size_t off = doc_off + 8 * (size_t)k;
        if (k == 0 && v != 0)
            return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: offset %zu: doc_idx[0] is %lld, expected 0",
                           ip, off, (long long)v);
        if (v < prev || v > len)
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: offset %zu: doc_idx[%llu] = %lld is %s", ip, off,
                           (unsigned long long)k, (long long)v,
                           v < prev ? "smaller than the previous entry" : "beyond the sequence count");
        prev = v;
    }
    if (prev != len)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: offset %zu: last doc_idx entry is %llu, expected the sequence count %llu",
                       ip, doc_off + 8 * ((size_t)dc - 1), (unsigned long long)prev,
                       (unsigned long long)len);
    return 0;
}

int rp_dataset_open(const char *prefix, rwkvpeft_dataset **out, rp_err *err) {
    *out = NULL;
    rwkvpeft_dataset *ds = rp_calloc(1, sizeof *ds);
    if (!ds) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", prefix);
    ds->idx_path = concat(prefix, ".idx");
    ds->bin_path = concat(prefix, ".bin");
    int rc;
    if (!ds->idx_path || !ds->bin_path) {
        rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", prefix);
        goto fail;
    }
    rc = rp_file_image_open(ds->idx_path, &ds->idx, err);
    if (rc) goto fail;
    rc = rp_file_image_open(ds->bin_path, &ds->bin, err);
    if (rc) goto fail;
    rc = validate(ds, err);
    if (rc) goto fail;
    *out = ds;
    return 0;
fail:
    rp_dataset_close(ds);
    return rc;
}

int64_t rp_dataset_num_docs(const rwkvpeft_dataset *ds) { return ds->n_seqs; }
int64_t rp_dataset_num_tokens(const rwkvpeft_dataset *ds) { return ds->n_tokens; }
int rp_dataset_dtype_code(const rwkvpeft_dataset *ds) { return ds->dtype_code; }

void rp_dataset_doc(const rwkvpeft_dataset *ds, int64_t index, int64_t *off, int64_t *n) {
    uint64_t ptr = rd_u64(ds->idx.data + ds->ptrs_off + 8 * (size_t)index);
    int32_t sz = (int32_t)rd_u32(ds->idx.data + ds->sizes_off + 4 * (size_t)index);
    *off = (int64_t)(ptr / ds->itemsize);
    *n = sz;
}

static int bad_value(const rwkvpeft_dataset *ds, int64_t tok, const char *what, rp_err *err) {
    return rp_fail(err, RWKVPEFT_E_FORMAT,
                   "%s: byte offset %lld: token %lld is %s, not an id in [0, 2^31)", ds->bin_path,
                   (long long)tok * (long long)ds->itemsize, (long long)tok, what);
}

int rp_dataset_read(const rwkvpeft_dataset *ds, int64_t offset, int64_t n, int32_t *out,
                    rp_err *err) {
    if (offset < 0 || n < 0 || offset > ds->n_tokens || n > ds->n_tokens - offset)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "%s: tokens [%lld, %lld) are outside the %lld tokens of the file",
                       ds->bin_path, (long long)offset, (long long)offset + (long long)n,
                       (long long)ds->n_tokens);
    if (n == 0) return 0;
    const unsigned char *p = ds->bin.data + (size_t)offset * ds->itemsize;
    char what[64];
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *q = p + (size_t)i * ds->itemsize;
        int64_t v;
        switch (ds->dtype_code) {
        case 1: v = q[0]; break;
        case 2: v = (int8_t)q[0]; break;
        case 3: v = (int16_t)(uint16_t)(q[0] | (q[1] << 8)); break;
        case 8: v = (uint16_t)(q[0] | (q[1] << 8)); break;
        case 4: v = (int32_t)rd_u32(q); break;
        case 5: v = (int64_t)rd_u64(q); break;
        case 6: {
            uint32_t u = rd_u32(q);
            float f;
            memcpy(&f, &u, 4);
            if (!(f >= 0.0f && f < 2147483648.0f) || f != floorf(f)) {
                snprintf(what, sizeof what, "%g", (double)f);
                return bad_value(ds, offset + i, what, err);
            }
            v = (int64_t)f;
            break;
        }
        default: { /* 7 */
            uint64_t u = rd_u64(q);
            double d;
            memcpy(&d, &u, 8);
            if (!(d >= 0.0 && d < 2147483648.0) || d != floor(d)) {
                snprintf(what, sizeof what, "%g", d);
                return bad_value(ds, offset + i, what, err);
            }
            v = (int64_t)d;
            break;
        }
        }
        if (v < 0 || v > INT32_MAX) {
            snprintf(what, sizeof what, "%lld", (long long)v);
            return bad_value(ds, offset + i, what, err);
        }
        out[i] = (int32_t)v;
    }
    return 0;
}

/* Public API ------------------------------------------------------------------------- */

rwkvpeft_status rwkvpeft_dataset_open(const char *prefix, rwkvpeft_dataset **out) {
    if (!out) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_open: out is NULL");
    *out = NULL;
    if (!prefix) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_open: prefix is NULL");
    return (rwkvpeft_status)rp_dataset_open(prefix, out, NULL);
}

void rwkvpeft_dataset_free(rwkvpeft_dataset *ds) { rp_dataset_close(ds); }

int64_t rwkvpeft_dataset_num_docs(const rwkvpeft_dataset *ds) { return ds ? ds->n_seqs : 0; }

int64_t rwkvpeft_dataset_num_tokens(const rwkvpeft_dataset *ds) { return ds ? ds->n_tokens : 0; }

rwkvpeft_status rwkvpeft_dataset_doc(const rwkvpeft_dataset *cds, int64_t index,
                                     int64_t *token_offset, int64_t *n_tokens) {
    if (!cds) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_doc: dataset is NULL");
    rwkvpeft_dataset *ds = (rwkvpeft_dataset *)cds; /* only the error record is written */
    if (index < 0 || index >= ds->n_seqs)
        return rp_fail(&ds->err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "dataset_doc: index %lld out of range [0, %lld)", (long long)index,
                       (long long)ds->n_seqs);
    int64_t o, n;
    rp_dataset_doc(ds, index, &o, &n);
    if (token_offset) *token_offset = o;
    if (n_tokens) *n_tokens = n;
    return RWKVPEFT_OK;
}

rwkvpeft_status rwkvpeft_dataset_read(const rwkvpeft_dataset *cds, int64_t offset, int64_t n,
                                      int32_t *tokens) {
    if (!cds) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_read: dataset is NULL");
    rwkvpeft_dataset *ds = (rwkvpeft_dataset *)cds;
    if (!tokens && n > 0)
        return rp_fail(&ds->err, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_read: tokens is NULL");
    return (rwkvpeft_status)rp_dataset_read(ds, offset, n, tokens, &ds->err);
}

const char *rwkvpeft_dataset_last_error(const rwkvpeft_dataset *ds) {
    return ds ? ds->err.msg : "";
}

/* ------------------------------------------------------------------------------------ */
/* Writer                                                                               */
/* ------------------------------------------------------------------------------------ */

struct rwkvpeft_dataset_writer {
    char *bin_final, *idx_final, *bin_tmp, *idx_tmp;
    FILE *bin;
    int dtype_code;
    size_t itemsize;
    int32_t *sizes;
    size_t n_docs, cap;
    uint64_t bin_bytes;
    unsigned char *conv;
    size_t conv_cap;
    int finished, failed;
    rp_err err;
};

/* Creates a fresh temporary file next to `final`. */
static FILE *create_tmp(const char *final, char **tmp_out, rp_err *err) {
    size_t L = strlen(final) + 48;
    char *tmp = rp_malloc(L);
    if (!tmp) {
        rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", final);
        return NULL;
    }
    for (int k = 0; k < 1000; k++) {
        snprintf(tmp, L, "%s.tmp-%ld-%d", final, (long)getpid(), k);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0) {
            if (errno == EEXIST) continue;
            rp_fail(err, RWKVPEFT_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
            free(tmp);
            return NULL;
        }
        FILE *f = fdopen(fd, "wb");
        if (!f) {
            rp_fail(err, RWKVPEFT_E_IO, "%s: fdopen: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return NULL;
        }
        *tmp_out = tmp;
        return f;
    }
    rp_fail(err, RWKVPEFT_E_IO, "%s: cannot find a free temporary name", final);
    free(tmp);
    return NULL;
}

static void writer_discard(rwkvpeft_dataset_writer *w) {
    if (w->bin) {
        fclose(w->bin);
        w->bin = NULL;
    }
    if (w->bin_tmp) unlink(w->bin_tmp);
    if (w->idx_tmp) unlink(w->idx_tmp);
}

void rwkvpeft_dataset_writer_free(rwkvpeft_dataset_writer *w) {
    if (!w) return;
    if (!w->finished) writer_discard(w);
    free(w->bin_final);
    free(w->idx_final);
    free(w->bin_tmp);
    free(w->idx_tmp);
    free(w->sizes);
    free(w->conv);
    free(w);
}

rwkvpeft_status rwkvpeft_dataset_writer_create(const char *prefix, int32_t dtype_code,
                                               int32_t vocab_size, rwkvpeft_dataset_writer **out) {
    if (!out) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_writer_create: out is NULL");
    *out = NULL;
    if (!prefix || !*prefix)
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_writer_create: empty prefix");
    if (dtype_code == 0) {
        if (vocab_size <= 0)
            return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                           "dataset_writer_create: dtype_code 0 needs a positive vocab_size");
        dtype_code = vocab_size < 65500 ? 8 : 4; /* json2binidx's __best_fitting_dtype */
    }
    if (rp_binidx_itemsize(dtype_code) == 0)
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                       "dataset_writer_create: dtype code %d is not 0..8", (int)dtype_code);
    rwkvpeft_dataset_writer *w = rp_calloc(1, sizeof *w);
    if (!w) return rp_fail(NULL, RWKVPEFT_E_OUT_OF_MEMORY, "dataset_writer_create: out of memory");
    w->dtype_code = dtype_code;
    w->itemsize = rp_binidx_itemsize(dtype_code);
    w->bin_final = concat(prefix, ".bin");
    w->idx_final = concat(prefix, ".idx");
    if (!w->bin_final || !w->idx_final) {
        rwkvpeft_dataset_writer_free(w);
        return rp_fail(NULL, RWKVPEFT_E_OUT_OF_MEMORY, "dataset_writer_create: out of memory");
    }
    rp_err e;
    w->bin = create_tmp(w->bin_final, &w->bin_tmp, &e);
    if (!w->bin) {
        rwkvpeft_dataset_writer_free(w);
        return (rwkvpeft_status)rp_err_copy(NULL, &e);
    }
    *out = w;
    return RWKVPEFT_OK;
}

static int fits(int code, int32_t v) {
    switch (code) {
    case 1: return v >= 0 && v <= 255;
    case 2: return v >= 0 && v <= 127;
    case 3: return v >= 0 && v <= 32767;
    case 8: return v >= 0 && v <= 65535;
    case 6: return v >= 0 && v <= (1 << 24); /* exactly representable in float32 */
    default: return v >= 0;
    }
}

rwkvpeft_status rwkvpeft_dataset_writer_add(rwkvpeft_dataset_writer *w, const int32_t *tokens,
                                            int64_t n) {
    if (!w) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_writer_add: writer is NULL");
    if (w->finished || w->failed)
        return rp_fail(&w->err, RWKVPEFT_E_STATE, "dataset_writer_add: writer is %s",
                       w->finished ? "finished" : "in a failed state");
    if (n < 0 || n > INT32_MAX || (!tokens && n > 0))
        return rp_fail(&w->err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "dataset_writer_add: %lld tokens (must be 0..2^31-1 with a non-NULL array)",
                       (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (!fits(w->dtype_code, tokens[i]))
            return rp_fail(&w->err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "dataset_writer_add: token %lld of document %zu is %d, which does not "
                           "fit dtype %s", (long long)i, w->n_docs, (int)tokens[i],
                           rp_binidx_dtype_name(w->dtype_code));
    if (w->n_docs == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 1024;
        int32_t *ns = rp_realloc_array(w->sizes, nc, sizeof *ns);
        if (!ns) return rp_fail(&w->err, RWKVPEFT_E_OUT_OF_MEMORY, "dataset_writer_add: out of memory");
        w->sizes = ns;
        w->cap = nc;
    }
    size_t bytes = (size_t)n * w->itemsize;
    if (bytes > w->conv_cap) {
        unsigned char *nc = realloc(w->conv, bytes);
        if (!nc) return rp_fail(&w->err, RWKVPEFT_E_OUT_OF_MEMORY, "dataset_writer_add: out of memory");
        w->conv = nc;
        w->conv_cap = bytes;
    }
    unsigned char *c = w->conv;
    for (int64_t i = 0; i < n; i++) {
        int32_t v = tokens[i];
        unsigned char *q = c + (size_t)i * w->itemsize;
        switch (w->dtype_code) {
        case 1: case 2: q[0] = (unsigned char)v; break;
        case 3: case 8: q[0] = (unsigned char)v; q[1] = (unsigned char)(v >> 8); break;
        case 4: wr_u32(q, (uint32_t)v); break;
        case 5: wr_u64(q, (uint64_t)(int64_t)v); break;
        case 6: { float f = (float)v; uint32_t u; memcpy(&u, &f, 4); wr_u32(q, u); break; }
        default: { double d = (double)v; uint64_t u; memcpy(&u, &d, 8); wr_u64(q, u); break; }
        }
    }
    if (bytes && fwrite(c, 1, bytes, w->bin) != bytes) {
        w->failed = 1;
        return rp_fail(&w->err, RWKVPEFT_E_IO, "%s: write error: %s", w->bin_tmp, strerror(errno));
    }
    w->sizes[w->n_docs++] = (int32_t)n;
    w->bin_bytes += bytes;
    return RWKVPEFT_OK;
}

rwkvpeft_status rwkvpeft_dataset_writer_finish(rwkvpeft_dataset_writer *w) {
    if (!w) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "dataset_writer_finish: writer is NULL");
    if (w->finished || w->failed)
        return rp_fail(&w->err, RWKVPEFT_E_STATE, "dataset_writer_finish: writer is %s",
                       w->finished ? "already finished" : "in a failed state");
    int rc = 0;
    FILE *bin = w->bin;
    w->bin = NULL;
    if (fflush(bin) != 0 || fsync(fileno(bin)) != 0) {
        rc = rp_fail(&w->err, RWKVPEFT_E_IO, "%s: write error: %s", w->bin_tmp, strerror(errno));
        fclose(bin);
        goto fail;
    }
    if (fclose(bin) != 0) {
        rc = rp_fail(&w->err, RWKVPEFT_E_IO, "%s: close error: %s", w->bin_tmp, strerror(errno));
        goto fail;
    }
    FILE *idx = create_tmp(w->idx_final, &w->idx_tmp, &w->err);
    if (!idx) {
        rc = w->err.code;
        goto fail;
    }
    unsigned char hdr[RP_BINIDX_HEADER_SIZE];
    memcpy(hdr, BINIDX_MAGIC, 9);
    wr_u64(hdr + 9, 1);
    hdr[17] = (unsigned char)w->dtype_code;
    wr_u64(hdr + 18, w->n_docs);
    wr_u64(hdr + 26, w->n_docs + 1);
    int ok = fwrite(hdr, 1, sizeof hdr, idx) == sizeof hdr;
    unsigned char buf[8 * 512];
    for (size_t i = 0; ok && i < w->n_docs; i += 512) { /* sizes */
        size_t m = w->n_docs - i < 512 ? w->n_docs - i : 512;
        for (size_t j = 0; j < m; j++) wr_u32(buf + 4 * j, (uint32_t)w->sizes[i + j]);
        ok = fwrite(buf, 4, m, idx) == m;
    }
    uint64_t ptr = 0;
    for (size_t i = 0; ok && i < w->n_docs; i += 512) { /* pointers */
        size_t m = w->n_docs - i < 512 ? w->n_docs - i : 512;
        for (size_t j = 0; j < m; j++) {
            wr_u64(buf + 8 * j, ptr);
            ptr += (uint64_t)w->sizes[i + j] * w->itemsize;
        }
        ok = fwrite(buf, 8, m, idx) == m;
    }
    for (size_t i = 0; ok && i <= w->n_docs; i += 512) { /* doc_idx = 0..n */
        size_t m = w->n_docs + 1 - i < 512 ? w->n_docs + 1 - i : 512;
        for (size_t j = 0; j < m; j++) wr_u64(buf + 8 * j, i + j);
        ok = fwrite(buf, 8, m, idx) == m;
    }
    if (ok) ok = fflush(idx) == 0 && fsync(fileno(idx)) == 0;
    int cerr = fclose(idx);
    if (!ok || cerr != 0) {
        rc = rp_fail(&w->err, RWKVPEFT_E_IO, "%s: write error: %s", w->idx_tmp, strerror(errno));
        goto fail;
    }
    if (rename(w->bin_tmp, w->bin_final) != 0) {
        rc = rp_fail(&w->err, RWKVPEFT_E_IO, "cannot rename %s to %s: %s", w->bin_tmp, w->bin_final,
                     strerror(errno));
        goto fail;
    }
    if (rename(w->idx_tmp, w->idx_final) != 0) {
        rc = rp_fail(&w->err, RWKVPEFT_E_IO, "cannot rename %s to %s: %s", w->idx_tmp, w->idx_final,
                     strerror(errno));
        unlink(w->bin_final); /* a .bin without its index would be a trap */
        goto fail;
    }
    w->finished = 1;
    return RWKVPEFT_OK;
fail:
    w->failed = 1;
    writer_discard(w);
    return (rwkvpeft_status)rc;
}

const char *rwkvpeft_dataset_writer_last_error(const rwkvpeft_dataset_writer *w) {
    return w ? w->err.msg : "";
}
