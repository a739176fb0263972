/* jsonl.c — jsonl record reader and the jsonl -> binidx conversion (json2binidx, spec §5.2).
 *
 * One JSON object per line, parsed with cJSON. Every line is either blank (only spaces,
 * tabs, CR: skipped and counted) or a JSON object that holds the selected field(s) as
 * strings; anything else is an error "<file>:<line>: <what is wrong>" and the conversion
 * writes nothing. Differences from json2binidx (lm_dataformat + Python json):
 *   - blank lines are skipped (the reference's jsonlines reader raises on them);
 *   - a record whose text is "" is skipped and counted, as the reference's
 *     filter(lambda x: x, ...) does (it would otherwise be a lone EOD);
 *   - the field named by `fields` is read (the reference always reads "text" and only uses
 *     --jsonl-keys to name its output file);
 *   - a list of strings is not joined (lm_dataformat joins lists with "\n\n"): it is an
 *     error, like every non-string value;
 *   - duplicate keys: the last one wins, as in Python's json;
 *   - "\u0000" in a line is rejected (cJSON strings are NUL-terminated, so the text would
 *     be cut silently); invalid UTF-8 inside strings is passed through as bytes (the
 *     reference would fail to read the file).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "binidx.h"
#include "sampler.h"
#include "tokenizer.h"

struct rp_jsonl_reader {
    char *path;
    FILE *f;
    int n_fields;
    char *field[2];
    char *line;
    size_t line_cap;
    int64_t line_no;
    int64_t blank;
    uint64_t bytes;
    uint64_t size;
    cJSON *doc; /* record returned last (owns the text for plain fields) */
    uint8_t *buf; /* SFT text */
    size_t buf_cap;
};

void rp_jsonl_close(rp_jsonl_reader *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
    cJSON_Delete(r->doc);
    free(r->path);
    free(r->field[0]);
    free(r->field[1]);
    free(r->line);
    free(r->buf);
    free(r);
}

static char *dup_trim(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    char *d = rp_malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

int rp_jsonl_open(const char *path, const char *fields, rp_jsonl_reader **out, rp_err *err) {
    *out = NULL;
    if (!fields) fields = "text";
    rp_jsonl_reader *r = rp_calloc(1, sizeof *r);
    if (!r) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", path);
    int rc = 0;
    r->path = rp_strdup(path);
    const char *comma = strchr(fields, ',');
    if (comma && strchr(comma + 1, ',')) {
        rc = rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                     "jsonl fields \"%s\": give one field (\"text\") or two (\"query,response\")",
                     fields);
        goto fail;
    }
    r->n_fields = comma ? 2 : 1;
    r->field[0] = dup_trim(fields, comma ? (size_t)(comma - fields) : strlen(fields));
    if (comma) r->field[1] = dup_trim(comma + 1, strlen(comma + 1));
    if (!r->path || !r->field[0] || (comma && !r->field[1])) {
        rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s: out of memory", path);
        goto fail;
    }
    if (!r->field[0][0] || (comma && !r->field[1][0])) {
        rc = rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "jsonl fields \"%s\": empty field name", fields);
        goto fail;
    }
    r->f = fopen(path, "rb");
    if (!r->f) {
        rc = rp_fail(err, RWKVPEFT_E_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fileno(r->f), &st) == 0 && S_ISREG(st.st_mode)) r->size = (uint64_t)st.st_size;
    else if (fstat(fileno(r->f), &st) == 0 && S_ISDIR(st.st_mode)) {
        rc = rp_fail(err, RWKVPEFT_E_IO, "%s: is a directory", path);
        goto fail;
    }
    *out = r;
    return 0;
fail:
    rp_jsonl_close(r);
    return rc;
}

int64_t rp_jsonl_line(const rp_jsonl_reader *r) { return r->line_no; }
int64_t rp_jsonl_blank_lines(const rp_jsonl_reader *r) { return r->blank; }
uint64_t rp_jsonl_bytes_read(const rp_jsonl_reader *r) { return r->bytes; }
uint64_t rp_jsonl_file_size(const rp_jsonl_reader *r) { return r->size; }
int rp_jsonl_is_sft(const rp_jsonl_reader *r) { return r->n_fields == 2; }

static const char *type_name(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Finds "\u0000" as a real escape (not preceded by an escaping backslash). */
static long find_escaped_nul(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0) return (long)i;
        i++; /* skip the escaped character */
    }
    return -1;
}

/* Last member called `name` (Python's json keeps the last duplicate). */
static const cJSON *last_member(const cJSON *obj, const char *name) {
    const cJSON *found = NULL, *c;
    cJSON_ArrayForEach(c, obj) {
        if (c->string && strcmp(c->string, name) == 0) found = c;
    }
    return found;
}

