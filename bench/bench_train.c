/* bench_train.c — training-step benchmark of librwkvpeft on one backend.
 *
 *   bench_train --backend cuda --layers 24 --embd 2048 [--ffn 0] [--vocab 65536] [--ctx 1024]
 *               [--bsz 8] [--method lora|state] [--r 64] [--alpha 128] [--grad_cp 1]
 *               [--quant none|nf4|fp4|4bit|int8|fp8] [--emb_host 0|1] [--optim none|adamw8bit] [--warmup 3] [--steps 10]
 *               [--json out.jsonl]
 *
 * --version 5|6|7 (default 6) picks the architecture. Builds a model of the given shape with random weights (the reference's init costs a QR
 * per matrix; timing does not depend on the values, so a cheap scaled uniform fill is used),
 * attaches LoRA on the 8 block linears + train_parts time,ln (the reference's default) or,
 * for --method state, state tuning (only att.time_state trains), and times full steps
 * (forward, loss, backward, clip, Adam) on random tokens. --quant quantizes the 8 block
 * linears at the attach (QLoRA / quantized state tuning, docs/quantization.md); --optim adamw8bit
 * keeps the Adam moments in 8 bits (rwkvpeft_train_params.optimizer). Prints median
 * step time, tokens/s, the device memory used above the empty context (peak over the run),
 * the parameters' device bytes before and after the attach, and dense-matmul TFLOP/s counted
 * as shared/notes/reference-h200.md counts them.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.h"
#include "model.h"
#include "quant.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t used_bytes(rwkvpeft_context *ctx) {
    uint64_t f = 0, t = 0;
    rwkvpeft_context_memory(ctx, &f, &t);
    return t - f;
}

int main(int argc, char **argv) {
    const char *backend = "cuda", *method = "lora", *json = NULL, *quant = "none", *optim = "none";
    int L = 24, C = 2048, F = 0, V = 65536, T = 1024, B = 8, r = 64, grad_cp = 1, warm = 3, steps = 10;
    int chunk = 0, infctx_full = 1, version = 6, emb_host = 0; /* --chunk N: long-context training in chunks of N (--ctx is the whole length) */
    double alpha = 128;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--layers")) L = atoi(v);
        else if (!strcmp(a, "--embd")) C = atoi(v);
        else if (!strcmp(a, "--ffn")) F = atoi(v);
        else if (!strcmp(a, "--vocab")) V = atoi(v);
        else if (!strcmp(a, "--ctx")) T = atoi(v);
        else if (!strcmp(a, "--bsz")) B = atoi(v);
        else if (!strcmp(a, "--method")) method = v;
        else if (!strcmp(a, "--r")) r = atoi(v);
        else if (!strcmp(a, "--alpha")) alpha = atof(v);
        else if (!strcmp(a, "--grad_cp")) grad_cp = atoi(v);
        else if (!strcmp(a, "--chunk")) chunk = atoi(v);
        else if (!strcmp(a, "--infctx")) infctx_full = strcmp(v, "truncated") != 0;
        else if (!strcmp(a, "--warmup")) warm = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--quant")) quant = v;
        else if (!strcmp(a, "--optim")) optim = v;
        else if (!strcmp(a, "--version")) version = atoi(v);
        else if (!strcmp(a, "--emb_host")) emb_host = atoi(v) != 0; /* rwkvpeft_model_params.embedding_on_host */
        else {
            fprintf(stderr, "bench_train: unknown option %s\n", a);
            return 2;
        }
    }
    if (version != 5 && version != 6 && version != 7) {
        fprintf(stderr, "bench_train: --version must be 5, 6 or 7\n");
        return 2;
    }
    if (F == 0) F = version == 7 ? 4 * C : C * 7 / 2 / 32 * 32;
    int qfmt = rp_quant_parse(quant);
    if (qfmt < 0) {
        fprintf(stderr, "bench_train: --quant must be none, nf4, fp4, 4bit, int8 or fp8\n");
        return 2;
    }
    int optimizer = !strcmp(optim, "none") ? RWKVPEFT_OPTIM_ADAMW : !strcmp(optim, "adamw8bit") ? RWKVPEFT_OPTIM_ADAMW_8BIT : -1;
    if (optimizer < 0) {
        fprintf(stderr, "bench_train: --optim must be none (fp32 AdamW) or adamw8bit\n");
        return 2;
    }
    int N = 64;
    rp_arch arch = {.version = version, .n_layer = L, .C = C, .A = C, .F = F, .H = C / N, .N = N, .V = V};
    rp_arch_default_widths(&arch);
    rwkvpeft_context_params cp;
    rwkvpeft_context_params_init(&cp);
    cp.backend = backend;
    rwkvpeft_context *ctx;
    if (rwkvpeft_context_create(&cp, &ctx)) {
        fprintf(stderr, "bench_train: %s\n", rwkvpeft_last_error());
        return 1;
    }
    uint64_t base_used = used_bytes(ctx);
    rwkvpeft_model *m = calloc(1, sizeof *m);
    m->ctx = ctx;
    m->be = ctx->be;
    m->grad_cp = grad_cp;
    m->quant = qfmt; /* as rwkvpeft_model_params.quant: applied at the attach */
    m->quant_pending = qfmt != 0;
    ctx->n_models++;
    if (rp_model_create(m, &arch, 0) || rp_model_alloc_params(m)) {
        fprintf(stderr, "bench_train: %s\n", m->err.msg);
        return 1;
    }
    /* cheap random weights with sane scales: matrices U(±1/sqrt(in)), decay in (-6,-1),
     * mixes in (0,1), norms and v7's k_a/v0 near 1 */
    int64_t maxn = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].numel > maxn) maxn = m->params[i].numel;
    float *buf = malloc(sizeof(float) * (size_t)maxn);
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        double lo = -0.01, hi = 0.01;
        if (p->cls == RP_CLS_MATRIX) {
            double b = 1.0 / sqrt((double)p->shape[1]);
            lo = -b;
            hi = b;
        } else if ((strstr(p->name, "time_decay") && !strstr(p->name, "_w")) || strstr(p->name, "att.w0")) {
            lo = -6;
            hi = -1;
        } else if ((strstr(p->name, "time_maa") && !strstr(p->name, "_w1") && !strstr(p->name, "_w2")) ||
                   strstr(p->name, "time_mix") || strstr(p->name, ".x_")) {
            lo = 0;
            hi = 1;
        } else if (strstr(p->name, "att.k_k")) {
            lo = 0.8;
            hi = 0.9;
        } else if ((strstr(p->name, ".weight") && (strstr(p->name, "ln") || strstr(p->name, "ln_x"))) ||
                   strstr(p->name, "att.k_a") || strstr(p->name, "att.v0")) {
            lo = 0.9;
            hi = 1.1;
        }
