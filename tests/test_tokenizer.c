/* test_tokenizer.c — World tokenizer: reference ids, parity with the reference tokenizer on
 * a generated 160 KB corpus (tests/data/tokenizer, made by make_corpus.py with the `rwkv`
 * pip package), vocabulary parsing (escapes, every error with its line number), greedy
 * longest match and the public sizing contract.
 *
 * Needs RWKVPEFT_WORLD_VOCAB = path of rwkv_vocab_v20230424.txt (shipped in the `rwkv` pip
 * package). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rwkvpeft.h"
#include "tokenizer.h"
#include "testutil.h"

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/rp-tok-%ld-%s", tu_tmpdir(), (long)getpid(), name);
}

static rwkvpeft_tokenizer *world(void) {
    rwkvpeft_tokenizer *t = NULL;
    rwkvpeft_status st = rwkvpeft_tokenizer_load(tu_world_vocab(), &t);
    ck_assert_msg(st == RWKVPEFT_OK, "load failed: %s", rwkvpeft_last_error());
    return t;
}

static void expect_ids(const rwkvpeft_tokenizer *t, const char *s, size_t len, const int32_t *want,
                       size_t nwant) {
    int32_t ids[64];
    size_t n = 0;
    ck_assert_int_eq(rwkvpeft_tokenizer_encode(t, s, len, ids, 64, &n), RWKVPEFT_OK);
    ck_assert_msg(n == nwant, "'%s': %zu ids, expected %zu", s, n, nwant);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ids[i] == want[i], "'%s': id %zu is %d, expected %d", s, i, ids[i], want[i]);
}

START_TEST(test_reference_ids) {
    rwkvpeft_tokenizer *t = world();
    ck_assert_int_eq(rwkvpeft_tokenizer_vocab_size(t), 65530);
    expect_ids(t, "User:", 5, (const int32_t[]){24281, 59}, 2);
    expect_ids(t, "Assistant:", 10, (const int32_t[]){5585, 41693, 59}, 3);
    expect_ids(t, " Assistant:", 11, (const int32_t[]){58683, 59}, 2);
    expect_ids(t, "\n\n", 2, (const int32_t[]){261}, 1);
    expect_ids(t, "0", 1, (const int32_t[]){49}, 1);
    expect_ids(t, "1", 1, (const int32_t[]){50}, 1);
    expect_ids(t, "\x17", 1, (const int32_t[]){24}, 1);
    expect_ids(t, "", 0, NULL, 0);
    /* ids 1..256 are the single bytes */
    for (int b = 0; b < 256; b++) {
        char c = (char)b, out[4];
        int32_t id = b + 1;
        size_t n = 0;
        ck_assert_int_eq(rwkvpeft_tokenizer_decode(t, &id, 1, out, 4, &n), RWKVPEFT_OK);
        ck_assert_int_eq(n, 1);
        ck_assert_int_eq((unsigned char)out[0], b);
        (void)c;
    }
    rwkvpeft_tokenizer_free(t);
}
END_TEST

