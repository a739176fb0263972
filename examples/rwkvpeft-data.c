/* rwkvpeft-data — data preparation tool of librwkvpeft (uses only the public API).
 *
 *   rwkvpeft-data jsonl  --input F.jsonl --output-prefix P --vocab V [options]
 *   rwkvpeft-data encode --vocab V [text]
 *   rwkvpeft-data decode --vocab V [ids...]
 *   rwkvpeft-data info   P
 *
 * See `rwkvpeft-data help` and docs/data.md. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rwkvpeft.h"

static const char *USAGE =
    "usage: rwkvpeft-data <command> [options]\n"
    "\n"
    "commands:\n"
    "  jsonl   convert a jsonl file to a binidx dataset (what json2binidx does)\n"
    "  encode  print the World-tokenizer ids of a text\n"
    "  decode  print the bytes of token ids\n"
    "  info    describe a binidx dataset\n"
    "  help    this text\n"
    "\n"
    "rwkvpeft-data jsonl --input F.jsonl --output-prefix P --vocab V [options]\n"
    "  Tokenizes the \"text\" field of every line with the RWKV World tokenizer and writes\n"
    "  exactly P.bin and P.idx (Megatron mmap binidx, int32 tokens, one sequence per\n"
    "  document). Note: json2binidx writes P_text_document.bin/.idx instead; pass\n"
    "  --json2binidx-names to get those names. Files are written under temporary names and\n"
    "  renamed at the end: on any error nothing is written. Blank lines and records whose\n"
    "  text is \"\" are skipped (and counted); any other bad line stops the conversion with\n"
    "  \"<file>:<line>: <what is wrong>\". Prints `data_nums: <documents>` on stdout.\n"
    "  --input F              input jsonl file\n"
    "  --output-prefix P      output prefix (without .bin/.idx)\n"
    "  --vocab V              rwkv_vocab_v20230424.txt (also: --vocab-file V)\n"
    "  --jsonl-keys K         field to read (default text)\n"
    "  --sft-fields Q,R       SFT records: the reference's instruction prompt with field Q,\n"
    "                         then field R and \"\\n\\x17\", as one document\n"
    "  --append-eod           append token 0 after each document (the default here;\n"
    "                         json2binidx needs the flag)\n"
    "  --no-append-eod        do not append it\n"
    "  --json2binidx-names    write P_<key>_document.bin/.idx like json2binidx\n"
    "  --quiet                no progress output\n"
    "  accepted for json2binidx compatibility: --dataset-impl mmap, --tokenizer-type\n"
    "  RWKVTokenizer, --workers N and --log-interval N (both ignored)\n"
    "\n"
    "rwkvpeft-data encode --vocab V [text]\n"
    "  Prints the ids of `text` (or of standard input when no text is given).\n"
    "\n"
    "rwkvpeft-data decode --vocab V [ids...]\n"
    "  Writes the bytes of the ids (or of the ids read from standard input) to stdout.\n"
    "\n"
    "rwkvpeft-data info P\n"
    "  Prints the documents, tokens, dtype and document lengths of P.bin/P.idx, checking\n"
    "  every token value.\n";

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "rwkvpeft-data: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(run `rwkvpeft-data help` for the options)\n");
    return 2;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Option value: "--name value" or "--name=value". Returns the value or NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *matched) {
    size_t n = strlen(name);
    *matched = 0;
    if (strncmp(argv[*i], name, n) != 0) return NULL;
    if (argv[*i][n] == '=') {
        *matched = 1;
        return argv[*i] + n + 1;
    }
    if (argv[*i][n] != 0) return NULL;
    *matched = 1;
    if (*i + 1 >= argc) return NULL;
    return argv[++*i];
}

/* ---- progress ------------------------------------------------------------------------- */

typedef struct progress {
    int tty;
    int quiet;
    double start, last_line;
    int drawn;
} progress;

