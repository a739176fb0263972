/* io_zip.c — zip reading (stored + deflated, zip64) and writing (stored, aligned, zip64).
 * Every length and offset read from the archive is checked against the image size. */
#include "io_zip.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int rp_zip_force_zip64 = 0;

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define LOCAL_SIZE 30u
#define CENTRAL_SIZE 46u
#define EOCD_SIZE 22u
#define EOCD64_SIZE 56u
#define LOC64_SIZE 20u
#define U32_MAX_ 0xffffffffu

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

/* ---------------------------------------------------------------------------------- */
/* Reading                                                                            */
/* ---------------------------------------------------------------------------------- */

/* Merge sort of entry indices by name (qsort has no context argument). */
static void sort_indices(const rp_zip_reader *z, size_t *idx, size_t *tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    sort_indices(z, idx, tmp, h);
    sort_indices(z, idx + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        if (strcmp(z->entries[idx[i]].name, z->entries[idx[j]].name) <= 0)
            tmp[k++] = idx[i++];
        else
            tmp[k++] = idx[j++];
    }
    while (i < h) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

void rp_zip_reader_close(rp_zip_reader *z) {
    if (!z) return;
    if (z->entries) {
        for (size_t i = 0; i < z->count; i++) free(z->entries[i].name);
    }
    free(z->entries);
    free(z->sorted);
    z->entries = NULL;
    z->sorted = NULL;
    z->count = 0;
}

/* Reads the zip64 extra field (id 1) of a central directory record: values follow for
 * each of size, comp_size, offset (in that order) whose 32-bit field was 0xffffffff. */
static int parse_zip64_extra(const rp_zip_reader *z, size_t i, const unsigned char *ex, size_t exlen,
                             int need_size, int need_comp, int need_off, rp_zip_entry *e,
                             rp_err *err) {
    size_t p = 0;
    while (p + 4 <= exlen) {
        uint16_t id = rd16(ex + p), len = rd16(ex + p + 2);
        if (len > exlen - p - 4)
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: zip central directory entry %zu ('%s'): extra field 0x%04x of "
                           "%u bytes runs past the extra area (%zu bytes left)",
                           z->label, i, e->name, id, len, exlen - p - 4);
        if (id == 0x0001) {
            const unsigned char *d = ex + p + 4;
            size_t q = 0;
            if (need_size) {
                if (q + 8 > len) goto short_field;
                e->size = rd64(d + q);
                q += 8;
            }
            if (need_comp) {
                if (q + 8 > len) goto short_field;
                e->comp_size = rd64(d + q);
                q += 8;
            }
            if (need_off) {
                if (q + 8 > len) goto short_field;
                e->local_offset = rd64(d + q);
                q += 8;
            }
            return 0;
        }
        p += 4 + (size_t)len;
    }
    if (need_size || need_comp || need_off)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: zip central directory entry %zu ('%s') has 0xffffffff size/offset "
                       "fields but no zip64 extra field",
                       z->label, i, e->name);
    return 0;
short_field:
    return rp_fail(err, RWKVPEFT_E_FORMAT,
                   "%s: zip central directory entry %zu ('%s'): zip64 extra field too short for "
                   "the 0xffffffff fields it must replace",
                   z->label, i, e->name);
}