START_TEST(test_corpus_parity) {
    rwkvpeft_tokenizer *t = world();
    char p[1024];
    size_t clen, ilen;
    tu_data_path(p, sizeof p, "tokenizer/corpus.bin");
    unsigned char *corpus = tu_read_all(p, &clen);
    tu_data_path(p, sizeof p, "tokenizer/ids.bin");
    unsigned char *idb = tu_read_all(p, &ilen);
    ck_assert_uint_ge(clen, 100 * 1024);
    ck_assert_int_eq(ilen % 4, 0);
    size_t nref = ilen / 4;
    int32_t *ids = malloc(clen * sizeof *ids);
    ck_assert_ptr_nonnull(ids);
    size_t n = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ck_assert_int_eq(rwkvpeft_tokenizer_encode(t, (const char *)corpus, clen, ids, clen, &n),
                     RWKVPEFT_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    ck_assert_msg(n == nref, "%zu ids, reference has %zu", n, nref);
    for (size_t i = 0; i < n; i++) {
        int32_t r = (int32_t)((uint32_t)idb[4 * i] | ((uint32_t)idb[4 * i + 1] << 8) |
                              ((uint32_t)idb[4 * i + 2] << 16) | ((uint32_t)idb[4 * i + 3] << 24));
        ck_assert_msg(ids[i] == r, "id %zu: %d, reference %d", i, ids[i], r);
    }
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    fprintf(stderr, "tokenizer: %zu bytes -> %zu ids in %.2f ms (%.1f MB/s)\n", clen, n, s * 1e3,
            s > 0 ? (double)clen / s / 1e6 : 0.0);
    /* decode back to the same bytes */
    char *back = malloc(clen);
    ck_assert_ptr_nonnull(back);
    size_t nb = 0;
    ck_assert_int_eq(rwkvpeft_tokenizer_decode(t, ids, n, back, clen, &nb), RWKVPEFT_OK);
    ck_assert_int_eq(nb, clen);
    ck_assert_mem_eq(back, corpus, clen);
    free(back);
    free(ids);
    free(idb);
    free(corpus);
    rwkvpeft_tokenizer_free(t);
}
END_TEST

START_TEST(test_sizing_contract) {
    rwkvpeft_tokenizer *t = world();
    const char *s = "User: hello\n\nAssistant: hi";
    int32_t all[32], some[3] = {-7, -7, -7};
    size_t n = 0, m = 0;
    ck_assert_int_eq(rwkvpeft_tokenizer_encode(t, s, strlen(s), all, 32, &n), RWKVPEFT_OK);
    ck_assert_uint_gt(n, 3);
    /* too small: error, buffer filled with the first ids, *n_ids = what is needed */
    ck_assert_int_eq(rwkvpeft_tokenizer_encode(t, s, strlen(s), some, 2, &m),
                     RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(m, n);
    ck_assert_int_eq(some[0], all[0]);
    ck_assert_int_eq(some[1], all[1]);
    ck_assert_int_eq(some[2], -7);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "capacity"));
    /* capacity 0 with NULL ids: sizing only */
    ck_assert_int_eq(rwkvpeft_tokenizer_encode(t, s, strlen(s), NULL, 0, &m),
                     RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(m, n);
    /* decode: id 0 decodes to nothing, sizing, bad ids */
    int32_t with_eod[] = {all[0], 0, all[1]};
    char buf[64];
    size_t nb = 0, nb2 = 0;
    ck_assert_int_eq(rwkvpeft_tokenizer_decode(t, with_eod, 3, buf, sizeof buf, &nb), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_tokenizer_decode(t, with_eod, 3, NULL, 0, &nb2),
                     RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(nb, nb2);
    ck_assert_int_eq(rwkvpeft_tokenizer_decode(t, all, n, buf, sizeof buf, &nb), RWKVPEFT_OK);
    ck_assert_int_eq(nb, strlen(s));
    ck_assert_mem_eq(buf, s, nb);
    int32_t bad[] = {65530};
    ck_assert_int_eq(rwkvpeft_tokenizer_decode(t, bad, 1, buf, sizeof buf, &nb),
                     RWKVPEFT_E_INVALID_ARGUMENT);
    bad[0] = -1;
    ck_assert_int_eq(rwkvpeft_tokenizer_decode(t, bad, 1, buf, sizeof buf, &nb),
                     RWKVPEFT_E_INVALID_ARGUMENT);
    /* NULL arguments */
    ck_assert_int_eq(rwkvpeft_tokenizer_encode(NULL, s, 1, all, 32, &n), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_tokenizer_encode(t, s, 1, all, 32, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    rwkvpeft_tokenizer_free(t);
    rwkvpeft_tokenizer_free(NULL);
}
END_TEST

/* A toy vocabulary through the internal buffer loader. */
static rwkvpeft_tokenizer *toy(const char *text) {
    rwkvpeft_tokenizer *t = NULL;
    rp_err e;
    int rc = rp_tokenizer_load_buffer("toy.txt", text, strlen(text), &t, &e);
    ck_assert_msg(rc == 0, "toy vocab: %s", e.msg);
    return t;
}

static void expect_token(const rwkvpeft_tokenizer *t, int32_t id, const char *bytes, size_t n) {
    size_t L = 0;
    const uint8_t *p = rp_tokenizer_token(t, id, &L);
    ck_assert_msg(L == n, "id %d: %zu bytes, expected %zu", id, L, n);
    ck_assert_mem_eq(p, bytes, n);
}

START_TEST(test_literals) {
    const char *v = "1 'a' 1\n"
                    "2 \"it's\" 4\n"
                    "3 '\\x41\\n\\t\\r\\\\\\'\\\"' 7\n"
                    "4 b'\\xff\\x00' 2\n"
                    "5 '\\u00e9' 2\n"
                    "6 '\\U0001F600' 4\n"
                    "7 '\\101\\0' 2\n"
                    "8 b'\\u' 2\n"
                    "9 '  two spaces  ' 14\n"
                    "\n" /* blank lines are skipped */
                    "10 'é中' 5\n"
                    "11 B\"q\" 1\n"
                    "12 '\\q' 2\n"
                    "20 '\\a\\b\\f\\v' 4\n";
    rwkvpeft_tokenizer *t = toy(v);
    ck_assert_int_eq(rp_tokenizer_vocab_size(t), 21);
    expect_token(t, 1, "a", 1);
    expect_token(t, 2, "it's", 4);
    expect_token(t, 3, "A\n\t\r\\'\"", 7);
    expect_token(t, 4, "\xff\x00", 2);
    expect_token(t, 5, "\xc3\xa9", 2);
    expect_token(t, 6, "\xf0\x9f\x98\x80", 4);
    expect_token(t, 7, "A\0", 2);
    expect_token(t, 8, "\\u", 2);
    expect_token(t, 9, "  two spaces  ", 14);
    expect_token(t, 10, "\xc3\xa9\xe4\xb8\xad", 5);
    expect_token(t, 11, "q", 1);
    expect_token(t, 12, "\\q", 2);
    expect_token(t, 20, "\a\b\f\v", 4);
    size_t L = 0;
    ck_assert_ptr_null(rp_tokenizer_token(t, 15, &L)); /* gap */
    ck_assert_uint_eq(L, SIZE_MAX);
    ck_assert_ptr_null(rp_tokenizer_token(t, 0, &L)); /* EOD */
    ck_assert_uint_eq(L, 0);
    rp_tokenizer_free(t);
}
END_TEST

START_TEST(test_longest_match) {
    /* single bytes a b c d, plus ab, abcd, bcd, d-d */
    rwkvpeft_tokenizer *t = toy("1 'a' 1\n2 'b' 1\n3 'c' 1\n4 'd' 1\n5 'ab' 2\n6 'abcd' 4\n"
                                "7 'bcd' 3\n8 'dd' 2\n");
    int32_t ids[16];
    size_t n = 0;
    rp_err e;
    /* "abcab": abcd fails at the 4th byte -> back to "ab" */
    ck_assert_int_eq(rp_tokenizer_encode(t, (const uint8_t *)"abcab", 5, ids, 16, &n, NULL, &e), 0);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(ids[0], 5);
    ck_assert_int_eq(ids[1], 3);
    ck_assert_int_eq(ids[2], 5);
    /* "abcdd": abcd then d (greedy, not ab + c + dd) */
    ck_assert_int_eq(rp_tokenizer_encode(t, (const uint8_t *)"abcdd", 5, ids, 16, &n, NULL, &e), 0);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(ids[0], 6);
    ck_assert_int_eq(ids[1], 4);
    /* max_ids stops early and reports the bytes covered */
    size_t used = 0;
    ck_assert_int_eq(rp_tokenizer_encode(t, (const uint8_t *)"abcdabcdab", 10, ids, 2, &n, &used, &e), 0);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(used, 8);
    /* a byte without a token */
    ck_assert_int_eq(rp_tokenizer_encode(t, (const uint8_t *)"abz", 3, ids, 16, &n, NULL, &e),
                     RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(e.msg, "offset 2"));
    rp_tokenizer_free(t);
}
END_TEST

static void expect_error(const char *vocab, int code, const char *needle) {
    rwkvpeft_tokenizer *t = NULL;
    rp_err e;
    rp_err_clear(&e);
    int rc = rp_tokenizer_load_buffer("bad.txt", vocab, strlen(vocab), &t, &e);
    ck_assert_msg(rc == code, "vocab %s: rc %d, expected %d (%s)", vocab, rc, code, e.msg);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(e.msg, needle) != NULL, "message '%s' lacks '%s'", e.msg, needle);
}

START_TEST(test_vocab_errors) {
    const int F = RWKVPEFT_E_FORMAT;
    expect_error("1 'a' 1\nx 'b' 1\n", F, "bad.txt:2: id 'x'");
    expect_error("1 'a' 1\n2 'b'\n", F, "bad.txt:2: expected '<id> <literal> <byte length>'");
    expect_error("1\n", F, "bad.txt:1: expected");
    expect_error("1 'a' 1\n2 'bc' 3\n", F, "bad.txt:2: literal decodes to 2 bytes but the line says 3");
    expect_error("1 'a' 1\n2 'b' x\n", F, "bad.txt:2: byte length 'x'");
    expect_error("1 'a' 1\n\n3 'b\n", F, "bad.txt:3:");
    expect_error("1 'a\" 1\n", F, "bad.txt:1: literal does not end with its opening quote");
    expect_error("1 abc 1\n", F, "bad.txt:1: expected a Python string or bytes literal");
    expect_error("1 '\\x4' 1\n", F, "bad.txt:1: \\x escape at column");
    expect_error("1 '\\ud800' 3\n", F, "bad.txt:1: escape at column 4 is a surrogate");
    expect_error("1 b'\xc3\xa9' 2\n", F, "bad.txt:1: non-ASCII byte 0xC3 in a bytes literal");
    expect_error("1 'a' 1\n1 'b' 1\n", F, "bad.txt:2: id 1 already defined on line 1");
    expect_error("1 'a' 1\n2 b'a' 1\n", F, "bad.txt:2: same byte string as line 1");
    expect_error("1 '' 0\n", F, "bad.txt:1: empty token");
    expect_error("0 'a' 1\n", F, "bad.txt:1: id 0 is reserved");
    expect_error("1 'a'b' 3\n", F, "bad.txt:1: unescaped ' inside the literal");
    expect_error("1 '\xff' 1\n", F, "bad.txt:1: invalid UTF-8");
    expect_error("1 '\\N{DASH}' 1\n", F, "bad.txt:1: \\N{...}");
    expect_error("1 b'\\777' 1\n", F, "out of range for bytes");
    expect_error("", F, "no tokens");
    /* public loader: missing file */
    rwkvpeft_tokenizer *t = (rwkvpeft_tokenizer *)1;
    ck_assert_int_eq(rwkvpeft_tokenizer_load("/nonexistent/vocab.txt", &t), RWKVPEFT_E_IO);
    ck_assert_ptr_null(t);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "/nonexistent/vocab.txt"));
    /* public loader: a file with a bad line */
    char p[1024];
    tmp_path(p, sizeof p, "bad_vocab.txt");
    FILE *f = fopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("1 'a' 1\r\n2 'b' 1\r\n3 'c' 2\r\n", f);
    fclose(f);
    ck_assert_int_eq(rwkvpeft_tokenizer_load(p, &t), RWKVPEFT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), ":3: literal decodes to 1 bytes"));
    remove(p);
}
END_TEST