static void fmt_eta(char *b, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(b, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(b, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(b, n, "%ld:%02ld", t / 60, t % 60);
}

static int32_t on_progress(void *user, uint64_t done, uint64_t total, uint64_t docs) {
    progress *p = user;
    if (p->quiet) return 0;
    double t = now_s(), el = t - p->start;
    double mbs = el > 0 ? (double)done / el / 1e6 : 0;
    double pct = total ? 100.0 * (double)done / (double)total : 0;
    char eta[32];
    fmt_eta(eta, sizeof eta, (done && total >= done) ? el * (double)(total - done) / (double)done : -1);
    if (p->tty) {
        char bar[31];
        int fill = total ? (int)(30.0 * (double)done / (double)total) : 0;
        for (int k = 0; k < 30; k++) bar[k] = k < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\r[%s] %5.1f%%  %7.2f MB/s  %llu docs  ETA %s ", bar, pct, mbs,
                (unsigned long long)docs, eta);
        p->drawn = 1;
    } else if (t - p->last_line >= 5.0 || (total && done == total)) {
        p->last_line = t;
        fprintf(stderr, "rwkvpeft-data: %5.1f%%  %.2f MB/s  %llu docs  ETA %s\n", pct, mbs,
                (unsigned long long)docs, eta);
    }
    fflush(stderr);
    return 0;
}

/* ---- jsonl ---------------------------------------------------------------------------- */

static int read_idx_dtype(const char *prefix) {
    size_t n = strlen(prefix) + 8;
    char *p = malloc(n);
    if (!p) return -1;
    snprintf(p, n, "%s.idx", prefix);
    FILE *f = fopen(p, "rb");
    free(p);
    if (!f) return -1;
    unsigned char h[18];
    int code = fread(h, 1, 18, f) == 18 ? h[17] : -1;
    fclose(f);
    return code;
}

static const char *dtype_name(int code) {
    static const char *names[] = {"?", "uint8", "int8", "int16", "int32", "int64",
                                  "float32", "float64", "uint16"};
    return code >= 1 && code <= 8 ? names[code] : "?";
}

static int cmd_jsonl(int argc, char **argv) {
    const char *input = NULL, *prefix = NULL, *vocab = NULL, *key = NULL, *sft = NULL;
    int eod = 1, ref_names = 0, quiet = 0;
    for (int i = 2; i < argc; i++) {
        int m;
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--input", &m)) || m) {
            if (!v) return usage_error("%s needs a value", "--input");
            input = v;
        } else if ((v = opt_value(argc, argv, &i, "--output-prefix", &m)) || m) {
            if (!v) return usage_error("%s needs a value", "--output-prefix");
            prefix = v;
        } else if ((v = opt_value(argc, argv, &i, "--vocab", &m)) || m ||
                   (v = opt_value(argc, argv, &i, "--vocab-file", &m)) || m) {
            if (!v) return usage_error("%s needs a value", "--vocab");
            vocab = v;
        } else if ((v = opt_value(argc, argv, &i, "--jsonl-keys", &m)) || m) {
            if (!v) return usage_error("%s needs a value", "--jsonl-keys");
            key = v;
            if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                return usage_error("--jsonl-keys takes one key here (got '%s' too); for "
                                   "query/response records use --sft-fields Q,R", argv[i + 1]);
        } else if ((v = opt_value(argc, argv, &i, "--sft-fields", &m)) || m) {
            if (!v || !strchr(v, ',')) return usage_error("%s needs a value like query,response", "--sft-fields");
            sft = v;
        } else if ((v = opt_value(argc, argv, &i, "--dataset-impl", &m)) || m) {
            if (!v || strcmp(v, "mmap") != 0)
                return usage_error("--dataset-impl: only mmap is supported (got '%s')", v ? v : "");
        } else if ((v = opt_value(argc, argv, &i, "--tokenizer-type", &m)) || m) {
            if (!v || strcmp(v, "RWKVTokenizer") != 0)
                return usage_error("--tokenizer-type: only RWKVTokenizer (the World tokenizer) is "
                                   "supported (got '%s')", v ? v : "");
        } else if ((v = opt_value(argc, argv, &i, "--workers", &m)) || m ||
                   (v = opt_value(argc, argv, &i, "--log-interval", &m)) || m) {
            if (!v) return usage_error("%s needs a value", argv[i]);
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (*end || errno || n < 1) return usage_error("'%s' is not a positive integer", v);
        } else if (strcmp(argv[i], "--append-eod") == 0) {
            eod = 1;
        } else if (strcmp(argv[i], "--no-append-eod") == 0) {
            eod = 0;
        } else if (strcmp(argv[i], "--json2binidx-names") == 0) {
            ref_names = 1;
        } else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            quiet = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else {
            return usage_error("jsonl: unknown option '%s' (json2binidx options other than "
                               "--input, --output-prefix, --vocab, --jsonl-keys, --append-eod, "
                               "--dataset-impl mmap, --tokenizer-type RWKVTokenizer, --workers and "
                               "--log-interval are not supported)", argv[i]);
        }
    }
    if (!input) return usage_error("jsonl: %s is required", "--input");
    if (!prefix) return usage_error("jsonl: %s is required", "--output-prefix");
    if (!vocab) return usage_error("jsonl: %s is required", "--vocab");
    if (key && sft) return usage_error("jsonl: %s", "give --jsonl-keys or --sft-fields, not both");
    char *out = NULL;
    if (ref_names) {
        const char *k = key ? key : "text";
        size_t n = strlen(prefix) + strlen(k) + 16;
        out = malloc(n);
        if (!out) return 1;
        snprintf(out, n, "%s_%s_document", prefix, k);
        prefix = out;
    }
    progress pr = {.tty = isatty(2), .quiet = quiet, .start = now_s()};
    pr.last_line = pr.start;
    rwkvpeft_jsonl_params p;
    rwkvpeft_jsonl_params_init(&p);
    p.jsonl_path = input;
    p.output_prefix = prefix;
    p.vocab_path = vocab;
    p.fields = sft ? sft : key ? key : "text";
    p.append_eod = eod;
    p.progress = on_progress;
    p.progress_user = &pr;
    int64_t docs = 0, skipped = 0;
    rwkvpeft_status st = rwkvpeft_jsonl_to_binidx(&p, &docs, &skipped);
    if (pr.drawn) fputc('\n', stderr);
    if (st != RWKVPEFT_OK) {
        fprintf(stderr, "rwkvpeft-data: %s\n", rwkvpeft_last_error());
        free(out);
        return 1;
    }
    rwkvpeft_dataset *ds = NULL;
    int64_t tokens = -1;
    if (rwkvpeft_dataset_open(prefix, &ds) == RWKVPEFT_OK) {
        tokens = rwkvpeft_dataset_num_tokens(ds);
        rwkvpeft_dataset_free(ds);
    }
    if (!quiet)
        fprintf(stderr,
                "rwkvpeft-data: wrote %s.bin and %s.idx: %lld documents, %lld tokens (%s), "
                "%lld skipped (blank lines and empty texts), %.1f s\n",
                prefix, prefix, (long long)docs, (long long)tokens, dtype_name(read_idx_dtype(prefix)),
                (long long)skipped, now_s() - pr.start);
    printf("data_nums: %lld\n", (long long)docs);
    free(out);
    return 0;
}

