/* generate.c — logits and text generation through the recurrent (RNN) form of the model:
 * the prompt is fed in chunks, then one token at a time, carrying shift and WKV states. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.h"
#include "model.h"

#define PREFILL_CHUNK 256

void rwkvpeft_generate_params_init(rwkvpeft_generate_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->max_new_tokens = 100;
    p->temperature = 1.0f;
    p->top_p = 0.85f;
    p->seed = 0;
    p->stop_token = 0;
}

typedef struct prob_idx {
    float p;
    int32_t i;
} prob_idx;

static int by_prob_desc(const void *a, const void *b) {
    float x = ((const prob_idx *)a)->p, y = ((const prob_idx *)b)->p;
    if (x != y) return x < y ? 1 : -1;
    return ((const prob_idx *)a)->i - ((const prob_idx *)b)->i;
}

/* Picks the next id from logits: argmax, or temperature + nucleus sampling. */
static int32_t pick(const float *logits, int V, float temperature, float top_p, uint64_t seed, uint64_t draw,
                    prob_idx *scratch) {
    int32_t best = 0;
    for (int j = 1; j < V; j++)
        if (logits[j] > logits[best]) best = j;
    if (temperature <= 0) return best;
    double mx = logits[best], sum = 0;
    for (int j = 0; j < V; j++) {
        double e = exp(((double)logits[j] - mx) / temperature);
        scratch[j].p = (float)e;
        scratch[j].i = j;
        sum += e;
    }
    for (int j = 0; j < V; j++) scratch[j].p = (float)(scratch[j].p / sum);
    qsort(scratch, (size_t)V, sizeof *scratch, by_prob_desc);
    double keep = 0;
    int k = 0;
    do {
        keep += scratch[k].p;
        k++;
    } while (k < V && keep < top_p);
    double u = rp_uniform01(seed, draw) * keep, acc = 0;
    for (int j = 0; j < k; j++) {
        acc += scratch[j].p;
        if (u < acc) return scratch[j].i;
    }
    return scratch[k - 1].i;
}

rwkvpeft_status rwkvpeft_generate(rwkvpeft_model *m, const int32_t *prompt, size_t n_prompt,
                                  const rwkvpeft_generate_params *params, int32_t *out, size_t capacity, size_t *n_out) {
    if (n_out) *n_out = 0;
    if (!m || !prompt || n_prompt == 0 || (!out && capacity))
        return (rwkvpeft_status)rp_fail(m ? &m->err : NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                                        "model, a non-empty prompt and an output buffer are required");
    rwkvpeft_generate_params p;
    rwkvpeft_generate_params_init(&p);
    rp_take_params(&p, sizeof p, params);
    if (!(p.top_p > 0 && p.top_p <= 1) || !isfinite(p.temperature))
        return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "top_p must be in (0,1] and temperature finite");
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= m->V)
            return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT,
                                            "prompt token %d at position %zu is outside the vocabulary [0, %d)", prompt[i], i,
                                            m->V);
    rp_workspace *ws = NULL;
    rp_infer_state *st = NULL;
    float *logits = (float *)rp_malloc(sizeof(float) * (size_t)m->V);
    prob_idx *scratch = (prob_idx *)rp_malloc(sizeof(prob_idx) * (size_t)m->V);
    int rc = logits && scratch ? 0 : rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    int chunk = n_prompt < PREFILL_CHUNK ? (int)n_prompt : PREFILL_CHUNK;
    if (!rc) rc = rp_workspace_create(m, 1, chunk, 0, &ws);
    if (!rc) rc = rp_infer_state_create(m, 1, &st);
    for (size_t i = 0; !rc && i < n_prompt; i += (size_t)chunk) {
        int T = n_prompt - i < (size_t)chunk ? (int)(n_prompt - i) : chunk;
        rc = rp_infer(m, ws, st, prompt + i, T, logits);
    }
    size_t produced = 0;
    while (!rc && produced < capacity && (int64_t)produced < p.max_new_tokens) {
        int32_t next = pick(logits, m->V, p.temperature, p.top_p, p.seed, produced, scratch);
        out[produced++] = next;
        if (next == p.stop_token) break;
        if (produced < capacity && (int64_t)produced < p.max_new_tokens) rc = rp_infer(m, ws, st, &next, 1, logits);
    }
    if (n_out) *n_out = produced;
    rp_infer_state_free(m, st);
    rp_workspace_free(m, ws);
    free(logits);
    free(scratch);
    return (rwkvpeft_status)rc;
}

rwkvpeft_status rwkvpeft_model_logits(rwkvpeft_model *m, const int32_t *tokens, int32_t B, int32_t T, float *logits) {
    if (!m || !tokens || !logits || B <= 0 || T <= 0)
        return (rwkvpeft_status)rp_fail(m ? &m->err : NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                                        "model, tokens, logits and a positive shape are required");
    int64_t n = (int64_t)B * T;
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->V)
            return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT,
                                            "token %d at position %lld is outside the vocabulary [0, %d)", tokens[i],
                                            (long long)i, m->V);
    int32_t *tg = (int32_t *)rp_malloc(sizeof(int32_t) * (size_t)n);
    float *w = (float *)rp_calloc((size_t)n, sizeof(float));
    int rc = tg && w ? 0 : rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    for (int64_t i = 0; !rc && i < n; i++) tg[i] = RWKVPEFT_IGNORE_INDEX;
    if (!rc && !rp_workspace_fits(m->eval_ws, B, T)) {
        rp_workspace_free(m, m->eval_ws);
        m->eval_ws = NULL;
        rc = rp_workspace_create(m, B, T, 0, &m->eval_ws);
    }
    if (!rc) rc = rp_workspace_set_batch(m, m->eval_ws, B, T, tokens, tg, w);
    if (!rc) rc = rp_forward_backward(m, m->eval_ws, NULL, 0, 0, 0, logits);
    free(tg);
    free(w);
    return (rwkvpeft_status)rc;
}