int rp_zip_reader_open(rp_zip_reader *z, const void *data, uint64_t size, const char *label,
                       rp_err *err) {
    memset(z, 0, sizeof *z);
    z->data = (const unsigned char *)data;
    z->size = size;
    z->label = label;
    const unsigned char *b = z->data;

    if (size < EOCD_SIZE)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: %llu bytes is too short for a zip archive (no end of central "
                       "directory record)",
                       label, (unsigned long long)size);
    /* The EOCD record is the last 22 bytes plus a comment of up to 65535 bytes: search
     * backwards for a signature whose comment length reaches exactly to the end. When
     * none fits exactly, accept the last signature whose comment fits in the file. */
    uint64_t lowest = size > EOCD_SIZE + 0xffffu ? size - EOCD_SIZE - 0xffffu : 0;
    uint64_t eocd = UINT64_MAX, loose = UINT64_MAX;
    for (uint64_t pos = size - EOCD_SIZE + 1; pos-- > lowest;) {
        if (rd32(b + pos) != SIG_EOCD) continue;
        uint64_t clen = rd16(b + pos + 20);
        if (pos + EOCD_SIZE + clen == size) {
            eocd = pos;
            break;
        }
        if (loose == UINT64_MAX && pos + EOCD_SIZE + clen <= size) loose = pos;
    }
    if (eocd == UINT64_MAX) eocd = loose;
    if (eocd == UINT64_MAX)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: not a zip archive: no end of central directory record in the last "
                       "%llu bytes",
                       label, (unsigned long long)(size - lowest));
    const unsigned char *e = b + eocd;
    uint64_t disk = rd16(e + 4), cd_disk = rd16(e + 6), n_disk = rd16(e + 8);
    uint64_t count = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    uint64_t cd_limit = eocd; /* the central directory must end before this */

    /* zip64: a locator right before the EOCD points to the zip64 EOCD record. */
    if (eocd >= LOC64_SIZE && rd32(b + eocd - LOC64_SIZE) == SIG_LOC64) {
        const unsigned char *l = b + eocd - LOC64_SIZE;
        uint64_t rec = rd64(l + 8);
        uint32_t ndisks = rd32(l + 16);
        if (rd32(l + 4) != 0 || ndisks > 1)
            return rp_fail(err, RWKVPEFT_E_UNSUPPORTED,
                           "%s: multi-disk (split) zip archives are not supported", label);
        if (rec > eocd - LOC64_SIZE || eocd - LOC64_SIZE - rec < EOCD64_SIZE)
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: zip64 end of central directory locator points to offset %llu, "
                           "outside the file before the locator (at %llu)",
                           label, (unsigned long long)rec,
                           (unsigned long long)(eocd - LOC64_SIZE));
        const unsigned char *r = b + rec;
        if (rd32(r) != SIG_EOCD64)
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: no zip64 end of central directory record at offset %llu "
                           "(bad signature 0x%08x)",
                           label, (unsigned long long)rec, (unsigned)rd32(r));
        disk = rd32(r + 16);
        cd_disk = rd32(r + 20);
        n_disk = rd64(r + 24);
        count = rd64(r + 32);
        cd_size = rd64(r + 40);
        cd_off = rd64(r + 48);
        cd_limit = rec;
    }
    if (disk != 0 || cd_disk != 0)
        return rp_fail(err, RWKVPEFT_E_UNSUPPORTED,
                       "%s: multi-disk (split) zip archives are not supported", label);
    if (n_disk != count)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: zip end record is inconsistent (%llu entries on this disk, %llu in "
                       "total)",
                       label, (unsigned long long)n_disk, (unsigned long long)count);
    uint64_t cd_end;
    if (!rp_u64_add(cd_off, cd_size, &cd_end) || cd_end > cd_limit)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: zip central directory (offset %llu, %llu bytes) lies outside the "
                       "file (it must end by offset %llu)",
                       label, (unsigned long long)cd_off, (unsigned long long)cd_size,
                       (unsigned long long)cd_limit);
    if (count > cd_size / CENTRAL_SIZE)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: zip end record claims %llu entries but the central directory has "
                       "only %llu bytes (room for at most %llu)",
                       label, (unsigned long long)count, (unsigned long long)cd_size,
                       (unsigned long long)(cd_size / CENTRAL_SIZE));
    z->cd_offset = cd_off;
    z->entries = (rp_zip_entry *)rp_calloc((size_t)count, sizeof *z->entries);
    z->sorted = (size_t *)rp_calloc((size_t)count, sizeof *z->sorted);
    if (!z->entries || !z->sorted) {
        rp_zip_reader_close(z);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory for %llu zip entries",
                       label, (unsigned long long)count);
    }
    uint64_t pos = cd_off;
    for (size_t i = 0; i < (size_t)count; i++) {
        const unsigned char *c = b + pos;
        int rc = 0;
        if (cd_end - pos < CENTRAL_SIZE) {
            rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                         "%s: zip central directory entry %zu of %llu at offset %llu is cut "
                         "off by the end of the central directory (offset %llu)",
                         label, i, (unsigned long long)count, (unsigned long long)pos,
                         (unsigned long long)cd_end);
        } else if (rd32(c) != SIG_CENTRAL) {
            rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                         "%s: zip central directory entry %zu of %llu at offset %llu has a bad "
                         "signature 0x%08x (expected 0x%08x)",
                         label, i, (unsigned long long)count, (unsigned long long)pos,
                         (unsigned)rd32(c), SIG_CENTRAL);
        }
        if (rc) {
            z->count = i;
            rp_zip_reader_close(z);
            return rc;
        }
        size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
        uint64_t rec_len = CENTRAL_SIZE + (uint64_t)nlen + xlen + clen;
        if (cd_end - pos < rec_len) {
            z->count = i;
            rp_zip_reader_close(z);
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: zip central directory entry %zu at offset %llu: name/extra/"
                           "comment (%zu+%zu+%zu bytes) run past the end of the directory",
                           label, i, (unsigned long long)pos, nlen, xlen, clen);
        }
        rp_zip_entry *en = &z->entries[i];
        en->name = (char *)rp_malloc(nlen + 1);
        z->count = i + 1;
        if (!en->name) {
            rp_zip_reader_close(z);
            return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
        }
        memcpy(en->name, c + CENTRAL_SIZE, nlen);
        en->name[nlen] = 0;
        if (memchr(en->name, 0, nlen)) {
            rp_zip_reader_close(z);
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s: zip central directory entry %zu has a NUL byte in its name",
                           label, i);
        }
        en->flags = rd16(c + 8);
        en->method = rd16(c + 10);
        en->crc = rd32(c + 16);
        en->comp_size = rd32(c + 20);
        en->size = rd32(c + 24);
        en->local_offset = rd32(c + 42);
        rc = parse_zip64_extra(z, i, c + CENTRAL_SIZE + nlen, xlen, en->size == U32_MAX_,
                               en->comp_size == U32_MAX_, en->local_offset == U32_MAX_, en, err);
        if (rc) {
            rp_zip_reader_close(z);
            return rc;
        }
        if (en->local_offset >= cd_off) {
            rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                         "%s: zip entry '%s': local header offset %llu is not before the "
                         "central directory (offset %llu)",
                         label, en->name, (unsigned long long)en->local_offset,
                         (unsigned long long)cd_off);
            rp_zip_reader_close(z);
            return rc;
        }
        pos += rec_len;
        z->sorted[i] = i;
    }
    if (z->count > 1) {
        size_t *tmp = (size_t *)rp_calloc(z->count, sizeof *tmp);
        if (!tmp) {
            rp_zip_reader_close(z);
            return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", label);
        }
        sort_indices(z, z->sorted, tmp, z->count);
        free(tmp);
        for (size_t i = 1; i < z->count; i++) {
            if (strcmp(z->entries[z->sorted[i - 1]].name, z->entries[z->sorted[i]].name) == 0) {
                int rc = rp_fail(err, RWKVPEFT_E_FORMAT, "%s: zip entry name '%s' occurs twice",
                                 label, z->entries[z->sorted[i]].name);
                rp_zip_reader_close(z);
                return rc;
            }
        }
    }
    return 0;
}

