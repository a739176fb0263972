/* test_binidx.c — binidx reader/writer: fixtures written by an independent Python writer
 * (tests/data/binidx/make_fixtures.py), byte-identical writer output for every dtype code,
 * the json2binidx dtype rule, temporary files, and malformed .idx/.bin files (each with
 * its error code and the offset in the message). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "binidx.h"
#include "rwkvpeft.h"
#include "testutil.h"

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/rp-binidx-%ld-%s", tu_tmpdir(), (long)getpid(), name);
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

/* the same documents as make_fixtures.py */
static const int32_t SMALL[] = {1, 2, 3, 7, 0, 5, 9, 11, 127};
static const int64_t SMALL_SIZES[] = {3, 0, 1, 5};
static const int32_t WORLD[] = {24281, 59, 0, 5585, 41693, 59, 0, 261, 0, 65529, 1, 256, 0};
static const int64_t WORLD_SIZES[] = {3, 4, 2, 4};

static void check_dataset(const char *prefix, const int32_t *toks, const int64_t *sizes, int ndocs) {
    rwkvpeft_dataset *ds = NULL;
    rwkvpeft_status st = rwkvpeft_dataset_open(prefix, &ds);
    ck_assert_msg(st == RWKVPEFT_OK, "%s: %s", prefix, rwkvpeft_last_error());
    ck_assert_int_eq(rwkvpeft_dataset_num_docs(ds), ndocs);
    int64_t total = 0;
    for (int d = 0; d < ndocs; d++) total += sizes[d];
    ck_assert_int_eq(rwkvpeft_dataset_num_tokens(ds), total);
    int64_t off = 0;
    for (int d = 0; d < ndocs; d++) {
        int64_t o = -1, n = -1;
        ck_assert_int_eq(rwkvpeft_dataset_doc(ds, d, &o, &n), RWKVPEFT_OK);
        ck_assert_int_eq(o, off);
        ck_assert_int_eq(n, sizes[d]);
        off += sizes[d];
    }
    int32_t buf[32];
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, 0, total, buf), RWKVPEFT_OK);
    for (int64_t i = 0; i < total; i++) ck_assert_int_eq(buf[i], toks[i]);
    /* a range crossing documents */
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, 2, 3, buf), RWKVPEFT_OK);
    ck_assert_int_eq(buf[0], toks[2]);
    ck_assert_int_eq(buf[2], toks[4]);
    /* bounds */
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, total - 1, 2, buf), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, -1, 1, buf), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, total, 0, buf), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_doc(ds, ndocs, NULL, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_dataset_last_error(ds), "out of range"));
    rwkvpeft_dataset_free(ds);
}

START_TEST(test_read_python_fixtures) {
    char p[1024];
    for (int code = 1; code <= 8; code++) {
        char rel[64];
        snprintf(rel, sizeof rel, "binidx/code%d", code);
        tu_data_path(p, sizeof p, rel);
        check_dataset(p, SMALL, SMALL_SIZES, 4);
        rwkvpeft_dataset *ds = NULL;
        ck_assert_int_eq(rwkvpeft_dataset_open(p, &ds), RWKVPEFT_OK);
        ck_assert_int_eq(rp_dataset_dtype_code(ds), code);
        rwkvpeft_dataset_free(ds);
    }
    tu_data_path(p, sizeof p, "binidx/world_u16");
    check_dataset(p, WORLD, WORLD_SIZES, 4);
    tu_data_path(p, sizeof p, "binidx/world_i32");
    check_dataset(p, WORLD, WORLD_SIZES, 4);
}
END_TEST

