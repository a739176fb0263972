/* sampler.c — training batches from binidx / jsonl / SFT data (spec §5.4-§5.6).
 *
 * What a sample is (req = ctx_len + 1 tokens, inputs = window[0:ctx_len], target t =
 * window[t+1]):
 *   get   a window of req tokens at a uniform offset in [0, n_tokens - req) of the flat
 *         token stream (crosses documents);
 *   magic my_pile_stage 1..3: the window at ((f * ii^3) mod p) * ctx_len + my_pile_shift
 *         with ii = 1 + epoch*S + idx, f = floor(p * (sqrt(5)-1)/2), p = magic_prime;
 *   pad   req tokens starting at a document (the following documents fill the tail; at
 *         the end of the .bin: the document, then the first tokens of document 0);
 *         min_len = min(size, req);
 *   only  one document truncated to req tokens, no filling;
 *   jsonl (HEAD) a record's text tokenized without EOD, truncated to req, inputs padded
 *         with 0;
 *   sft   (LATE-NOV/HEAD) ids = tokens(prompt + response + "\n\x17") truncated to ctx_len;
 *         the first len(tokens(prompt)) ids get no target; inputs padded with 0.
 * Target t exists when token t+1 belongs to the document (t+1 < min_len) and is not part
 * of the SFT prompt; then the loss mask decides (none/pad: 1; qa/se: the marker state of
 * token t+1). Where the weight is 0 the target is RWKVPEFT_IGNORE_INDEX and mask is 0.
 *
 * Differences from the reference, on purpose (docs/data.md lists them for users):
 *  1. Randomness. The reference draws get offsets from numpy's global RNG inside a
 *     DataLoader worker and shuffles with torch's RandomSampler; neither stream can be
 *     reproduced (it depends on worker seeding, Lightning version, process count). Here
 *     every draw is a pure function of (seed, stream, epoch, index) through splitmix64
 *     (rp_rng_key), offsets are unbiased (rejection, rp_rng_below) and the per-epoch
 *     permutation is a keyed Feistel network with cycle walking (rp_rng_permute). So the
 *     same seed gives bit-identical batches everywhere, and the position (epoch, step) is
 *     the whole state: set_position resumes exactly.
 *  2. Document index (§9.6). The reference reads document idx in [0, S): the same S
 *     documents every epoch, and an IndexError when S > n_docs. Here document
 *     (epoch*S + idx) mod n_docs: epochs walk through all of the data, identical to the
 *     reference when S == n_docs (the GUI's step calculator with n_docs % micro_bsz == 0).
 *  3. pad is padding (§9.5). The reference trains on the following documents' tokens when
 *     --loss_mask is none; here (as at HEAD, which sets labels[min_len:] = -100) targets
 *     outside the document are always ignored, for pad, only and jsonl. loss_mask "pad" is
 *     therefore the same as "none".
 *  4. Loss masks with every mode (§9.7). NOV crashes for qa/se with get/only (min_len
 *     undefined) and HEAD's qa/se are stubs. Here min_len = req for get, the document
 *     length otherwise, and the masks work with every dataload and data type.
 *  5. se as intended (§9.7: NOV's generate_mask lacks `self` and compares a list with an
 *     array, so it never runs). Walking the window left to right: where mask0's tokens
 *     start, state 0 and the marker's tokens get 0; where mask1's tokens start (mask0 is
 *     tested first), state 1 and its tokens get 1; other tokens get the current state. A
 *     marker must lie entirely inside the document (min_len), as for qa.
 *  6. Fallback of qa/se. When no target of a window is marked the reference sets
 *     mk[0 : min_len-1] = 1 and returns mk[1:], i.e. one target fewer than the document
 *     has, and it tests sum(mk) including mk[0] (which is never a target). Here: when no
 *     *target* is marked, every target of the document is used (= the pad mask).
 *  7. Sum(mask) = 0. The reference divides by sum(mask) and gets NaN. A row without any
 *     target contributes nothing here; a whole batch without a target (possible with
 *     documents of <= 1 token or SFT prompts longer than ctx_len) is skipped: the position
 *     moves on to the next batch, so every returned batch has sum(mask) >= 1. create()
 *     fails when no document can give a target, so the skipping always ends (every
 *     document is visited within ceil(n_docs / S) epochs).
 *  8. only with micro_bsz > 1 (the reference requires 1): the rows are right-padded to the
 *     longest row of the batch (input 0). only with a 1-token document gives one position
 *     with input 0 and no target (the reference would return empty tensors).
 *  9. pad at the end of the .bin when the data is shorter than req: the tail is filled
 *     with what exists from document 0 on, then zeros (the reference raises); those
 *     tokens are outside the document and never targets.
 * 10. magic prime: the reference asserts epoch_steps*real_bsz == 40320; here S is free
 *     (epoch_steps defaults to 40320 / micro_bsz). A slot whose window would end past the
 *     data (possible when magic_prime*ctx_len + my_pile_shift + 1 > n_tokens; the
 *     reference raises) is moved back to end at the last token. Primality is tested
 *     deterministically (the reference uses a probabilistic Fermat + Miller-Rabin test).
 * 11. sft: the reference pads the whole dataset to its longest sample with the pad id and
 *     builds an attention mask; here rows are right-padded to ctx_len with input 0 and
 *     ignored targets (an RNN's outputs before the padding do not depend on it, so the
 *     loss is the same). The reference's labels are rolled left by one, wrapping labels[0]
 *     (a prompt token, so always ignored) to the last position; here the last position
 *     has no target, which is the same.
 * 12. Tokenizer for sft: the reference uses the HF "RWKV/rwkv-5-world-3b" tokenizer (the
 *     same World vocabulary, greedy longest match, no special tokens); here the World
 *     tokenizer of vocab_path.
 * 13. Multi-GPU index splitting (DistributedSampler, idx = counter*devices + rank) is not
 *     provided: a sampler produces one stream.
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "binidx.h"
#include "tokenizer.h"

/* ------------------------------------------------------------------------------------ */
/* Counter-based random numbers                                                          */
/* ------------------------------------------------------------------------------------ */