long rp_zip_find(const rp_zip_reader *z, const char *name) {
    size_t lo = 0, hi = z->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(z->entries[z->sorted[mid]].name, name);
        if (c == 0) return (long)z->sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static int inflate_entry(const rp_zip_reader *z, const rp_zip_entry *e, const unsigned char *src,
                         unsigned char *dst, rp_err *err) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK)
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: zip entry '%s': inflateInit failed",
                       z->label, e->name);
    uint64_t in_left = e->comp_size, out_left = e->size;
    const uInt chunk = 1u << 30;
    int zr = Z_OK;
    s.next_in = (Bytef *)(uintptr_t)src;
    s.next_out = dst;
    for (;;) {
        if (s.avail_in == 0 && in_left) {
            s.avail_in = in_left > chunk ? chunk : (uInt)in_left;
            in_left -= s.avail_in;
        }
        if (s.avail_out == 0 && out_left) {
            s.avail_out = out_left > chunk ? chunk : (uInt)out_left;
            out_left -= s.avail_out;
        }
        uInt before_in = s.avail_in, before_out = s.avail_out;
        zr = inflate(&s, Z_NO_FLUSH);
        if (zr == Z_STREAM_END) break;
        if (zr == Z_BUF_ERROR && s.avail_in == before_in && s.avail_out == before_out) {
            /* no progress possible: input exhausted or output full */
            break;
        }
        if (zr != Z_OK) break;
    }
    uint64_t produced = e->size - out_left - s.avail_out;
    const char *zmsg = s.msg ? s.msg : "";
    int rc = 0;
    if (zr == Z_MEM_ERROR)
        rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: zip entry '%s': out of memory inflating",
                     z->label, e->name);
    else if (zr != Z_STREAM_END)
        rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                     "%s: zip entry '%s': corrupt deflate stream (zlib error %d%s%s after "
                     "%llu of %llu bytes)",
                     z->label, e->name, zr, zmsg[0] ? ": " : "", zmsg,
                     (unsigned long long)produced, (unsigned long long)e->size);
    else if (produced != e->size)
        rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                     "%s: zip entry '%s': deflate stream ended after %llu bytes, the directory "
                     "says %llu",
                     z->label, e->name, (unsigned long long)produced, (unsigned long long)e->size);
    inflateEnd(&s);
    return rc;
}

