// rwkvpeft_consumer — uses the installed librwkvpeft from C++ (find_package(rwkvpeft) and
// rwkvpeft::rwkvpeft): creates a tiny RWKV-6, attaches LoRA, trains a few steps on a toy
// sequence and checks that the loss falls. Exit status 0 when it does.
#include <rwkvpeft.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// Throws with the status text and the library's message when a call fails.
void check(rwkvpeft_status st, const char *what) {
    if (st != RWKVPEFT_OK)
        throw std::runtime_error(std::string(what) + ": " + rwkvpeft_status_string(st) + ": " +
                                 rwkvpeft_last_error());
}

// RAII owners; declaration order = the reverse of the freeing order the library requires.
struct ContextFree { void operator()(rwkvpeft_context *p) const { rwkvpeft_context_free(p); } };
struct ModelFree { void operator()(rwkvpeft_model *p) const { rwkvpeft_model_free(p); } };
struct TrainerFree { void operator()(rwkvpeft_trainer *p) const { rwkvpeft_trainer_free(p); } };
using Context = std::unique_ptr<rwkvpeft_context, ContextFree>;
using Model = std::unique_ptr<rwkvpeft_model, ModelFree>;
using Trainer = std::unique_ptr<rwkvpeft_trainer, TrainerFree>;

int run() {
    std::printf("librwkvpeft %s (header %d, library %u)\n", rwkvpeft_version_string(),
                RWKVPEFT_VERSION_NUMBER, rwkvpeft_version_number());
    if (rwkvpeft_version_number() / 10000 != RWKVPEFT_VERSION_MAJOR)
        throw std::runtime_error("library major version differs from the header's");

    rwkvpeft_context_params cp;
    rwkvpeft_context_params_init(&cp);
    cp.backend = "cpu";
    cp.log_level = RWKVPEFT_LOG_ERROR;
    rwkvpeft_context *raw_ctx = nullptr;
    check(rwkvpeft_context_create(&cp, &raw_ctx), "context");
    Context ctx(raw_ctx);

    rwkvpeft_model_config cfg;
    rwkvpeft_model_config_init(&cfg);
    cfg.n_layer = 2;
    cfg.n_embd = 64;
    cfg.head_size = 32;
    cfg.vocab_size = 64;
    rwkvpeft_model *raw_model = nullptr;
    check(rwkvpeft_model_init(ctx.get(), &cfg, nullptr, 1234, &raw_model), "model");
    Model model(raw_model);

    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    ap.r = 4;
    ap.alpha = 8;
    ap.dropout = 0;
    check(rwkvpeft_adapter_attach(model.get(), &ap), "attach");

    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    tp.lr_init = tp.lr_final = 1e-2f;
    rwkvpeft_trainer *raw_trainer = nullptr;
    check(rwkvpeft_trainer_create(model.get(), &tp, &raw_trainer), "trainer");
    Trainer trainer(raw_trainer);

    const int B = 2, T = 16;
    std::vector<int32_t> in(B * T), tg(B * T);
    for (int i = 0; i < B * T; i++) {
        in[i] = (i * 3) % 63;
        tg[i] = in[i] + 1;
    }
    rwkvpeft_batch batch;
    rwkvpeft_batch_init(&batch);
    batch.batch_size = B;
    batch.seq_len = T;
    batch.inputs = in.data();
    batch.targets = tg.data();

    double first = 0, last = 0;
    for (int step = 0; step < 15; step++) {
        rwkvpeft_step_result r;
        r.struct_size = sizeof r;
        check(rwkvpeft_train_step(trainer.get(), &batch, &r), "train step");
        if (step == 0) first = r.loss;
        last = r.loss;
        std::printf("step %2d  loss %.4f\n", step, r.loss);
    }
    // an error path: a token outside the vocabulary is reported, not fatal
    in[0] = 999;
    rwkvpeft_eval_result ev;
    ev.struct_size = sizeof ev;
    if (rwkvpeft_evaluate(model.get(), &batch, &ev) != RWKVPEFT_E_INVALID_ARGUMENT)
        throw std::runtime_error("a bad token id was accepted");
    std::printf("bad token id rejected: %s\n", rwkvpeft_last_error());

    if (!(last < 0.5 * first)) {
        std::fprintf(stderr, "the loss did not fall: %.4f -> %.4f\n", first, last);
        return 1;
    }
    std::printf("the loss fell: %.4f -> %.4f\n", first, last);
    return 0;
}

}  // namespace

int main() {
    try {
        return run();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "rwkvpeft_consumer: %s\n", e.what());
        return 1;
    }
}