static void write_docs(const char *prefix, int code, int32_t vocab, const int32_t *toks,
                       const int64_t *sizes, int ndocs) {
    rwkvpeft_dataset_writer *w = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_writer_create(prefix, code, vocab, &w), RWKVPEFT_OK);
    int64_t off = 0;
    for (int d = 0; d < ndocs; d++) {
        ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, toks + off, sizes[d]), RWKVPEFT_OK);
        off += sizes[d];
    }
    ck_assert_msg(rwkvpeft_dataset_writer_finish(w) == RWKVPEFT_OK, "%s",
                  rwkvpeft_dataset_writer_last_error(w));
    rwkvpeft_dataset_writer_free(w);
}

static void same_file(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = tu_read_all(a, &na), *y = tu_read_all(b, &nb);
    ck_assert_msg(na == nb, "%s has %zu bytes, %s %zu", a, na, b, nb);
    ck_assert_msg(memcmp(x, y, na) == 0, "%s differs from %s", a, b);
    free(x);
    free(y);
}

START_TEST(test_writer_round_trip_every_dtype) {
    char prefix[1024], ref[1024], a[1100], b[1100];
    for (int code = 1; code <= 8; code++) {
        char name[32], rel[64];
        snprintf(name, sizeof name, "rt%d", code);
        tmp_path(prefix, sizeof prefix, name);
        write_docs(prefix, code, 0, SMALL, SMALL_SIZES, 4);
        check_dataset(prefix, SMALL, SMALL_SIZES, 4);
        /* byte-identical to the Python reference writer */
        snprintf(rel, sizeof rel, "binidx/code%d", code);
        tu_data_path(ref, sizeof ref, rel);
        snprintf(a, sizeof a, "%s.bin", prefix);
        snprintf(b, sizeof b, "%s.bin", ref);
        same_file(a, b);
        remove(a);
        snprintf(a, sizeof a, "%s.idx", prefix);
        snprintf(b, sizeof b, "%s.idx", ref);
        same_file(a, b);
        remove(a);
    }
    /* dtype 0 = json2binidx's rule: World (65530 >= 65500) -> int32, 50277 -> uint16 */
    tmp_path(prefix, sizeof prefix, "auto");
    const int32_t w16[] = {24281, 59, 0, 5585, 41693, 59, 0, 261, 0, 65529, 1, 256, 0};
    write_docs(prefix, 0, 65530, w16, WORLD_SIZES, 4);
    tu_data_path(ref, sizeof ref, "binidx/world_i32");
    snprintf(a, sizeof a, "%s.idx", prefix);
    snprintf(b, sizeof b, "%s.idx", ref);
    same_file(a, b);
    snprintf(a, sizeof a, "%s.bin", prefix);
    snprintf(b, sizeof b, "%s.bin", ref);
    same_file(a, b);
    write_docs(prefix, 0, 50277, SMALL, SMALL_SIZES, 4);
    rwkvpeft_dataset *ds = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_open(prefix, &ds), RWKVPEFT_OK);
    ck_assert_int_eq(rp_dataset_dtype_code(ds), 8);
    rwkvpeft_dataset_free(ds);
    snprintf(a, sizeof a, "%s.bin", prefix);
    remove(a);
    snprintf(a, sizeof a, "%s.idx", prefix);
    remove(a);
    /* empty dataset: 0 sequences, doc_idx = [0] */
    tmp_path(prefix, sizeof prefix, "empty");
    write_docs(prefix, 4, 0, NULL, NULL, 0);
    ck_assert_int_eq(rwkvpeft_dataset_open(prefix, &ds), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_num_docs(ds), 0);
    ck_assert_int_eq(rwkvpeft_dataset_num_tokens(ds), 0);
    rwkvpeft_dataset_free(ds);
    snprintf(a, sizeof a, "%s.idx", prefix);
    size_t n;
    free(tu_read_all(a, &n));
    ck_assert_int_eq(n, 34 + 8);
    remove(a);
    snprintf(a, sizeof a, "%s.bin", prefix);
    remove(a);
}
END_TEST