/* ---- encode / decode ---------------------------------------------------------------- */

static char *read_stream(FILE *f, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    if (!b) return NULL;
    for (;;) {
        if (len == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + len, 1, cap - len, f);
        len += r;
        if (r == 0) break;
    }
    *n = len;
    return b;
}

static int load_vocab(const char *vocab, rwkvpeft_tokenizer **t) {
    if (!vocab) return usage_error("%s is required", "--vocab");
    if (rwkvpeft_tokenizer_load(vocab, t) != RWKVPEFT_OK) {
        fprintf(stderr, "rwkvpeft-data: %s\n", rwkvpeft_last_error());
        return 1;
    }
    return 0;
}

static int cmd_encode(int argc, char **argv) {
    const char *vocab = NULL, *text = NULL;
    for (int i = 2; i < argc; i++) {
        int m;
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--vocab", &m)) || m ||
            (v = opt_value(argc, argv, &i, "--vocab-file", &m)) || m) {
            if (!v) return usage_error("%s needs a value", "--vocab");
            vocab = v;
        } else if (strcmp(argv[i], "--") == 0 && i + 1 < argc && !text) {
            text = argv[++i];
        } else if (strncmp(argv[i], "--", 2) == 0) {
            return usage_error("encode: unknown option '%s'", argv[i]);
        } else if (text) {
            return usage_error("encode: one text argument only (quote it); extra '%s'", argv[i]);
        } else {
            text = argv[i];
        }
    }
    rwkvpeft_tokenizer *t = NULL;
    int rc = load_vocab(vocab, &t);
    if (rc) return rc;
    char *buf = NULL;
    size_t len;
    if (text) {
        len = strlen(text);
    } else {
        buf = read_stream(stdin, &len);
        if (!buf) {
            rwkvpeft_tokenizer_free(t);
            return 1;
        }
        text = buf;
    }
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    size_t n = 0;
    rc = 1;
    if (ids && rwkvpeft_tokenizer_encode(t, text, len, ids, len + 1, &n) == RWKVPEFT_OK) {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
        printf("\n");
        rc = 0;
    } else {
        fprintf(stderr, "rwkvpeft-data: %s\n", rwkvpeft_last_error());
    }
    free(ids);
    free(buf);
    rwkvpeft_tokenizer_free(t);
    return rc;
}