static uint32_t crc_of(const unsigned char *p, uint64_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

int rp_zip_entry_data(const rp_zip_reader *z, size_t idx, const unsigned char **data,
                      uint64_t *size, void **owned, rp_err *err) {
    *data = NULL;
    *size = 0;
    *owned = NULL;
    if (idx >= z->count)
        return rp_fail(err, RWKVPEFT_E_INTERNAL, "%s: zip entry index %zu out of range", z->label,
                       idx);
    const rp_zip_entry *e = &z->entries[idx];
    if (e->flags & 1u)
        return rp_fail(err, RWKVPEFT_E_UNSUPPORTED, "%s: zip entry '%s' is encrypted", z->label,
                       e->name);
    if (e->method != 0 && e->method != 8)
        return rp_fail(err, RWKVPEFT_E_UNSUPPORTED,
                       "%s: zip entry '%s' uses compression method %u (only 0 = stored and 8 = "
                       "deflate are supported)",
                       z->label, e->name, (unsigned)e->method);
    if (e->method == 0 && e->comp_size != e->size)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: stored zip entry '%s' has compressed size %llu != size %llu",
                       z->label, e->name, (unsigned long long)e->comp_size,
                       (unsigned long long)e->size);
    uint64_t lo = e->local_offset;
    if (lo > z->size || z->size - lo < LOCAL_SIZE)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: zip entry '%s': local header at offset %llu runs past the end of the "
                       "file (%llu bytes)",
                       z->label, e->name, (unsigned long long)lo, (unsigned long long)z->size);
    const unsigned char *l = z->data + lo;
    if (rd32(l) != SIG_LOCAL)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: zip entry '%s': bad local header signature 0x%08x at offset %llu",
                       z->label, e->name, (unsigned)rd32(l), (unsigned long long)lo);
    uint64_t start = lo + LOCAL_SIZE + rd16(l + 26) + rd16(l + 28), end;
    if (start > z->size || !rp_u64_add(start, e->comp_size, &end) || end > z->size)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: zip entry '%s': data (local header at %llu with name length %u and "
                       "extra length %u, then %llu bytes) runs past the end of the file (%llu "
                       "bytes)",
                       z->label, e->name, (unsigned long long)lo, (unsigned)rd16(l + 26),
                       (unsigned)rd16(l + 28), (unsigned long long)e->comp_size,
                       (unsigned long long)z->size);
    if (e->method == 0) {
        *data = z->data + start;
        *size = e->size;
        return 0;
    }
    /* deflate expands at most ~1032:1; a larger declared size is a lie */
    uint64_t bound;
    if (!rp_u64_mul(e->comp_size, 1032, &bound) || !rp_u64_add(bound, 1024, &bound) ||
        e->size > bound)
        return rp_fail(err, RWKVPEFT_E_FORMAT,
                       "%s: zip entry '%s': declared size %llu is impossible for %llu deflated "
                       "bytes",
                       z->label, e->name, (unsigned long long)e->size,
                       (unsigned long long)e->comp_size);
    if (e->size > (uint64_t)SIZE_MAX - 1)
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: zip entry '%s' is too large (%llu bytes)",
                       z->label, e->name, (unsigned long long)e->size);
    unsigned char *buf = (unsigned char *)rp_malloc((size_t)e->size);
    if (!buf)
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY,
                       "%s: out of memory inflating zip entry '%s' (%llu bytes)", z->label,
                       e->name, (unsigned long long)e->size);
    int rc = inflate_entry(z, e, z->data + start, buf, err);
    if (rc == 0) {
        uint32_t c = crc_of(buf, e->size);
        if (c != e->crc)
            rc = rp_fail(err, RWKVPEFT_E_FORMAT,
                         "%s: zip entry '%s': CRC-32 mismatch (computed 0x%08x, directory says "
                         "0x%08x)",
                         z->label, e->name, (unsigned)c, (unsigned)e->crc);
    }
    if (rc) {
        free(buf);
        return rc;
    }
    *data = buf;
    *size = e->size;
    *owned = buf;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Writing                                                                            */
