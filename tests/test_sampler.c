/* test_sampler.c — samplers on small hand-made datasets with exact expected windows,
 * targets and masks for get / pad / only / jsonl / sft / magic prime, qa and se masks on
 * token patterns, batch skipping when no target exists, shuffling, determinism, resume,
 * the counter-based random helpers, and parameter errors.
 *
 * jsonl, sft and se cases need RWKVPEFT_WORLD_VOCAB (see test_tokenizer.c). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rwkvpeft.h"
#include "sampler.h"
#include "testutil.h"

#define IGN RWKVPEFT_IGNORE_INDEX

static void tmp_path(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/rp-sampler-%ld-%s", tu_tmpdir(), (long)getpid(), name);
}

static void remove_ds(const char *prefix) {
    char a[1100];
    snprintf(a, sizeof a, "%s.bin", prefix);
    remove(a);
    snprintf(a, sizeof a, "%s.idx", prefix);
    remove(a);
}

/* Writes documents given as a -1 separated list. */
static void make_ds(const char *prefix, const int32_t *toks, int n) {
    rwkvpeft_dataset_writer *w = NULL;
    ck_assert_int_eq(rwkvpeft_dataset_writer_create(prefix, 4, 0, &w), RWKVPEFT_OK);
    int start = 0;
    for (int i = 0; i <= n; i++) {
        if (i == n || toks[i] == -1) {
            ck_assert_int_eq(rwkvpeft_dataset_writer_add(w, toks + start, i - start), RWKVPEFT_OK);
            start = i + 1;
        }
    }
    ck_assert_int_eq(rwkvpeft_dataset_writer_finish(w), RWKVPEFT_OK);
    rwkvpeft_dataset_writer_free(w);
}

/* dataset A: D0 = 10..13, D1 = 20 21, D2 = 30..35, D3 = 40 41 (14 tokens) */
static const int32_t A_DOCS[] = {10, 11, 12, 13, -1, 20, 21, -1, 30, 31, 32, 33, 34, 35, -1, 40, 41};
static const int32_t A_FLAT[] = {10, 11, 12, 13, 20, 21, 30, 31, 32, 33, 34, 35, 40, 41};
static char g_a[1024];

static void setup_a(void) {
    tmp_path(g_a, sizeof g_a, "A");
    make_ds(g_a, A_DOCS, (int)(sizeof A_DOCS / sizeof A_DOCS[0]));
}

static void teardown_a(void) { remove_ds(g_a); }

static rwkvpeft_sampler *make(const rwkvpeft_sampler_params *p) {
    rwkvpeft_sampler *s = NULL;
    rwkvpeft_status st = rwkvpeft_sampler_create(p, &s);
    ck_assert_msg(st == RWKVPEFT_OK, "sampler_create: %s", rwkvpeft_last_error());
    return s;
}

static void base(rwkvpeft_sampler_params *p, const char *file, const char *load, int ctx, int bsz,
                 int64_t steps) {
    rwkvpeft_sampler_params_init(p);
    p->data_file = file;
    p->dataload = load;
    p->ctx_len = ctx;
    p->micro_bsz = bsz;
    p->epoch_steps = steps;
    p->data_shuffle = 0;
}

typedef struct batch {
    int32_t in[4096], tg[4096];
    float mk[4096];
    int32_t T;
} batch;

static void next(rwkvpeft_sampler *s, batch *b) {
    memset(b, 0x55, sizeof *b);
    rwkvpeft_status st = rwkvpeft_sampler_next(s, b->in, b->tg, b->mk, &b->T);
    ck_assert_msg(st == RWKVPEFT_OK, "next: %s", rwkvpeft_sampler_last_error(s));
    /* invariant: mask 1 exactly where a target exists */
    for (int i = 0; i < b->T; i++)
        ck_assert((b->mk[i] == 1.0f) == (b->tg[i] != IGN) && (b->mk[i] == 0.0f || b->mk[i] == 1.0f));
}

static void expect_row(const batch *b, int row, const int32_t *in, const int32_t *tg, int T) {
    ck_assert_int_eq(b->T, T);
    const int32_t *bi = b->in + row * T, *bt = b->tg + row * T;
    for (int t = 0; t < T; t++) {
        ck_assert_msg(bi[t] == in[t], "row %d input %d: %d, expected %d", row, t, bi[t], in[t]);
        ck_assert_msg(bt[t] == tg[t], "row %d target %d: %d, expected %d", row, t, bt[t], tg[t]);
        ck_assert_msg(b->mk[row * T + t] == (tg[t] != IGN ? 1.0f : 0.0f), "row %d mask %d", row, t);
    }
}