static int parse_id(const char *s, int32_t *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < 0 || v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

static int cmd_decode(int argc, char **argv) {
    const char *vocab = NULL;
    size_t cap = 64, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    char *in = NULL;
    if (!ids) return 1;
    int rc = 0, from_args = 0;
    for (int i = 2; i < argc && rc == 0; i++) {
        int m;
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--vocab", &m)) || m ||
            (v = opt_value(argc, argv, &i, "--vocab-file", &m)) || m) {
            if (!v) rc = usage_error("%s needs a value", "--vocab");
            vocab = v;
            continue;
        }
        from_args = 1;
        if (n == cap) {
            int32_t *ni = realloc(ids, 2 * cap * sizeof *ids);
            if (!ni) { rc = 1; break; }
            ids = ni;
            cap *= 2;
        }
        if (parse_id(argv[i], &ids[n]) != 0) rc = usage_error("decode: '%s' is not a token id", argv[i]);
        n++;
    }
    if (rc == 0 && !from_args) { /* ids from stdin, separated by blanks or commas */
        size_t len;
        in = read_stream(stdin, &len);
        if (!in) rc = 1;
        for (size_t k = 0; rc == 0 && k < len;) {
            while (k < len && strchr(" \t\r\n,[]", in[k])) k++;
            if (k >= len) break;
            size_t j = k;
            while (j < len && !strchr(" \t\r\n,[]", in[j])) j++;
            char tok[32];
            if (j - k >= sizeof tok) {
                rc = usage_error("decode: %s", "token id too long");
                break;
            }
            memcpy(tok, in + k, j - k);
            tok[j - k] = 0;
            if (n == cap) {
                int32_t *ni = realloc(ids, 2 * cap * sizeof *ids);
                if (!ni) { rc = 1; break; }
                ids = ni;
                cap *= 2;
            }
            if (parse_id(tok, &ids[n++]) != 0) rc = usage_error("decode: '%s' is not a token id", tok);
            k = j;
        }
    }
    rwkvpeft_tokenizer *t = NULL;
    if (rc == 0) rc = load_vocab(vocab, &t);
    if (rc == 0) {
        size_t nb = 0;
        rwkvpeft_tokenizer_decode(t, ids, n, NULL, 0, &nb);
        char *out = malloc(nb + 1);
        if (out && rwkvpeft_tokenizer_decode(t, ids, n, out, nb, &nb) == RWKVPEFT_OK) {
            fwrite(out, 1, nb, stdout);
        } else {
            fprintf(stderr, "rwkvpeft-data: %s\n", rwkvpeft_last_error());
            rc = 1;
        }
        free(out);
    }
    rwkvpeft_tokenizer_free(t);
    free(ids);
    free(in);
    return rc;
}