/* No file whose name starts with `stem` in the temp folder. */
static int count_files_with_prefix(const char *stem) {
    DIR *d = opendir(tu_tmpdir());
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, stem, strlen(stem)) == 0) n++;
    closedir(d);
    return n;
}

START_TEST(test_writer_temp_files_and_errors) {
    char prefix[1024], stem[256], a[1100];
    snprintf(stem, sizeof stem, "rp-binidx-%ld-partial", (long)getpid());
    tmp_path(prefix, sizeof prefix, "partial");
    rwkvpeft_dataset_writer *w = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_writer_create(prefix, 8, 0, &w), RWKVPEFT_OK);
    const int32_t ok[] = {1, 2, 65535};
    ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, ok, 3), RWKVPEFT_OK);
    ck_assert_int_eq(count_files_with_prefix(stem), 1); /* the temporary .bin */
    snprintf(a, sizeof a, "%s.bin", prefix);
    ck_assert(!exists(a));
    /* ids that do not fit the dtype */
    const int32_t big[] = {65536};
    ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, big, 1), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_dataset_writer_last_error(w), "uint16"));
    const int32_t neg[] = {-1};
    ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, neg, 1), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, NULL, 2), RWKVPEFT_E_INVALID_ARGUMENT);
    /* free without finish removes everything */
    rwkvpeft_dataset_writer_free(w);
    ck_assert_int_eq(count_files_with_prefix(stem), 0);
    /* finish renames; nothing temporary is left; add/finish afterwards are state errors */
    ck_assert_int_eq(rwkvpeft_dataset_writer_create(prefix, 4, 0, &w), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, ok, 3), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_writer_finish(w), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, ok, 3), RWKVPEFT_E_STATE);
    ck_assert_int_eq(rwkvpeft_dataset_writer_finish(w), RWKVPEFT_E_STATE);
    rwkvpeft_dataset_writer_free(w);
    ck_assert_int_eq(count_files_with_prefix(stem), 2);
    snprintf(a, sizeof a, "%s.bin", prefix);
    ck_assert(exists(a));
    remove(a);
    snprintf(a, sizeof a, "%s.idx", prefix);
    ck_assert(exists(a));
    remove(a);
    /* bad arguments */
    ck_assert_int_eq(rwkvpeft_dataset_writer_create(prefix, 9, 0, &w), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(rwkvpeft_dataset_writer_create(prefix, 0, 0, &w), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_dataset_writer_create("/nonexistent-dir/x", 4, 0, &w), RWKVPEFT_E_IO);
    ck_assert_ptr_null(w);
    rwkvpeft_dataset_writer_free(NULL);
    /* float32 only takes exactly representable ids */
    ck_assert_int_eq(rwkvpeft_dataset_writer_create(prefix, 6, 0, &w), RWKVPEFT_OK);
    const int32_t f_bad[] = {(1 << 24) + 1};
    ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, f_bad, 1), RWKVPEFT_E_INVALID_ARGUMENT);
    rwkvpeft_dataset_writer_free(w);
    ck_assert_int_eq(count_files_with_prefix(stem), 0);
}
END_TEST

/* ---- malformed files ------------------------------------------------------------------ */

static unsigned char *g_idx, *g_bin;
static size_t g_idx_n, g_bin_n;

static void load_good(void) {
    char p[1024];
    tu_data_path(p, sizeof p, "binidx/world_i32.idx");
    g_idx = tu_read_all(p, &g_idx_n);
    tu_data_path(p, sizeof p, "binidx/world_i32.bin");
    g_bin = tu_read_all(p, &g_bin_n);
}

static void put64(unsigned char *p, int64_t v) {
    for (int k = 0; k < 8; k++) p[k] = (unsigned char)((uint64_t)v >> (8 * k));
}

static void put32(unsigned char *p, int32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (unsigned char)((uint32_t)v >> (8 * k));
}