/* Random corruptions of the first 3000 lines of the real vocabulary never crash the loader:
 * each load succeeds or fails with a line-numbered format error. */
START_TEST(test_mutations_never_crash) {
    size_t n;
    FILE *f = fopen(tu_world_vocab(), "rb");
    ck_assert_ptr_nonnull(f);
    char *buf = malloc(1 << 16);
    ck_assert_ptr_nonnull(buf);
    n = fread(buf, 1, 1 << 16, f);
    fclose(f);
    while (n > 0 && buf[n - 1] != '\n') n--; /* whole lines only */
    char *m = malloc(n);
    ck_assert_ptr_nonnull(m);
    uint64_t x = 88172645463325252ull;
    int ok = 0;
    for (int it = 0; it < 200; it++) {
        memcpy(m, buf, n);
        for (int j = 0; j < 1 + it % 5; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            static const char pool[] = " '\"\\bxu0123456789afnAZ\n\xff\x80";
            m[x % n] = (it & 1) ? pool[(x >> 32) % (sizeof pool - 1)] : (char)(x >> 40);
        }
        rwkvpeft_tokenizer *t = NULL;
        rp_err e;
        rp_err_clear(&e);
        int rc = rp_tokenizer_load_buffer("m.txt", m, n, &t, &e);
        ck_assert(rc == 0 || rc == RWKVPEFT_E_FORMAT);
        if (rc == 0) {
            ok++;
            int32_t ids[64];
            size_t k = 0;
            rc = rp_tokenizer_encode(t, (const uint8_t *)m, n < 64 ? n : 64, ids, 64, &k, NULL, &e);
            ck_assert(rc == 0 || rc == RWKVPEFT_E_INVALID_ARGUMENT);
            rp_tokenizer_free(t);
        } else {
            ck_assert_msg(strncmp(e.msg, "m.txt:", 6) == 0, "message '%s'", e.msg);
        }
    }
    (void)ok;
    free(m);
    free(buf);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_reference_ids);
    tcase_add_test(tc, test_corpus_parity);
    tcase_add_test(tc, test_sizing_contract);
    tcase_add_test(tc, test_literals);
    tcase_add_test(tc, test_longest_match);
    tcase_add_test(tc, test_vocab_errors);
    tcase_add_test(tc, test_mutations_never_crash);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
