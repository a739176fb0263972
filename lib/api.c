/* api.c — the public C API: argument checks, size-versioned option structs, handles and
 * their last-error slots. Everything real happens in the internal modules. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "tensorfile.h"

#ifndef RWKVPEFT_VERSION_STR
#define RWKVPEFT_VERSION_STR "0.1.0"
#endif

/* ---- versions ------------------------------------------------------------------------ */

uint32_t rwkvpeft_version_number(void) { return RWKVPEFT_VERSION_NUMBER; }

const char *rwkvpeft_version_string(void) {
    return RWKVPEFT_VERSION_STR " (cpu: OpenBLAS + OpenMP; gpu: runtime modules cuda, hip; backend API " "1)";
}

/* ---- logging ------------------------------------------------------------------------- */

void rp_log(const rwkvpeft_context *ctx, int level, const char *fmt, ...) {
    int threshold = ctx ? ctx->log_level : RWKVPEFT_LOG_WARN;
    if (level > threshold) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (ctx && ctx->log_fn) {
        ctx->log_fn(ctx->log_user, level, buf);
    } else {
        static const char *names[] = {"error", "warning", "info", "debug"};
        fprintf(stderr, "rwkvpeft %s: %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level], buf);
    }
}

/* ---- backends ------------------------------------------------------------------------ */

int32_t rwkvpeft_backend_count(void) { return rp_backend_registry_count(); }

rwkvpeft_status rwkvpeft_backend_get_info(int32_t index, rwkvpeft_backend_info *info) {
    if (!info) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "info is NULL");
    const char *name = rp_backend_registry_name(index);
    if (!name) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "backend index %d out of range", index);
    rwkvpeft_backend_info out;
    memset(&out, 0, sizeof out);
    snprintf(out.name, sizeof out.name, "%s", name);
    int count = 0;
    rp_err err;
    rp_err_clear(&err);
    const rp_backend_ops *ops = rp_backend_find(name, NULL, &count, out.description, sizeof out.description, &err);
    out.available = ops != NULL && count > 0;
    out.device_count = count > 0 ? count : 0;
    rp_give_result(info, &out, sizeof out);
    return RWKVPEFT_OK;
}

/* ---- context ------------------------------------------------------------------------- */

void rwkvpeft_context_params_init(rwkvpeft_context_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->backend = NULL;
    p->device = 0;
    p->n_threads = 0;
    p->log_level = RWKVPEFT_LOG_WARN;
}

rwkvpeft_status rwkvpeft_context_create(const rwkvpeft_context_params *params, rwkvpeft_context **out) {
    if (!out) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    rwkvpeft_context_params p;
    rwkvpeft_context_params_init(&p);
    rp_take_params(&p, sizeof p, params);
    rwkvpeft_context *ctx = (rwkvpeft_context *)rp_calloc(1, sizeof *ctx);
    if (!ctx) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    ctx->log_level = p.log_level;
    ctx->log_fn = p.log_fn;
    ctx->log_user = p.log_user;
    const char *name = p.backend;
    if (!name || !name[0] || strcmp(name, "auto") == 0) {
        const char *env = getenv("RWKVPEFT_BACKEND");
        name = env && env[0] ? env : "auto";
    }
    rp_err err;
    rp_err_clear(&err);
    const rp_backend_ops *ops = NULL;
    if (strcmp(name, "auto") == 0) {
        char why_cuda[192] = "", why_hip[192] = "";
        int count = 0;
        ops = rp_backend_find("cuda", p.module_path, &count, why_cuda, sizeof why_cuda, &err);
        if (!ops) ops = rp_backend_find("hip", p.module_path, &count, why_hip, sizeof why_hip, &err);
        if (!ops) {
            rp_log(ctx, RWKVPEFT_LOG_WARN, "no GPU backend available (cuda: %s; hip: %s); using the CPU backend", why_cuda,
                   why_hip);
            ops = &rp_cpu32_ops;
        }
    } else {
        int count = 0;
        ops = rp_backend_find(name, p.module_path, &count, NULL, 0, &err);
        if (!ops) {
            free(ctx);
            return (rwkvpeft_status)rp_err_copy(NULL, &err);
        }
    }
    ctx->ops = ops;
    ctx->be = ops->create(p.device, p.n_threads, &err);
    if (!ctx->be) {
        free(ctx);
        return (rwkvpeft_status)rp_err_copy(NULL, &err);
    }
    const char *prof = getenv("RWKVPEFT_PROFILE");
    if (prof && prof[0] && strcmp(prof, "0") != 0) { /* per-op timing (lib/profile.c) */
        ctx->ops = rp_profile_wrap(ops);
        ctx->be->ops = ctx->ops;
        ctx->profiled = 1;
    }
    rp_log(ctx, RWKVPEFT_LOG_INFO, "backend %s ready", ops->name);
    *out = ctx;
    return RWKVPEFT_OK;
}