/* Writes idx/bin (bin NULL: no .bin file), opens, checks the code and message parts. */
static void expect_open_error(const char *name, const unsigned char *idx, size_t ni,
                              const unsigned char *bin, size_t nb, int code, const char *needle) {
    char prefix[1024], a[1100];
    tmp_path(prefix, sizeof prefix, name);
    snprintf(a, sizeof a, "%s.idx", prefix);
    if (idx) tu_write_all(a, idx, ni);
    else remove(a);
    snprintf(a, sizeof a, "%s.bin", prefix);
    if (bin) tu_write_all(a, bin, nb);
    else remove(a);
    rwkvpeft_dataset *ds = (rwkvpeft_dataset *)1;
    rwkvpeft_status st = rwkvpeft_dataset_open(prefix, &ds);
    const char *msg = rwkvpeft_last_error();
    ck_assert_msg((int)st == code, "%s: status %d, expected %d (%s)", name, st, code, msg);
    ck_assert_ptr_null(ds);
    ck_assert_msg(strstr(msg, needle) != NULL, "%s: message '%s' lacks '%s'", name, msg, needle);
    ck_assert_msg(strstr(msg, prefix) != NULL, "%s: message '%s' lacks the file name", name, msg);
    snprintf(a, sizeof a, "%s.idx", prefix);
    remove(a);
    snprintf(a, sizeof a, "%s.bin", prefix);
    remove(a);
}

#define MUT(expr)                                   \
    do {                                            \
        unsigned char *m = malloc(g_idx_n + 64);    \
        memcpy(m, g_idx, g_idx_n);                  \
        size_t mn = g_idx_n;                        \
        (void)mn;                                   \
        expr;                                       \
        free(m);                                    \
    } while (0)