uint64_t rp_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t rp_rng_key(uint64_t seed, uint64_t stream, uint64_t epoch, uint64_t index) {
    uint64_t h = rp_mix64(seed ^ (stream * 0xD1B54A32D192ED03ull));
    h = rp_mix64(h ^ epoch);
    return rp_mix64(h ^ index);
}

uint64_t rp_rng_below(uint64_t key, uint64_t n) {
    if (n <= 1) return 0;
    uint64_t threshold = (0 - n) % n; /* 2^64 mod n: reject r < threshold */
    for (uint64_t j = 0;; j++) {
        uint64_t r = rp_mix64(key + j * 0x632BE59BD9B4E019ull);
        if (r >= threshold) return r % n;
    }
}

static uint64_t feistel(uint64_t key, int half, uint64_t x) {
    uint64_t mask = (half >= 32) ? 0xFFFFFFFFull : ((1ull << half) - 1);
    uint64_t L = x >> half, R = x & mask;
    for (uint64_t round = 0; round < 6; round++) {
        uint64_t F = rp_mix64(key ^ (round * 0x9E3779B97F4A7C15ull) ^ (R * 0xC2B2AE3D27D4EB4Full)) & mask;
        uint64_t nl = R;
        R = L ^ F;
        L = nl;
    }
    return (L << half) | R;
}

uint64_t rp_rng_permute(uint64_t key, uint64_t n, uint64_t k) {
    if (n <= 1) return 0;
    int bits = 2;
    while (bits < 64 && (1ull << bits) < n) bits++;
    if (bits & 1) bits++;
    int half = bits / 2;
    uint64_t y = k;
    do {
        y = feistel(key, half, y);
    } while (y >= n); /* cycle walking: stays a bijection of [0, n) */
    return y;
}

static uint64_t mulmod(uint64_t a, uint64_t b, uint64_t m) {
#if defined(__SIZEOF_INT128__)
    __extension__ typedef unsigned __int128 u128;
    return (uint64_t)(((u128)a * b) % m);
#else
    uint64_t r = 0;
    a %= m;
    while (b) {
        if (b & 1) r = (r >= m - a) ? r - (m - a) : r + a;
        a = (a >= m - a) ? a - (m - a) : a + a;
        b >>= 1;
    }
    return r;
#endif
}

static uint64_t powmod(uint64_t b, uint64_t e, uint64_t m) {
    uint64_t r = 1 % m;
    b %= m;
    while (e) {
        if (e & 1) r = mulmod(r, b, m);
        b = mulmod(b, b, m);
        e >>= 1;
    }
    return r;
}