static void expect_pos(rwkvpeft_sampler *s, int64_t e, int64_t st) {
    int64_t a = -1, b = -1;
    ck_assert_int_eq(rwkvpeft_sampler_get_position(s, &a, &b), RWKVPEFT_OK);
    ck_assert_int_eq(a, e);
    ck_assert_int_eq(b, st);
}

START_TEST(test_pad) {
    rwkvpeft_sampler_params p;
    base(&p, g_a, "pad", 4, 1, 4);
    rwkvpeft_sampler *s = make(&p);
    batch b;
    next(s, &b); /* D0: the window runs into D1, whose tokens are not targets */
    expect_row(&b, 0, (int32_t[]){10, 11, 12, 13}, (int32_t[]){11, 12, 13, IGN}, 4);
    next(s, &b); /* D1 */
    expect_row(&b, 0, (int32_t[]){20, 21, 30, 31}, (int32_t[]){21, IGN, IGN, IGN}, 4);
    next(s, &b); /* D2 (6 tokens > req 5: truncated) */
    expect_row(&b, 0, (int32_t[]){30, 31, 32, 33}, (int32_t[]){31, 32, 33, 34}, 4);
    next(s, &b); /* D3 at the end of the .bin: D3 then D0's first tokens */
    expect_row(&b, 0, (int32_t[]){40, 41, 10, 11}, (int32_t[]){41, IGN, IGN, IGN}, 4);
    expect_pos(s, 1, 0);
    next(s, &b); /* epoch 1 (S == n_docs): D0 again, as the reference */
    expect_row(&b, 0, (int32_t[]){10, 11, 12, 13}, (int32_t[]){11, 12, 13, IGN}, 4);
    /* loss_mask pad is the same thing */
    rwkvpeft_sampler_free(s);
    p.loss_mask = "pad";
    s = make(&p);
    next(s, &b);
    expect_row(&b, 0, (int32_t[]){10, 11, 12, 13}, (int32_t[]){11, 12, 13, IGN}, 4);
    rwkvpeft_sampler_free(s);
    /* two rows per batch; mask may be NULL */
    base(&p, g_a, "pad", 4, 2, 0); /* epoch_steps auto = 4 docs / 2 */
    s = make(&p);
    rwkvpeft_sampler_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(rwkvpeft_sampler_get_info(s, &info), RWKVPEFT_OK);
    ck_assert_int_eq(info.epoch_steps, 2);
    ck_assert_int_eq(info.n_docs, 4);
    ck_assert_int_eq(info.n_tokens, 14);
    ck_assert_int_eq(info.magic_epoch_count, 0);
    int32_t in[8], tg[8], T;
    ck_assert_int_eq(rwkvpeft_sampler_next(s, in, tg, NULL, &T), RWKVPEFT_OK);
    ck_assert_int_eq(T, 4);
    ck_assert_int_eq(in[4], 20);
    ck_assert_int_eq(tg[4], 21);
    ck_assert_int_eq(tg[5], IGN);
    rwkvpeft_sampler_free(s);
}
END_TEST

START_TEST(test_only) {
    rwkvpeft_sampler_params p;
    base(&p, g_a, "only", 4, 1, 4);
    rwkvpeft_sampler *s = make(&p);
    batch b;
    next(s, &b);
    expect_row(&b, 0, (int32_t[]){10, 11, 12}, (int32_t[]){11, 12, 13}, 3);
    next(s, &b);
    expect_row(&b, 0, (int32_t[]){20}, (int32_t[]){21}, 1);
    next(s, &b);
    expect_row(&b, 0, (int32_t[]){30, 31, 32, 33}, (int32_t[]){31, 32, 33, 34}, 4);
    next(s, &b);
    expect_row(&b, 0, (int32_t[]){40}, (int32_t[]){41}, 1);
    rwkvpeft_sampler_free(s);
    /* micro_bsz 2: rows padded to the longest */
    base(&p, g_a, "only", 4, 2, 2);
    s = make(&p);
    next(s, &b);
    expect_row(&b, 0, (int32_t[]){10, 11, 12}, (int32_t[]){11, 12, 13}, 3);
    expect_row(&b, 1, (int32_t[]){20, 0, 0}, (int32_t[]){21, IGN, IGN}, 3);
    next(s, &b);
    expect_row(&b, 0, (int32_t[]){30, 31, 32, 33}, (int32_t[]){31, 32, 33, 34}, 4);
    expect_row(&b, 1, (int32_t[]){40, 0, 0, 0}, (int32_t[]){41, IGN, IGN, IGN}, 4);
    rwkvpeft_sampler_free(s);
}
END_TEST