/* ---------------------------------------------------------------------------------- */

static void wr16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static void wr32(unsigned char *p, uint32_t v) {
    wr16(p, v & 0xffffu);
    wr16(p + 2, v >> 16);
}
static void wr64(unsigned char *p, uint64_t v) {
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

#define DOS_DATE 0x0021u /* 1980-01-01 */
#define DOS_TIME 0x0000u

void rp_zip_writer_init(rp_zip_writer *w, rp_outfile *out) {
    memset(w, 0, sizeof *w);
    w->out = out;
}

void rp_zip_writer_free(rp_zip_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->count; i++) free(w->entries[i].name);
    free(w->entries);
    w->entries = NULL;
    w->count = w->cap = 0;
}

static int zput(rp_zip_writer *w, const void *p, size_t n, rp_err *err) {
    RP_TRY(rp_outfile_write(w->out, p, n, err));
    w->offset += n;
    return 0;
}

int rp_zip_writer_add(rp_zip_writer *w, const char *name, const void *data, uint64_t size,
                      unsigned align, rp_err *err) {
    size_t nlen = strlen(name);
    if (nlen > 0xffffu)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "zip entry name too long (%zu bytes)",
                       nlen);
    if (w->count == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 16;
        rp_zip_wentry *ne = (rp_zip_wentry *)rp_realloc_array(w->entries, nc, sizeof *ne);
        if (!ne) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory (zip directory)");
        w->entries = ne;
        w->cap = nc;
    }
    char *nm = rp_strdup(name);
    if (!nm) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory (zip directory)");
    int z64 = rp_zip_force_zip64 || size >= U32_MAX_;
    size_t z64len = z64 ? 20 : 0; /* id, len, size, comp_size */
    size_t pad = 0;
    if (align > 1) {
        uint64_t at = w->offset + LOCAL_SIZE + nlen + z64len;
        pad = (size_t)((align - at % align) % align);
        if (pad && pad < 4) pad += align; /* room for the extra field's own header */
    }
    size_t hlen = LOCAL_SIZE + nlen + z64len + pad;
    unsigned char *h = (unsigned char *)rp_calloc(1, hlen);
    if (!h) {
        free(nm);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory (zip header)");
    }
    uint32_t crc = crc_of((const unsigned char *)data, size);
    wr32(h, SIG_LOCAL);
    wr16(h + 4, z64 ? 45 : 20);
    wr16(h + 6, 0);
    wr16(h + 8, 0);
    wr16(h + 10, DOS_TIME);
    wr16(h + 12, DOS_DATE);
    wr32(h + 14, crc);
    wr32(h + 18, z64 ? U32_MAX_ : (uint32_t)size);
    wr32(h + 22, z64 ? U32_MAX_ : (uint32_t)size);
    wr16(h + 26, (uint32_t)nlen);
    wr16(h + 28, (uint32_t)(z64len + pad));
    memcpy(h + LOCAL_SIZE, name, nlen);
    unsigned char *x = h + LOCAL_SIZE + nlen;
    if (z64) {
        wr16(x, 0x0001);
        wr16(x + 2, 16);
        wr64(x + 4, size);
        wr64(x + 12, size);
        x += 20;
    }
    if (pad) {
        wr16(x, 0x4246); /* "FB", the id torch's writer uses for its padding */
        wr16(x + 2, (uint32_t)(pad - 4));
        memset(x + 4, 'Z', pad - 4);
    }
    rp_zip_wentry *we = &w->entries[w->count];
    we->name = nm;
    we->size = size;
    we->offset = w->offset;
    we->crc = crc;
    w->count++;
    int rc = zput(w, h, hlen, err);
    free(h);
    if (rc) return rc;
    const unsigned char *p = (const unsigned char *)data;
    uint64_t left = size;
    while (left) {
        size_t k = left > (1u << 30) ? (1u << 30) : (size_t)left;
        RP_TRY(zput(w, p, k, err));
        p += k;
        left -= k;
    }
    return 0;
}