int rp_is_prime_u64(uint64_t n) {
    if (n < 2) return 0;
    static const uint64_t small[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        if (n == small[i]) return 1;
        if (n % small[i] == 0) return 0;
    }
    uint64_t d = n - 1;
    int s = 0;
    while (!(d & 1)) {
        d >>= 1;
        s++;
    }
    /* these bases decide every n < 2^64 */
    static const uint64_t bases[] = {2, 325, 9375, 28178, 450775, 9780504, 1795265022};
    for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++) {
        uint64_t a = bases[i] % n;
        if (a == 0) continue;
        uint64_t x = powmod(a, d, n);
        if (x == 1 || x == n - 1) continue;
        int comp = 1;
        for (int r = 1; r < s; r++) {
            x = mulmod(x, x, n);
            if (x == n - 1) {
                comp = 0;
                break;
            }
        }
        if (comp) return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Sampler                                                                              */
/* ------------------------------------------------------------------------------------ */

enum { DT_BINIDX, DT_JSONL, DT_SFT };
enum { DL_GET, DL_PAD, DL_ONLY };
enum { LM_NONE, LM_PAD, LM_QA, LM_SE };
enum { STREAM_PERM = 1, STREAM_GET = 2 };

/* World ids of "User:" and "Assistant:" (spec §5.6), used by qa without a vocabulary. */
static const int32_t QA_USER[] = {24281, 59};
static const int32_t QA_ASSISTANT[] = {5585, 41693, 59};

struct rwkvpeft_sampler {
    rp_err err;
    int dtype, dataload, lmask;
    int32_t ctx_len, micro_bsz, req;
    int64_t epoch_steps, S;
    int shuffle;
    uint64_t seed;
    int magic; /* magic-prime sampling active */
    uint64_t magic_prime, magic_f;
    int64_t pile_shift;
    rwkvpeft_dataset *ds;
    int64_t n_units, n_tokens;
    /* jsonl / sft records */
    int32_t *pool;
    int64_t *rec_off;
    int32_t *rec_len, *rec_prompt;
    /* markers */
    int32_t *m0, *m1;
    int32_t m0n, m1n;
    /* position */
    int64_t epoch, step;
    /* scratch, per row */
    int32_t *win; /* [micro_bsz * req] */
    int32_t *wl, *minl, *lo;
    uint8_t *mk;  /* [req] */
};

void rwkvpeft_sampler_params_init(rwkvpeft_sampler_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->data_type = "binidx";
    p->dataload = "get";
    p->loss_mask = "none";
    p->ctx_len = 1024;
    p->micro_bsz = 12;
    p->epoch_steps = 0;
    p->data_shuffle = 1;
    p->seed = 0;
    p->my_pile_shift = -1;
}

void rwkvpeft_sampler_free(rwkvpeft_sampler *s) {
    if (!s) return;
    rp_dataset_close(s->ds);
    free(s->pool);
    free(s->rec_off);
    free(s->rec_len);
    free(s->rec_prompt);
    free(s->m0);
    free(s->m1);
    free(s->win);
    free(s->wl);
    free(s->minl);
    free(s->lo);
    free(s->mk);
    free(s);
}

static int pick(const char *v, const char *def, const char *const *names, int n, const char *what,
                int *out, rp_err *err) {
    if (!v) v = def;
    for (int i = 0; i < n; i++)
        if (strcmp(v, names[i]) == 0) {
            *out = i;
            return 0;
        }
    char list[128] = "";
    for (int i = 0; i < n; i++) {
        strncat(list, names[i], sizeof list - strlen(list) - 1);
        if (i + 1 < n) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "sampler: %s \"%s\" is not one of %s", what,
                   v, list);
}

static int encode_marker(const rwkvpeft_tokenizer *tok, const char *text, const char *what,
                         int32_t **out, int32_t *n_out, rp_err *err) {
    size_t len = strlen(text);
    if (len == 0)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "sampler: mask_id %s is empty", what);
    int32_t *ids = rp_malloc(len * sizeof *ids);
    if (!ids) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "sampler: out of memory");
    size_t n = 0;
    int rc = rp_tokenizer_encode(tok, (const uint8_t *)text, len, ids, len, &n, NULL, err);
    if (rc) {
        free(ids);
        return rc;
    }
    *out = ids;
    *n_out = (int32_t)n;
    return 0;
}

static int set_markers(rwkvpeft_sampler *s, const rwkvpeft_tokenizer *tok, const char *mask_id,
                       rp_err *err) {
    if (s->lmask == LM_QA) {
        if (tok) {
            RP_TRY(encode_marker(tok, "User:", "User:", &s->m0, &s->m0n, err));
            RP_TRY(encode_marker(tok, "Assistant:", "Assistant:", &s->m1, &s->m1n, err));
        } else {
            s->m0 = rp_malloc(sizeof QA_USER);
            s->m1 = rp_malloc(sizeof QA_ASSISTANT);
            if (!s->m0 || !s->m1) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "sampler: out of memory");
            memcpy(s->m0, QA_USER, sizeof QA_USER);
            memcpy(s->m1, QA_ASSISTANT, sizeof QA_ASSISTANT);
            s->m0n = 2;
            s->m1n = 3;
        }
        return 0;
    }
    if (s->lmask != LM_SE) return 0;
    const char *json = mask_id ? mask_id : "{\"mask0\":\"0\",\"mask1\":\"1\"}";
    cJSON *o = cJSON_Parse(json);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "sampler: mask_id '%s' is not a JSON object like {\"mask0\":\"0\",\"mask1\":\"1\"}",
                       json);
    }
    const char *keys[2] = {"mask0", "mask1"};
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[k]);
        if (!cJSON_IsString(v) || !v->valuestring)
            rc = rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                         "sampler: mask_id '%s' needs a string member \"%s\"", json, keys[k]);
        else
            rc = encode_marker(tok, v->valuestring, keys[k], k ? &s->m1 : &s->m0,
                               k ? &s->m1n : &s->m0n, err);
    }
    cJSON_Delete(o);
    return rc;
}