START_TEST(test_skip_batches_without_targets) {
    char pre[1024];
    tmp_path(pre, sizeof pre, "short");
    /* D0 = 5, D1 = 6, D2 = 7 8 */
    make_ds(pre, (int32_t[]){5, -1, 6, -1, 7, 8}, 6);
    rwkvpeft_sampler_params p;
    base(&p, pre, "pad", 4, 1, 3);
    rwkvpeft_sampler *s = make(&p);
    batch b;
    next(s, &b); /* D0, D1 have no target: skipped; D2 then document 0's tokens */
    expect_row(&b, 0, (int32_t[]){7, 8, 5, 6}, (int32_t[]){8, IGN, IGN, IGN}, 4);
    expect_pos(s, 1, 0);
    rwkvpeft_sampler_free(s);
    /* only: a one-token document alone in its batch is skipped too; with a neighbour it
     * is a row without targets */
    base(&p, pre, "only", 4, 2, 0); /* epoch_steps = 3 / 2 = 1 */
    s = make(&p);
    next(s, &b); /* D0, D1: no target at all -> skipped; epoch 1: D2 (= (1*2+0) % 3), D0 */
    expect_row(&b, 0, (int32_t[]){7}, (int32_t[]){8}, 1);
    expect_row(&b, 1, (int32_t[]){0}, (int32_t[]){IGN}, 1); /* x = window[:-1] is empty */
    expect_pos(s, 2, 0);
    rwkvpeft_sampler_free(s);
    remove_ds(pre);
    /* a long run of untrainable documents is crossed in one call */
    {
        int32_t toks[2 * 50 + 2];
        int n = 0;
        for (int d = 0; d < 50; d++) {
            toks[n++] = 100 + d;
            toks[n++] = -1;
        }
        toks[n++] = 1;
        toks[n++] = 2;
        make_ds(pre, toks, n);
        base(&p, pre, "only", 4, 1, 3);
        s = make(&p);
        next(s, &b);
        expect_row(&b, 0, (int32_t[]){1}, (int32_t[]){2}, 1);
        expect_pos(s, 17, 0); /* document 50 is sample 50 = epoch 16 step 2 */
        rwkvpeft_sampler_free(s);
        remove_ds(pre);
    }
    /* nothing to train on anywhere: an error at creation, not a loop */
    make_ds(pre, (int32_t[]){5, -1, 6}, 3);
    base(&p, pre, "pad", 4, 1, 2);
    rwkvpeft_sampler *none = NULL;
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &none), RWKVPEFT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "has a target to train on"));
    ck_assert_ptr_null(none);
    remove_ds(pre);
}
END_TEST

START_TEST(test_get_windows_and_determinism) {
    rwkvpeft_sampler_params p;
    base(&p, g_a, "get", 4, 4, 50);
    p.seed = 42;
    rwkvpeft_sampler *s = make(&p), *s2 = make(&p);
    p.seed = 43;
    rwkvpeft_sampler *s3 = make(&p);
    int seen[16] = {0};
    int differs = 0;
    batch b, b2, b3;
    int32_t first_offsets[8];
    for (int it = 0; it < 60; it++) {
        next(s, &b);
        next(s2, &b2);
        next(s3, &b3);
        ck_assert_mem_eq(b.in, b2.in, 16 * sizeof(int32_t));
        ck_assert_mem_eq(b.tg, b2.tg, 16 * sizeof(int32_t));
        if (memcmp(b.in, b3.in, 16 * sizeof(int32_t))) differs = 1;
        for (int r = 0; r < 4; r++) {
            int off = -1;
            for (int o = 0; o + 5 <= 14; o++)
                if (A_FLAT[o] == b.in[r * 4]) off = o;
            ck_assert_int_ge(off, 0);
            ck_assert_int_lt(off, 9); /* [0, n_tokens - req) */
            for (int t = 0; t < 4; t++) {
                ck_assert_int_eq(b.in[r * 4 + t], A_FLAT[off + t]);
                ck_assert_int_eq(b.tg[r * 4 + t], A_FLAT[off + t + 1]);
            }
            seen[off]++;
            if (it < 2) first_offsets[it * 4 + r] = off;
        }
    }
    for (int o = 0; o < 9; o++) ck_assert_msg(seen[o] > 0, "offset %d never drawn", o);
    ck_assert(differs);
    /* the same seed gives the same offsets on every machine: these are fixed forever */
    static const int32_t golden[8] = {8, 6, 8, 7, 3, 0, 1, 2};
    ck_assert_mem_eq(first_offsets, golden, sizeof golden);
    rwkvpeft_sampler_free(s);
    rwkvpeft_sampler_free(s2);
    rwkvpeft_sampler_free(s3);
    /* shuffling does not change get */
    base(&p, g_a, "get", 4, 4, 50);
    p.seed = 42;
    p.data_shuffle = 1;
    s = make(&p);
    next(s, &b2);
    rwkvpeft_sampler_free(s);
    base(&p, g_a, "get", 4, 4, 50);
    p.seed = 42;
    s = make(&p);
    next(s, &b);
    ck_assert_mem_eq(b.in, b2.in, 16 * sizeof(int32_t));
    rwkvpeft_sampler_free(s);
    /* default epoch_steps for get is the reference's 1000 */
    base(&p, g_a, "get", 4, 1, 0);
    s = make(&p);
    rwkvpeft_sampler_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(rwkvpeft_sampler_get_info(s, &info), RWKVPEFT_OK);
    ck_assert_int_eq(info.epoch_steps, 1000);
    rwkvpeft_sampler_free(s);
}
END_TEST

