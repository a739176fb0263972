/* minimal.c — the smallest complete use of librwkvpeft: create a tiny RWKV-6, attach LoRA,
 * train a few steps on a toy sequence, evaluate, generate, and save the adapter.
 *   build/minimal [adapter-output.pth]
 */
#include <stdio.h>
#include <stdlib.h>

#include "rwkvpeft.h"

#define CHECK(call)                                                                   \
    do {                                                                              \
        rwkvpeft_status st_ = (call);                                                 \
        if (st_ != RWKVPEFT_OK) {                                                     \
            fprintf(stderr, "%s failed: %s (%s)\n", #call, rwkvpeft_status_string(st_), \
                    rwkvpeft_last_error());                                           \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

int main(int argc, char **argv) {
    const char *out = argc > 1 ? argv[1] : "minimal-adapter.pth";
    printf("librwkvpeft %s\n", rwkvpeft_version_string());

    rwkvpeft_context *ctx;
    CHECK(rwkvpeft_context_create(NULL, &ctx));
    printf("backend: %s\n", rwkvpeft_context_backend(ctx));

    rwkvpeft_model_config cfg;
    rwkvpeft_model_config_init(&cfg);
    cfg.n_layer = 2;
    cfg.n_embd = 64;
    cfg.head_size = 32;
    cfg.vocab_size = 64;
    rwkvpeft_model *model;
    CHECK(rwkvpeft_model_init(ctx, &cfg, NULL, 1234, &model));

    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    ap.r = 4;
    ap.alpha = 8;
    ap.dropout = 0;
    CHECK(rwkvpeft_adapter_attach(model, &ap));

    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    tp.lr_init = tp.lr_final = 1e-2f;
    rwkvpeft_trainer *trainer;
    CHECK(rwkvpeft_trainer_create(model, &tp, &trainer));

    /* a toy batch: the target of every token is the next id */
    enum { B = 2, T = 16 };
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) {
        in[i] = (i * 3) % 63;
        tg[i] = in[i] + 1;
    }
    rwkvpeft_batch batch;
    rwkvpeft_batch_init(&batch);
    batch.batch_size = B;
    batch.seq_len = T;
    batch.inputs = in;
    batch.targets = tg;
    for (int step = 0; step < 30; step++) {
        rwkvpeft_step_result r;
        r.struct_size = sizeof r;
        CHECK(rwkvpeft_train_step(trainer, &batch, &r));
        if (step % 5 == 0 || step == 29) printf("step %2d  loss %.4f  grad-norm %.3f\n", step, r.loss, r.grad_norm);
    }
    rwkvpeft_eval_result ev;
    ev.struct_size = sizeof ev;
    CHECK(rwkvpeft_evaluate(model, &batch, &ev));
    printf("evaluation loss %.4f over %.0f tokens\n", ev.loss, ev.n_tokens);

    int32_t prompt[1] = {3}, gen[8];
    size_t n_gen = 0;
    rwkvpeft_generate_params gp;
    rwkvpeft_generate_params_init(&gp);
    gp.temperature = 0; /* greedy */
    gp.max_new_tokens = 8;
    gp.stop_token = -1;
    CHECK(rwkvpeft_generate(model, prompt, 1, &gp, gen, 8, &n_gen));
    printf("greedy continuation of 3:");
    for (size_t i = 0; i < n_gen; i++) printf(" %d", gen[i]);
    printf("\n");

    CHECK(rwkvpeft_save_adapter(model, out, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_BF16));
    printf("adapter saved to %s\n", out);

    rwkvpeft_trainer_free(trainer);
    rwkvpeft_model_free(model);
    rwkvpeft_context_free(ctx);
    return 0;
}
