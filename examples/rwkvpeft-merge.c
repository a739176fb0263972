/* rwkvpeft-merge — fold an adapter into its base model, as RWKV-PEFT's merge scripts do
 * (merge.py --type lora|pissa, merge_bone.py / merge_disha.py, merge_state.py), writing a
 * plain checkpoint that torch.load, RWKV runtimes and rwkvpeft-train/-eval accept.
 *
 *   rwkvpeft-merge --base rwkv6-1b6.pth --lora out/rwkv-4.pth --output merged.pth
 *                  [--type auto|lora|pissa|bone|bat|disha|state|none] [--lora_alpha 32]
 *                  [--lora_init out/init_pissa.pth] [--dtype bf16|fp32|fp16]
 *                  [--quant none|nf4|fp4|4bit|int8|fp8]
 *
 * The adapter's method, LoRA alpha and PiSSA init file are read from the sidecar
 * "<adapter>.adapter.json" that rwkvpeft-train writes; flags override it. Without a sidecar
 * a LoRA merge needs --lora_alpha: the reference's merge.py default (16) silently
 * mis-scales adapters trained with another alpha (spec §9.11), so there is no default.
 * --quant (default: the sidecar's "quant", else none) merges an adapter trained on a
 * quantized base: every block linear's base weight becomes dequant(quant(W)) (PiSSA:
 * dequant(quant(W − B₀A₀))) before the adapter is folded in, as merge.py --quant.
 * Uses only the public API.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peft_flags.h"
#include "rwkvpeft.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: rwkvpeft-merge --base BASE --lora ADAPTER --output OUT [options]\n"
            "  --base, --base_model PATH       base checkpoint (.pth or .safetensors)\n"
            "  --lora, --adapter, --lora_checkpoint, --peft_checkpoint, --state_checkpoint PATH\n"
            "                                  adapter file (rwkv-N.pth)\n"
            "  --output PATH                   merged checkpoint (.safetensors suffix: safetensors, else .pth)\n"
            "  --type T                        auto (default: sidecar, else from the tensors), lora, pissa, bone,\n"
            "                                  bat, disha (bone or bat by the tensors' rank), state, none\n"
            "  --lora_alpha A                  LoRA alpha used in training (required for lora without a sidecar)\n"
            "  --lora_init PATH                PiSSA init file (init_pissa.pth; default from the sidecar)\n"
            "  --dtype bf16|fp32|fp16          stored precision of the output; default bf16\n"
            "  --quant Q                       none, nf4, fp4, 4bit (= fp4), int8, fp8: the adapter was trained on\n"
            "                                  a quantized base (default: the sidecar's quant, else none)\n"
            "  --device X                      accepted and ignored (the merge runs on the CPU)\n");
}

static int die(const char *fmt, const char *a) {
    fprintf(stderr, "rwkvpeft-merge: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *base = NULL, *adapter = NULL, *output = NULL, *type = "auto", *init = NULL, *dtype = "bf16", *quant = NULL;
    double alpha = NAN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return die("%s needs a value", a);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--base") || !strcmp(a, "--base_model")) base = v;
        else if (!strcmp(a, "--lora") || !strcmp(a, "--adapter") || !strcmp(a, "--lora_checkpoint") ||
                 !strcmp(a, "--peft_checkpoint") || !strcmp(a, "--state_checkpoint"))
            adapter = v;
        else if (!strcmp(a, "--output")) output = v;
        else if (!strcmp(a, "--type")) type = v;
        else if (!strcmp(a, "--lora_alpha")) {
            char *end;
            alpha = strtod(v, &end);
            if (*end || !isfinite(alpha)) return die("--lora_alpha expects a number, got %s", v);
        } else if (!strcmp(a, "--lora_init")) init = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--quant")) {
            if (peft_quant_parse(v) < 0) return die("--quant must be none, nf4, fp4, 4bit, int8 or fp8, got %s", v);
            quant = v;
        } else if (!strcmp(a, "--device")) {
            /* accepted: the merge runs on the host */
        } else {
            usage(stderr);
            return die("unknown flag %s", a);
        }
    }
    if (!base || !adapter || !output) {
        usage(stderr);
        return die("%s", "--base, --lora (the adapter) and --output are required");
    }
    rwkvpeft_merge_params mp;
    rwkvpeft_merge_params_init(&mp);
    mp.base_path = base;
    mp.adapter_path = adapter;
    mp.output_path = output;
    if (!strcmp(dtype, "bf16")) mp.dtype = RWKVPEFT_DTYPE_BF16;
    else if (!strcmp(dtype, "fp32")) mp.dtype = RWKVPEFT_DTYPE_F32;
    else if (!strcmp(dtype, "fp16")) mp.dtype = RWKVPEFT_DTYPE_F16;
    else return die("--dtype must be bf16, fp32 or fp16, got %s", dtype);

    /* defaults from the sidecar the trainer wrote */
    peft_cli side;
    peft_cli_init(&side);
    side.alpha = NAN;
    int have_side = peft_sidecar_read(adapter, &side, NULL, 0);
    if (have_side < 0) fprintf(stderr, "rwkvpeft-merge: warning: %s.adapter.json is malformed; ignored\n", adapter);
    if (!strcmp(type, "auto")) {
        mp.method = have_side > 0 ? side.method : -1;
    } else if (!strcmp(type, "lora")) mp.method = RWKVPEFT_PEFT_LORA;
    else if (!strcmp(type, "pissa")) mp.method = RWKVPEFT_PEFT_PISSA;
    else if (!strcmp(type, "bone")) mp.method = RWKVPEFT_PEFT_BONE;
    else if (!strcmp(type, "bat")) mp.method = RWKVPEFT_PEFT_BAT;
    else if (!strcmp(type, "disha")) mp.method = -1; /* bone or bat by the tensors' rank */
    else if (!strcmp(type, "state")) mp.method = RWKVPEFT_PEFT_STATE;
    else if (!strcmp(type, "none")) mp.method = RWKVPEFT_PEFT_NONE;
    else return die("--type must be auto, lora, pissa, bone, bat, disha, state or none, got %s", type);
    if (isnan(alpha) && have_side > 0 && side.method == RWKVPEFT_PEFT_LORA && isfinite(side.alpha)) {
        alpha = side.alpha;
        fprintf(stderr, "rwkvpeft-merge: lora_alpha %g from %s.adapter.json\n", alpha, adapter);
    }
    if (!init && have_side > 0 && side.pissa_init[0]) {
        init = side.pissa_init;
        fprintf(stderr, "rwkvpeft-merge: PiSSA init %s from %s.adapter.json\n", init, adapter);
    }
    if (mp.method == RWKVPEFT_PEFT_LORA && isnan(alpha))
        return die("%s", "--lora_alpha is required for a LoRA merge (the alpha used in training; scaling = alpha / r). "
                         "The reference's default of 16 is not assumed.");
    mp.lora_alpha = (float)alpha;
    mp.pissa_init = init;
    mp.quant = peft_quant_parse(quant);
    if (!quant && have_side > 0 && side.quant > 0) {
        mp.quant = side.quant;
        fprintf(stderr, "rwkvpeft-merge: quant %s from %s.adapter.json\n", peft_quant_name(side.quant), adapter);
    }
    if (rwkvpeft_merge_files(&mp)) return die("%s", rwkvpeft_last_error());
    fprintf(stderr, "rwkvpeft-merge: wrote %s (%s%s%s)\n", output, dtype, mp.quant ? ", base quantized as " : "",
            mp.quant ? peft_quant_name(mp.quant) : "");
    return 0;
}