START_TEST(test_shuffle_resume_and_epochs) {
    rwkvpeft_sampler_params p;
    base(&p, g_a, "pad", 4, 1, 4);
    p.data_shuffle = 1;
    p.seed = 7;
    rwkvpeft_sampler *s = make(&p);
    batch b;
    int32_t firsts[40];
    int orders_differ = 0;
    for (int e = 0; e < 10; e++) {
        int seen[4] = {0};
        for (int k = 0; k < 4; k++) {
            next(s, &b);
            firsts[e * 4 + k] = b.in[0];
            seen[b.in[0] / 10 - 1]++;
        }
        for (int d = 0; d < 4; d++) ck_assert_int_eq(seen[d], 1); /* a permutation */
        if (e && memcmp(firsts + e * 4, firsts, 4 * sizeof(int32_t))) orders_differ = 1;
    }
    ck_assert(orders_differ);
    rwkvpeft_sampler_free(s);
    /* resume: position (2, 1) continues exactly */
    s = make(&p);
    ck_assert_int_eq(rwkvpeft_sampler_set_position(s, 2, 1), RWKVPEFT_OK);
    for (int i = 9; i < 40; i++) {
        next(s, &b);
        ck_assert_int_eq(b.in[0], firsts[i]);
    }
    expect_pos(s, 10, 0);
    ck_assert_int_eq(rwkvpeft_sampler_set_position(s, 0, 4), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_sampler_set_position(s, -1, 0), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_sampler_last_error(s), "invalid"));
    rwkvpeft_sampler_free(s);
    /* epochs shorter than the data continue through it (document (e*S + idx) mod n) */
    base(&p, g_a, "pad", 4, 1, 3);
    s = make(&p);
    const int32_t want3[] = {10, 20, 30, 40, 10, 20, 30, 40, 10};
    for (int i = 0; i < 9; i++) {
        next(s, &b);
        ck_assert_int_eq(b.in[0], want3[i]);
    }
    rwkvpeft_sampler_free(s);
    /* and longer ones wrap */
    base(&p, g_a, "pad", 4, 1, 6);
    s = make(&p);
    const int32_t want6[] = {10, 20, 30, 40, 10, 20, 30, 40, 10};
    for (int i = 0; i < 9; i++) {
        next(s, &b);
        ck_assert_int_eq(b.in[0], want6[i]);
    }
    expect_pos(s, 1, 3);
    rwkvpeft_sampler_free(s);
}
END_TEST

/* j:  0  1      2   3  4  5     6      7   8  9  10     11  12  13    14     15  16  17 */
static const int32_t QA_DOC[] = {1,    24281, 59, 7,  8,     5585, 41693, 59, 9,
                                 10,   24281, 59, 11, 5585,  41693, 59,   12, 0};

static void check_qa(const batch *b, int T) {
    for (int t = 0; t < T; t++) {
        int on = (t >= 4 && t <= 8) || (t >= 12 && t <= 16);
        ck_assert_msg(b->tg[t] == (on ? QA_DOC[t + 1] : IGN), "qa target %d is %d", t, b->tg[t]);
    }
}

