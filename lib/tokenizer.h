/* tokenizer.h — the RWKV World tokenizer (internal interface; the public one is the
 * "Tokenizer" section of rwkvpeft.h).
 *
 * The public handle `struct rwkvpeft_tokenizer` is defined in tokenizer.c; it is
 * immutable after loading, so every function here may be called from several threads on
 * the same tokenizer at once. */
#ifndef RP_TOKENIZER_H
#define RP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* Loads a World vocabulary file. Errors: RWKVPEFT_E_IO (cannot read), RWKVPEFT_E_FORMAT
 * ("<path>:<line>: <what is wrong>"), RWKVPEFT_E_OUT_OF_MEMORY. */
int rp_tokenizer_load(const char *path, rwkvpeft_tokenizer **out, rp_err *err);

/* Same, from a buffer holding the file's content (`name` is used in messages). */
int rp_tokenizer_load_buffer(const char *name, const char *data, size_t size,
                             rwkvpeft_tokenizer **out, rp_err *err);

void rp_tokenizer_free(rwkvpeft_tokenizer *tok);

/* Greedy longest-match encoding of `len` bytes. Writes at most `max_ids` ids and stops
 * there (the first max_ids ids of the whole encoding: the encoding is left to right, so
 * a prefix of the ids does not depend on the bytes after it). *n_out = ids written;
 * *consumed (may be NULL) = bytes covered by them. Fails only for a byte that starts no
 * token (impossible with the World vocabulary, which has all 256 single bytes):
 * RWKVPEFT_E_INVALID_ARGUMENT naming the offset. */
int rp_tokenizer_encode(const rwkvpeft_tokenizer *tok, const uint8_t *text, size_t len,
                        int32_t *ids, size_t max_ids, size_t *n_out, size_t *consumed,
                        rp_err *err);

/* Byte string of token `id` (NULL and *len = 0 for id 0 = end of document, and NULL with
 * *len = SIZE_MAX for an id that is not in the vocabulary). */
const uint8_t *rp_tokenizer_token(const rwkvpeft_tokenizer *tok, int32_t id, size_t *len);

/* Largest id + 1. */
int32_t rp_tokenizer_vocab_size(const rwkvpeft_tokenizer *tok);

#endif
