/* test_jsonl.c — jsonl -> binidx: byte-identical output to the reference pipeline on
 * tests/data/jsonl/sample.jsonl (expected files made by make_fixtures.py with the rwkv pip
 * package), SFT records against the reference preprocessing, every kind of bad line with
 * its line number (blank lines counted), nothing written on failure, progress and cancel.
 *
 * Needs RWKVPEFT_WORLD_VOCAB (see test_tokenizer.c). */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rwkvpeft.h"
#include "sampler.h"
#include "testutil.h"

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/rp-jsonl-%ld-%s", tu_tmpdir(), (long)getpid(), name);
}

static void same_file(const char *a, const char *b) {
    size_t na, nb;
    unsigned char *x = tu_read_all(a, &na), *y = tu_read_all(b, &nb);
    ck_assert_msg(na == nb, "%s has %zu bytes, %s %zu", a, na, b, nb);
    ck_assert_msg(memcmp(x, y, na) == 0, "%s differs from %s", a, b);
    free(x);
    free(y);
}

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

static void remove_out(const char *prefix) {
    char a[1100];
    snprintf(a, sizeof a, "%s.bin", prefix);
    remove(a);
    snprintf(a, sizeof a, "%s.idx", prefix);
    remove(a);
}

START_TEST(test_sample_matches_reference) {
    char in[1024], ref[1024], out[1024], a[1100], b[1100];
    tu_data_path(in, sizeof in, "jsonl/sample.jsonl");
    tu_data_path(ref, sizeof ref, "jsonl/sample_ref");
    tmp_path(out, sizeof out, "sample");
    rwkvpeft_jsonl_params p;
    rwkvpeft_jsonl_params_init(&p);
    ck_assert_int_eq(p.append_eod, 1);
    ck_assert_str_eq(p.fields, "text");
    p.jsonl_path = in;
    p.output_prefix = out;
    p.vocab_path = tu_world_vocab();
    int64_t docs = -1, skipped = -1;
    rwkvpeft_status st = rwkvpeft_jsonl_to_binidx(&p, &docs, &skipped);
    ck_assert_msg(st == RWKVPEFT_OK, "%s", rwkvpeft_last_error());
    ck_assert_int_eq(docs, 6);    /* 7 records, one with "" */
    ck_assert_int_eq(skipped, 2); /* the "" record and the blank line */
    snprintf(a, sizeof a, "%s.bin", out);
    snprintf(b, sizeof b, "%s.bin", ref);
    same_file(a, b);
    snprintf(a, sizeof a, "%s.idx", out);
    snprintf(b, sizeof b, "%s.idx", ref);
    same_file(a, b);
    /* without EOD: every document one token shorter */
    p.append_eod = 0;
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, &docs, NULL), RWKVPEFT_OK);
    rwkvpeft_dataset *x = NULL, *y = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_open(out, &x), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_open(ref, &y), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_num_docs(x), 6);
    for (int d = 0; d < 6; d++) {
        int64_t o1, n1, o2, n2;
        ck_assert_int_eq(rwkvpeft_dataset_doc(x, d, &o1, &n1), RWKVPEFT_OK);
        ck_assert_int_eq(rwkvpeft_dataset_doc(y, d, &o2, &n2), RWKVPEFT_OK);
        ck_assert_int_eq(n1, n2 - 1);
        int32_t t1[64], t2[64];
        ck_assert_int_lt(n2, 64);
        ck_assert_int_eq(rwkvpeft_dataset_read(x, o1, n1, t1), RWKVPEFT_OK);
        ck_assert_int_eq(rwkvpeft_dataset_read(y, o2, n2, t2), RWKVPEFT_OK);
        ck_assert_mem_eq(t1, t2, (size_t)n1 * 4);
        ck_assert_int_eq(t2[n2 - 1], 0);
    }
    rwkvpeft_dataset_free(x);
    rwkvpeft_dataset_free(y);
    remove_out(out);
}
END_TEST