START_TEST(test_qa_mask) {
    char pre[1024];
    tmp_path(pre, sizeof pre, "qa");
    make_ds(pre, QA_DOC, 18);
    rwkvpeft_sampler_params p;
    batch b;
    for (int withv = 0; withv < 2; withv++) {
        base(&p, pre, "pad", 20, 1, 1);
        p.loss_mask = "qa";
        if (withv) p.vocab_path = tu_world_vocab(); /* else: the built-in World ids */
        rwkvpeft_sampler *s = make(&p);
        next(s, &b);
        ck_assert_int_eq(b.T, 20);
        for (int t = 0; t < 18; t++) ck_assert_int_eq(b.in[t], QA_DOC[t]);
        ck_assert_int_eq(b.in[18], 1); /* filled with document 0's tokens */
        ck_assert_int_eq(b.in[19], 24281);
        check_qa(&b, 20);
        rwkvpeft_sampler_free(s);
    }
    /* qa with only, and with get (the whole window is the document) */
    base(&p, pre, "only", 20, 1, 1);
    p.loss_mask = "qa";
    rwkvpeft_sampler *s = make(&p);
    next(s, &b);
    ck_assert_int_eq(b.T, 17);
    check_qa(&b, 17);
    rwkvpeft_sampler_free(s);
    base(&p, pre, "get", 16, 1, 1);
    p.loss_mask = "qa";
    s = make(&p);
    next(s, &b); /* 18 tokens, req 17: offset 0 is the only one */
    check_qa(&b, 16);
    rwkvpeft_sampler_free(s);
    remove_ds(pre);
    /* no marker in the window: every target of the document (= the pad mask) */
    make_ds(pre, (int32_t[]){3, 4, 5, 6, -1, 7, 8, 9}, 8);
    base(&p, pre, "pad", 6, 1, 1);
    p.loss_mask = "qa";
    s = make(&p);
    next(s, &b);
    expect_row(&b, 0, (int32_t[]){3, 4, 5, 6, 7, 8}, (int32_t[]){4, 5, 6, IGN, IGN, IGN}, 6);
    rwkvpeft_sampler_free(s);
    remove_ds(pre);
}
END_TEST

START_TEST(test_se_mask) {
    char pre[1024];
    tmp_path(pre, sizeof pre, "se");
    /* default markers "0" = 49 (off) and "1" = 50 (on) */
    const int32_t doc[] = {5, 50, 6, 7, 49, 8, 50, 9};
    make_ds(pre, doc, 8);
    rwkvpeft_sampler_params p;
    base(&p, pre, "pad", 10, 1, 1);
    p.loss_mask = "se";
    p.vocab_path = tu_world_vocab();
    rwkvpeft_sampler *s = make(&p);
    batch b;
    next(s, &b);
    /* mk = 0 1 1 1 0 0 1 1 (markers take the new state); target t gets mk[t+1] */
    const int32_t want[10] = {50, 6, 7, IGN, IGN, 50, 9, IGN, IGN, IGN};
    for (int t = 0; t < 10; t++) ck_assert_int_eq(b.tg[t], want[t]);
    rwkvpeft_sampler_free(s);
    remove_ds(pre);
    /* multi-token markers: User: / Assistant: as mask0 / mask1, on the qa document */
    make_ds(pre, QA_DOC, 18);
    base(&p, pre, "only", 20, 1, 1);
    p.loss_mask = "se";
    p.vocab_path = tu_world_vocab();
    p.mask_id = "{\"mask0\": \"User:\", \"mask1\": \"Assistant:\"}";
    s = make(&p);
    next(s, &b);
    check_qa(&b, 17);
    rwkvpeft_sampler_free(s);
    /* a marker that does not fit inside the document is not a marker */
    remove_ds(pre);
    make_ds(pre, (int32_t[]){5, 6, 5585, 41693}, 4); /* "Assistant" without ":" */
    base(&p, pre, "only", 8, 1, 1);
    p.loss_mask = "se";
    p.vocab_path = tu_world_vocab();
    p.mask_id = "{\"mask0\": \"User:\", \"mask1\": \"Assistant:\"}";
    s = make(&p);
    next(s, &b); /* no marker -> fallback to all targets */
    expect_row(&b, 0, (int32_t[]){5, 6, 5585}, (int32_t[]){6, 5585, 41693}, 3);
    rwkvpeft_sampler_free(s);
    /* bad mask_id values */
    rwkvpeft_sampler *bad = NULL;
    p.mask_id = "{\"mask0\": \"0\"}";
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &bad), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "mask1"));
    p.mask_id = "not json";
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &bad), RWKVPEFT_E_INVALID_ARGUMENT);
    p.mask_id = "{\"mask0\": \"\", \"mask1\": \"1\"}";
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &bad), RWKVPEFT_E_INVALID_ARGUMENT);
    p.mask_id = NULL;
    p.vocab_path = NULL;
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &bad), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "vocab_path"));
    ck_assert_ptr_null(bad);
    remove_ds(pre);
}
END_TEST

