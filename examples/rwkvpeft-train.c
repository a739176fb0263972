#define _POSIX_C_SOURCE 200809L
/* rwkvpeft-train — fine-tune an RWKV model with RWKV-PEFT's command-line flags.
 *
 * A drop-in for `python train.py ...` of RWKV-PEFT for everything librwkvpeft implements:
 * the same flag names and defaults, the same output files in --proj_dir (rwkv-N.pth every
 * --epoch_save epochs, train_log.txt), plus a JSONL log for plots, a resumable optimizer
 * state beside each saved adapter, and optional text samples before and after training.
 * Flags it does not implement are rejected with a message instead of being ignored.
 * Run `rwkvpeft-train --help` for the list. This program uses only the public API.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "peft_flags.h"
#include "rwkvpeft.h"

/* ------------------------------------------------------------------------------------ */
/* options                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef struct opts {
    /* RWKV-PEFT flags */
    const char *load_model, *proj_dir, *data_file, *data_type, *my_testing, *peft, *train_parts, *lora_config,
        *quant, *dataload, *loss_mask, *mask_id, *train_type, *precision, *wandb, *lr_schedule, *optim, *strategy,
        *accelerator, *sft_field, *sft_split, *op, *pissa_config, *bone_config, *disha_config, *infctx_grad;
    long random_seed, vocab_size, ctx_len, epoch_steps, epoch_count, epoch_begin, epoch_save, micro_bsz, n_layer,
        n_embd, dim_att, dim_ffn, warmup_steps, grad_cp, layerwise_lr, head_size_a, head_size_divisor,
        data_shuffle, accumulate_grad_batches, devices, num_nodes, my_pile_stage, magic_prime, my_pile_shift,
        chunk_ctx;
    double lr_init, lr_final, beta1, beta2, adam_eps, weight_decay, weight_decay_final, dropout;
    /* librwkvpeft additions */
    const char *backend, *vocab, *sample_prompt, *resume, *adapter_dtype, *save_format, *log_jsonl;
    long threads, sample_tokens, max_steps, quiet, embedding_on_host;
    double sample_temperature, sample_top_p;
} opts;

static void defaults(opts *o) {
    memset(o, 0, sizeof *o);
    o->proj_dir = "out";
    o->data_type = "binidx";
    o->my_testing = "x060";
    o->peft = "none";
    o->train_parts = NULL;
    o->lora_config = "{\"lora_load\":\"\",\"lora_r\":8,\"lora_alpha\":32,\"lora_dropout\":0.01}";
    o->quant = "none";
    o->dataload = "get";
    o->loss_mask = "none";
    o->train_type = "none";
    o->precision = "bf16";
    o->wandb = "";
    o->lr_schedule = "cos";
    o->optim = "none";
    o->random_seed = -1;
    o->vocab_size = 0;
    o->ctx_len = 1024;
    o->epoch_steps = 1000;
    o->epoch_count = 500;
    o->epoch_save = 5;
    o->micro_bsz = 12;
    o->n_layer = 6;
    o->n_embd = 512;
    o->warmup_steps = -1;
    o->layerwise_lr = 1;
    o->head_size_a = 64;
    o->head_size_divisor = 8;
    o->data_shuffle = 1;
    o->accumulate_grad_batches = 1;
    o->devices = 1;
    o->num_nodes = 1;
    o->my_pile_shift = -1;
    o->chunk_ctx = 512;
    o->lr_init = 6e-4;
    o->lr_final = 1e-5;
    o->beta1 = 0.9;
    o->beta2 = 0.99;
    o->adam_eps = 1e-8;
    o->weight_decay_final = -1;
    o->backend = NULL;
    o->sample_tokens = 80;
    o->sample_temperature = 1.0;
    o->sample_top_p = 0.85;
    o->adapter_dtype = "bf16";
    o->save_format = "pth";
}

typedef enum { T_STR, T_LONG, T_DBL, T_FLAG } opt_type;
typedef struct flag {
    const char *name;
    opt_type type;
    size_t off;
    const char *help;
} flag;