static int load_records(rwkvpeft_sampler *s, const char *path, const char *fields,
                        const rwkvpeft_tokenizer *tok, rp_err *err) {
    rp_jsonl_reader *rd = NULL;
    int rc = rp_jsonl_open(path, fields, &rd, err);
    if (rc) return rc;
    int sft = s->dtype == DT_SFT;
    int32_t cap_tok = sft ? s->ctx_len : s->req; /* tokens kept per record */
    int64_t n = 0, cap = 0, pool_n = 0, pool_cap = 0;
    for (;;) {
        const uint8_t *text;
        size_t len, plen;
        int got = rp_jsonl_next(rd, &text, &len, &plen, err);
        if (got < 0) {
            rc = got;
            break;
        }
        if (got == 0) break;
        if (n == cap) {
            int64_t nc = cap ? cap * 2 : 1024;
            int64_t *no = rp_realloc_array(s->rec_off, (size_t)nc, sizeof *no);
            if (no) s->rec_off = no;
            int32_t *nl = rp_realloc_array(s->rec_len, (size_t)nc, sizeof *nl);
            if (nl) s->rec_len = nl;
            int32_t *np = rp_realloc_array(s->rec_prompt, (size_t)nc, sizeof *np);
            if (np) s->rec_prompt = np;
            if (!no || !nl || !np) {
                rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "sampler: %s: out of memory", path);
                break;
            }
            cap = nc;
        }
        if (pool_n + cap_tok > pool_cap) {
            int64_t nc = pool_cap ? pool_cap * 2 : 65536;
            while (nc < pool_n + cap_tok) nc *= 2;
            int32_t *np = rp_realloc_array(s->pool, (size_t)nc, sizeof *np);
            if (!np) {
                rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "sampler: %s: out of memory", path);
                break;
            }
            s->pool = np;
            pool_cap = nc;
        }
        size_t got_ids = 0, p_ids = 0;
        rc = rp_tokenizer_encode(tok, text, len, s->pool + pool_n, (size_t)cap_tok, &got_ids,
                                 NULL, err);
        if (rc == 0 && sft) {
            /* len(tokens(prompt)), truncated like the reference's HF tokenizer call. The
             * ids are only counted; they go to the scratch row buffer. */
            rc = rp_tokenizer_encode(tok, text, plen, s->win, (size_t)cap_tok, &p_ids, NULL, err);
        }
        if (rc) {
            rp_fail_prefix(err, "%s:%lld", path, (long long)rp_jsonl_line(rd));
            break;
        }
        s->rec_off[n] = pool_n;
        s->rec_len[n] = (int32_t)got_ids;
        s->rec_prompt[n] = (int32_t)p_ids;
        pool_n += (int64_t)got_ids;
        n++;
    }
    rp_jsonl_close(rd);
    if (rc) return rc;
    if (n == 0)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "sampler: %s has no records", path);
    s->n_units = n;
    s->n_tokens = pool_n;
    return 0;
}

/* Whether some document can give a target (else next() could never return a batch). */
static int any_target(const rwkvpeft_sampler *s) {
    if (s->dtype == DT_BINIDX && s->dataload == DL_GET) return 1; /* n_tokens > req */
    for (int64_t d = 0; d < s->n_units; d++) {
        int64_t len, lo = 1;
        if (s->dtype == DT_BINIDX) {
            int64_t off;
            rp_dataset_doc(s->ds, d, &off, &len);
        } else {
            len = s->rec_len[d];
            if (s->dtype == DT_SFT && s->rec_prompt[d] > 1) lo = s->rec_prompt[d];
        }
        if (lo < len) return 1;
    }
    return 0;
}