START_TEST(test_jsonl_data_type) {
    const char *v = tu_world_vocab();
    rwkvpeft_tokenizer *tok = NULL;
    ck_assert_int_eq(rwkvpeft_tokenizer_load(v, &tok), RWKVPEFT_OK);
    const char *texts[3] = {"User: hi", "", "The quick brown fox jumps over the lazy dog again"};
    int32_t ids[3][64];
    size_t n[3];
    for (int r = 0; r < 3; r++)
        ck_assert_int_eq(rwkvpeft_tokenizer_encode(tok, texts[r], strlen(texts[r]), ids[r], 64, &n[r]),
                         RWKVPEFT_OK);
    ck_assert_uint_eq(n[0], 3); /* User: + " hi" */
    ck_assert_uint_gt(n[2], 6);
    char path[1024];
    tmp_path(path, sizeof path, "recs.jsonl");
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"text\": \"%s\"}\n\n{\"text\": \"%s\"}\n{\"text\": \"%s\", \"x\": 1}\n", texts[0],
            texts[1], texts[2]);
    fclose(f);
    rwkvpeft_sampler_params p;
    base(&p, path, NULL, 5, 1, 3);
    p.data_type = "jsonl";
    p.tokenizer = tok; /* shared tokenizer instead of vocab_path */
    rwkvpeft_sampler *s = make(&p);
    rwkvpeft_sampler_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(rwkvpeft_sampler_get_info(s, &info), RWKVPEFT_OK);
    ck_assert_int_eq(info.n_docs, 3);
    ck_assert_int_eq(info.n_tokens, 3 + 0 + 6); /* records keep at most ctx_len+1 tokens */
    batch b;
    next(s, &b); /* record 0: 3 tokens, padded */
    expect_row(&b, 0, (int32_t[]){ids[0][0], ids[0][1], ids[0][2], 0, 0},
               (int32_t[]){ids[0][1], ids[0][2], IGN, IGN, IGN}, 5);
    next(s, &b); /* record 1 is empty: no target, skipped; record 2 truncated */
    expect_row(&b, 0, ids[2], ids[2] + 1, 5);
    expect_pos(s, 1, 0);
    rwkvpeft_sampler_free(s);
    /* a bad line is reported with its line number */
    f = fopen(path, "w");
    fprintf(f, "{\"text\": \"a\"}\n\n{\"text\": 5}\n");
    fclose(f);
    rwkvpeft_sampler *bad = NULL;
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &bad), RWKVPEFT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "recs.jsonl:3: field \"text\" is a number"));
    /* jsonl without a tokenizer */
    p.tokenizer = NULL;
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &bad), RWKVPEFT_E_INVALID_ARGUMENT);
    remove(path);
    rwkvpeft_tokenizer_free(tok);
}
END_TEST

START_TEST(test_sft_data_type) {
    char in[1024], ref[1024];
    tu_data_path(in, sizeof in, "jsonl/sft.jsonl");
    tu_data_path(ref, sizeof ref, "jsonl/sft_ref.txt");
    rwkvpeft_sampler_params p;
    base(&p, in, NULL, 40, 1, 4);
    p.data_type = "sft";
    p.vocab_path = tu_world_vocab();
    p.sft_fields = "query,response";
    rwkvpeft_sampler *s = make(&p);
    FILE *f = fopen(ref, "r");
    ck_assert_ptr_nonnull(f);
    char line[8192];
    int rec = 0, truncated = 0;
    while (fgets(line, sizeof line, f)) {
        int32_t ids[1024];
        int n = 0;
        char *c = line, *e;
        long plen = strtol(c, &e, 10);
        c = e;
        for (long v = strtol(c, &e, 10); e != c; v = strtol(c, &e, 10)) {
            ids[n++] = (int32_t)v;
            c = e;
        }
        int L = n < 40 ? n : 40;
        truncated |= n > 40;
        batch b;
        next(s, &b);
        ck_assert_int_eq(b.T, 40);
        for (int t = 0; t < 40; t++) {
            ck_assert_int_eq(b.in[t], t < L ? ids[t] : 0);
            int32_t want = (t + 1 >= plen && t + 1 < L) ? ids[t + 1] : IGN;
            ck_assert_msg(b.tg[t] == want, "record %d target %d: %d, expected %d", rec, t, b.tg[t],
                          want);
        }
        rec++;
    }
    fclose(f);
    ck_assert_int_eq(rec, 4);
    ck_assert(truncated);
    rwkvpeft_sampler_free(s);
    /* prompts longer than ctx_len leave nothing to train on */
    p.ctx_len = 20;
    rwkvpeft_sampler *none = NULL;
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &none), RWKVPEFT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "every prompt has ctx_len tokens"));
    /* sft needs two fields */
    p.sft_fields = "query";
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &none), RWKVPEFT_E_INVALID_ARGUMENT);
    /* wrong field names */
    p.ctx_len = 40;
    p.sft_fields = "instruction,output";
    rwkvpeft_sampler *bad = NULL;
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &bad), RWKVPEFT_E_FORMAT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "sft.jsonl:1: missing field \"instruction\""));
}
END_TEST