int rp_zip_writer_finish(rp_zip_writer *w, rp_err *err) {
    uint64_t cd_off = w->offset;
    for (size_t i = 0; i < w->count; i++) {
        const rp_zip_wentry *e = &w->entries[i];
        size_t nlen = strlen(e->name);
        int big_size = rp_zip_force_zip64 || e->size >= U32_MAX_;
        int big_off = rp_zip_force_zip64 || e->offset >= U32_MAX_;
        size_t xlen = (big_size || big_off) ? 4 + (big_size ? 16 : 0) + (big_off ? 8 : 0) : 0;
        unsigned char *h = (unsigned char *)rp_calloc(1, CENTRAL_SIZE + nlen + 32);
        if (!h) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory (zip directory)");
        wr32(h, SIG_CENTRAL);
        wr16(h + 4, xlen ? 45 : 20);
        wr16(h + 6, xlen ? 45 : 20);
        wr16(h + 10, 0);
        wr16(h + 12, DOS_TIME);
        wr16(h + 14, DOS_DATE);
        wr32(h + 16, e->crc);
        wr32(h + 20, big_size ? U32_MAX_ : (uint32_t)e->size);
        wr32(h + 24, big_size ? U32_MAX_ : (uint32_t)e->size);
        wr16(h + 28, (uint32_t)nlen);
        wr16(h + 30, (uint32_t)xlen);
        wr32(h + 42, big_off ? U32_MAX_ : (uint32_t)e->offset);
        memcpy(h + CENTRAL_SIZE, e->name, nlen);
        unsigned char *x = h + CENTRAL_SIZE + nlen;
        if (xlen) {
            wr16(x, 0x0001);
            wr16(x + 2, (uint32_t)(xlen - 4));
            x += 4;
            if (big_size) {
                wr64(x, e->size);
                wr64(x + 8, e->size);
                x += 16;
            }
            if (big_off) wr64(x, e->offset);
        }
        int rc = zput(w, h, CENTRAL_SIZE + nlen + xlen, err);
        free(h);
        if (rc) return rc;
    }
    uint64_t cd_size = w->offset - cd_off, count = w->count;
    int z64 = rp_zip_force_zip64 || count > 0xffffu || cd_size >= U32_MAX_ || cd_off >= U32_MAX_;
    if (z64) {
        unsigned char r[EOCD64_SIZE + LOC64_SIZE];
        memset(r, 0, sizeof r);
        uint64_t rec_off = w->offset;
        wr32(r, SIG_EOCD64);
        wr64(r + 4, EOCD64_SIZE - 12);
        wr16(r + 12, 45);
        wr16(r + 14, 45);
        wr32(r + 16, 0);
        wr32(r + 20, 0);
        wr64(r + 24, count);
        wr64(r + 32, count);
        wr64(r + 40, cd_size);
        wr64(r + 48, cd_off);
        unsigned char *l = r + EOCD64_SIZE;
        wr32(l, SIG_LOC64);
        wr32(l + 4, 0);
        wr64(l + 8, rec_off);
        wr32(l + 16, 1);
        RP_TRY(zput(w, r, sizeof r, err));
    }
    unsigned char e[EOCD_SIZE];
    memset(e, 0, sizeof e);
    int big_count = rp_zip_force_zip64 || count > 0xffffu;
    int big_size = rp_zip_force_zip64 || cd_size >= U32_MAX_;
    int big_off = rp_zip_force_zip64 || cd_off >= U32_MAX_;
    wr32(e, SIG_EOCD);
    wr16(e + 8, big_count ? 0xffffu : (uint32_t)count);
    wr16(e + 10, big_count ? 0xffffu : (uint32_t)count);
    wr32(e + 12, big_size ? U32_MAX_ : (uint32_t)cd_size);
    wr32(e + 16, big_off ? U32_MAX_ : (uint32_t)cd_off);
    wr16(e + 20, 0);
    return zput(w, e, sizeof e, err);
}
