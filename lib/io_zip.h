/* io_zip.h — the subset of the zip format that torch.save archives use: reading (stored
 * and deflated entries, zip64) from a memory image of the file, and writing stored,
 * aligned entries (with zip64 records when sizes or counts require them). */
#ifndef RP_IO_ZIP_H
#define RP_IO_ZIP_H

#include <stdio.h>

#include "tensorfile.h"

/* ---------------------------------------------------------------------------------- */
/* Reading                                                                            */
/* ---------------------------------------------------------------------------------- */

typedef struct rp_zip_entry {
    char *name;            /* NUL-terminated copy of the central directory name */
    uint64_t comp_size;    /* bytes stored in the archive */
    uint64_t size;         /* bytes once extracted */
    uint64_t local_offset; /* offset of the local file header */
    uint32_t crc;
    uint16_t method; /* 0 stored, 8 deflated */
    uint16_t flags;
} rp_zip_entry;

typedef struct rp_zip_reader {
    const unsigned char *data; /* the whole file (not owned) */
    uint64_t size;
    const char *label; /* file name for messages (not owned) */
    uint64_t cd_offset; /* where the central directory starts (entries' data lie before) */
    rp_zip_entry *entries;
    size_t count;
    size_t *sorted; /* entry indices ordered by name, for rp_zip_find */
} rp_zip_reader;

/* Parses the end-of-central-directory records (zip64 included) and the central directory
 * of the archive image data[0..size). Local headers are read later, by rp_zip_entry_data.
 * E_FORMAT for any inconsistency, E_UNSUPPORTED for multi-disk archives. */
int rp_zip_reader_open(rp_zip_reader *z, const void *data, uint64_t size, const char *label,
                       rp_err *err);
void rp_zip_reader_close(rp_zip_reader *z);

/* Index of the entry named `name`, or -1. O(log n). */
long rp_zip_find(const rp_zip_reader *z, const char *name);

/* The extracted bytes of entry `idx`. Stored entries: *data points into the archive image
 * and *owned is NULL. Deflated entries: inflated (CRC-checked) into a buffer returned in
 * *owned that the caller frees with free(). E_UNSUPPORTED for other methods/encryption. */
int rp_zip_entry_data(const rp_zip_reader *z, size_t idx, const unsigned char **data,
                      uint64_t *size, void **owned, rp_err *err);

/* ---------------------------------------------------------------------------------- */
/* Writing                                                                            */
/* ---------------------------------------------------------------------------------- */

/* Test hook: when non-zero, the writer emits zip64 extra fields for every entry and the
 * zip64 end-of-central-directory record + locator even for small archives. */
extern int rp_zip_force_zip64;

typedef struct rp_zip_wentry {
    char *name;
    uint64_t size, offset;
    uint32_t crc;
} rp_zip_wentry;

typedef struct rp_zip_writer {
    rp_outfile *out;
    uint64_t offset; /* bytes written so far */
    rp_zip_wentry *entries;
    size_t count, cap;
} rp_zip_writer;

void rp_zip_writer_init(rp_zip_writer *w, rp_outfile *out);
/* Appends a stored entry; when align > 1 the payload starts at a multiple of `align`
 * (padding goes into the local header's extra field, as torch does). */
int rp_zip_writer_add(rp_zip_writer *w, const char *name, const void *data, uint64_t size,
                      unsigned align, rp_err *err);
/* Writes the central directory and end records. */
int rp_zip_writer_finish(rp_zip_writer *w, rp_err *err);
void rp_zip_writer_free(rp_zip_writer *w);

#endif