void rwkvpeft_context_free(rwkvpeft_context *ctx) {
    if (!ctx) return;
    if (ctx->n_models > 0) {
        rp_log(ctx, RWKVPEFT_LOG_ERROR, "rwkvpeft_context_free: %d model(s) still use this context; not freed", ctx->n_models);
        return;
    }
    if (ctx->profiled) rp_profile_report(ctx);
    ctx->ops->destroy(ctx->be);
    free(ctx);
}

const char *rwkvpeft_context_backend(const rwkvpeft_context *ctx) { return ctx ? ctx->ops->name : "none"; }

const char *rwkvpeft_context_last_error(const rwkvpeft_context *ctx) { return ctx ? ctx->err.msg : ""; }

rwkvpeft_status rwkvpeft_context_memory(rwkvpeft_context *ctx, uint64_t *free_bytes, uint64_t *total_bytes) {
    if (!ctx) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "context is NULL");
    int rc = ctx->ops->memory_info(ctx->be, free_bytes, total_bytes);
    if (rc) return (rwkvpeft_status)rp_be_fail(ctx->be, rc, &ctx->err);
    return RWKVPEFT_OK;
}

/* ---- model --------------------------------------------------------------------------- */

void rwkvpeft_model_config_init(rwkvpeft_model_config *c) {
    if (!c) return;
    memset(c, 0, sizeof *c);
    c->struct_size = sizeof *c;
    c->version = 6;
    c->n_layer = 2;
    c->n_embd = 128;
    c->head_size = 64;
    c->vocab_size = 65536;
}

void rwkvpeft_model_params_init(rwkvpeft_model_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
}

static rwkvpeft_model *model_new(rwkvpeft_context *ctx, const rwkvpeft_model_params *params) {
    rwkvpeft_model *m = (rwkvpeft_model *)rp_calloc(1, sizeof *m);
    if (!m) return NULL;
    rwkvpeft_model_params p;
    rwkvpeft_model_params_init(&p);
    rp_take_params(&p, sizeof p, params);
    m->ctx = ctx;
    m->be = ctx->be;
    m->grad_cp = p.grad_cp != 0;
    m->quant = p.quant;
    m->quant_pending = p.quant != RWKVPEFT_QUANT_NONE;
    m->emb_on_host = p.embedding_on_host != 0;
    return m;
}

/* rwkvpeft_model_params values that model_new does not check. */
static int check_model_params(const rwkvpeft_model_params *params) {
    rwkvpeft_model_params p;
    rwkvpeft_model_params_init(&p);
    rp_take_params(&p, sizeof p, params);
    if (p.quant < RWKVPEFT_QUANT_NONE || p.quant > RWKVPEFT_QUANT_FP8)
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                       "model params: quant %d is not a quantization type (none 0, nf4 1, fp4 2, int8 3, fp8 4)", p.quant);
    if (p.embedding_on_host != 0 && p.embedding_on_host != 1)
        return rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model params: embedding_on_host must be 0 or 1 (got %d)",
                       p.embedding_on_host);
    return 0;
}

static void model_delete(rwkvpeft_model *m) {
    rp_workspace_free(m, m->eval_ws);
    rp_model_destroy(m);
    free(m);
}