START_TEST(test_malformed) {
    const int F = RWKVPEFT_E_FORMAT;
    load_good();
    /* layout of world_i32.idx: len 4, doc_count 5: sizes @34, pointers @50, doc_idx @82 */
    ck_assert_int_eq(g_idx_n, 34 + 4 * 4 + 8 * 4 + 8 * 5);
    /* 1 truncated header */
    expect_open_error("m1", g_idx, 20, g_bin, g_bin_n, F, "truncated header: 20 bytes");
    /* 2 bad magic */
    MUT(m[3] = 'X'; expect_open_error("m2", m, g_idx_n, g_bin, g_bin_n, F, "offset 0: bad magic"));
    /* 3 version */
    MUT(m[9] = 2; expect_open_error("m3", m, g_idx_n, g_bin, g_bin_n, F, "offset 9: version 2"));
    /* 4 dtype codes 0 and 9 */
    MUT(m[17] = 0; expect_open_error("m4", m, g_idx_n, g_bin, g_bin_n, F, "offset 17: unknown dtype code 0"));
    MUT(m[17] = 9; expect_open_error("m4b", m, g_idx_n, g_bin, g_bin_n, F, "offset 17: unknown dtype code 9"));
    /* 5 len larger than the file allows */
    MUT(put64(m + 18, 1000); expect_open_error("m5", m, g_idx_n, g_bin, g_bin_n, F, "offset 18"));
    MUT(put64(m + 18, INT64_MAX); expect_open_error("m5b", m, g_idx_n, g_bin, g_bin_n, F, "offset 18"));
    /* 6 doc_count disagrees with the file size (trailing bytes / short) */
    MUT(memset(m + g_idx_n, 0, 8);
        expect_open_error("m6", m, g_idx_n + 8, g_bin, g_bin_n, F, "offset 26: doc_count 5"));
    expect_open_error("m6b", g_idx, g_idx_n - 8, g_bin, g_bin_n, F, "offset 26");
    /* 7 negative size */
    MUT(put32(m + 38, -4); expect_open_error("m7", m, g_idx_n, g_bin, g_bin_n, F,
                                            "offset 38: size of sequence 1 is -4"));
    /* 8 pointer not the prefix sum */
    MUT(put64(m + 58, 16); expect_open_error("m8", m, g_idx_n, g_bin, g_bin_n, F,
                                            "offset 58: pointer of sequence 1 is 16, expected 12"));
    /* 9 first pointer not 0 */
    MUT(put64(m + 50, 4); expect_open_error("m9", m, g_idx_n, g_bin, g_bin_n, F, "offset 50"));
    /* 10 sizes run past the .bin (truncated .bin) */
    expect_open_error("m10", g_idx, g_idx_n, g_bin, g_bin_n - 8, F, "ends past the end of");
    /* 11 .bin longer than the index describes */
    {
        unsigned char *b = calloc(1, g_bin_n + 4);
        memcpy(b, g_bin, g_bin_n);
        expect_open_error("m11", g_idx, g_idx_n, b, g_bin_n + 4, F, "mismatched .bin/.idx pair");
        free(b);
    }
    /* 12 doc_idx[0] != 0 */
    MUT(put64(m + 82, 1); expect_open_error("m12", m, g_idx_n, g_bin, g_bin_n, F,
                                           "offset 82: doc_idx[0] is 1"));
    /* 13 doc_idx decreasing */
    MUT(put64(m + 98, 0); expect_open_error("m13", m, g_idx_n, g_bin, g_bin_n, F,
                                           "offset 98: doc_idx[2] = 0 is smaller"));
    /* 14 doc_idx beyond len */
    MUT(put64(m + 106, 7); expect_open_error("m14", m, g_idx_n, g_bin, g_bin_n, F,
                                            "offset 106: doc_idx[3] = 7 is beyond"));
    /* 15 last doc_idx != len */
    MUT(put64(m + 114, 3); expect_open_error("m15", m, g_idx_n, g_bin, g_bin_n, F,
                                            "offset 114: last doc_idx entry is 3"));
    /* 16 doc_count 0 */
    MUT(put64(m + 26, 0); expect_open_error("m16", m, g_idx_n - 40, g_bin, g_bin_n, F,
                                           "doc_count is 0"));
    /* 17 missing files */
    expect_open_error("m17", g_idx, g_idx_n, NULL, 0, RWKVPEFT_E_IO, ".bin: cannot open");
    expect_open_error("m18", NULL, 0, g_bin, g_bin_n, RWKVPEFT_E_IO, ".idx: cannot open");
    /* 19 empty .idx */
    expect_open_error("m19", g_idx, 0, g_bin, g_bin_n, F, "truncated header: 0 bytes");
    free(g_idx);
    free(g_bin);
}
END_TEST