#define F(n, t, field, h) {n, t, offsetof(opts, field), h}
static const flag flags[] = {
    F("load_model", T_STR, load_model, "base checkpoint (.pth or .safetensors); empty: a fresh model (--n_layer, --n_embd ...)"),
    F("proj_dir", T_STR, proj_dir, "output folder (rwkv-N.pth, logs); default out"),
    F("random_seed", T_LONG, random_seed, "seed; -1 (default) = 0 here (runs are always deterministic)"),
    F("data_file", T_STR, data_file, "binidx prefix (without .bin/.idx), or a .jsonl file"),
    F("data_type", T_STR, data_type, "binidx (default), jsonl or sft"),
    F("vocab_size", T_LONG, vocab_size, "vocabulary of a fresh model (65536); checked against a loaded one"),
    F("ctx_len", T_LONG, ctx_len, "tokens per sample; default 1024"),
    F("epoch_steps", T_LONG, epoch_steps, "micro-batches per epoch; default 1000"),
    F("epoch_count", T_LONG, epoch_count, "epochs; default 500"),
    F("epoch_begin", T_LONG, epoch_begin, "first epoch number (file names, LR schedule); default 0"),
    F("epoch_save", T_LONG, epoch_save, "save every N epochs (and the last); default 5"),
    F("micro_bsz", T_LONG, micro_bsz, "sequences per micro-batch; default 12"),
    F("n_layer", T_LONG, n_layer, "layers of a fresh model; checked against a loaded one"),
    F("n_embd", T_LONG, n_embd, "width of a fresh model; checked against a loaded one"),
    F("dim_att", T_LONG, dim_att, "0 = n_embd"),
    F("dim_ffn", T_LONG, dim_ffn, "0 = 3.5*n_embd rounded down to 32"),
    F("lr_init", T_DBL, lr_init, "initial learning rate; default 6e-4"),
    F("lr_final", T_DBL, lr_final, "final learning rate; default 1e-5"),
    F("lr_schedule", T_STR, lr_schedule, "cos (default), wsd, or exp (RWKV-PEFT Nov-2024 exponential)"),
    F("warmup_steps", T_LONG, warmup_steps, "warmup optimizer steps; default -1 (none)"),
    F("beta1", T_DBL, beta1, "Adam beta1; default 0.9"),
    F("beta2", T_DBL, beta2, "Adam beta2; default 0.99"),
    F("adam_eps", T_DBL, adam_eps, "Adam epsilon; default 1e-8"),
    F("weight_decay", T_DBL, weight_decay, "AdamW decay of >=2-D tensors; default 0"),
    F("weight_decay_final", T_DBL, weight_decay_final, "only -1 (off) is implemented"),
    F("grad_cp", T_LONG, grad_cp, "1: gradient checkpointing (recompute blocks in the backward)"),
    F("layerwise_lr", T_LONG, layerwise_lr, "1 (default): the reference's per-tensor LR groups"),
    F("head_size_a", T_LONG, head_size_a, "head size of a fresh model; default 64"),
    F("head_size_divisor", T_LONG, head_size_divisor, "only 8 is implemented"),
    F("my_testing", T_STR, my_testing, "architecture of a fresh model: x052 (RWKV-5), x060 (RWKV-6), x070 (RWKV-7); a loaded model's own version wins"),
    F("peft", T_STR, peft, "none (full fine-tune, or only --train_parts), lora, pissa, bone or disha"),
    F("train_parts", T_STR, train_parts, "extra trainable tensors: space/comma list or [\"time\",\"ln\"]; default time ln"),
    F("lora_config", T_STR, lora_config, "JSON: lora_load, lora_r, lora_alpha, lora_dropout"),
    F("quant", T_STR, quant, "none (default), nf4, fp4, 4bit (= fp4), int8 or fp8: quantize the 8 block linears (QLoRA...)"),
    F("dataload", T_STR, dataload, "get (default), pad or only"),
    F("loss_mask", T_STR, loss_mask, "none (default), pad, qa or se"),
    F("mask_id", T_STR, mask_id, "JSON {\"mask0\":\"0\",\"mask1\":\"1\"} for loss_mask se"),
    F("data_shuffle", T_LONG, data_shuffle, "1 (default): shuffle every epoch"),
    F("train_type", T_STR, train_type, "none, or state (state tuning: only blocks.L.att.time_state trains)"),
    F("accumulate_grad_batches", T_LONG, accumulate_grad_batches, "micro-batches per optimizer step; default 1"),
    F("precision", T_STR, precision, "bf16 (default), fp32, tf32, fp16: the backend's own precision is used"),
    F("strategy", T_STR, strategy, "accepted and ignored (DeepSpeed strategies do not apply)"),
    F("accelerator", T_STR, accelerator, "accepted and ignored; use --backend"),
    F("devices", T_LONG, devices, "only 1"),
    F("num_nodes", T_LONG, num_nodes, "only 1"),
    F("wandb", T_STR, wandb, "not implemented (use the JSONL log)"),
    F("optim", T_STR, optim, "none = AdamW with fp32 moments (as the reference); adamw8bit = AdamW with blockwise 8-bit moments (~6 bytes less per trainable value; extension)"),
    F("sft_field", T_STR, sft_field, "query,response field names for data_type sft"),
    F("sft_split", T_STR, sft_split, "only the whole file (train) is read"),
    F("my_pile_stage", T_LONG, my_pile_stage, "pretraining magic-prime sampling stage (0 = off)"),
    F("magic_prime", T_LONG, magic_prime, "magic prime for my_pile_stage > 0"),
    F("my_pile_shift", T_LONG, my_pile_shift, "token shift for magic-prime sampling"),
    F("op", T_STR, op, "kernel family of the reference (cuda/fla/triton): accepted, our kernels are used"),
    F("fla", T_FLAG, quiet, "accepted, our kernels are used"),
    F("dropout", T_DBL, dropout, "only 0"),
    F("chunk_ctx", T_LONG, chunk_ctx, "with --train_type infctx: tokens per chunk (default 512); --ctx_len is the whole sequence"),
    F("infctx_grad", T_STR, infctx_grad, "with infctx: full (default; gradients through the carried states) or truncated (the reference's)"),
    F("pissa_config", T_STR, pissa_config, "JSON: pissa_load, pissa_init, pissa_r, svd_niter (init file: <proj_dir>/init_pissa.pth)"),
    F("bone_config", T_STR, bone_config, "JSON: bone_load, bone_r (block-affine, as Nov-2024), bone_mode bone|bat"),
    F("disha_config", T_STR, disha_config, "JSON: mode bone|bat, load, r"),
    /* additions */
    F("backend", T_STR, backend, "auto (default; $RWKVPEFT_BACKEND), cpu, cuda or hip"),
    F("threads", T_LONG, threads, "CPU threads; 0 = all cores"),
    F("embedding_on_host", T_LONG, embedding_on_host, "1: keep a frozen emb.weight in host memory (less device memory, same results)"),
    F("vocab", T_STR, vocab, "World vocabulary file (jsonl/sft data, --sample_prompt)"),
    F("sample_prompt", T_STR, sample_prompt, "generate from this prompt before and after training (needs --vocab)"),
    F("sample_tokens", T_LONG, sample_tokens, "tokens per sample; default 80"),
    F("sample_temperature", T_DBL, sample_temperature, "sampling temperature (0 = greedy); default 1"),
    F("sample_top_p", T_DBL, sample_top_p, "nucleus mass; default 0.85"),
    F("resume", T_STR, resume, "continue from a saved rwkv-N.pth (with its .state.safetensors and .resume.json)"),
    F("adapter_dtype", T_STR, adapter_dtype, "bf16 (default, as the reference) or fp32"),
    F("save_format", T_STR, save_format, "pth (default) or safetensors"),
    F("log_jsonl", T_STR, log_jsonl, "per-step JSONL log; default <proj_dir>/train_log.jsonl"),
    F("max_steps", T_LONG, max_steps, "stop after this many optimizer steps (0 = no limit)"),
    F("quiet", T_FLAG, quiet, "no progress line"),
};
#undef F