rwkvpeft_status rwkvpeft_model_load(rwkvpeft_context *ctx, const char *path, const rwkvpeft_model_params *params,
                                    rwkvpeft_model **out) {
    if (!out) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!ctx || !path) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "context and path are required");
    RP_TRY(check_model_params(params));
    rwkvpeft_model *m = model_new(ctx, params);
    if (!m) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    int rc = rp_model_load_file(m, path);
    if (!rc) rc = rp_model_place_embedding(m);
    if (rc) {
        rp_err_copy(&ctx->err, &m->err);
        model_delete(m);
        return (rwkvpeft_status)rc;
    }
    ctx->n_models++;
    rp_log(ctx, RWKVPEFT_LOG_INFO, "loaded %s: RWKV-%d, %d layers, n_embd %d, vocab %d", path, m->version, m->n_layer, m->C,
           m->V);
    *out = m;
    return RWKVPEFT_OK;
}

rwkvpeft_status rwkvpeft_model_init(rwkvpeft_context *ctx, const rwkvpeft_model_config *config,
                                    const rwkvpeft_model_params *params, uint64_t seed, rwkvpeft_model **out) {
    if (!out) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!ctx) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "context is NULL");
    rwkvpeft_model_config c;
    rwkvpeft_model_config_init(&c);
    rp_take_params(&c, sizeof c, config);
    if (c.version != 5 && c.version != 6 && c.version != 7)
        return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_UNSUPPORTED,
                                        "model version %d is not supported (this build: 5, 6, 7)", c.version);
    /* v7 has no dim_att of its own and a 4C channel mix (spec §1.3) */
    int C = c.n_embd, A = c.dim_att ? c.dim_att : C,
        F = c.dim_ffn ? c.dim_ffn : c.version == 7 ? 4 * C : (int)((C * 7 / 2) / 32 * 32), N = c.head_size;
    if (c.version == 7 && (A != C || F != 4 * C))
        return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                                        "invalid config: RWKV-7 needs dim_att = n_embd and dim_ffn = 4*n_embd (got %d, %d "
                                        "for n_embd %d); leave them 0",
                                        A, F, C);
    if (c.n_layer < 1 || c.n_layer > 1024 || C < 32 || C > 65536 || C % 32 || A % 32 || F % 32 || A <= 0 || F <= 0 || N <= 0 ||
        A % N || c.vocab_size < 2 || c.vocab_size > (1 << 24))
        return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT,
                                        "invalid config: n_layer %d, n_embd %d, dim_att %d, dim_ffn %d, head_size %d, vocab %d "
                                        "(n_embd, dim_att, dim_ffn must be positive multiples of 32; dim_att a multiple of "
                                        "head_size)",
                                        c.n_layer, C, A, F, N, c.vocab_size);
    RP_TRY(check_model_params(params));
    rwkvpeft_model *m = model_new(ctx, params);
    if (!m) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    rp_arch arch = {.version = c.version, .n_layer = c.n_layer, .C = C, .A = A, .F = F, .H = A / N, .N = N,
                    .V = c.vocab_size};
    rp_arch_default_widths(&arch);
    int rc = rp_model_create(m, &arch, 0);
    if (!rc) rc = rp_model_alloc_params(m);
    if (!rc) rc = rp_model_init_weights(m, seed);
    if (!rc) rc = rp_model_place_embedding(m);
    if (rc) {
        rp_err_copy(&ctx->err, &m->err);
        model_delete(m);
        return (rwkvpeft_status)rc;
    }
    ctx->n_models++;
    *out = m;
    return RWKVPEFT_OK;
}

static rp_file_kind kind_of(rwkvpeft_file_format f) {
    return f == RWKVPEFT_FORMAT_PTH ? RP_FILE_PTH : f == RWKVPEFT_FORMAT_SAFETENSORS ? RP_FILE_SAFETENSORS : RP_FILE_AUTO;
}

static int dtype_of(rwkvpeft_dtype d, rp_dtype *out) {
    switch (d) {
    case RWKVPEFT_DTYPE_F32: *out = RP_F32; return 0;
    case RWKVPEFT_DTYPE_BF16: *out = RP_BF16; return 0;
    case RWKVPEFT_DTYPE_F16: *out = RP_F16; return 0;
    }
    return -1;
}

rwkvpeft_status rwkvpeft_model_save(rwkvpeft_model *m, const char *path, rwkvpeft_file_format format, rwkvpeft_dtype dtype) {
    if (!m || !path) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model and path are required");
    rp_dtype dt;
    if (dtype_of(dtype, &dt)) return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown dtype %d", dtype);
    if (format < RWKVPEFT_FORMAT_AUTO || format > RWKVPEFT_FORMAT_SAFETENSORS)
        return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown file format %d", format);
    return (rwkvpeft_status)rp_model_save_file(m, path, kind_of(format), dt, 0);
}