rwkvpeft_status rwkvpeft_sampler_create(const rwkvpeft_sampler_params *params,
                                        rwkvpeft_sampler **out) {
    if (!out) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "sampler_create: out is NULL");
    *out = NULL;
    if (!params || params->struct_size < offsetof(rwkvpeft_sampler_params, ctx_len))
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                       "sampler_create: params missing or struct_size too small (call "
                       "rwkvpeft_sampler_params_init)");
    rwkvpeft_sampler_params p;
    rwkvpeft_sampler_params_init(&p);
    /* fields beyond the caller's struct_size keep their defaults */
    memcpy(&p, params, params->struct_size < sizeof p ? params->struct_size : sizeof p);
    rp_err err;
    rp_err_clear(&err);
    rwkvpeft_tokenizer *own_tok = NULL;
    int rc = 0;
    rwkvpeft_sampler *s = rp_calloc(1, sizeof *s);
    if (!s) return rp_fail(NULL, RWKVPEFT_E_OUT_OF_MEMORY, "sampler_create: out of memory");
    static const char *const dtypes[] = {"binidx", "jsonl", "sft"};
    static const char *const loads[] = {"get", "pad", "only"};
    static const char *const masks[] = {"none", "pad", "qa", "se"};
    if ((rc = pick(p.data_type, "binidx", dtypes, 3, "data_type", &s->dtype, &err)) ||
        (rc = pick(p.dataload, "get", loads, 3, "dataload", &s->dataload, &err)) ||
        (rc = pick(p.loss_mask, "none", masks, 4, "loss_mask", &s->lmask, &err)))
        goto fail;
    if (!p.data_file) {
        rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT, "sampler: data_file is NULL");
        goto fail;
    }
    if (p.ctx_len < 1 || p.ctx_len > (1 << 24) || p.micro_bsz < 1 || p.micro_bsz > (1 << 16)) {
        rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT,
                     "sampler: ctx_len %d / micro_bsz %d out of range (1..2^24 / 1..65536)",
                     (int)p.ctx_len, (int)p.micro_bsz);
        goto fail;
    }
    if (p.epoch_steps < 0) {
        rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT, "sampler: epoch_steps %lld is negative",
                     (long long)p.epoch_steps);
        goto fail;
    }
    if (s->dtype != DT_BINIDX) s->dataload = DL_ONLY; /* records are padded, never filled */
    s->ctx_len = p.ctx_len;
    s->micro_bsz = p.micro_bsz;
    s->req = p.ctx_len + 1;
    s->shuffle = p.data_shuffle != 0;
    s->seed = p.seed;
    s->pile_shift = p.my_pile_shift < 0 ? 0 : p.my_pile_shift;
    size_t B = (size_t)p.micro_bsz, R = (size_t)s->req;
    s->win = rp_malloc(B * R * sizeof *s->win);
    s->wl = rp_malloc(B * sizeof *s->wl);
    s->minl = rp_malloc(B * sizeof *s->minl);
    s->lo = rp_malloc(B * sizeof *s->lo);
    s->mk = rp_malloc(R);
    if (!s->win || !s->wl || !s->minl || !s->lo || !s->mk) {
        rc = rp_fail(&err, RWKVPEFT_E_OUT_OF_MEMORY, "sampler: out of memory");
        goto fail;
    }
    /* tokenizer */
    const rwkvpeft_tokenizer *tok = p.tokenizer;
    int need_tok = s->dtype != DT_BINIDX || s->lmask == LM_SE;
    if (!tok && p.vocab_path && (need_tok || s->lmask == LM_QA)) {
        rc = rp_tokenizer_load(p.vocab_path, &own_tok, &err);
        if (rc) goto fail;
        tok = own_tok;
    }
    if (need_tok && !tok) {
        rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT, "sampler: %s needs vocab_path (the World "
                     "vocabulary)", s->dtype != DT_BINIDX ? "data_type jsonl/sft" : "loss_mask se");
        goto fail;
    }
    rc = set_markers(s, tok, p.mask_id, &err);
    if (rc) goto fail;
    /* data */
    if (s->dtype == DT_BINIDX) {
        rc = rp_dataset_open(p.data_file, &s->ds, &err);
        if (rc) goto fail;
        s->n_units = rp_dataset_num_docs(s->ds);
        s->n_tokens = rp_dataset_num_tokens(s->ds);
    } else {
        const char *fields = "text";
        if (s->dtype == DT_SFT) {
            fields = p.sft_fields ? p.sft_fields : "query,response";
            if (!strchr(fields, ',')) {
                rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT,
                             "sampler: sft_fields \"%s\" must name two fields, e.g. "
                             "\"query,response\"", fields);
                goto fail;
            }
        }
        rc = load_records(s, p.data_file, fields, tok, &err);
        if (rc) goto fail;
    }
    /* magic prime */
    if (p.my_pile_stage > 0 && s->dtype != DT_BINIDX) {
        rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT,
                     "sampler: my_pile_stage applies to binidx data only");
        goto fail;
    }
    if (p.my_pile_stage > 0 && p.my_pile_stage != 4) {
        int64_t slots = s->n_tokens / s->ctx_len;
        uint64_t mp = p.magic_prime > 0 ? (uint64_t)p.magic_prime : 0;
        if (mp == 0 || !rp_is_prime_u64(mp) || mp % 3 != 2) {
            rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT,
                         "sampler: magic_prime %lld must be a prime = 2 (mod 3)",
                         (long long)p.magic_prime);
            goto fail;
        }
        double ratio = slots > 0 ? (double)mp / (double)slots : INFINITY;
        if (!(ratio > 0.99 && ratio <= 1.0)) {
            rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT,
                         "sampler: magic_prime %lld / (n_tokens // ctx_len = %lld) = %g, must be in "
                         "(0.99, 1]", (long long)p.magic_prime, (long long)slots, ratio);
            goto fail;
        }
        if (s->pile_shift > s->n_tokens) {
            rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT,
                         "sampler: my_pile_shift %lld is beyond the %lld tokens of the data",
                         (long long)s->pile_shift, (long long)s->n_tokens);
            goto fail;
        }
        s->magic = s->dataload == DL_GET;
        s->magic_prime = mp;
        s->magic_f = (uint64_t)((double)mp * ((sqrt(5.0) - 1.0) / 2.0));
    }
    /* epoch length */
    s->epoch_steps = p.epoch_steps;
    if (s->epoch_steps == 0) {
        if (s->dtype != DT_BINIDX || s->dataload != DL_GET)
            s->epoch_steps = s->n_units / s->micro_bsz;
        else if (p.my_pile_stage > 0 && p.my_pile_stage != 4)
            s->epoch_steps = 40320 / s->micro_bsz;
        else
            s->epoch_steps = 1000;
        if (s->epoch_steps < 1) {
            rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT,
                         "sampler: %lld documents are fewer than micro_bsz %d (epoch_steps would be "
                         "0)", (long long)s->n_units, (int)s->micro_bsz);
            goto fail;
        }
    }
    if (s->epoch_steps > INT64_MAX / 4 / s->micro_bsz) {
        rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT, "sampler: epoch_steps %lld too large",
                     (long long)s->epoch_steps);
        goto fail;
    }
    s->S = s->epoch_steps * s->micro_bsz;
    if (s->n_units < 1) {
        rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT, "sampler: %s has no documents", p.data_file);
        goto fail;
    }
    if (s->dtype == DT_BINIDX && s->dataload == DL_GET && s->n_tokens <= s->req) {
        rc = rp_fail(&err, RWKVPEFT_E_INVALID_ARGUMENT,
                     "sampler: %s has %lld tokens; dataload get needs more than ctx_len+1 = %d",
                     p.data_file, (long long)s->n_tokens, (int)s->req);
        goto fail;
    }
    if (!any_target(s)) {
        rc = rp_fail(&err, RWKVPEFT_E_FORMAT,
                     "sampler: no %s of %s has a target to train on (%s)",
                     s->dtype == DT_BINIDX ? "document" : "record", p.data_file,
                     s->dtype == DT_SFT ? "every prompt has ctx_len tokens or more, or no response"
                                        : "all have at most one token");
        goto fail;
    }
    rp_tokenizer_free(own_tok);
    *out = s;
    return RWKVPEFT_OK;