START_TEST(test_sft_fields) {
    char in[1024], ref[1024], out[1024];
    tu_data_path(in, sizeof in, "jsonl/sft.jsonl");
    tu_data_path(ref, sizeof ref, "jsonl/sft_ref.txt");
    tmp_path(out, sizeof out, "sft");
    rwkvpeft_jsonl_params p;
    rwkvpeft_jsonl_params_init(&p);
    p.jsonl_path = in;
    p.output_prefix = out;
    p.vocab_path = tu_world_vocab();
    p.fields = " query , response ";
    int64_t docs = -1;
    ck_assert_msg(rwkvpeft_jsonl_to_binidx(&p, &docs, NULL) == RWKVPEFT_OK, "%s",
                  rwkvpeft_last_error());
    ck_assert_int_eq(docs, 4);
    rwkvpeft_dataset *ds = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_open(out, &ds), RWKVPEFT_OK);
    FILE *f = fopen(ref, "r");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    int d = 0;
    while (fgets(line, sizeof line, f)) {
        int32_t want[1024];
        int n = 0;
        char *s = line, *e;
        long plen = strtol(s, &e, 10); /* prompt length: not part of a binidx document */
        ck_assert_int_gt(plen, 0);
        s = e;
        for (long v = strtol(s, &e, 10); e != s; v = strtol(s, &e, 10)) {
            want[n++] = (int32_t)v;
            s = e;
        }
        want[n++] = 0; /* EOD */
        int64_t o, len;
        ck_assert_int_eq(rwkvpeft_dataset_doc(ds, d, &o, &len), RWKVPEFT_OK);
        ck_assert_int_eq(len, n);
        int32_t got[1024];
        ck_assert_int_eq(rwkvpeft_dataset_read(ds, o, len, got), RWKVPEFT_OK);
        ck_assert_mem_eq(got, want, (size_t)n * 4);
        ck_assert_int_eq(got[n - 2], 24); /* "\x17" before the EOD */
        d++;
    }
    fclose(f);
    ck_assert_int_eq(d, 4);
    rwkvpeft_dataset_free(ds);
    remove_out(out);
    /* a record missing the response field */
    char bad[1024];
    tmp_path(bad, sizeof bad, "sft_bad.jsonl");
    const char *txt = "{\"query\":\"q\",\"response\":\"r\"}\n{\"query\":\"q2\"}\n";
    tu_write_all(bad, txt, strlen(txt));
    p.jsonl_path = bad;
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, &docs, NULL), RWKVPEFT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), ":2: missing field \"response\""));
    remove(bad);
    /* three fields are not accepted */
    p.fields = "a,b,c";
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, &docs, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    p.fields = "a,";
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, &docs, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
}
END_TEST

/* A file whose line `bad_line` (1-based) is `bad`, preceded by good lines and blank lines. */
static void expect_bad_line(const char *name, const char *bad, const char *needle) {
    char in[1024], out[1024], stem[256];
    tmp_path(in, sizeof in, name);
    strcat(in, ".jsonl");
    snprintf(stem, sizeof stem, "rp-jsonl-%ld-out_%s", (long)getpid(), name);
    tmp_path(out, sizeof out, "out_");
    strcat(out, name);
    /* lines: 1 good, 2 blank, 3 good, 4 "   " (blank), 5 bad, 6 good */
    char text[4096];
    int n = snprintf(text, sizeof text,
                     "{\"text\":\"one\"}\n\n{\"text\":\"two\", \"n\": 2}\n   \r\n%s\n{\"text\":\"six\"}\n",
                     bad);
    /* the bad line may hold a NUL byte: write it with its real length */
    size_t blen = strlen(bad);
    if (strcmp(name, "nul") == 0) {
        n = snprintf(text, sizeof text, "{\"text\":\"one\"}\n\n{\"text\":\"two\"}\n   \r\n");
        memcpy(text + n, "{\"text\":\"a\0b\"}\n", 15);
        n += 15;
        blen = 0;
    }
    (void)blen;
    tu_write_all(in, text, (size_t)n);
    rwkvpeft_jsonl_params p;
    rwkvpeft_jsonl_params_init(&p);
    p.jsonl_path = in;
    p.output_prefix = out;
    p.vocab_path = tu_world_vocab();
    int64_t docs = 123, skipped = 123;
    rwkvpeft_status st = rwkvpeft_jsonl_to_binidx(&p, &docs, &skipped);
    const char *msg = rwkvpeft_last_error();
    ck_assert_msg(st == RWKVPEFT_E_FORMAT, "%s: status %d (%s)", name, st, msg);
    char want[1200];
    snprintf(want, sizeof want, "%s:5: %s", in, needle);
    ck_assert_msg(strstr(msg, want) != NULL, "%s: message '%s' lacks '%s'", name, msg, want);
    ck_assert_int_eq(docs, 0);
    ck_assert_int_eq(skipped, 0);
    ck_assert_int_eq(count_files_with_prefix(stem), 0); /* nothing written, no temporary left */
    remove(in);
}

