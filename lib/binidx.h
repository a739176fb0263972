/* binidx.h — Megatron "mmap" indexed datasets (<prefix>.bin + <prefix>.idx, spec §5.1):
 * internal interface. The public one is the "Datasets" section of rwkvpeft.h; the handles
 * `struct rwkvpeft_dataset` and `struct rwkvpeft_dataset_writer` are defined in binidx.c.
 *
 * A dataset is read-only after opening: the rp_dataset_* readers below may be called from
 * several threads at once (only the public wrappers write the handle's last-error text). */
#ifndef RP_BINIDX_H
#define RP_BINIDX_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define RP_BINIDX_HEADER_SIZE 34

/* Item size in bytes of a binidx dtype code (1..8), 0 for an unknown code. */
size_t rp_binidx_itemsize(int dtype_code);
/* "uint8", "int8", "int16", "int32", "int64", "float32", "float64", "uint16", "unknown". */
const char *rp_binidx_dtype_name(int dtype_code);

/* Opens and validates <prefix>.idx / <prefix>.bin. Errors name the file and byte offset. */
int rp_dataset_open(const char *prefix, rwkvpeft_dataset **out, rp_err *err);
void rp_dataset_close(rwkvpeft_dataset *ds);

int64_t rp_dataset_num_docs(const rwkvpeft_dataset *ds);
int64_t rp_dataset_num_tokens(const rwkvpeft_dataset *ds);
int rp_dataset_dtype_code(const rwkvpeft_dataset *ds);

/* Token offset and length of sequence `index` (0 <= index < num_docs; not checked). */
void rp_dataset_doc(const rwkvpeft_dataset *ds, int64_t index, int64_t *token_offset,
                    int64_t *n_tokens);

/* Copies tokens [offset, offset+n) of the flat stream as int32, checking that every value
 * is an integral id in [0, 2^31) (RWKVPEFT_E_FORMAT naming the .bin byte offset if not)
 * and that the range lies inside the stream (RWKVPEFT_E_INVALID_ARGUMENT). */
int rp_dataset_read(const rwkvpeft_dataset *ds, int64_t offset, int64_t n, int32_t *tokens,
                    rp_err *err);

#endif