START_TEST(test_magic_prime) {
    char pre[1024];
    tmp_path(pre, sizeof pre, "magic");
    int32_t *t = malloc(935 * sizeof *t);
    for (int i = 0; i < 935; i++) t[i] = i; /* token value = its offset */
    make_ds(pre, t, 935);
    free(t);
    rwkvpeft_sampler_params p;
    base(&p, pre, "get", 4, 1, 10);
    p.my_pile_stage = 1;
    p.magic_prime = 233; /* prime, 233 % 3 == 2, 935 // 4 == 233 */
    rwkvpeft_sampler *s = make(&p);
    rwkvpeft_sampler_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(rwkvpeft_sampler_get_info(s, &info), RWKVPEFT_OK);
    ck_assert_int_eq(info.magic_epoch_count, 23);
    const uint64_t f = 144; /* int(233 * (sqrt(5) - 1) / 2) */
    batch b;
    for (int i = 0; i < 25; i++) { /* crosses into epochs 1 and 2 */
        uint64_t ii = 1 + (uint64_t)(i / 10) * 10 + (uint64_t)(i % 10);
        uint64_t want = ((f * ii * ii * ii) % 233) * 4;
        next(s, &b);
        ck_assert_msg((uint64_t)b.in[0] == want, "sample %d at %d, expected %llu", i, b.in[0],
                      (unsigned long long)want);
        ck_assert_int_eq(b.tg[3], b.in[0] + 4);
    }
    rwkvpeft_sampler_free(s);
    /* my_pile_shift moves every window */
    p.my_pile_shift = 3;
    s = make(&p);
    next(s, &b);
    ck_assert_int_eq(b.in[0], 144 * 4 + 3);
    rwkvpeft_sampler_free(s);
    /* epoch_steps 0 = 40320 / micro_bsz in this mode */
    p.epoch_steps = 0;
    p.micro_bsz = 8;
    s = make(&p);
    ck_assert_int_eq(rwkvpeft_sampler_get_info(s, &info), RWKVPEFT_OK);
    ck_assert_int_eq(info.epoch_steps, 5040);
    rwkvpeft_sampler_free(s);
    /* validation as the reference */
    rwkvpeft_sampler *bad = NULL;
    const int64_t wrong[] = {229 /* = 1 mod 3 */, 235 /* not prime */, 227 /* ratio 0.974 */,
                             0, 239 /* ratio > 1 */};
    p.epoch_steps = 10;
    p.micro_bsz = 1;
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        p.magic_prime = wrong[i];
        ck_assert_int_eq(rwkvpeft_sampler_create(&p, &bad), RWKVPEFT_E_INVALID_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "magic_prime"));
    }
    /* stage 4 is plain random get */
    p.my_pile_stage = 4;
    p.magic_prime = 0;
    s = make(&p);
    next(s, &b);
    rwkvpeft_sampler_free(s);
    remove_ds(pre);
}
END_TEST