int rp_jsonl_next(rp_jsonl_reader *r, const uint8_t **text, size_t *len, size_t *prompt_len,
                  rp_err *err) {
    cJSON_Delete(r->doc);
    r->doc = NULL;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->line, &r->line_cap, r->f);
        if (n < 0) {
            if (ferror(r->f))
                return rp_fail(err, RWKVPEFT_E_IO, "%s:%lld: read error: %s", r->path,
                               (long long)r->line_no + 1, strerror(errno ? errno : EIO));
            return 0;
        }
        r->line_no++;
        r->bytes += (uint64_t)n;
        size_t L = (size_t)n;
        const char *s = r->line;
        size_t k = 0;
        while (k < L && is_blank(s[k])) k++;
        if (k == L) {
            r->blank++;
            continue;
        }
        long ln = (long)r->line_no;
        const char *nul = memchr(s, '\0', L);
        if (nul)
            return rp_fail(err, RWKVPEFT_E_FORMAT, "%s:%ld: NUL byte at column %ld", r->path, ln,
                           (long)(nul - s) + 1);
        long esc = find_escaped_nul(s, L);
        if (esc >= 0)
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s:%ld: \\u0000 (NUL character) at column %ld is not supported in text",
                           r->path, ln, esc + 1);
        const char *end = NULL;
        cJSON *doc = cJSON_ParseWithLengthOpts(s, L, &end, 0);
        if (!doc) {
            long col = end && end >= s && end <= s + L ? (long)(end - s) + 1 : 1;
            return rp_fail(err, RWKVPEFT_E_FORMAT, "%s:%ld: not valid JSON (error at column %ld)",
                           r->path, ln, col);
        }
        const char *p = end ? end : s + L;
        while (p < s + L && is_blank(*p)) p++;
        if (p < s + L) {
            cJSON_Delete(doc);
            return rp_fail(err, RWKVPEFT_E_FORMAT,
                           "%s:%ld: unexpected text after the JSON value at column %ld (one object "
                           "per line)", r->path, ln, (long)(p - s) + 1);
        }
        if (!cJSON_IsObject(doc)) {
            const char *tn = type_name(doc);
            cJSON_Delete(doc);
            return rp_fail(err, RWKVPEFT_E_FORMAT, "%s:%ld: expected a JSON object, found %s",
                           r->path, ln, tn);
        }
        const cJSON *v[2] = {NULL, NULL};
        for (int f = 0; f < r->n_fields; f++) {
            v[f] = last_member(doc, r->field[f]);
            if (!v[f]) {
                cJSON_Delete(doc);
                return rp_fail(err, RWKVPEFT_E_FORMAT, "%s:%ld: missing field \"%s\"", r->path, ln,
                               r->field[f]);
            }
            if (!cJSON_IsString(v[f]) || !v[f]->valuestring) {
                const char *tn = type_name(v[f]);
                cJSON_Delete(doc);
                return rp_fail(err, RWKVPEFT_E_FORMAT,
                               "%s:%ld: field \"%s\" is %s, expected a string", r->path, ln,
                               r->field[f], tn);
            }
        }
        r->doc = doc;
        if (r->n_fields == 1) {
            *text = (const uint8_t *)v[0]->valuestring;
            *len = strlen(v[0]->valuestring);
            if (prompt_len) *prompt_len = 0;
            return 1;
        }
        size_t lq = strlen(v[0]->valuestring), lr = strlen(v[1]->valuestring);
        size_t lh = sizeof RP_SFT_PROMPT_HEAD - 1, lt = sizeof RP_SFT_PROMPT_TAIL - 1;
        size_t le = sizeof RP_SFT_EOT - 1;
        size_t need = lh + lq + lt + lr + le;
        if (need > r->buf_cap) {
            uint8_t *nb = realloc(r->buf, need);
            if (!nb) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "%s:%ld: out of memory", r->path, ln);
            r->buf = nb;
            r->buf_cap = need;
        }
        uint8_t *o = r->buf;
        memcpy(o, RP_SFT_PROMPT_HEAD, lh);
        memcpy(o + lh, v[0]->valuestring, lq);
        memcpy(o + lh + lq, RP_SFT_PROMPT_TAIL, lt);
        memcpy(o + lh + lq + lt, v[1]->valuestring, lr);
        memcpy(o + lh + lq + lt + lr, RP_SFT_EOT, le);
        *text = r->buf;
        *len = need;
        if (prompt_len) *prompt_len = lh + lq + lt;
        return 1;
    }
}

/* ------------------------------------------------------------------------------------ */
/* jsonl -> binidx                                                                      */
/* ------------------------------------------------------------------------------------ */

void rwkvpeft_jsonl_params_init(rwkvpeft_jsonl_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->fields = "text";
    p->append_eod = 1;
}