START_TEST(test_bad_token_values) {
    char prefix[1024], a[1100];
    tmp_path(prefix, sizeof prefix, "vals");
    /* int32 negative */
    write_docs(prefix, 4, 0, (const int32_t[]){1, 2, 3}, (const int64_t[]){3}, 1);
    snprintf(a, sizeof a, "%s.bin", prefix);
    size_t n;
    unsigned char *b = tu_read_all(a, &n);
    put32(b + 4, -5);
    tu_write_all(a, b, n);
    free(b);
    rwkvpeft_dataset *ds = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_open(prefix, &ds), RWKVPEFT_OK);
    int32_t out[3];
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, 0, 1, out), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, 0, 3, out), RWKVPEFT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_dataset_last_error(ds), "byte offset 4: token 1 is -5"));
    rwkvpeft_dataset_free(ds);
    /* float32 with a fraction, float64 too large, int64 beyond int32 */
    for (int code = 5; code <= 7; code++) {
        write_docs(prefix, code, 0, (const int32_t[]){1, 2}, (const int64_t[]){2}, 1);
        b = tu_read_all(a, &n);
        if (code == 6) {
            float f = 1.5f;
            memcpy(b + 4, &f, 4);
        } else if (code == 7) {
            double d = 3e9;
            memcpy(b + 8, &d, 8);
        } else {
            put64(b + 8, (int64_t)1 << 40);
        }
        tu_write_all(a, b, n);
        free(b);
        ck_assert_int_eq(rwkvpeft_dataset_open(prefix, &ds), RWKVPEFT_OK);
        ck_assert_int_eq(rwkvpeft_dataset_read(ds, 0, 2, out), RWKVPEFT_E_FORMAT);
        ck_assert_ptr_nonnull(strstr(rwkvpeft_dataset_last_error(ds), "token 1 is"));
        rwkvpeft_dataset_free(ds);
    }
    /* int8 negative */
    write_docs(prefix, 2, 0, (const int32_t[]){1, 2}, (const int64_t[]){2}, 1);
    b = tu_read_all(a, &n);
    b[1] = 0xF0;
    tu_write_all(a, b, n);
    free(b);
    ck_assert_int_eq(rwkvpeft_dataset_open(prefix, &ds), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, 0, 2, out), RWKVPEFT_E_FORMAT);
    rwkvpeft_dataset_free(ds);
    remove(a);
    snprintf(a, sizeof a, "%s.idx", prefix);
    remove(a);
    /* NULL handling */
    ck_assert_int_eq(rwkvpeft_dataset_open(NULL, &ds), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_dataset_open(prefix, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_dataset_num_docs(NULL), 0);
    rwkvpeft_dataset_free(NULL);
}
END_TEST

/* Random corruptions of a valid .idx never crash the reader: every open either fails with
 * a format error or yields a dataset whose every token can be read or reported. */
START_TEST(test_mutations_never_crash) {
    load_good();
    char prefix[1024], a[1100];
    tmp_path(prefix, sizeof prefix, "fuzz");
    snprintf(a, sizeof a, "%s.bin", prefix);
    tu_write_all(a, g_bin, g_bin_n);
    snprintf(a, sizeof a, "%s.idx", prefix);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int opened = 0;
    for (int it = 0; it < 300; it++) {
        unsigned char m[256];
        memcpy(m, g_idx, g_idx_n);
        size_t n = g_idx_n;
        int k = it % 50 == 0 ? 0 : 1 + it % 4; /* every 50th file stays valid */
        for (int j = 0; j < k; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            m[x % n] = (unsigned char)(x >> 32);
        }
        if (it % 10 == 5) n = (size_t)(x >> 40) % n; /* truncations too */
        tu_write_all(a, m, n);
        rwkvpeft_dataset *ds = NULL;
        rwkvpeft_status st = rwkvpeft_dataset_open(prefix, &ds);
        ck_assert(st == RWKVPEFT_OK || st == RWKVPEFT_E_FORMAT);
        if (st != RWKVPEFT_OK) continue;
        opened++;
        for (int64_t d = 0; d < rwkvpeft_dataset_num_docs(ds); d++) {
            int64_t o, len;
            int32_t buf[64];
            ck_assert_int_eq(rwkvpeft_dataset_doc(ds, d, &o, &len), RWKVPEFT_OK);
            ck_assert(o >= 0 && len >= 0 && o + len <= rwkvpeft_dataset_num_tokens(ds) && len <= 64);
            st = rwkvpeft_dataset_read(ds, o, len, buf);
            ck_assert(st == RWKVPEFT_OK || st == RWKVPEFT_E_FORMAT);
        }
        rwkvpeft_dataset_free(ds);
    }
    ck_assert_int_ge(opened, 6);
    remove(a);
    snprintf(a, sizeof a, "%s.bin", prefix);
    remove(a);
    free(g_idx);
    free(g_bin);
}
END_TEST

int main(void) {
    Suite *s = suite_create("binidx");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_read_python_fixtures);
    tcase_add_test(tc, test_writer_round_trip_every_dtype);
    tcase_add_test(tc, test_writer_temp_files_and_errors);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_bad_token_values);
    tcase_add_test(tc, test_mutations_never_crash);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