START_TEST(test_random_helpers) {
    /* permutations are bijections for every size */
    const uint64_t sizes[] = {1, 2, 3, 5, 16, 17, 100, 1000, 4097};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t n = sizes[i];
        unsigned char *hit = calloc(n, 1);
        for (uint64_t k = 0; k < n; k++) {
            uint64_t y = rp_rng_permute(rp_rng_key(1, 1, 3, 0), n, k);
            ck_assert_uint_lt(y, n);
            ck_assert(!hit[y]);
            hit[y] = 1;
        }
        free(hit);
    }
    /* rp_rng_below stays in range and covers it */
    int counts[7] = {0};
    for (uint64_t k = 0; k < 7000; k++) {
        uint64_t v = rp_rng_below(rp_rng_key(9, 2, 0, k), 7);
        ck_assert_uint_lt(v, 7);
        counts[v]++;
    }
    for (int i = 0; i < 7; i++) ck_assert_int_gt(counts[i], 800);
    ck_assert_uint_eq(rp_rng_below(123, 1), 0);
    /* fixed values: the generator must never change (resumed runs depend on it) */
    ck_assert_uint_eq(rp_mix64(0), 0xE220A8397B1DCDAFull);
    /* primality */
    ck_assert(rp_is_prime_u64(2));
    ck_assert(rp_is_prime_u64(233));
    ck_assert(rp_is_prime_u64(2305843009213693951ull));  /* 2^61 - 1 */
    ck_assert(rp_is_prime_u64(18446744073709551557ull)); /* largest 64-bit prime */
    ck_assert(!rp_is_prime_u64(1));
    ck_assert(!rp_is_prime_u64(561));                    /* Carmichael */
    ck_assert(!rp_is_prime_u64(3215031751ull));          /* strong pseudoprime to 2,3,5,7 */
    ck_assert(!rp_is_prime_u64(18446744073709551615ull));
}
END_TEST

START_TEST(test_parameter_errors) {
    rwkvpeft_sampler_params p;
    rwkvpeft_sampler *s = NULL;
    base(&p, g_a, "fill", 4, 1, 1);
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "dataload \"fill\" is not one of get, pad, only"));
    base(&p, g_a, "pad", 4, 1, 1);
    p.loss_mask = "all";
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    base(&p, g_a, "pad", 4, 1, 1);
    p.data_type = "numpy";
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    base(&p, g_a, "pad", 0, 1, 1);
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    base(&p, g_a, "pad", 4, 0, 1);
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    base(&p, g_a, "pad", 4, 1, -1);
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    base(&p, g_a, "pad", 4, 5, 0); /* 4 documents < micro_bsz 5 */
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    base(&p, g_a, "get", 13, 1, 1); /* 14 tokens: not more than req 14 */
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "needs more than ctx_len+1"));
    base(&p, "/nonexistent/data", "pad", 4, 1, 1);
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_IO);
    base(&p, NULL, "pad", 4, 1, 1);
    ck_assert_int_eq(rwkvpeft_sampler_create(&p, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_sampler_create(NULL, &s), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_null(s);
    /* an older, smaller struct: the missing fields keep their defaults */
    rwkvpeft_sampler_params old;
    memset(&old, 0xCD, sizeof old);
    base(&old, g_a, "pad", 4, 1, 4);
    old.struct_size = (uint32_t)offsetof(rwkvpeft_sampler_params, tokenizer);
    memset(&old.tokenizer, 0xCD, sizeof old.tokenizer); /* beyond struct_size: never read */
    s = make(&old);
    batch b;
    next(s, &b);
    ck_assert_int_eq(b.in[0], 10);
    int32_t x[4];
    ck_assert_int_eq(rwkvpeft_sampler_next(s, NULL, x, NULL, &b.T), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rwkvpeft_sampler_next(NULL, x, x, NULL, &b.T), RWKVPEFT_E_INVALID_ARGUMENT);
    rwkvpeft_sampler_free(s);
    rwkvpeft_sampler_free(NULL);
    ck_assert_str_eq(rwkvpeft_sampler_last_error(NULL), "");
    /* defaults */
    rwkvpeft_sampler_params_init(&p);
    ck_assert_uint_eq(p.struct_size, sizeof p);
    ck_assert_int_eq(p.ctx_len, 1024);
    ck_assert_int_eq(p.micro_bsz, 12);
    ck_assert_int_eq(p.data_shuffle, 1);
    ck_assert_int_eq(p.my_pile_shift, -1);
    ck_assert_str_eq(p.dataload, "get");
    ck_assert_str_eq(p.loss_mask, "none");
}
END_TEST

int main(void) {
    Suite *su = suite_create("sampler");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup_a, teardown_a);
    tcase_add_test(tc, test_pad);
    tcase_add_test(tc, test_only);
    tcase_add_test(tc, test_skip_batches_without_targets);
    tcase_add_test(tc, test_get_windows_and_determinism);
    tcase_add_test(tc, test_shuffle_resume_and_epochs);
    tcase_add_test(tc, test_qa_mask);
    tcase_add_test(tc, test_se_mask);
    tcase_add_test(tc, test_jsonl_data_type);
    tcase_add_test(tc, test_sft_data_type);
    tcase_add_test(tc, test_magic_prime);
    tcase_add_test(tc, test_random_helpers);
    tcase_add_test(tc, test_parameter_errors);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