rwkvpeft_status rwkvpeft_jsonl_to_binidx(const rwkvpeft_jsonl_params *params, int64_t *n_docs,
                                         int64_t *n_skipped) {
    if (n_docs) *n_docs = 0;
    if (n_skipped) *n_skipped = 0;
    if (!params || params->struct_size < offsetof(rwkvpeft_jsonl_params, fields))
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                       "jsonl_to_binidx: params missing or struct_size too small (call "
                       "rwkvpeft_jsonl_params_init)");
    rwkvpeft_jsonl_params p;
    rwkvpeft_jsonl_params_init(&p);
    /* fields beyond the caller's struct_size keep their defaults */
    memcpy(&p, params, params->struct_size < sizeof p ? params->struct_size : sizeof p);
    p.struct_size = sizeof p;
    if (!p.jsonl_path || !p.output_prefix || !p.vocab_path)
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                       "jsonl_to_binidx: jsonl_path, output_prefix and vocab_path are required");
    rp_err err;
    rp_err_clear(&err);
    rwkvpeft_tokenizer *tok = NULL;
    rp_jsonl_reader *rd = NULL;
    rwkvpeft_dataset_writer *w = NULL;
    int32_t *ids = NULL;
    size_t ids_cap = 0;
    int64_t docs = 0, skipped_empty = 0;
    int rc = rp_tokenizer_load(p.vocab_path, &tok, &err);
    if (rc) goto out;
    rc = rp_jsonl_open(p.jsonl_path, p.fields, &rd, &err);
    if (rc) goto out;
    rc = rwkvpeft_dataset_writer_create(p.output_prefix, 0, rp_tokenizer_vocab_size(tok), &w);
    if (rc) {
        rp_fail(&err, rc, "%s", rwkvpeft_last_error());
        goto out;
    }
    double last = rp_monotonic_ms();
    for (;;) {
        const uint8_t *text;
        size_t len, plen;
        int got = rp_jsonl_next(rd, &text, &len, &plen, &err);
        if (got < 0) {
            rc = got;
            goto out;
        }
        if (got == 0) break;
        if (len == 0) { /* json2binidx drops empty documents */
            skipped_empty++;
            continue;
        }
        if (len + 1 > ids_cap) {
            size_t nc = len + 1 > 2 * ids_cap ? len + 1 : 2 * ids_cap;
            int32_t *ni = rp_realloc_array(ids, nc, sizeof *ids);
            if (!ni) {
                rc = rp_fail(&err, RWKVPEFT_E_OUT_OF_MEMORY, "%s:%lld: out of memory", p.jsonl_path,
                             (long long)rp_jsonl_line(rd));
                goto out;
            }
            ids = ni;
            ids_cap = nc;
        }
        size_t n = 0;
        rc = rp_tokenizer_encode(tok, text, len, ids, ids_cap, &n, NULL, &err);
        if (rc) {
            rp_fail_prefix(&err, "%s:%lld", p.jsonl_path, (long long)rp_jsonl_line(rd));
            goto out;
        }
        if (p.append_eod) ids[n++] = 0;
        rc = rwkvpeft_dataset_writer_add(w, ids, (int64_t)n);
        if (rc) {
            rp_fail(&err, rc, "%s:%lld: %s", p.jsonl_path, (long long)rp_jsonl_line(rd),
                    rwkvpeft_dataset_writer_last_error(w));
            goto out;
        }
        docs++;
        if (p.progress && (docs & 63) == 0) {
            double t = rp_monotonic_ms();
            if (t - last >= 200) {
                last = t;
                if (p.progress(p.progress_user, rp_jsonl_bytes_read(rd), rp_jsonl_file_size(rd),
                               (uint64_t)docs)) {
                    rc = rp_fail(&err, RWKVPEFT_E_STATE, "jsonl_to_binidx: cancelled by the "
                                 "progress callback at %s:%lld", p.jsonl_path,
                                 (long long)rp_jsonl_line(rd));
                    goto out;
                }
            }
        }
    }
    if (p.progress && p.progress(p.progress_user, rp_jsonl_bytes_read(rd), rp_jsonl_file_size(rd),
                                 (uint64_t)docs)) {
        rc = rp_fail(&err, RWKVPEFT_E_STATE, "jsonl_to_binidx: cancelled by the progress callback");
        goto out;
    }
    rc = rwkvpeft_dataset_writer_finish(w);
    if (rc) {
        rp_fail(&err, rc, "%s", rwkvpeft_dataset_writer_last_error(w));
        goto out;
    }
    if (n_docs) *n_docs = docs;
    if (n_skipped) *n_skipped = skipped_empty + rp_jsonl_blank_lines(rd);
out:
    rwkvpeft_dataset_writer_free(w); /* removes the partial files unless finished */
    rp_jsonl_close(rd);
    rp_tokenizer_free(tok);
    free(ids);
    if (rc) rp_err_copy(NULL, &err);
    return (rwkvpeft_status)rc;
}