fail:
    rp_tokenizer_free(own_tok);
    rwkvpeft_sampler_free(s);
    return (rwkvpeft_status)rp_err_copy(NULL, &err);
}

/* Reads n tokens at flat offset `off`; beyond the end of the data the rest is zero. */
static int read_clip(rwkvpeft_sampler *s, int64_t off, int64_t n, int32_t *dst) {
    int64_t avail = s->n_tokens - off;
    if (avail < 0) avail = 0;
    int64_t m = n < avail ? n : avail;
    RP_TRY(rp_dataset_read(s->ds, off, m, dst, &s->err));
    for (int64_t i = m; i < n; i++) dst[i] = 0;
    return 0;
}

/* Fills row b's window for sample k of epoch e. */
static int fill_window(rwkvpeft_sampler *s, int64_t e, int64_t k, int b) {
    int32_t *w = s->win + (size_t)b * (size_t)s->req;
    int64_t req = s->req;
    uint64_t idx = s->shuffle ? rp_rng_permute(rp_rng_key(s->seed, STREAM_PERM, (uint64_t)e, 0),
                                               (uint64_t)s->S, (uint64_t)k)
                              : (uint64_t)k;
    s->lo[b] = 1;
    if (s->dtype == DT_BINIDX && s->dataload == DL_GET) {
        int64_t off;
        if (s->magic) {
            uint64_t p = s->magic_prime;
            uint64_t ii = (1 + mulmod((uint64_t)e, (uint64_t)s->S, p) + idx % p) % p;
            uint64_t c = mulmod(mulmod(ii, ii, p), ii, p);
            uint64_t slot = mulmod(s->magic_f, c, p);
            uint64_t o = slot * (uint64_t)s->ctx_len + (uint64_t)s->pile_shift;
            uint64_t last = (uint64_t)(s->n_tokens - req);
            off = (int64_t)(o > last ? last : o);
        } else {
            off = (int64_t)rp_rng_below(rp_rng_key(s->seed, STREAM_GET, (uint64_t)e, (uint64_t)k),
                                        (uint64_t)(s->n_tokens - req));
        }
        RP_TRY(rp_dataset_read(s->ds, off, req, w, &s->err));
        s->wl[b] = (int32_t)req;
        s->minl[b] = (int32_t)req;
        return 0;
    }
    uint64_t n = (uint64_t)s->n_units;
    int64_t d = (int64_t)((mulmod((uint64_t)e % n, (uint64_t)s->S % n, n) + idx % n) % n);
    if (s->dtype != DT_BINIDX) {
        int32_t L = s->rec_len[d];
        memcpy(w, s->pool + s->rec_off[d], (size_t)L * sizeof *w);
        s->wl[b] = L;
        s->minl[b] = L;
        if (s->dtype == DT_SFT) s->lo[b] = s->rec_prompt[d] > 1 ? s->rec_prompt[d] : 1;
        return 0;
    }
    int64_t off, size;
    rp_dataset_doc(s->ds, d, &off, &size);
    int64_t mn = size < req ? size : req;
    if (s->dataload == DL_ONLY) {
        RP_TRY(rp_dataset_read(s->ds, off, mn, w, &s->err));
        s->wl[b] = (int32_t)mn;
    } else if (off + req <= s->n_tokens) { /* pad: the next documents fill the tail */
        RP_TRY(rp_dataset_read(s->ds, off, req, w, &s->err));
        s->wl[b] = (int32_t)req;
    } else { /* pad at the end: the document, then document 0's tokens */
        int64_t off0, size0;
        rp_dataset_doc(s->ds, 0, &off0, &size0);
        RP_TRY(rp_dataset_read(s->ds, off, mn, w, &s->err));
        RP_TRY(read_clip(s, off0, req - mn, w + mn));
        s->wl[b] = (int32_t)req;
    }
    s->minl[b] = (int32_t)mn;
    return 0;
}