#pragma omp parallel for
        for (int64_t e = 0; e < p->numel; e++) buf[e] = (float)(lo + (hi - lo) * rp_uniform01(0xbe4c4 + i, (uint64_t)e));
        if (rp_param_upload_f32(m, p, -1, buf)) {
            fprintf(stderr, "bench_train: upload %s: %s\n", p->name, m->err.msg);
            return 1;
        }
    }
    free(buf);
    m->from_file = 1;
    m->emb_on_host = emb_host; /* placed by the attach (emb frozen) */
    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    if (!strcmp(method, "lora")) {
        ap.r = r;
        ap.alpha = (float)alpha;
        ap.dropout = 0;
        ap.train_parts = "time,ln";
    } else if (!strcmp(method, "state")) {
        ap.method = RWKVPEFT_PEFT_STATE;
    } else {
        fprintf(stderr, "bench_train: --method %s is not implemented (lora, state)\n", method);
        return 3;
    }
    int64_t bytes_dense = rp_model_param_bytes(m);
    uint64_t used_weights = used_bytes(ctx);
    if (rwkvpeft_adapter_attach(m, &ap)) {
        fprintf(stderr, "bench_train: %s\n", rwkvpeft_last_error());
        return 1;
    }
    int64_t bytes_attached = rp_model_param_bytes(m);
    uint64_t used_attached = used_bytes(ctx);
    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    tp.lr_init = tp.lr_final = 1e-5f;
    tp.chunk_ctx = chunk;
    tp.infctx_full = infctx_full;
    tp.optimizer = optimizer;
    rwkvpeft_trainer *tr;
    if (rwkvpeft_trainer_create(m, &tp, &tr)) {
        fprintf(stderr, "bench_train: %s\n", rwkvpeft_last_error());
        return 1;
    }
    uint64_t used_trainer = used_bytes(ctx), used_first = 0;
    if (chunk) printf("bench_train: long-context, chunks of %d, %s gradients\n", chunk, infctx_full ? "full" : "truncated");
    int32_t *in = malloc(sizeof(int32_t) * (size_t)B * T), *tg = malloc(sizeof(int32_t) * (size_t)B * T);
    double *ms = malloc(sizeof(double) * (size_t)steps);
    uint64_t peak = 0;
    double loss = 0;
    for (int s = 0; s < warm + steps; s++) {
        for (int i = 0; i < B * T; i++) {
            in[i] = (int32_t)(rp_mix64((uint64_t)(s * 1000003 + i)) % (uint64_t)V);
            tg[i] = (int32_t)(rp_mix64((uint64_t)(s * 1000003 + i) ^ 77) % (uint64_t)V);
        }
        rwkvpeft_batch b;
        rwkvpeft_batch_init(&b);
        b.batch_size = B;
        b.seq_len = T;
        b.inputs = in;
        b.targets = tg;
        rwkvpeft_step_result res;
        res.struct_size = sizeof res;
        double t0 = rp_monotonic_ms();
        if (rwkvpeft_train_step(tr, &b, &res)) { /* the step reads loss and norm back: synchronous */
            fprintf(stderr, "bench_train: step %d: %s\n", s, rwkvpeft_trainer_last_error(tr));
            return 1;
        }
        double dt = rp_monotonic_ms() - t0;
        uint64_t u = used_bytes(ctx);
        if (u > peak) peak = u;
        if (s == 0) used_first = u;
        if (s >= warm) ms[s - warm] = dt;
        loss = res.loss;
    }
    qsort(ms, (size_t)steps, sizeof(double), cmp_d);
    double med = ms[steps / 2];
    /* dense matmul FLOPs per token (reference-h200.md): block linears + time-mix low-rank + head;
     * forward 2P, grad_cp recompute 2P, input-gradient backward 2P */
    double per_layer = version == 7 ? 4.0 * C * C + 2.0 * C * F + 2.0 * C * (arch.Dw + arch.Da + arch.Dv + arch.Dg)
                       : version == 6 ? 5.0 * C * C + 2.0 * C * F + C * C + 10.0 * C * arch.Dm + 2.0 * C * arch.Dd
                                      : 5.0 * C * C + 2.0 * C * F + C * C;
    double P = L * per_layer + (double)C * V;
    double flops = (grad_cp ? 6.0 : 4.0) * P * B * T;
    double tok_s = B * T / (med / 1e3);
    double gib = peak > base_used ? (double)(peak - base_used) / (1024.0 * 1024 * 1024) : 0.0; /* 0 on the CPU: host RAM in use can fall */
    printf("bench_train: backend %s | RWKV-%d L%d C%d F%d V%d | %s r%d quant %s | B%d T%d grad_cp %d | median step %.1f ms "
           "(min %.1f, max %.1f) | %.0f tokens/s | %.2f GiB | params %.3f -> %.3f GiB | dense %.1f TFLOP/s | loss %.3f\n",
           backend, version, L, C, F, V, method, r, rp_quant_name(qfmt), B, T, grad_cp, med, ms[0], ms[steps - 1], tok_s, gib,
           bytes_dense / 1073741824.0, bytes_attached / 1073741824.0, flops / (med / 1e3) / 1e12, loss);
    /* where the device memory goes: differences of the in-use figure between the stages
     * (GiB; the first step adds the workspace, the backend's scratch and library handles) */
    const double G = 1073741824.0;