/* Flags of RWKV-PEFT that have no effect on a PEFT run and are accepted as no-ops when
 * they carry their default value. */
static const char *const noop_default_flags[] = {"pre_ffn", "head_qk", "tiny_att_dim", "tiny_att_layer", "my_pos_emb",
                                                 "load_partial", "my_qa_mask", "my_random_steps", "my_exit",
                                                 "my_exit_tokens", "ds_bucket_mb", "my_sample_len", "my_ffn_shift",
                                                 "my_att_shift", "my_pile_version", "my_pile_edecay", "avg_loss",
                                                 "fused_kernel", "state_tune"};

static void usage(FILE *f) {
    fprintf(f, "usage: rwkvpeft-train [--flag value]...\n\n"
               "Fine-tunes an RWKV model with RWKV-PEFT's flags. Flags:\n");
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) fprintf(f, "  --%-24s %s\n", flags[i].name, flags[i].help);
    fprintf(f, "\nExample:\n  rwkvpeft-train --load_model rwkv6-1b6.pth --data_file data/train_text_document \\\n"
               "    --ctx_len 1024 --micro_bsz 8 --epoch_steps 1000 --epoch_count 1 --lr_init 2e-5 --lr_final 2e-5 \\\n"
               "    --peft lora --lora_config '{\"lora_r\":32,\"lora_alpha\":32,\"lora_dropout\":0}' --proj_dir out\n");
}

static int die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rwkvpeft-train: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

static int parse_args(int argc, char **argv, opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) return die("unexpected argument \"%s\" (flags start with --)", a);
        char name[64];
        const char *val = NULL, *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (len >= sizeof name) return die("unknown flag %s", a);
        memcpy(name, a + 2, len);
        name[len] = 0;
        for (char *c = name; *c; c++)
            if (*c == '-') *c = '_';
        const flag *fl = NULL;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
            if (!strcmp(flags[k].name, name)) fl = &flags[k];
        int is_noop = 0;
        for (size_t k = 0; k < sizeof noop_default_flags / sizeof noop_default_flags[0]; k++)
            if (!strcmp(noop_default_flags[k], name)) is_noop = 1;
        if (!fl && !is_noop) return die("unknown flag --%s (see --help)", name);
        if (fl && fl->type == T_FLAG) {
            if (!strcmp(name, "quiet")) o->quiet = 1;
            continue;
        }
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return die("--%s needs a value", name);
        if (is_noop) {
            /* accepted only with their default (0, -999, 99999999, 200, 1 ...): anything
             * else asks for a feature this library does not have */
            char *end;
            double v = strtod(val, &end);
            int ok = *end == 0 && (v == 0 || v == -999 || v == 99999999 || v == 200 || v == 1);
            if (!ok && strcmp(name, "tiny_att_layer") && strcmp(name, "my_ffn_shift") && strcmp(name, "my_att_shift"))
                return die("--%s %s is not implemented (only the default is accepted)", name, val);
            continue;
        }
        char *dst = (char *)o + fl->off;
        char *end = NULL;
        errno = 0;
        switch (fl->type) {
        case T_STR: *(const char **)dst = val; break;
        case T_LONG:
            *(long *)dst = strtol(val, &end, 10);
            if (*end || errno) return die("--%s expects an integer, got \"%s\"", name, val);
            break;
        case T_DBL:
            *(double *)dst = strtod(val, &end);
            if (*end || errno || !isfinite(*(double *)dst)) return die("--%s expects a number, got \"%s\"", name, val);
            break;
        default: break;
        }
    }
    return 0;
}

