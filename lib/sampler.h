/* sampler.h — internal interfaces of the data pipeline that are shared between files:
 * the jsonl record reader (jsonl.c, used by rwkvpeft_jsonl_to_binidx and by the sampler's
 * "jsonl"/"sft" data types) and the sampler's deterministic random numbers (sampler.c,
 * exposed for the tests). The public API is the "Samplers" section of rwkvpeft.h. */
#ifndef RP_SAMPLER_H
#define RP_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/* ---- jsonl reader (jsonl.c) ------------------------------------------------------------ */

/* The reference's SFT prompt (spec §5.5); "{instruction}" is replaced by the query and the
 * response is followed by "\n\x17". */
#define RP_SFT_PROMPT_HEAD                                                                     \
    "Below is an instruction that describes a task. Write a response that appropriately "    \
    "completes the request.\n\n### Instruction:\n"
#define RP_SFT_PROMPT_TAIL "\n\n### Response:"
#define RP_SFT_EOT "\n\x17"

typedef struct rp_jsonl_reader rp_jsonl_reader;

/* Opens a jsonl file. `fields` is one field name ("text"; NULL means "text") or two
 * separated by a comma ("query,response": SFT records). */
int rp_jsonl_open(const char *path, const char *fields, rp_jsonl_reader **out, rp_err *err);

/* Reads the next record: returns 1 and sets *text and *len to the record's text (for SFT: the
 * prompt built from the query, then the response and "\n\x17"; *prompt_len = the
 * prompt's byte length; 0 otherwise). The text is valid until the next call. Returns 0 at
 * the end of the file, or a negative status with "<file>:<line>: <what is wrong>".
 * Empty (blank) lines are skipped and counted. */
int rp_jsonl_next(rp_jsonl_reader *r, const uint8_t **text, size_t *len, size_t *prompt_len,
                  rp_err *err);

int64_t rp_jsonl_line(const rp_jsonl_reader *r);        /* line of the last record */
int64_t rp_jsonl_blank_lines(const rp_jsonl_reader *r); /* blank lines skipped so far */
uint64_t rp_jsonl_bytes_read(const rp_jsonl_reader *r);
uint64_t rp_jsonl_file_size(const rp_jsonl_reader *r);  /* 0 if unknown (pipe) */
int rp_jsonl_is_sft(const rp_jsonl_reader *r);
void rp_jsonl_close(rp_jsonl_reader *r);

/* ---- counter-based random numbers (sampler.c) ----------------------------------------- */

/* splitmix64's output function applied to x + golden ratio increment. */
uint64_t rp_mix64(uint64_t x);
/* Key for stream `stream` of draw (seed, epoch, index). */
uint64_t rp_rng_key(uint64_t seed, uint64_t stream, uint64_t epoch, uint64_t index);
/* Uniform integer in [0, n) (n >= 1), unbiased (rejection), a pure function of key. */
uint64_t rp_rng_below(uint64_t key, uint64_t n);
/* Position of `k` in a pseudo-random permutation of [0, n) chosen by key (a Feistel
 * network with cycle walking); a bijection of [0, n) for every key. */
uint64_t rp_rng_permute(uint64_t key, uint64_t n, uint64_t k);
/* Deterministic primality test for 64-bit numbers (Miller-Rabin with fixed bases). */
int rp_is_prime_u64(uint64_t n);

#endif