#define STAGE(a, b) (((double)(a) - (double)(b)) / G) /* signed: the attach frees dense weights under quantization */
    double mem_weights = STAGE(used_weights, base_used), mem_adapter = STAGE(used_attached, used_weights),
           mem_optim = STAGE(used_trainer, used_attached), mem_step = STAGE(used_first, used_trainer),
           mem_ws = (double)rp_trainer_workspace_bytes(tr) / G, mem_moments = (double)rp_trainer_optimizer_bytes(tr) / G;
#undef STAGE
    printf("bench_train: memory GiB: weights %.3f, attach %+.3f, optimizer %+.3f (%s moments %.3f of it; %lld trainable), "
           "first step %+.3f (workspace %.3f)\n",
           mem_weights, mem_adapter, mem_optim, optim, mem_moments, (long long)m->flat_numel, mem_step, mem_ws);
    if (json) {
        FILE *f = fopen(json, "a");
        if (f) {
            fprintf(f,
                    "{\"backend\":\"%s\",\"version\":%d,\"layers\":%d,\"embd\":%d,\"ffn\":%d,\"vocab\":%d,\"method\":\"%s\",\"r\":%d,"
                    "\"quant\":\"%s\",\"optim\":\"%s\",\"emb_host\":%d,\"bsz\":%d,\"ctx\":%d,\"chunk\":%d,\"infctx_full\":%d,\"grad_cp\":%d,"
                    "\"median_ms\":%.3f,\"min_ms\":%.3f,"
                    "\"max_ms\":%.3f,\"tokens_per_s\":%.1f,\"peak_gib\":%.3f,\"param_gib\":%.3f,\"dense_tflops\":%.2f,"
                    "\"mem_weights_gib\":%.3f,\"mem_attach_gib\":%.3f,\"mem_optimizer_gib\":%.3f,\"mem_first_step_gib\":%.3f,"
                    "\"workspace_gib\":%.3f,\"moments_gib\":%.3f,\"trainable\":%lld,\"loss\":%.9g}\n",
                    backend, version, L, C, F, V, method, r, rp_quant_name(qfmt), optim, emb_host, B, T, chunk, infctx_full, grad_cp, med, ms[0],
                    ms[steps - 1], tok_s, gib, bytes_attached / 1073741824.0, flops / (med / 1e3) / 1e12, mem_weights,
                    mem_adapter, mem_optim, mem_step, mem_ws, mem_moments, (long long)m->flat_numel, loss);
            fclose(f);
        }
    }
    rwkvpeft_trainer_free(tr);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
    free(in);
    free(tg);
    free(ms);
    return 0;
}