static int match_at(const int32_t *w, int32_t j, int32_t lim, const int32_t *m, int32_t mn) {
    if (mn <= 0 || j + mn > lim) return 0;
    for (int32_t i = 0; i < mn; i++)
        if (w[j + i] != m[i]) return 0;
    return 1;
}

/* Builds row b (T positions) and returns the number of targets with weight 1. */
static int64_t build_row(rwkvpeft_sampler *s, int b, int32_t T, int32_t *in, int32_t *tg,
                         float *mk_out) {
    const int32_t *w = s->win + (size_t)b * (size_t)s->req;
    int32_t wl = s->wl[b], ml = s->minl[b], lo = s->lo[b];
    /* only: inputs = window[:-1] (the reference's x); jsonl/sft: every kept token, as
     * HEAD pads the tokens before slicing */
    int32_t n_in = (s->dtype == DT_BINIDX && s->dataload == DL_ONLY) ? wl - 1 : wl;
    for (int32_t t = 0; t < T; t++) in[t] = t < n_in ? w[t] : 0;
    uint8_t *mk = s->mk;
    int use_mk = s->lmask == LM_QA || s->lmask == LM_SE;
    if (use_mk) {
        uint8_t state = 0;
        if (s->lmask == LM_QA) {
            for (int32_t j = 0; j < ml; j++) {
                if (match_at(w, j, ml, s->m0, s->m0n)) state = 0;
                else if (match_at(w, j, ml, s->m1, s->m1n)) state = 1;
                mk[j] = state;
            }
        } else {
            int32_t j = 0;
            while (j < ml) {
                if (match_at(w, j, ml, s->m0, s->m0n)) {
                    state = 0;
                    memset(mk + j, 0, (size_t)s->m0n);
                    j += s->m0n;
                } else if (match_at(w, j, ml, s->m1, s->m1n)) {
                    state = 1;
                    memset(mk + j, 1, (size_t)s->m1n);
                    j += s->m1n;
                } else {
                    mk[j++] = state;
                }
            }
        }
        int any = 0;
        for (int32_t j = lo; j < ml && !any; j++) any = mk[j];
        if (!any) use_mk = 0; /* no marked target: fall back to the whole document */
    }
    int64_t count = 0;
    for (int32_t t = 0; t < T; t++) {
        int32_t j = t + 1;
        int on = j >= lo && j < ml && (!use_mk || mk[j]);
        tg[t] = on ? w[j] : RWKVPEFT_IGNORE_INDEX;
        if (mk_out) mk_out[t] = on ? 1.0f : 0.0f;
        count += on;
    }
    return count;
}