START_TEST(test_bad_lines) {
    expect_bad_line("syntax", "{\"text\": \"x\",}", "not valid JSON (error at column");
    expect_bad_line("unterminated", "{\"text\": \"x", "not valid JSON");
    expect_bad_line("trailing", "{\"text\": \"x\"} {\"text\": \"y\"}",
                    "unexpected text after the JSON value at column 15");
    expect_bad_line("array", "[\"text\", \"x\"]", "expected a JSON object, found an array");
    expect_bad_line("string", "\"just a string\"", "expected a JSON object, found a string");
    expect_bad_line("missing", "{\"txt\": \"x\"}", "missing field \"text\"");
    expect_bad_line("number", "{\"text\": 42}", "field \"text\" is a number, expected a string");
    expect_bad_line("null", "{\"text\": null}", "field \"text\" is null, expected a string");
    expect_bad_line("list", "{\"text\": [\"a\", \"b\"]}", "field \"text\" is an array");
    expect_bad_line("object", "{\"text\": {\"a\": 1}}", "field \"text\" is an object");
    expect_bad_line("escnul", "{\"text\": \"a\\u0000b\"}", "\\u0000 (NUL character) at column 12");
    expect_bad_line("surrogate", "{\"text\": \"\\ud800\"}", "not valid JSON");
    expect_bad_line("nul", "", "NUL byte at column");
}
END_TEST

START_TEST(test_line_endings_duplicates_escapes) {
    char in[1024], out[1024];
    tmp_path(in, sizeof in, "misc.jsonl");
    tmp_path(out, sizeof out, "misc");
    /* CRLF, duplicate key (last wins, as Python), an escaped backslash before u0000 (not a
     * NUL), no newline at the end of the file */
    const char *txt = "{\"text\":\"first\",\"text\":\"User:\"}\r\n"
                      "{\"text\":\"\\\\u0000\"}\r\n"
                      "{\"other\":1,\"text\":\"1\"}";
    tu_write_all(in, txt, strlen(txt));
    rwkvpeft_jsonl_params p;
    rwkvpeft_jsonl_params_init(&p);
    p.jsonl_path = in;
    p.output_prefix = out;
    p.vocab_path = tu_world_vocab();
    int64_t docs = 0, skipped = -1;
    ck_assert_msg(rwkvpeft_jsonl_to_binidx(&p, &docs, &skipped) == RWKVPEFT_OK, "%s",
                  rwkvpeft_last_error());
    ck_assert_int_eq(docs, 3);
    ck_assert_int_eq(skipped, 0);
    rwkvpeft_dataset *ds = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_open(out, &ds), RWKVPEFT_OK);
    int32_t t[16];
    int64_t o, n;
    ck_assert_int_eq(rwkvpeft_dataset_doc(ds, 1, &o, &n), RWKVPEFT_OK);
    ck_assert_int_ge(n, 2); /* the 6 characters \u0000 and EOD */
    ck_assert_int_eq(rwkvpeft_dataset_num_tokens(ds), 3 + n + 2);
    ck_assert_int_eq(rwkvpeft_dataset_doc(ds, 0, &o, &n), RWKVPEFT_OK);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, o, n, t), RWKVPEFT_OK);
    ck_assert_int_eq(t[0], 24281);
    ck_assert_int_eq(t[1], 59);
    ck_assert_int_eq(t[2], 0);
    ck_assert_int_eq(rwkvpeft_dataset_doc(ds, 2, &o, &n), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_read(ds, o, n, t), RWKVPEFT_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(t[0], 50);
    rwkvpeft_dataset_free(ds);
    remove_out(out);
    remove(in);
}
END_TEST

static int g_calls;
static uint64_t g_last_done, g_last_total, g_last_docs;

static int32_t progress_cb(void *user, uint64_t done, uint64_t total, uint64_t docs) {
    g_calls++;
    g_last_done = done;
    g_last_total = total;
    g_last_docs = docs;
    return *(int *)user;
}

