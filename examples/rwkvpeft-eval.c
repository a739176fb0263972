/* rwkvpeft-eval — try a model and adapter without merging: validation loss/perplexity on a
 * dataset, and text generation.
 *
 *   rwkvpeft-eval --load_model base.pth [--adapter rwkv-3.pth [--peft lora --lora_config '{...}']]
 *                 [--data_file valid_text_document --ctx_len 1024 --micro_bsz 4 --max_batches N]
 *                 [--vocab rwkv_vocab_v20230424.txt --prompt "text" --max_new_tokens 100
 *                  --temperature 1.0 --top_p 0.85 --seed 0]
 *
 * The adapter's method comes from rwkvpeft-train's sidecar <adapter>.adapter.json when
 * --peft is not given, else from the same flags as rwkvpeft-train (--peft lora|pissa|bone|
 * disha|none, --lora_config, --pissa_config with pissa_init, --bone_config, --disha_config,
 * --train_type state). --quant none|nf4|fp4|4bit|int8|fp8 evaluates with the block linears
 * quantized as in training; default: the sidecar's "quant" (none without a sidecar).
 *
 * Loss: the binidx token stream is cut into consecutive windows of ctx_len+1 tokens (the
 * last partial window is dropped); mean cross-entropy over all predicted tokens, and its
 * exp (perplexity). Uses only the public API.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peft_flags.h"
#include "rwkvpeft.h"

static int die(const char *what, const char *detail) {
    fprintf(stderr, "rwkvpeft-eval: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: rwkvpeft-eval --load_model M [--adapter A [--peft lora|pissa|bone|disha|none --lora_config JSON\n"
               "         --pissa_config JSON --bone_config JSON --disha_config JSON --train_type state]]\n"
               "         [--data_file PREFIX --ctx_len T --micro_bsz B --max_batches N]\n"
               "         [--vocab V --prompt TEXT --max_new_tokens N --temperature X --top_p P --seed S]\n"
               "         [--backend auto|cpu|cuda|hip] [--train_parts \"time,ln\"]\n"
               "         [--quant none|nf4|fp4|4bit|int8|fp8 (default: the adapter sidecar's, else none)]\n");
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *adapter = NULL, *peft = NULL, *lora_config = NULL, *data = NULL, *vocab = NULL,
               *prompt = NULL, *backend = NULL, *train_parts = "time,ln", *pissa_config = NULL, *bone_config = NULL,
               *disha_config = NULL, *train_type = NULL, *quant = NULL;
    long ctx_len = 1024, micro_bsz = 4, max_batches = 0, max_new = 100;
    double temperature = 1.0, top_p = 0.85;
    unsigned long long seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return die("missing value for", a);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--load_model")) model_path = v;
        else if (!strcmp(a, "--adapter")) adapter = v;
        else if (!strcmp(a, "--peft")) peft = v;
        else if (!strcmp(a, "--lora_config")) lora_config = v;
        else if (!strcmp(a, "--pissa_config")) pissa_config = v;
        else if (!strcmp(a, "--bone_config")) bone_config = v;
        else if (!strcmp(a, "--disha_config")) disha_config = v;
        else if (!strcmp(a, "--train_type")) train_type = v;
        else if (!strcmp(a, "--train_parts")) train_parts = v;
        else if (!strcmp(a, "--data_file")) data = v;
        else if (!strcmp(a, "--ctx_len")) ctx_len = atol(v);
        else if (!strcmp(a, "--micro_bsz")) micro_bsz = atol(v);
        else if (!strcmp(a, "--max_batches")) max_batches = atol(v);
        else if (!strcmp(a, "--vocab")) vocab = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--max_new_tokens")) max_new = atol(v);
        else if (!strcmp(a, "--temperature")) temperature = atof(v);
        else if (!strcmp(a, "--top_p")) top_p = atof(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--quant")) quant = v;
        else {
            usage(stderr);
            return die("unknown flag", a);
        }
    }
    if (!model_path) return die("--load_model is required", NULL);
    if (!data && !prompt) return die("nothing to do: give --data_file and/or --prompt", NULL);
    if (prompt && !vocab) return die("--prompt needs --vocab (the World vocabulary file)", NULL);
    if (ctx_len < 1 || micro_bsz < 1 || max_new < 1) return die("ctx_len, micro_bsz and max_new_tokens must be >= 1", NULL);

    rwkvpeft_context_params cp;
    rwkvpeft_context_params_init(&cp);
    cp.backend = backend;
    rwkvpeft_context *ctx;
    if (rwkvpeft_context_create(&cp, &ctx)) return die(rwkvpeft_last_error(), NULL);
    /* the quantization the adapter was trained with: --quant, else its sidecar's */
    rwkvpeft_model_params mp;
    rwkvpeft_model_params_init(&mp);
    mp.quant = peft_quant_parse(quant);
    if (mp.quant < 0) return die("--quant must be none, nf4, fp4, 4bit, int8 or fp8", quant);
    if (!quant && adapter) {
        peft_cli sc;
        peft_cli_init(&sc);
        if (peft_sidecar_read(adapter, &sc, NULL, 0) > 0 && sc.quant > 0) {
            mp.quant = sc.quant;
            fprintf(stderr, "rwkvpeft-eval: quant %s from %s.adapter.json\n", peft_quant_name(sc.quant), adapter);
        }
    }
    rwkvpeft_model *m;
    if (rwkvpeft_model_load(ctx, model_path, &mp, &m)) return die(rwkvpeft_last_error(), NULL);
    if (adapter) {
        rwkvpeft_adapter_params ap;
        rwkvpeft_adapter_params_init(&ap);
        peft_cli pc;
        peft_cli_init(&pc);
        char side_parts[256] = "", perr[512];
        int side = peft ? 0 : peft_sidecar_read(adapter, &pc, side_parts, sizeof side_parts);
        if (side < 0) return die("malformed sidecar next to the adapter", adapter);
        if (side > 0) {
            if (pc.method == RWKVPEFT_PEFT_NONE && !side_parts[0]) {
                /* a full fine-tune's adapter is a whole model: every tensor overwrites */
                snprintf(side_parts, sizeof side_parts, "time,ln");
            }
            train_parts = side_parts;
        } else {
            pc.peft = peft ? peft : "lora";
            pc.lora_config = lora_config;
            pc.pissa_config = pissa_config;
            pc.bone_config = bone_config;
            pc.disha_config = disha_config;
            pc.train_type = train_type;
            if (peft_cli_resolve(&pc, perr, sizeof perr)) return die(perr, NULL);
        }
        peft_cli_apply(&pc, &ap);
        ap.dropout = 0;
        ap.train_parts = train_parts;
        if (ap.method == RWKVPEFT_PEFT_PISSA && !ap.pissa_init)
            return die("a PiSSA adapter needs its init file: pissa_init in --pissa_config", adapter);
        if (rwkvpeft_adapter_attach(m, &ap) || rwkvpeft_adapter_load(m, adapter))
            return die(rwkvpeft_model_last_error(m), NULL);
    }
    if (data) {
        rwkvpeft_dataset *ds;
        if (rwkvpeft_dataset_open(data, &ds)) return die(rwkvpeft_last_error(), NULL);
        int64_t ntok = rwkvpeft_dataset_num_tokens(ds), nwin = ntok > ctx_len ? (ntok - 1) / ctx_len : 0;
        if (nwin == 0) return die("the dataset is shorter than one window of ctx_len+1 tokens", data);
        size_t cap = (size_t)(micro_bsz * ctx_len);
        int32_t *win = malloc(sizeof(int32_t) * (size_t)(ctx_len + 1)), *in = malloc(sizeof(int32_t) * cap),
                *tg = malloc(sizeof(int32_t) * cap);
        double sum = 0, count = 0;
        int64_t batches = 0;
        for (int64_t w0 = 0; w0 < nwin && (!max_batches || batches < max_batches); w0 += micro_bsz, batches++) {
            int B = (int)(nwin - w0 < micro_bsz ? nwin - w0 : micro_bsz);
            for (int b = 0; b < B; b++) {
                if (rwkvpeft_dataset_read(ds, (w0 + b) * ctx_len, ctx_len + 1, win))
                    return die(rwkvpeft_dataset_last_error(ds), NULL);
                memcpy(in + (size_t)b * ctx_len, win, sizeof(int32_t) * (size_t)ctx_len);
                memcpy(tg + (size_t)b * ctx_len, win + 1, sizeof(int32_t) * (size_t)ctx_len);
            }
            rwkvpeft_batch bt;
            rwkvpeft_batch_init(&bt);
            bt.batch_size = B;
            bt.seq_len = (int32_t)ctx_len;
            bt.inputs = in;
            bt.targets = tg;
            rwkvpeft_eval_result r;
            r.struct_size = sizeof r;
            if (rwkvpeft_evaluate(m, &bt, &r)) return die(rwkvpeft_model_last_error(m), NULL);
            sum += r.loss * r.n_tokens;
            count += r.n_tokens;
            fprintf(stderr, "\rbatch %lld: running loss %.4f", (long long)batches + 1, sum / count);
        }
        fprintf(stderr, "\n");
        printf("eval: %s: %.0f tokens, loss %.6f, perplexity %.4f\n", data, count, sum / count, exp(sum / count));
        free(win);
        free(in);
        free(tg);
        rwkvpeft_dataset_free(ds);
    }
    if (prompt) {
        rwkvpeft_tokenizer *tok;
        if (rwkvpeft_tokenizer_load(vocab, &tok)) return die(rwkvpeft_last_error(), NULL);
        size_t n = 0, cap = strlen(prompt) + 1;
        int32_t *ids = malloc(sizeof(int32_t) * cap), *out = malloc(sizeof(int32_t) * (size_t)max_new);
        if (rwkvpeft_tokenizer_encode(tok, prompt, strlen(prompt), ids, cap, &n) || n == 0)
            return die("cannot encode the prompt", rwkvpeft_last_error());
        rwkvpeft_generate_params gp;
        rwkvpeft_generate_params_init(&gp);
        gp.max_new_tokens = (int32_t)max_new;
        gp.temperature = (float)temperature;
        gp.top_p = (float)top_p;
        gp.seed = seed;
        size_t n_out = 0;
        if (rwkvpeft_generate(m, ids, n, &gp, out, (size_t)max_new, &n_out)) return die(rwkvpeft_model_last_error(m), NULL);
        size_t bytes = 0;
        rwkvpeft_tokenizer_decode(tok, out, n_out, NULL, 0, &bytes);
        char *text = malloc(bytes + 1);
        rwkvpeft_tokenizer_decode(tok, out, n_out, text, bytes, &bytes);
        text[bytes] = 0;
        printf("%s%s\n", prompt, text);
        free(text);
        free(ids);
        free(out);
        rwkvpeft_tokenizer_free(tok);
    }
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
    return 0;
}
