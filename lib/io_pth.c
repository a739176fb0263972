/* io_pth.c — PyTorch .pth files (torch.save's zip + pickle layout): reading and writing. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* open flags, pread, fsync, getpid */
#endif
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io_pickle.h"
#include "io_zip.h"

/* ---------------------------------------------------------------------------------- */
/* Reading                                                                            */
/* ---------------------------------------------------------------------------------- */

typedef struct pth_record {
    const unsigned char *data;
    uint64_t size;
    int loaded;
} pth_record;

typedef struct pth_ctx {
    rp_tensorfile *f;
    rp_tensorfile_impl *impl;
    const rp_zip_reader *z;
    const char *label;
    const char *prefix; /* "archive" */
    size_t prefix_len;
    pth_record *recs; /* per zip entry, loaded on first use */
    size_t tensors_cap;
    char *name; /* current dotted key path */
    size_t name_len, name_cap;
    rp_err *err;
} pth_ctx;

static int name_reserve(pth_ctx *c, size_t extra) {
    size_t need = c->name_len + extra + 1;
    if (need <= c->name_cap) return 0;
    size_t nc = c->name_cap ? c->name_cap : 256;
    while (nc < need) nc *= 2;
    char *p = (char *)realloc(c->name, nc);
    if (!p) return rp_fail(c->err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", c->label);
    c->name = p;
    c->name_cap = nc;
    return 0;
}

static int load_record(pth_ctx *c, const rp_pobj *storage, const char *tname, pth_record **out) {
    const rp_pobj *key = storage->u.st.key;
    size_t klen = key->u.s.n;
    if (memchr(key->u.s.p, 0, klen))
        return rp_fail(c->err, RWKVPEFT_E_FORMAT, "%s: tensor '%s': storage key contains a NUL byte",
                       c->label, tname);
    size_t rl = c->prefix_len + 6 + klen + 1;
    char *rname = (char *)rp_malloc(rl);
    if (!rname) return rp_fail(c->err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", c->label);
    memcpy(rname, c->prefix, c->prefix_len);
    memcpy(rname + c->prefix_len, "/data/", 6);
    memcpy(rname + c->prefix_len + 6, key->u.s.p, klen + 1);
    long idx = rp_zip_find(c->z, rname);
    if (idx < 0) {
        int rc = rp_fail(c->err, RWKVPEFT_E_FORMAT,
                         "%s: tensor '%s': data record '%s' (storage key '%.64s') is missing from "
                         "the archive",
                         c->label, tname, rname, key->u.s.p);
        free(rname);
        return rc;
    }
    free(rname);
    pth_record *r = &c->recs[idx];
    if (!r->loaded) {
        void *owned = NULL;
        int rc = rp_zip_entry_data(c->z, (size_t)idx, &r->data, &r->size, &owned, c->err);
        if (rc) {
            if (c->err) rp_fail_prefix(c->err, "tensor '%s'", tname);
            return rc;
        }
        if (owned) RP_TRY(rp_tensorfile_own(c->f, owned, c->err));
        r->loaded = 1;
    }
    *out = r;
    return 0;
}

/* Copies the strided view t (bounds already checked) into dst, row-major. */
static void gather(unsigned char *dst, const unsigned char *src, const rp_ptensor *t, size_t is,
                   uint64_t numel) {
    int nd = t->ndim;
    uint64_t inner = (uint64_t)t->shape[nd - 1];
    uint64_t istride = (uint64_t)t->stride[nd - 1];
    uint64_t rows = numel / inner;
    int64_t idx[RP_MAX_DIMS] = {0};
    for (uint64_t r = 0; r < rows; r++) {
        uint64_t base = (uint64_t)t->offset;
        for (int d = 0; d < nd - 1; d++) base += (uint64_t)idx[d] * (uint64_t)t->stride[d];
        if (istride == 1) {
            memcpy(dst, src + base * is, (size_t)(inner * is));
            dst += inner * is;
        } else {
            for (uint64_t j = 0; j < inner; j++) {
                memcpy(dst, src + (base + j * istride) * is, is);
                dst += is;
            }
        }
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

static void shape_str(char *buf, size_t cap, const int64_t *v, int n) {
    size_t j = 0;
    j += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && j < cap; i++)
        j += (size_t)snprintf(buf + j, cap - j, "%s%lld", i ? ", " : "", (long long)v[i]);
    if (j < cap) snprintf(buf + j, cap - j, "]");
}

static int add_tensor(pth_ctx *c, const rp_ptensor *t) {
    const char *nm = c->name;
    const char *L = c->label;
    char sh[160], sd[160];
    shape_str(sh, sizeof sh, t->shape, t->ndim);
    shape_str(sd, sizeof sd, t->stride, t->ndim);
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0)
            return rp_fail(c->err, RWKVPEFT_E_FORMAT, "%s: tensor '%s': negative dimension %d in shape %s",
                           L, nm, d, sh);
        if (t->stride[d] < 0)
            return rp_fail(c->err, RWKVPEFT_E_FORMAT, "%s: tensor '%s': negative stride in %s", L, nm,
                           sd);
    }
    if (t->offset < 0)
        return rp_fail(c->err, RWKVPEFT_E_FORMAT, "%s: tensor '%s': negative storage offset %lld", L,
                       nm, (long long)t->offset);
    size_t is = rp_dtype_size(t->dtype);
    int64_t numel = rp_shape_numel(t->shape, t->ndim);
    uint64_t nbytes;
    if (numel < 0 || !rp_u64_mul((uint64_t)numel, is, &nbytes) || nbytes > (uint64_t)INT64_MAX ||
        nbytes > (uint64_t)SIZE_MAX)
        return rp_fail(c->err, RWKVPEFT_E_FORMAT,
                       "%s: tensor '%s': shape %s has an absurd number of elements (overflow)", L,
                       nm, sh);
    const rp_pobj *st = t->storage;
    uint64_t sbytes;
    size_t sis = st->u.st.untyped ? 1 : rp_dtype_size(st->u.st.dtype);
    if (!rp_u64_mul((uint64_t)st->u.st.numel, sis, &sbytes))
        return rp_fail(c->err, RWKVPEFT_E_FORMAT,
                       "%s: tensor '%s': storage '%.64s' declares an absurd size (%lld elements)", L,
                       nm, st->u.st.key->u.s.p, (long long)st->u.st.numel);
    pth_record *rec = NULL;
    RP_TRY(load_record(c, st, nm, &rec));
    if (rec->size != sbytes)
        return rp_fail(c->err, RWKVPEFT_E_FORMAT,
                       "%s: tensor '%s': storage '%.64s' declares %lld elements of %zu bytes (%llu "
                       "bytes) but its data record holds %llu bytes",
                       L, nm, st->u.st.key->u.s.p, (long long)st->u.st.numel, sis,
                       (unsigned long long)sbytes, (unsigned long long)rec->size);
    const unsigned char *data = rec->data;
    int contiguous = 1;
    if (numel > 0) {
        /* highest element index the view touches, +1, in elements of the tensor's dtype */
        uint64_t last = (uint64_t)t->offset, tmp, need;
        int ok = 1;
        for (int d = 0; d < t->ndim && ok; d++)
            ok = rp_u64_mul((uint64_t)(t->shape[d] - 1), (uint64_t)t->stride[d], &tmp) &&
                 rp_u64_add(last, tmp, &last);
        ok = ok && rp_u64_add(last, 1, &last) && rp_u64_mul(last, is, &need);
        if (!ok || need > sbytes)
            return rp_fail(c->err, RWKVPEFT_E_FORMAT,
                           "%s: tensor '%s': the view (offset %lld, shape %s, stride %s) needs %s%llu "
                           "elements of %s but storage '%.64s' holds only %llu bytes",
                           L, nm, (long long)t->offset, sh, sd, ok ? "" : "more than ",
                           (unsigned long long)last, rp_dtype_name(t->dtype), st->u.st.key->u.s.p,
                           (unsigned long long)sbytes);
        int64_t expect = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (t->shape[d] != 1 && t->stride[d] != expect) contiguous = 0;
            expect *= t->shape[d];
        }
        if (contiguous) {
            data += (size_t)t->offset * is;
        } else {
            unsigned char *buf = (unsigned char *)rp_malloc((size_t)nbytes);
            if (!buf)
                return rp_fail(c->err, RWKVPEFT_E_OUT_OF_MEMORY,
                               "%s: tensor '%s': out of memory for a contiguous copy (%llu bytes)",
                               L, nm, (unsigned long long)nbytes);
            gather(buf, rec->data, t, is, (uint64_t)numel);
            RP_TRY(rp_tensorfile_own(c->f, buf, c->err));
            data = buf;
        }
    }
    rp_tensorfile *f = c->f;
    if ((size_t)f->count == c->tensors_cap) {
        if (c->tensors_cap >= (size_t)INT32_MAX / 2)
            return rp_fail(c->err, RWKVPEFT_E_FORMAT, "%s: too many tensors", L);
        size_t nc = c->tensors_cap ? c->tensors_cap * 2 : 64;
        rp_named_tensor *p = (rp_named_tensor *)rp_realloc_array(f->tensors, nc, sizeof *p);
        if (!p) return rp_fail(c->err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", L);
        f->tensors = p;
        c->tensors_cap = nc;
    }
    rp_named_tensor *o = &f->tensors[f->count];
    memset(o, 0, sizeof *o);
    char *copy = rp_strdup(nm);
    if (!copy) return rp_fail(c->err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", L);
    o->name = copy;
    o->dtype = t->dtype;
    o->ndim = t->ndim;
    memcpy(o->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    o->data = data;
    o->nbytes = (size_t)nbytes;
    f->count++;
    return 0;
}

static int flatten(pth_ctx *c, const rp_pobj *dict, int depth) {
    if (depth > RP_PICKLE_MAX_NESTING)
        return rp_fail(c->err, RWKVPEFT_E_FORMAT,
                       "%s: dicts nested deeper than %d levels (at '%.200s')", c->label,
                       RP_PICKLE_MAX_NESTING, c->name);
    size_t base = c->name_len;
    for (size_t i = 0; i + 1 < dict->u.seq.n; i += 2) {
        const rp_pobj *k = dict->u.seq.v[i], *v = dict->u.seq.v[i + 1];
        c->name_len = base;
        c->name[base] = 0;
        char num[32];
        const char *ks;
        size_t kl;
        if (k->type == RP_PO_STR) {
            ks = k->u.s.p;
            kl = k->u.s.n;
            if (memchr(ks, 0, kl))
                return rp_fail(c->err, RWKVPEFT_E_FORMAT,
                               "%s: a state-dict key under '%.200s' contains a NUL byte", c->label,
                               c->name);
        } else if (k->type == RP_PO_INT) {
            snprintf(num, sizeof num, "%lld", (long long)k->u.i);
            ks = num;
            kl = strlen(num);
        } else {
            if (v->type == RP_PO_TENSOR || v->type == RP_PO_DICT)
                return rp_fail(c->err, RWKVPEFT_E_UNSUPPORTED,
                               "%s: a %s under '%.200s' has a key of type %s (only str and int "
                               "keys can name tensors)",
                               c->label, rp_pobj_type_name(v), c->name, rp_pobj_type_name(k));
            c->impl->skipped++;
            continue;
        }
        if (v->type != RP_PO_TENSOR && v->type != RP_PO_DICT) {
            c->impl->skipped++;
            continue;
        }
        RP_TRY(name_reserve(c, kl + 1));
        if (base) c->name[c->name_len++] = '.';
        memcpy(c->name + c->name_len, ks, kl);
        c->name_len += kl;
        c->name[c->name_len] = 0;
        if (v->type == RP_PO_TENSOR)
            RP_TRY(add_tensor(c, v->u.t));
        else
            RP_TRY(flatten(c, v, depth + 1));
    }
    c->name_len = base;
    c->name[base] = 0;
    return 0;
}

static int find_prefix(const rp_zip_reader *z, const char *label, char **prefix, long *pkl,
                       rp_err *err) {
    for (size_t i = 0; i < z->count; i++) {
        const char *n = z->entries[i].name;
        const char *slash = strchr(n, '/');
        if (slash && slash != n && strcmp(slash, "/data.pkl") == 0) {
            size_t pl = (size_t)(slash - n);
            *prefix = (char *)rp_malloc(pl + 1);
            if (!*prefix) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
            memcpy(*prefix, n, pl);
            (*prefix)[pl] = 0;
            *pkl = (long)i;
            return 0;
        }
    }
    return rp_fail(err, RWKVPEFT_E_FORMAT,
                   "%s: zip archive has no '<folder>/data.pkl' record (%zu entries): not a "
                   "torch.save file",
                   label, z->count);
}

int rp_pth_read(rp_tensorfile *f, const char *label, rp_err *err) {
    rp_tensorfile_impl *impl = (rp_tensorfile_impl *)f->impl;
    rp_zip_reader z;
    RP_TRY(rp_zip_reader_open(&z, impl->image.data, impl->image.size, label, err));
    char *prefix = NULL, *plabel = NULL;
    long pkl = -1;
    rp_pickle_vm *vm = NULL;
    void *pkl_owned = NULL;
    pth_ctx c;
    memset(&c, 0, sizeof c);
    int rc = find_prefix(&z, label, &prefix, &pkl, err);
    if (rc) goto done;
    {
        /* byte order: only little-endian archives (absent record = little, as in torch) */
        size_t pl = strlen(prefix);
        char *bo = (char *)rp_malloc(pl + 16);
        if (!bo) {
            rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
            goto done;
        }
        snprintf(bo, pl + 16, "%s/byteorder", prefix);
        long bi = rp_zip_find(&z, bo);
        free(bo);
        if (bi >= 0) {
            const unsigned char *d;
            uint64_t n;
            void *own = NULL;
            rc = rp_zip_entry_data(&z, (size_t)bi, &d, &n, &own, err);
            if (rc) goto done;
            int little = n == 6 && memcmp(d, "little", 6) == 0;
            int big = n == 3 && memcmp(d, "big", 3) == 0;
            free(own);
            if (!little) {
                rc = rp_fail(err, big ? RWKVPEFT_E_UNSUPPORTED : RWKVPEFT_E_FORMAT,
                             "%s: %s/byteorder is %s (only little-endian archives are supported)",
                             label, prefix, big ? "'big'" : "not 'little' or 'big'");
                goto done;
            }
        }
    }
    {
        const unsigned char *pd;
        uint64_t pn;
        rc = rp_zip_entry_data(&z, (size_t)pkl, &pd, &pn, &pkl_owned, err);
        if (rc) goto done;
        size_t ll = strlen(label) + strlen(prefix) + 16;
        plabel = (char *)rp_malloc(ll);
        if (!plabel) {
            rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
            goto done;
        }
        snprintf(plabel, ll, "%s: %s/data.pkl", label, prefix);
        rp_pobj *root = NULL;
        rc = rp_pickle_load(pd, (size_t)pn, plabel, &vm, &root, err);
        if (rc) goto done;
        if (root->type != RP_PO_DICT) {
            rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                         "%s: the pickled object is a %s, not a dict of tensors (state dict)",
                         plabel, rp_pobj_type_name(root));
            goto done;
        }
        c.f = f;
        c.impl = impl;
        c.z = &z;
        c.label = label;
        c.prefix = prefix;
        c.prefix_len = strlen(prefix);
        c.err = err;
        c.recs = (pth_record *)rp_calloc(z.count, sizeof *c.recs);
        if (!c.recs || name_reserve(&c, 64)) {
            rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
            goto done;
        }
        c.name[0] = 0;
        rc = flatten(&c, root, 0);
        if (rc) goto done;
        rc = rp_tensorfile_index(f, label, err);
    }
done:
    free(c.recs);
    free(c.name);
    rp_pickle_free(vm);
    free(pkl_owned);
    free(plabel);
    free(prefix);
    rp_zip_reader_close(&z);
    return rc;
}

/* ---------------------------------------------------------------------------------- */
/* Writing                                                                            */
/* ---------------------------------------------------------------------------------- */

static void serialization_id(char out[41], const char *path) {
    /* any 40-character string will do; torch writes decimal digits */
    static atomic_ulong counter;
    uint64_t h = 1469598103934665603ull;
    for (const char *p = path; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h ^= (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
    h ^= (uint64_t)getpid() << 17;
    h ^= (uint64_t)(atomic_fetch_add(&counter, 1ul) + 1) << 40;
    for (int i = 0; i < 40; i++) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 29;
        out[i] = (char)('0' + (int)(h % 10));
    }
    out[40] = 0;
}

int rp_pth_write(const char *path, const rp_named_tensor *tensors, int n, rp_err *err) {
    RP_TRY(rp_tensors_validate_for_write(tensors, n, 1, err));
    rp_pbuf pk = {0};
    int rc = rp_pickle_write_state_dict(&pk, tensors, n, err);
    if (rc) {
        free(pk.p);
        return rc;
    }
    rp_outfile out;
    rc = rp_outfile_open(&out, path, err);
    if (rc) {
        free(pk.p);
        return rc;
    }
    rp_zip_writer w;
    rp_zip_writer_init(&w, &out);
    char sid[41];
    serialization_id(sid, path);
    rc = rp_zip_writer_add(&w, "archive/data.pkl", pk.p, pk.n, 64, err);
    if (!rc) rc = rp_zip_writer_add(&w, "archive/byteorder", "little", 6, 64, err);
    for (int i = 0; i < n && !rc; i++) {
        char nm[48];
        snprintf(nm, sizeof nm, "archive/data/%d", i);
        rc = rp_zip_writer_add(&w, nm, tensors[i].data, tensors[i].nbytes, 64, err);
    }
    if (!rc) rc = rp_zip_writer_add(&w, "archive/version", "3\n", 2, 64, err);
    if (!rc) rc = rp_zip_writer_add(&w, "archive/.data/serialization_id", sid, 40, 64, err);
    if (!rc) rc = rp_zip_writer_finish(&w, err);
    rp_zip_writer_free(&w);
    free(pk.p);
    if (rc) {
        rp_outfile_abort(&out);
        return rc;
    }
    return rp_outfile_commit(&out, err);
}
