/* testutil.h — small helpers shared by the Check programs under tests/. */
#ifndef RP_TESTUTIL_H
#define RP_TESTUTIL_H

#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rwkvpeft.h"

/* Folder for temporary files: $RWKVPEFT_TEST_TMP (set by ctest) or /tmp. */
static inline const char *tu_tmpdir(void) {
    const char *d = getenv("RWKVPEFT_TEST_TMP");
    return d && d[0] ? d : "/tmp";
}

/* A per-process unique temp path ending in `suffix`. */
static inline void tu_tmppath(char *out, size_t n, const char *stem, const char *suffix) {
    snprintf(out, n, "%s/%s-%ld%s", tu_tmpdir(), stem, (long)getpid(), suffix);
}

/* Path of a test fixture: $RWKVPEFT_TEST_DATA/<rel> (set by ctest), else tests/data/<rel> next
 * to this header, so a test program also runs by hand from any folder. */
static inline void tu_data_path(char *out, size_t n, const char *rel) {
    const char *d = getenv("RWKVPEFT_TEST_DATA");
    const char *src = __FILE__, *slash = strrchr(src, '/');
    int len;
    if (d && d[0])
        len = snprintf(out, n, "%s/%s", d, rel);
    else if (slash)
        len = snprintf(out, n, "%.*s/data/%s", (int)(slash - src), src, rel);
    else
        len = snprintf(out, n, "data/%s", rel);
    ck_assert_msg(len >= 0 && (size_t)len < n, "fixture path for %s is too long", rel);
}

/* The whole file at `path` (one spare byte after the end, for a NUL); fails the test if it
 * cannot be read. The caller frees it. */
static inline unsigned char *tu_read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "cannot open %s: %s", path, strerror(errno));
    ck_assert_int_eq(fseek(fp, 0, SEEK_END), 0);
    long sz = ftell(fp);
    ck_assert_int_ge(sz, 0);
    ck_assert_int_eq(fseek(fp, 0, SEEK_SET), 0);
    unsigned char *b = malloc((size_t)sz + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *n = (size_t)sz;
    return b;
}

/* Writes `n` bytes to `path` (created or truncated); fails the test on any error. */
static inline void tu_write_all(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    ck_assert_msg(fp != NULL, "cannot create %s: %s", path, strerror(errno));
    if (n) ck_assert_uint_eq(fwrite(data, 1, n, fp), n);
    ck_assert_int_eq(fclose(fp), 0);
}

/* The RWKV World vocabulary file the tokenizer tests compare against (the rwkv pip package's
 * rwkv_vocab_v20230424.txt, named by $RWKVPEFT_WORLD_VOCAB); fails the test if it is missing. */
static inline const char *tu_world_vocab(void) {
    const char *p = getenv("RWKVPEFT_WORLD_VOCAB");
    if (!p || !*p || access(p, R_OK) != 0)
        ck_abort_msg("RWKVPEFT_WORLD_VOCAB is %s: install the rwkv pip package (python3 -m pip "
                     "install rwkv) and set RWKVPEFT_WORLD_VOCAB to its rwkv_vocab_v20230424.txt, "
                     "e.g. export RWKVPEFT_WORLD_VOCAB=$(scripts/world_vocab.sh)",
                     p && *p ? "not a readable file" : "not set");
    return p;
}

/* Deterministic pseudo-random numbers for tests (splitmix64). */
static inline uint64_t tu_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline double tu_uniform(uint64_t *s) { return (double)(tu_next(s) >> 11) * (1.0 / 9007199254740992.0); }

/* Fails the current test with the library's last error when a call fails. */
#define TU_OK(call)                                                                                     \
    do {                                                                                               \
        rwkvpeft_status tu_rc_ = (call);                                                               \
        ck_assert_msg(tu_rc_ == RWKVPEFT_OK, "%s failed: %d (%s)", #call, (int)tu_rc_, rwkvpeft_last_error()); \
    } while (0)

static inline rwkvpeft_context *tu_context(const char *backend) {
    rwkvpeft_context_params p;
    rwkvpeft_context_params_init(&p);
    p.backend = backend;
    p.log_level = -1;
    rwkvpeft_context *ctx = NULL;
    TU_OK(rwkvpeft_context_create(&p, &ctx));
    return ctx;
}

/* A batch of B sequences of T tokens (inputs and targets [B*T]; no mask, no weights). */
static inline rwkvpeft_batch tu_batch(int B, int T, const int32_t *inputs, const int32_t *targets) {
    rwkvpeft_batch b;
    rwkvpeft_batch_init(&b);
    b.batch_size = B;
    b.seq_len = T;
    b.inputs = inputs;
    b.targets = targets;
    return b;
}

static inline int tu_run(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
