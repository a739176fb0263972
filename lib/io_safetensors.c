/* io_safetensors.c — .safetensors files: 8-byte little-endian header length N, N bytes of
 * JSON ({name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}), then data. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorfile.h"

#define ST_MAX_HEADER (100u * 1000u * 1000u)

static const struct {
    const char *name;
    rp_dtype dtype;
} ST_DTYPES[] = {
    {"F64", RP_F64},   {"F32", RP_F32}, {"F16", RP_F16}, {"BF16", RP_BF16},
    {"I64", RP_I64},   {"I32", RP_I32}, {"I16", RP_I16}, {"I8", RP_I8},
    {"U8", RP_U8},     {"BOOL", RP_BOOL}, {"F8_E4M3", RP_F8_E4M3}, {"F8_E5M2", RP_F8_E5M2},
};

/* dtypes of the safetensors spec that this library cannot hold */
static const char *const ST_UNSUPPORTED[] = {"U16", "U32", "U64", "C64", "F8_E8M0", "F6_E2M3",
                                             "F6_E3M2", "F4", "E8M0", "F8_E4M3FNUZ",
                                             "F8_E5M2FNUZ"};

static const char *st_dtype_name(rp_dtype t) {
    for (size_t i = 0; i < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; i++)
        if (ST_DTYPES[i].dtype == t) return ST_DTYPES[i].name;
    return NULL;
}

/* A JSON number that is an exact integer in [0, 2^53]. */
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}

typedef struct st_span {
    uint64_t begin, end;
    int idx;
} st_span;