/* "time ln", "time,ln" or the NOV python-list form '["time","ln"]' -> "time,ln". */
static void normalise_parts(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (const char *c = in; *c && k + 1 < n; c++) {
        if (*c == '[' || *c == ']' || *c == '"' || *c == '\'') continue;
        out[k++] = (*c == ' ') ? ',' : *c;
    }
    out[k] = 0;
}

/* ------------------------------------------------------------------------------------ */
/* helpers                                                                              */
/* ------------------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_hms(char *out, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(out, n, "--:--:--");
        return;
    }
    long t = (long)(s + 0.5);
    snprintf(out, n, "%02ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
}

static int mkdir_p(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static const char *method_title(int method) {
    switch (method) {
    case RWKVPEFT_PEFT_LORA: return "LoRA";
    case RWKVPEFT_PEFT_PISSA: return "PiSSA";
    case RWKVPEFT_PEFT_BONE: return "Bone";
    case RWKVPEFT_PEFT_BAT: return "Bat";
    case RWKVPEFT_PEFT_STATE: return "state tuning";
    }
    return "none";
}

static void show_sample(rwkvpeft_model *m, rwkvpeft_tokenizer *tok, const opts *o, const char *title) {
    size_t n = 0, cap = strlen(o->sample_prompt) + 16;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    if (rwkvpeft_tokenizer_encode(tok, o->sample_prompt, strlen(o->sample_prompt), ids, cap, &n) || n == 0) {
        fprintf(stderr, "rwkvpeft-train: cannot encode the sample prompt: %s\n", rwkvpeft_last_error());
        free(ids);
        return;
    }
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(o->sample_tokens + 1));
    size_t n_out = 0;
    rwkvpeft_generate_params gp;
    rwkvpeft_generate_params_init(&gp);
    gp.max_new_tokens = (int32_t)o->sample_tokens;
    gp.temperature = (float)o->sample_temperature;
    gp.top_p = (float)o->sample_top_p;
    gp.seed = (uint64_t)(o->random_seed < 0 ? 0 : o->random_seed);
    if (rwkvpeft_generate(m, ids, n, &gp, out, (size_t)o->sample_tokens, &n_out)) {
        fprintf(stderr, "rwkvpeft-train: generation failed: %s\n", rwkvpeft_model_last_error(m));
    } else {
        size_t bytes = 0;
        rwkvpeft_tokenizer_decode(tok, out, n_out, NULL, 0, &bytes);
        char *text = malloc(bytes + 1);
        rwkvpeft_tokenizer_decode(tok, out, n_out, text, bytes, &bytes);
        text[bytes] = 0;
        printf("---- %s ----\n%s%s\n-----------------\n", title, o->sample_prompt, text);
        fflush(stdout);
        free(text);
    }
    free(out);
    free(ids);
}

/* ------------------------------------------------------------------------------------ */
/* main                                                                                 */
/* ------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    opts o;
    defaults(&o);
    if (argc == 1) {
        usage(stderr);
        return 2;
    }
    if (parse_args(argc, argv, &o)) return 2;

    /* ---- flags this build does not implement: say so instead of training differently */
    peft_cli pc;
    peft_cli_init(&pc);
    pc.peft = o.peft;
    pc.train_type = o.train_type;
    pc.lora_config = o.lora_config;
    pc.pissa_config = o.pissa_config;
    pc.bone_config = o.bone_config;
    pc.disha_config = o.disha_config;
    char perr[512];
    if (peft_cli_resolve(&pc, perr, sizeof perr)) return die("%s", perr);
    pc.quant = peft_quant_parse(o.quant);
    if (pc.quant < 0) return die("--quant %s is not implemented (none, nf4, fp4, 4bit, int8 or fp8)", o.quant);
    if (o.wandb[0]) return die("--wandb is not implemented; plot %s/train_log.jsonl instead", o.proj_dir);
    int optimizer = !strcmp(o.optim, "none") ? RWKVPEFT_OPTIM_ADAMW : !strcmp(o.optim, "adamw8bit") ? RWKVPEFT_OPTIM_ADAMW_8BIT : -1;
    if (optimizer < 0) return die("--optim %s is not implemented (none = AdamW, adamw8bit = 8-bit AdamW)", o.optim);
    if (o.devices != 1 || o.num_nodes != 1) return die("only --devices 1 --num_nodes 1 are implemented");
    if (o.dropout != 0) return die("--dropout %g (model dropout) is not implemented; LoRA dropout is in --lora_config", o.dropout);
    if (o.weight_decay_final > 0) return die("--weight_decay_final is not implemented");
    if (o.head_size_divisor != 8) return die("--head_size_divisor %ld: only 8 is implemented", o.head_size_divisor);
    /* as the reference at HEAD: the first of "7", "6", "5" found names the generation */
    int version = strchr(o.my_testing, '7') ? 7 : strchr(o.my_testing, '6') ? 6 : strchr(o.my_testing, '5') ? 5 : 0;
    if (!version) return die("--my_testing %s: name an architecture, x052 (RWKV-5), x060 (RWKV-6) or x070 (RWKV-7)", o.my_testing);
    if (o.sft_split && strcmp(o.sft_split, "train")) return die("--sft_split %s: only the whole file is read", o.sft_split);
    if (!o.data_file) return die("--data_file is required");
    if (o.ctx_len < 1 || o.micro_bsz < 1 || o.epoch_count < 1 || o.epoch_steps < 1 || o.epoch_save < 1 ||
        o.accumulate_grad_batches < 1)
        return die("ctx_len, micro_bsz, epoch_count, epoch_steps, epoch_save and accumulate_grad_batches must be >= 1");
    int lr_sched = !strcmp(o.lr_schedule, "cos") ? RWKVPEFT_LR_COS
                   : !strcmp(o.lr_schedule, "wsd") ? RWKVPEFT_LR_WSD
                   : !strcmp(o.lr_schedule, "exp") ? RWKVPEFT_LR_EXP
                                                    : -1;
    if (lr_sched < 0) return die("--lr_schedule must be cos, wsd or exp");
    rwkvpeft_dtype adtype;
    if (!strcmp(o.adapter_dtype, "bf16")) adtype = RWKVPEFT_DTYPE_BF16;
    else if (!strcmp(o.adapter_dtype, "fp32")) adtype = RWKVPEFT_DTYPE_F32;
    else return die("--adapter_dtype must be bf16 or fp32");
    int use_st = !strcmp(o.save_format, "safetensors");
    if (!use_st && strcmp(o.save_format, "pth")) return die("--save_format must be pth or safetensors");

    char parts[256];
    normalise_parts(o.train_parts ? o.train_parts : "time,ln", parts, sizeof parts);

    if (mkdir_p(o.proj_dir)) return die("cannot create --proj_dir %s: %s", o.proj_dir, strerror(errno));

    /* ---- context, model, adapter */
    rwkvpeft_context_params cp;
    rwkvpeft_context_params_init(&cp);
    cp.backend = o.backend;
    cp.n_threads = (int32_t)o.threads;
    cp.log_level = RWKVPEFT_LOG_WARN;
    rwkvpeft_context *ctx;
    if (rwkvpeft_context_create(&cp, &ctx)) return die("%s", rwkvpeft_last_error());
    rwkvpeft_model_params mp;
    rwkvpeft_model_params_init(&mp);
    mp.grad_cp = (int32_t)o.grad_cp;
    mp.quant = pc.quant; /* applied at the adapter attach below (after PiSSA's SVD) */
    mp.embedding_on_host = (int32_t)o.embedding_on_host;
    rwkvpeft_model *m = NULL;
    uint64_t seed = (uint64_t)(o.random_seed < 0 ? 0 : o.random_seed);
    if (o.load_model && o.load_model[0]) {
        if (rwkvpeft_model_load(ctx, o.load_model, &mp, &m)) return die("%s", rwkvpeft_last_error());
    } else {
        rwkvpeft_model_config mc;
        rwkvpeft_model_config_init(&mc);
        mc.version = version;
        mc.n_layer = (int32_t)o.n_layer;
        mc.n_embd = (int32_t)o.n_embd;
        mc.dim_att = (int32_t)o.dim_att;
        mc.dim_ffn = (int32_t)o.dim_ffn;
        mc.head_size = (int32_t)o.head_size_a;
        mc.vocab_size = (int32_t)(o.vocab_size > 0 ? o.vocab_size : 65536);
        if (rwkvpeft_model_init(ctx, &mc, &mp, seed, &m)) return die("%s", rwkvpeft_last_error());
        char init_path[1100];
        snprintf(init_path, sizeof init_path, "%s/rwkv-init.pth", o.proj_dir);
        if (rwkvpeft_model_save(m, init_path, RWKVPEFT_FORMAT_PTH, RWKVPEFT_DTYPE_BF16))
            return die("%s", rwkvpeft_model_last_error(m));
    }
    rwkvpeft_model_info info;
    info.struct_size = sizeof info;
    rwkvpeft_model_get_info(m, &info);
    if (o.load_model && o.load_model[0]) {
        /* sizes come from the checkpoint; flags that disagree are an error, not ignored */
        if (o.vocab_size > 0 && o.vocab_size != info.vocab_size)
            return die("--vocab_size %ld disagrees with %s (vocab %d)", o.vocab_size, o.load_model, info.vocab_size);
        int explicit_layer = 0, explicit_embd = 0;
        for (int i = 1; i < argc; i++) {
            if (strstr(argv[i], "--n_layer")) explicit_layer = 1;
            if (strstr(argv[i], "--n_embd")) explicit_embd = 1;
        }
        if (explicit_layer && o.n_layer != info.n_layer)
            return die("--n_layer %ld disagrees with %s (%d layers)", o.n_layer, o.load_model, info.n_layer);
        if (explicit_embd && o.n_embd != info.n_embd)
            return die("--n_embd %ld disagrees with %s (n_embd %d)", o.n_embd, o.load_model, info.n_embd);
    }
    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    peft_cli_apply(&pc, &ap);
    ap.train_parts = parts;
    ap.full_finetune = ap.method == RWKVPEFT_PEFT_NONE && !o.train_parts;
    ap.seed = seed ^ 0x5eedull;
    /* PiSSA's init file (spec §3.3). Our SVD is deterministic, so a fresh run computes it and
     * writes <proj_dir>/init_pissa.pth; an existing file there is kept when it is the same
     * init and refused when it belongs to another run (the reference always aborts, §9.10).
     * Resuming (pissa_load, or --resume) reads the init instead: pissa_init, else the file
     * in proj_dir. */
    char pissa_file[1100] = "", pissa_path[1100];
    snprintf(pissa_path, sizeof pissa_path, "%s/init_pissa.pth", o.proj_dir);
    if (ap.method == RWKVPEFT_PEFT_PISSA) {
        if (pc.pissa_init[0]) {
            snprintf(pissa_file, sizeof pissa_file, "%s", pc.pissa_init);
        } else if (pc.load[0] || o.resume) {
            if (access(pissa_path, R_OK))
                return die("resuming a PiSSA adapter needs its init file: give pissa_init in --pissa_config (%s is missing)",
                           pissa_path);
            snprintf(pissa_file, sizeof pissa_file, "%s", pissa_path);
        }
        ap.pissa_init = pissa_file[0] ? pissa_file : NULL;
    }
    if (rwkvpeft_adapter_attach(m, &ap)) return die("%s", rwkvpeft_model_last_error(m));
    if (ap.method == RWKVPEFT_PEFT_PISSA && !pissa_file[0]) {
        if (access(pissa_path, F_OK) == 0) {
            if (rwkvpeft_pissa_check_init(m, pissa_path))
                return die("%s exists and holds another PiSSA init (%s): to continue that run pass it as pissa_init "
                           "with pissa_load, otherwise use another --proj_dir",
                           pissa_path, rwkvpeft_model_last_error(m));
        } else if (rwkvpeft_pissa_save_init(m, pissa_path, RWKVPEFT_FORMAT_PTH)) {
            return die("%s", rwkvpeft_model_last_error(m));
        }
        snprintf(pissa_file, sizeof pissa_file, "%s", pissa_path);
    }
    if (pc.load[0] && rwkvpeft_adapter_load(m, pc.load)) return die("%s", rwkvpeft_model_last_error(m));
    long epoch_first = 0;
    char resume_state[1100] = "";
    if (o.resume) {
        if (rwkvpeft_adapter_load(m, o.resume)) return die("%s", rwkvpeft_model_last_error(m));
        char rj[1100];
        snprintf(rj, sizeof rj, "%s.resume.json", o.resume);
        FILE *f = fopen(rj, "r");
        if (!f) return die("--resume: cannot read %s (written next to every adapter this tool saves)", rj);
        char buf[512] = "";
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        buf[got] = 0;
        fclose(f);
        cJSON *j = cJSON_Parse(buf);
        cJSON *e = j ? cJSON_GetObjectItem(j, "next_epoch") : NULL;
        if (!e || !cJSON_IsNumber(e)) return die("--resume: %s is malformed", rj);
        epoch_first = (long)e->valuedouble;
        cJSON_Delete(j);
        snprintf(resume_state, sizeof resume_state, "%s.state.safetensors", o.resume);
    }

    /* ---- data */
    rwkvpeft_tokenizer *tok = NULL;
    if (o.vocab && rwkvpeft_tokenizer_load(o.vocab, &tok)) return die("%s", rwkvpeft_last_error());
    if (o.sample_prompt && !tok) return die("--sample_prompt needs --vocab (the World vocabulary file)");
    rwkvpeft_sampler_params sp;
    rwkvpeft_sampler_params_init(&sp);
    sp.data_file = o.data_file;
    sp.data_type = o.data_type;
    sp.vocab_path = o.vocab;
    sp.tokenizer = tok;
    sp.dataload = o.dataload;
    sp.loss_mask = o.loss_mask;
    sp.mask_id = o.mask_id;
    sp.sft_fields = o.sft_field;
    sp.ctx_len = (int32_t)o.ctx_len;
    sp.micro_bsz = (int32_t)o.micro_bsz;
    sp.epoch_steps = o.epoch_steps;
    sp.data_shuffle = (int32_t)o.data_shuffle;
    sp.seed = seed;
    sp.my_pile_stage = (int32_t)o.my_pile_stage;
    sp.magic_prime = o.magic_prime;
    sp.my_pile_shift = o.my_pile_shift;
    rwkvpeft_sampler *smp;
    if (rwkvpeft_sampler_create(&sp, &smp)) return die("%s", rwkvpeft_last_error());

    /* ---- trainer */
    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    tp.lr_init = (float)o.lr_init;
    tp.lr_final = (float)o.lr_final;
    tp.lr_schedule = lr_sched;
    tp.total_steps = o.epoch_count * o.epoch_steps / o.accumulate_grad_batches;
    tp.warmup_steps = (int32_t)o.warmup_steps;
    tp.beta1 = (float)o.beta1;
    tp.beta2 = (float)o.beta2;
    tp.adam_eps = (float)o.adam_eps;
    tp.weight_decay = (float)o.weight_decay;
    tp.accumulate_grad_batches = (int32_t)o.accumulate_grad_batches;
    tp.layerwise_lr = (int32_t)o.layerwise_lr;
    tp.optimizer = optimizer;
    if (!strcmp(o.train_type, "infctx")) {
        if (o.chunk_ctx < 1) return die("--chunk_ctx must be >= 1");
        const char *mode = o.infctx_grad ? o.infctx_grad : "full";
        if (strcmp(mode, "full") && strcmp(mode, "truncated")) return die("--infctx_grad must be full or truncated");
        tp.chunk_ctx = (int32_t)o.chunk_ctx;
        tp.infctx_full = !strcmp(mode, "full");
    } else if (o.infctx_grad) {
        return die("--infctx_grad needs --train_type infctx");
    }
    rwkvpeft_trainer *tr;
    if (rwkvpeft_trainer_create(m, &tp, &tr)) return die("%s", rwkvpeft_last_error());
    if (resume_state[0] && rwkvpeft_trainer_load_state(tr, resume_state)) return die("%s", rwkvpeft_trainer_last_error(tr));

    rwkvpeft_model_get_info(m, &info);
    fprintf(stderr,
            "rwkvpeft-train: backend %s | RWKV-%d L%d C%d vocab %d | %s%s%s | trainable %.3fM of %.1fM | ctx %ld x bsz %ld | "
            "epochs %ld-%ld x %ld steps\n",
            rwkvpeft_context_backend(ctx), info.version, info.n_layer, info.n_embd, info.vocab_size,
            ap.method != RWKVPEFT_PEFT_NONE ? method_title(ap.method) : (ap.full_finetune ? "full fine-tune" : "train_parts"),
            pc.quant ? " | quant " : "", pc.quant ? peft_quant_name(pc.quant) : "", info.n_trainable / 1e6, info.n_params / 1e6, o.ctx_len, o.micro_bsz, epoch_first, o.epoch_count - 1,
            o.epoch_steps);
    if (o.sample_prompt) show_sample(m, tok, &o, "sample before training");

    char logpath[1100], txtlog[1100];
    if (o.log_jsonl)
        snprintf(logpath, sizeof logpath, "%s", o.log_jsonl);
    else
        snprintf(logpath, sizeof logpath, "%s/train_log.jsonl", o.proj_dir);
    snprintf(txtlog, sizeof txtlog, "%s/train_log.txt", o.proj_dir);
    FILE *jl = fopen(logpath, o.resume ? "a" : "w"), *tl = fopen(txtlog, "a");
    if (!jl || !tl) return die("cannot write logs in %s", o.proj_dir);
    time_t wall = time(NULL);
    fprintf(tl, "NEW RUN %s", ctime(&wall));
    for (int i = 1; i < argc; i++) fprintf(tl, "%s%s", argv[i], i + 1 < argc ? " " : "\n");
    fflush(tl);

    size_t cap = (size_t)(o.ctx_len * o.micro_bsz);
    int32_t *in = malloc(sizeof(int32_t) * cap), *tg = malloc(sizeof(int32_t) * cap);
    float *mask = malloc(sizeof(float) * cap);
    int tty = isatty(2) && !o.quiet;
    double t0 = now_s(), last_print = 0;
    int64_t total_micro = (o.epoch_count - epoch_first) * o.epoch_steps, done_micro = 0, tokens_run = 0;
    int rc = 0, stop = 0;
    for (long ep = epoch_first; ep < o.epoch_count && !stop; ep++) {
        /* each epoch starts at its own sampler position (the sampler may have skipped past
         * the end of the previous one over batches without targets) */
        if (rwkvpeft_sampler_set_position(smp, ep, 0)) {
            rc = die("%s", rwkvpeft_sampler_last_error(smp));
            break;
        }
        double ep_loss = 0, win_loss = 0;
        int64_t ep_n = 0, win_n = 0;
        double lr = 0;
        for (long s = 0; s < o.epoch_steps && !stop; s++) {
            int32_t T;
            if (rwkvpeft_sampler_next(smp, in, tg, mask, &T)) {
                rc = die("%s", rwkvpeft_sampler_last_error(smp));
                stop = 1;
                break;
            }
            rwkvpeft_batch b;
            rwkvpeft_batch_init(&b);
            b.batch_size = (int32_t)o.micro_bsz;
            b.seq_len = T;
            b.inputs = in;
            b.targets = tg;
            b.loss_mask = mask;
            rwkvpeft_step_result r;
            r.struct_size = sizeof r;
            if (rwkvpeft_train_step(tr, &b, &r)) {
                rc = die("step failed (epoch %ld, step %ld): %s", ep, s, rwkvpeft_trainer_last_error(tr));
                stop = 1;
                break;
            }
            done_micro++;
            tokens_run += (int64_t)o.micro_bsz * T;
            ep_loss += r.loss;
            ep_n++;
            win_loss += r.loss;
            win_n++;
            lr = r.lr;
            double el = now_s() - t0, tps = tokens_run / (el > 0 ? el : 1e-9);
            if (r.optimizer_step_taken) {
                fprintf(jl,
                        "{\"step\":%lld,\"epoch\":%ld,\"loss\":%.6f,\"avg_loss\":%.6f,\"lr\":%.8g,\"grad_norm\":%.6g,"
                        "\"tokens\":%lld,\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f}\n",
                        (long long)r.step, ep, win_loss / win_n, ep_loss / ep_n, r.lr, r.grad_norm, (long long)r.tokens,
                        tps, el);
                win_loss = 0;
                win_n = 0;
                if (o.max_steps && r.step >= o.max_steps) stop = 1;
            }
            if (!o.quiet && (el - last_print > (tty ? 0.2 : 10.0) || s + 1 == o.epoch_steps)) {
                char eta[32];
                fmt_hms(eta, sizeof eta, el / done_micro * (total_micro - done_micro));
                fprintf(stderr, "%sepoch %ld/%ld step %ld/%ld | loss %.4f avg %.4f | lr %.3g | %.0f tok/s | ETA %s%s",
                        tty ? "\r" : "", ep, o.epoch_count - 1, s + 1, o.epoch_steps, r.loss, ep_loss / ep_n, r.lr, tps,
                        eta, tty ? "   " : "\n");
                last_print = el;
            }
        }
        if (tty) fprintf(stderr, "\n");
        fflush(jl);
        if (rc) break;
        double mean = ep_n ? ep_loss / ep_n : 0;
        wall = time(NULL);
        char ts[64];
        strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime(&wall));
        fprintf(tl, "%ld %.6f %.4f %.8f %s %ld\n", o.epoch_begin + ep, mean, exp(mean), lr, ts, ep);
        fflush(tl);
        int last = ep + 1 == o.epoch_count || stop;
        if (ep % o.epoch_save == 0 || last) {
            char path[1100], side[1200];
            snprintf(path, sizeof path, "%s/rwkv-%ld.%s", o.proj_dir, o.epoch_begin + ep, use_st ? "safetensors" : "pth");
            if (rwkvpeft_save_adapter(m, path, RWKVPEFT_FORMAT_AUTO, adtype)) {
                rc = die("%s", rwkvpeft_model_last_error(m));
                break;
            }
            snprintf(side, sizeof side, "%s.state.safetensors", path);
            if (rwkvpeft_trainer_save_state(tr, side)) {
                rc = die("%s", rwkvpeft_trainer_last_error(tr));
                break;
            }
            snprintf(side, sizeof side, "%s.resume.json", path);
            FILE *f = fopen(side, "w");
            if (!f) {
                rc = die("cannot write %s", side);
                break;
            }
            fprintf(f, "{\"next_epoch\": %ld, \"adapter_dtype\": \"%s\"}\n", ep + 1,
                    adtype == RWKVPEFT_DTYPE_F32 ? "fp32" : "bf16");
            fclose(f);
            char abs_init[4096] = "", cwd[2048];
            if (pissa_file[0] == '/' || (pissa_file[0] && !getcwd(cwd, sizeof cwd)))
                snprintf(abs_init, sizeof abs_init, "%s", pissa_file);
            else if (pissa_file[0])
                snprintf(abs_init, sizeof abs_init, "%s/%s", cwd, pissa_file);
            if (peft_sidecar_write(path, &pc, parts, abs_init[0] ? abs_init : NULL)) {
                rc = die("cannot write %s.adapter.json", path);
                break;
            }
            fprintf(stderr, "rwkvpeft-train: saved %s (epoch %ld, mean loss %.4f)\n", path, ep, mean);
        }
    }
    if (!rc && o.sample_prompt) show_sample(m, tok, &o, "sample after training");
    fclose(jl);
    fclose(tl);
    free(in);
    free(tg);
    free(mask);
    rwkvpeft_trainer_free(tr);
    rwkvpeft_sampler_free(smp);
    rwkvpeft_tokenizer_free(tok);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
    return rc;
}