rwkvpeft_status rwkvpeft_model_get_info(const rwkvpeft_model *m, rwkvpeft_model_info *info) {
    if (!m || !info) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model and info are required");
    rwkvpeft_model_info o;
    memset(&o, 0, sizeof o);
    o.version = m->version;
    o.n_layer = m->n_layer;
    o.n_embd = m->C;
    o.dim_att = m->A;
    o.dim_ffn = m->F;
    o.n_head = m->H;
    o.head_size = m->N;
    o.vocab_size = m->V;
    o.dim_mix = m->Dm;
    o.dim_decay = m->version == 7 ? m->Dw : m->Dd;
    o.dim_w = m->Dw;
    o.dim_a = m->Da;
    o.dim_v = m->Dv;
    o.dim_g = m->Dg;
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i].is_adapter) o.n_params += m->params[i].numel;
    o.n_trainable = m->n_trainable;
    rp_give_result(info, &o, sizeof o);
    return RWKVPEFT_OK;
}

void rwkvpeft_model_free(rwkvpeft_model *m) {
    if (!m) return;
    if (m->n_trainers > 0) {
        rp_log(m->ctx, RWKVPEFT_LOG_ERROR, "rwkvpeft_model_free: %d trainer(s) still use this model; not freed", m->n_trainers);
        return;
    }
    m->ctx->n_models--;
    model_delete(m);
}

const char *rwkvpeft_model_last_error(const rwkvpeft_model *m) { return m ? m->err.msg : ""; }

/* ---- adapters ------------------------------------------------------------------------ */

void rwkvpeft_adapter_params_init(rwkvpeft_adapter_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->method = RWKVPEFT_PEFT_LORA;
    p->r = 8;
    p->alpha = 32;
    p->dropout = 0.01f;
    p->train_parts = "time,ln";
    p->full_finetune = 0;
    p->train_emb_head = -1;
    p->seed = 42;
    p->svd_niter = 4;
    p->pissa_init = NULL;
    p->key_name = NULL;
}

rwkvpeft_status rwkvpeft_adapter_attach(rwkvpeft_model *m, const rwkvpeft_adapter_params *params) {
    if (!m) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model is NULL");
    rwkvpeft_adapter_params p;
    rwkvpeft_adapter_params_init(&p);
    rp_take_params(&p, sizeof p, params);
    int rc = rp_adapter_attach(m, &p);
    if (!rc)
        rp_log(m->ctx, RWKVPEFT_LOG_INFO, "adapter attached: %lld trainable elements", (long long)m->n_trainable);
    return (rwkvpeft_status)rc;
}

rwkvpeft_status rwkvpeft_adapter_load(rwkvpeft_model *m, const char *path) {
    if (!m || !path) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model and path are required");
    return (rwkvpeft_status)rp_adapter_load(m, path);
}

rwkvpeft_status rwkvpeft_save_adapter(rwkvpeft_model *m, const char *path, rwkvpeft_file_format format,
                                      rwkvpeft_dtype dtype) {
    if (!m || !path) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model and path are required");
    if (!m->adapter.attached) return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_STATE, "no adapter attached");
    rp_dtype dt;
    if (dtype_of(dtype, &dt)) return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown dtype %d", dtype);
    if (format < RWKVPEFT_FORMAT_AUTO || format > RWKVPEFT_FORMAT_SAFETENSORS)
        return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown file format %d", format);
    return (rwkvpeft_status)rp_model_save_file(m, path, kind_of(format), dt, 1);
}

rwkvpeft_status rwkvpeft_pissa_save_init(rwkvpeft_model *m, const char *path, rwkvpeft_file_format format) {
    if (!m || !path) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model and path are required");
    if (format < RWKVPEFT_FORMAT_AUTO || format > RWKVPEFT_FORMAT_SAFETENSORS)
        return (rwkvpeft_status)rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown file format %d", format);
    return (rwkvpeft_status)rp_pissa_save_init(m, path, kind_of(format));
}

rwkvpeft_status rwkvpeft_pissa_check_init(rwkvpeft_model *m, const char *path) {
    if (!m || !path) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model and path are required");
    return (rwkvpeft_status)rp_pissa_check_init(m, path);
}