static int cmp_span(const void *a, const void *b) {
    const st_span *x = (const st_span *)a, *y = (const st_span *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int st_fail_json(rp_err *err, const char *label, const char *name, const char *what) {
    return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: safetensors header: tensor '%.200s': %s", label,
                   name, what);
}

int rp_safetensors_read(rp_tensorfile *f, const char *label, rp_err *err) {
    rp_tensorfile_impl *impl = (rp_tensorfile_impl *)f->impl;
    const unsigned char *b = impl->image.data;
    uint64_t size = impl->image.size;
    if (size < 8)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: %llu bytes is too short for a safetensors file (8-byte header length "
                       "expected) and it is not a zip (.pth) archive either",
                       label, (unsigned long long)size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (n > size - 8)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: safetensors header length %llu exceeds the %llu bytes that follow it "
                       "(truncated, or not a safetensors/.pth file)",
                       label, (unsigned long long)n, (unsigned long long)(size - 8));
    if (n > ST_MAX_HEADER)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: safetensors header length %llu exceeds the limit of %u bytes", label,
                       (unsigned long long)n, ST_MAX_HEADER);
    if (n < 2 || b[8] != '{')
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: safetensors header (%llu bytes at offset 8) does not start with '{' "
                       "(not a safetensors or .pth file)",
                       label, (unsigned long long)n);
    const char *hj = (const char *)b + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hj, (size_t)n, &end, 0);
    if (!root) {
        /* on failure cJSON reports the error position through `end` */
        long at = (end && end >= hj && end <= hj + n) ? (long)(end - hj) : -1;
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: safetensors header is not valid JSON (error near header byte %ld of "
                       "%llu)",
                       label, at, (unsigned long long)n);
    }
    int rc = 0;
    st_span *spans = NULL;
    for (const char *p = end; p && p < hj + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                         "%s: safetensors header has non-space bytes after the JSON object (at "
                         "header byte %ld)",
                         label, (long)(p - hj));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        rc = rp_fail(err, RWKVPEFT_E_FORMAT, "%s: safetensors header is JSON but not an object",
                     label);
        goto done;
    }
    uint64_t data_start = 8 + n, data_size = size - data_start;
    size_t count = 0;
    for (cJSON *it = root->child; it; it = it->next)
        if (!it->string || strcmp(it->string, "__metadata__") != 0) count++;
    if (count > (size_t)INT32_MAX / 2) {
        rc = rp_fail(err, RWKVPEFT_E_FORMAT, "%s: too many tensors", label);
        goto done;
    }
    f->tensors = (rp_named_tensor *)rp_calloc(count, sizeof *f->tensors);
    spans = (st_span *)rp_calloc(count, sizeof *spans);
    if (!f->tensors || !spans) {
        rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory for %zu tensors", label, count);
        goto done;
    }
    for (cJSON *it = root->child; it; it = it->next) {
        const char *name = it->string ? it->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                             "%s: safetensors header: __metadata__ is not an object", label);
                goto done;
            }
            continue; /* string -> string metadata: ignored */
        }
        if (!cJSON_IsObject(it)) {
            rc = st_fail_json(err, label, name, "entry is not a JSON object");
            goto done;
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(jd)) {
            rc = st_fail_json(err, label, name, "\"dtype\" missing or not a string");
            goto done;
        }
        int dt = -1;
        for (size_t k = 0; k < sizeof ST_DTYPES / sizeof ST_DTYPES[0]; k++)
            if (strcmp(jd->valuestring, ST_DTYPES[k].name) == 0) dt = (int)ST_DTYPES[k].dtype;
        if (dt < 0) {
            int known = 0;
            for (size_t k = 0; k < sizeof ST_UNSUPPORTED / sizeof ST_UNSUPPORTED[0]; k++)
                if (strcmp(jd->valuestring, ST_UNSUPPORTED[k]) == 0) known = 1;
            rc = rp_fail(err, known ? RWKVPEFT_E_UNSUPPORTED : RWKVPEFT_E_FORMAT,
                         "%s: safetensors header: tensor '%.200s': %s dtype \"%.32s\"", label, name,
                         known ? "unsupported" : "unknown", jd->valuestring);
            goto done;
        }
        if (!cJSON_IsArray(js)) {
            rc = st_fail_json(err, label, name, "\"shape\" missing or not a list");
            goto done;
        }
        int ndim = cJSON_GetArraySize(js);
        if (ndim > RP_MAX_DIMS) {
            rc = rp_fail(err, RWKVPEFT_E_UNSUPPORTED,
                         "%s: tensor '%.200s' has %d dimensions (at most %d supported)", label, name,
                         ndim, RP_MAX_DIMS);
            goto done;
        }
        rp_named_tensor *t = &f->tensors[f->count];
        int d = 0;
        for (const cJSON *e = js->child; e; e = e->next, d++) {
            uint64_t v;
            if (!json_uint(e, &v)) {
                rc = st_fail_json(err, label, name, "shape entries must be integers >= 0");
                goto done;
            }
            t->shape[d] = (int64_t)v;
        }
        t->ndim = ndim;
        t->dtype = (rp_dtype)dt;
        uint64_t ob, oe;
        if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 || !json_uint(jo->child, &ob) ||
            !json_uint(jo->child->next, &oe)) {
            rc = st_fail_json(err, label, name,
                              "\"data_offsets\" must be a list of two integers [begin, end]");
            goto done;
        }
        int64_t numel = rp_shape_numel(t->shape, ndim);
        uint64_t nbytes;
        if (numel < 0 || !rp_u64_mul((uint64_t)numel, rp_dtype_size(t->dtype), &nbytes)) {
            rc = st_fail_json(err, label, name, "shape has an absurd number of elements (overflow)");
            goto done;
        }
        if (ob > oe || oe > data_size) {
            rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                         "%s: safetensors header: tensor '%.200s': data_offsets [%llu, %llu] lie "
                         "outside the data area of %llu bytes",
                         label, name, (unsigned long long)ob, (unsigned long long)oe,
                         (unsigned long long)data_size);
            goto done;
        }
        if (oe - ob != nbytes) {
            rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                         "%s: safetensors header: tensor '%.200s': data_offsets [%llu, %llu] span "
                         "%llu bytes but %lld elements of %s need %llu",
                         label, name, (unsigned long long)ob, (unsigned long long)oe,
                         (unsigned long long)(oe - ob), (long long)numel, jd->valuestring,
                         (unsigned long long)nbytes);
            goto done;
        }
        char *copy = rp_strdup(name);
        if (!copy) {
            rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
            goto done;
        }
        t->name = copy;
        t->data = b + data_start + ob;
        t->nbytes = (size_t)nbytes;
        spans[f->count].begin = ob;
        spans[f->count].end = oe;
        spans[f->count].idx = f->count;
        f->count++;
    }
    /* no two tensors may share bytes */
    qsort(spans, (size_t)f->count, sizeof *spans, cmp_span);
    {
        int have = 0;
        st_span prev = {0, 0, 0};
        for (int i = 0; i < f->count; i++) {
            if (spans[i].begin == spans[i].end) continue;
            if (have && spans[i].begin < prev.end) {
                rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                             "%s: safetensors tensors '%.200s' [%llu, %llu) and '%.200s' [%llu, "
                             "%llu) overlap",
                             label, f->tensors[prev.idx].name, (unsigned long long)prev.begin,
                             (unsigned long long)prev.end, f->tensors[spans[i].idx].name,
                             (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end);
                goto done;
            }
            prev = spans[i];
            have = 1;
        }
    }
    rc = rp_tensorfile_index(f, label, err);
