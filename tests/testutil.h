/* testutil.h — small helpers shared by the Check programs under tests/. */
#ifndef RP_TESTUTIL_H
#define RP_TESTUTIL_H

#include <check.h>
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

static inline int tu_run(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