/* Builds the batch at (e, step); *count = targets with weight 1. */
static int build_batch(rwkvpeft_sampler *s, int64_t e, int64_t step, int32_t *inputs,
                       int32_t *targets, float *mask, int32_t *seq_len, int64_t *count) {
    int B = s->micro_bsz;
    for (int b = 0; b < B; b++) RP_TRY(fill_window(s, e, step * B + b, b));
    int32_t T = s->ctx_len;
    if (s->dtype == DT_BINIDX && s->dataload == DL_ONLY) {
        T = 1;
        for (int b = 0; b < B; b++)
            if (s->wl[b] - 1 > T) T = s->wl[b] - 1;
    }
    int64_t c = 0;
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * (size_t)T;
        c += build_row(s, b, T, inputs + o, targets + o, mask ? mask + o : NULL);
    }
    *seq_len = T;
    *count = c;
    return 0;
}

rwkvpeft_status rwkvpeft_sampler_next(rwkvpeft_sampler *s, int32_t *inputs, int32_t *targets,
                                      float *mask, int32_t *seq_len) {
    if (!s) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "sampler_next: sampler is NULL");
    if (!inputs || !targets || !seq_len)
        return rp_fail(&s->err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "sampler_next: inputs, targets and seq_len must not be NULL");
    int64_t e = s->epoch, st = s->step;
    /* Skipping ends: create() checked that some document has a target, and every
     * document is visited within ceil(n_docs / S) epochs. */
    int64_t epochs = s->n_units / s->S + 2;
    int64_t max_attempts = epochs > INT64_MAX / s->epoch_steps ? INT64_MAX : epochs * s->epoch_steps;
    for (int64_t attempt = 0; attempt < max_attempts; attempt++) {
        int64_t count = 0;
        int rc = build_batch(s, e, st, inputs, targets, mask, seq_len, &count);
        if (rc) return (rwkvpeft_status)rp_err_copy(NULL, &s->err);
        if (++st == s->epoch_steps) {
            st = 0;
            e++;
        }
        if (count > 0) {
            s->epoch = e;
            s->step = st;
            return RWKVPEFT_OK;
        }
    }
    return rp_fail(&s->err, RWKVPEFT_E_INTERNAL,
                   "sampler_next: %lld batches in a row from epoch %lld step %lld have no target",
                   (long long)max_attempts, (long long)s->epoch, (long long)s->step);
}

rwkvpeft_status rwkvpeft_sampler_set_position(rwkvpeft_sampler *s, int64_t epoch, int64_t step) {
    if (!s) return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "sampler_set_position: sampler is NULL");
    if (epoch < 0 || step < 0 || step >= s->epoch_steps)
        return rp_fail(&s->err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "sampler_set_position: (epoch %lld, step %lld) invalid: epoch >= 0 and step "
                       "in [0, %lld)", (long long)epoch, (long long)step, (long long)s->epoch_steps);
    s->epoch = epoch;
    s->step = step;
    return RWKVPEFT_OK;
}

rwkvpeft_status rwkvpeft_sampler_get_position(const rwkvpeft_sampler *s, int64_t *epoch,
                                              int64_t *step) {
    if (!s || !epoch || !step)
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "sampler_get_position: NULL argument");
    *epoch = s->epoch;
    *step = s->step;
    return RWKVPEFT_OK;
}

rwkvpeft_status rwkvpeft_sampler_get_info(const rwkvpeft_sampler *s, rwkvpeft_sampler_info *info) {
    if (!s || !info || info->struct_size < sizeof(uint32_t))
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                       "sampler_get_info: NULL argument or struct_size not set");
    rwkvpeft_sampler_info v;
    memset(&v, 0, sizeof v);
    v.struct_size = info->struct_size < sizeof v ? info->struct_size : (uint32_t)sizeof v;
    v.n_docs = s->n_units;
    v.n_tokens = s->n_tokens;
    v.epoch_steps = s->epoch_steps;
    v.ctx_len = s->ctx_len;
    v.micro_bsz = s->micro_bsz;
    v.magic_epoch_count = s->magic_prime ? (int64_t)(s->magic_prime / (uint64_t)s->S) : 0;
    memcpy(info, &v, v.struct_size);
    return RWKVPEFT_OK;
}

const char *rwkvpeft_sampler_last_error(const rwkvpeft_sampler *s) { return s ? s->err.msg : ""; }