done:
    free(spans);
    cJSON_Delete(root);
    return rc;
}

/* ---------------------------------------------------------------------------------- */
/* Writing                                                                            */
/* ---------------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *s, const char *p, size_t n) {
    if (s->oom) return;
    if (n > s->cap - s->n) {
        size_t nc = s->cap ? s->cap : 1024;
        while (nc - s->n < n) {
            if (nc > SIZE_MAX / 2) {
                s->oom = 1;
                return;
            }
            nc *= 2;
        }
        char *q = (char *)realloc(s->p, nc);
        if (!q) {
            s->oom = 1;
            return;
        }
        s->p = q;
        s->cap = nc;
    }
    memcpy(s->p + s->n, p, n);
    s->n += n;
}

static void sb_str(sbuf *s, const char *p) { sb_add(s, p, strlen(p)); }

static void sb_json_string(sbuf *s, const char *str) {
    sb_add(s, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_add(s, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_add(s, esc, 6);
        } else {
            sb_add(s, (const char *)p, 1);
        }
    }
    sb_add(s, "\"", 1);
}

int rp_safetensors_write(const char *path, const rp_named_tensor *tensors, int n, rp_err *err) {
    RP_TRY(rp_tensors_validate_for_write(tensors, n, 1, err));
    for (int i = 0; i < n; i++)
        if (strcmp(tensors[i].name, "__metadata__") == 0)
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "%s: the tensor name '__metadata__' is reserved in safetensors", path);
    sbuf h = {0};
    sb_str(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const rp_named_tensor *t = &tensors[i];
        char num[48];
        sb_str(&h, ",");
        sb_json_string(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, st_dtype_name(t->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
            sb_str(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off,
                 off + (uint64_t)t->nbytes);
        sb_str(&h, num);
        off += (uint64_t)t->nbytes;
    }
    sb_str(&h, "}");
    while (!h.oom && h.n % 8) sb_add(&h, " ", 1);
    if (h.oom) {
        free(h.p);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory building the header", path);
    }
    rp_outfile out;
    int rc = rp_outfile_open(&out, path, err);
    if (rc) {
        free(h.p);
        return rc;
    }
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    rc = rp_outfile_write(&out, len, 8, err);
    if (!rc) rc = rp_outfile_write(&out, h.p, h.n, err);
    for (int i = 0; i < n && !rc; i++)
        rc = rp_outfile_write(&out, tensors[i].data, tensors[i].nbytes, err);
    free(h.p);
    if (rc) {
        rp_outfile_abort(&out);
        return rc;
    }
    return rp_outfile_commit(&out, err);
}