rwkvpeft_status rwkvpeft_model_merge(rwkvpeft_model *m) {
    if (!m) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model is NULL");
    return (rwkvpeft_status)rp_model_merge(m);
}

void rwkvpeft_merge_params_init(rwkvpeft_merge_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->method = -1;
    p->lora_alpha = NAN;
    p->format = RWKVPEFT_FORMAT_AUTO;
    p->dtype = RWKVPEFT_DTYPE_BF16;
}

rwkvpeft_status rwkvpeft_merge_files(const rwkvpeft_merge_params *params) {
    if (!params) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "params is NULL");
    rwkvpeft_merge_params p;
    rwkvpeft_merge_params_init(&p);
    rp_take_params(&p, sizeof p, params);
    return (rwkvpeft_status)rp_merge_files(&p, NULL);
}

/* ---- evaluation ---------------------------------------------------------------------- */

void rwkvpeft_batch_init(rwkvpeft_batch *b) {
    if (!b) return;
    memset(b, 0, sizeof *b);
    b->struct_size = sizeof *b;
}

rwkvpeft_status rwkvpeft_evaluate(rwkvpeft_model *m, const rwkvpeft_batch *batch, rwkvpeft_eval_result *result) {
    if (!m || !batch || !result)
        return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model, batch and result are required");
    rwkvpeft_batch b;
    rwkvpeft_batch_init(&b);
    rp_take_params(&b, sizeof b, batch);
    rwkvpeft_eval_result r;
    memset(&r, 0, sizeof r);
    int rc = rp_evaluate(m, &b, &r.loss, &r.n_tokens);
    if (rc) return (rwkvpeft_status)rc;
    rp_give_result(result, &r, sizeof r);
    return RWKVPEFT_OK;
}

/* ---- training ------------------------------------------------------------------------ */

void rwkvpeft_train_params_init(rwkvpeft_train_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->lr_init = 6e-4f;
    p->lr_final = 1e-5f;
    p->lr_schedule = RWKVPEFT_LR_COS;
    p->total_steps = 0;
    p->warmup_steps = -1;
    p->beta1 = 0.9f;
    p->beta2 = 0.99f;
    p->adam_eps = 1e-8f;
    p->weight_decay = 0;
    p->grad_clip = 1.0f;
    p->accumulate_grad_batches = 1;
    p->layerwise_lr = 1;
    p->chunk_ctx = 0;
    p->infctx_full = 1;
    p->optimizer = RWKVPEFT_OPTIM_ADAMW;
}

rwkvpeft_status rwkvpeft_trainer_create(rwkvpeft_model *m, const rwkvpeft_train_params *params, rwkvpeft_trainer **out) {
    if (!out) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (!m) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "model is NULL");
    rwkvpeft_train_params p;
    rwkvpeft_train_params_init(&p);
    rp_take_params(&p, sizeof p, params);
    return (rwkvpeft_status)rp_trainer_create(m, &p, out);
}

void rwkvpeft_trainer_free(rwkvpeft_trainer *t) { rp_trainer_destroy(t); }

const char *rwkvpeft_trainer_last_error(const rwkvpeft_trainer *t) { return t ? rp_trainer_error(t) : ""; }

rwkvpeft_status rwkvpeft_train_step(rwkvpeft_trainer *t, const rwkvpeft_batch *batch, rwkvpeft_step_result *result) {
    if (!t || !batch) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "trainer and batch are required");
    rwkvpeft_batch b;
    rwkvpeft_batch_init(&b);
    rp_take_params(&b, sizeof b, batch);
    return (rwkvpeft_status)rp_trainer_step(t, &b, result);
}

rwkvpeft_status rwkvpeft_trainer_save_state(rwkvpeft_trainer *t, const char *path) {
    if (!t || !path) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "trainer and path are required");
    return (rwkvpeft_status)rp_trainer_save_state(t, path);
}

rwkvpeft_status rwkvpeft_trainer_load_state(rwkvpeft_trainer *t, const char *path) {
    if (!t || !path) return (rwkvpeft_status)rp_fail(NULL, RWKVPEFT_E_INVALID_ARGUMENT, "trainer and path are required");
    return (rwkvpeft_status)rp_trainer_load_state(t, path);
}