START_TEST(test_progress_cancel_and_errors) {
    char in[1024], out[1024], stem[256];
    tu_data_path(in, sizeof in, "jsonl/sample.jsonl");
    tmp_path(out, sizeof out, "prog");
    snprintf(stem, sizeof stem, "rp-jsonl-%ld-prog", (long)getpid());
    rwkvpeft_jsonl_params p;
    rwkvpeft_jsonl_params_init(&p);
    p.jsonl_path = in;
    p.output_prefix = out;
    p.vocab_path = tu_world_vocab();
    p.progress = progress_cb;
    int cancel = 0;
    p.progress_user = &cancel;
    g_calls = 0;
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, NULL, NULL), RWKVPEFT_OK);
    ck_assert_int_ge(g_calls, 1);
    ck_assert_uint_eq(g_last_done, g_last_total); /* the final call reports everything */
    ck_assert_uint_gt(g_last_total, 0);
    ck_assert_uint_eq(g_last_docs, 6);
    remove_out(out);
    cancel = 1;
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, NULL, NULL), RWKVPEFT_E_STATE);
    ck_assert_int_eq(count_files_with_prefix(stem), 0);
    /* an existing output is replaced only on success: a failed run leaves it alone */
    p.progress = NULL;
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, NULL, NULL), RWKVPEFT_OK);
    char bad[1024];
    tmp_path(bad, sizeof bad, "bad.jsonl");
    tu_write_all(bad, "{\"text\":\"x\"}\n{\n", 15);
    p.jsonl_path = bad;
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, NULL, NULL), RWKVPEFT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), ":2: not valid JSON"));
    rwkvpeft_dataset *ds = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_open(out, &ds), RWKVPEFT_OK);
    ck_assert_int_eq(rwkvpeft_dataset_num_docs(ds), 6);
    rwkvpeft_dataset_free(ds);
    remove_out(out);
    remove(bad);
    ck_assert_int_eq(count_files_with_prefix(stem), 0);
    /* missing files and parameters */
    p.jsonl_path = "/nonexistent/in.jsonl";
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, NULL, NULL), RWKVPEFT_E_IO);
    p.jsonl_path = in;
    p.vocab_path = "/nonexistent/vocab.txt";
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, NULL, NULL), RWKVPEFT_E_IO);
    p.vocab_path = NULL;
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&p, NULL, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(NULL, NULL, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    /* an older, smaller params struct: later fields keep their defaults (append_eod = 1) */
    rwkvpeft_jsonl_params old;
    memset(&old, 0xAB, sizeof old);
    old.struct_size = (uint32_t)offsetof(rwkvpeft_jsonl_params, fields);
    old.jsonl_path = in;
    old.output_prefix = out;
    old.vocab_path = tu_world_vocab();
    int64_t docs = 0;
    ck_assert_int_eq(rwkvpeft_jsonl_to_binidx(&old, &docs, NULL), RWKVPEFT_OK);
    ck_assert_int_eq(docs, 6);
    char a[1100], b[1100];
    tu_data_path(b, sizeof b, "jsonl/sample_ref.bin");
    snprintf(a, sizeof a, "%s.bin", out);
    same_file(a, b);
    remove_out(out);
}
END_TEST

/* Random JSON-ish lines never crash the reader: each is a record or a line-1 error. */
START_TEST(test_random_lines_never_crash) {
    char in[1024];
    tmp_path(in, sizeof in, "fuzz.jsonl");
    static const char pool[] = "{}[]\":,\\ u0aftextnul1-.e\x01\x80\xff\t";
    uint64_t x = 0x2545F4914F6CDD1Dull;
    int records = 0;
    for (int it = 0; it < 300; it++) {
        char line[80];
        int n = 0;
        if (it % 3 == 0) n = snprintf(line, sizeof line, "{\"text\":\"");
        int extra = 1 + (int)(x % 40);
        for (int j = 0; j < extra && n < 78; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            line[n++] = pool[(x >> 33) % (sizeof pool - 1)];
        }
        if (it % 3 == 0 && n < 77) {
            line[n++] = '"';
            line[n++] = '}';
        }
        tu_write_all(in, line, (size_t)n);
        rp_jsonl_reader *r = NULL;
        rp_err e;
        ck_assert_int_eq(rp_jsonl_open(in, "text", &r, &e), 0);
        const uint8_t *text;
        size_t len, plen;
        int got = rp_jsonl_next(r, &text, &len, &plen, &e);
        ck_assert(got == 1 || got == 0 || got == RWKVPEFT_E_FORMAT);
        if (got == RWKVPEFT_E_FORMAT) ck_assert_ptr_nonnull(strstr(e.msg, "fuzz.jsonl:1: "));
        if (got == 1) {
            records++;
            ck_assert_uint_eq(strlen((const char *)text), len);
        }
        rp_jsonl_close(r);
    }
    ck_assert_int_gt(records, 0);
    remove(in);
}
END_TEST

int main(void) {
    Suite *s = suite_create("jsonl");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_sample_matches_reference);
    tcase_add_test(tc, test_sft_fields);
    tcase_add_test(tc, test_bad_lines);
    tcase_add_test(tc, test_line_endings_duplicates_escapes);
    tcase_add_test(tc, test_progress_cancel_and_errors);
    tcase_add_test(tc, test_random_lines_never_crash);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