/* ---- info --------------------------------------------------------------------------- */

static int cmd_info(int argc, char **argv) {
    if (argc != 3 || strncmp(argv[2], "--", 2) == 0) {
        if (argc == 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
            fputs(USAGE, stdout);
            return 0;
        }
        return usage_error("info: %s", "give exactly one dataset prefix (without .bin/.idx)");
    }
    const char *prefix = argv[2];
    rwkvpeft_dataset *ds = NULL;
    if (rwkvpeft_dataset_open(prefix, &ds) != RWKVPEFT_OK) {
        fprintf(stderr, "rwkvpeft-data: %s\n", rwkvpeft_last_error());
        return 1;
    }
    int64_t nd = rwkvpeft_dataset_num_docs(ds), nt = rwkvpeft_dataset_num_tokens(ds);
    int64_t mn = INT64_MAX, mx = 0, empty = 0;
    for (int64_t d = 0; d < nd; d++) {
        int64_t o, n;
        rwkvpeft_dataset_doc(ds, d, &o, &n);
        if (n < mn) mn = n;
        if (n > mx) mx = n;
        empty += n == 0;
    }
    int32_t maxid = -1;
    int64_t eods = 0;
    enum { CH = 1 << 20 };
    int32_t *buf = malloc(CH * sizeof *buf);
    if (!buf) {
        rwkvpeft_dataset_free(ds);
        return 1;
    }
    int rc = 0;
    for (int64_t o = 0; o < nt; o += CH) {
        int64_t n = nt - o < CH ? nt - o : CH;
        if (rwkvpeft_dataset_read(ds, o, n, buf) != RWKVPEFT_OK) {
            fprintf(stderr, "rwkvpeft-data: %s\n", rwkvpeft_dataset_last_error(ds));
            rc = 1;
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            if (buf[i] > maxid) maxid = buf[i];
            eods += buf[i] == 0;
        }
    }
    free(buf);
    int code = read_idx_dtype(prefix);
    printf("dataset:        %s (.bin/.idx)\n", prefix);
    printf("dtype:          %s (code %d)\n", dtype_name(code), code);
    printf("documents:      %lld (%lld empty)\n", (long long)nd, (long long)empty);
    printf("tokens:         %lld (%lld of them 0 = end of document)\n", (long long)nt, (long long)eods);
    if (nd > 0)
        printf("document length: min %lld, mean %.1f, max %lld\n", (long long)mn,
               (double)nt / (double)nd, (long long)mx);
    if (rc == 0) printf("max token id:   %d\n", (int)maxid);
    rwkvpeft_dataset_free(ds);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    const char *c = argv[1];
    if (strcmp(c, "jsonl") == 0) return cmd_jsonl(argc, argv);
    if (strcmp(c, "encode") == 0) return cmd_encode(argc, argv);
    if (strcmp(c, "decode") == 0) return cmd_decode(argc, argv);
    if (strcmp(c, "info") == 0) return cmd_info(argc, argv);
    if (strcmp(c, "help") == 0 || strcmp(c, "--help") == 0 || strcmp(c, "-h") == 0) {
        fputs(USAGE, stdout);
        return 0;
    }
    return usage_error("unknown command '%s' (jsonl, encode, decode, info, help)", c);
}
