/* parity_dump.c — runs one batch through librwkvpeft and writes logits, loss and every
 * trainable gradient to a safetensors file, for tests/parity/run_parity.py to compare with
 * an independent PyTorch implementation of the spec.
 *
 *   parity_dump --model model.pth --adapter adapter.pth --lora-r R --lora-alpha A
 *               --train-parts "time,ln" --batch batch.safetensors --out out.safetensors
 *               [--backend cpu|cpu64|cuda] [--emb-head 0|1]
 *
 * Gradients include the L2Wrap term (1e-4/(B·T) at each row's argmax); the "loss" tensor is
 * the mean cross-entropy only (L2Wrap does not change the forward value).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "tensorfile.h"

static void die(const char *what) {
    fprintf(stderr, "parity_dump: %s: %s\n", what, rwkvpeft_last_error());
    exit(1);
}

int main(int argc, char **argv) {
    const char *model = NULL, *adapter = NULL, *parts = "time,ln", *batch = NULL, *out = NULL, *backend = "cpu";
    int r = 8, emb_head = 0;
    float alpha = 16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "parity_dump: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--adapter")) adapter = v;
        else if (!strcmp(a, "--lora-r")) r = atoi(v);
        else if (!strcmp(a, "--lora-alpha")) alpha = (float)atof(v);
        else if (!strcmp(a, "--train-parts")) parts = v;
        else if (!strcmp(a, "--batch")) batch = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--emb-head")) emb_head = atoi(v);
        else {
            fprintf(stderr, "parity_dump: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!model || !batch || !out) {
        fprintf(stderr, "usage: parity_dump --model M --batch B --out O [--adapter A] [--lora-r R] [--lora-alpha A] "
                        "[--train-parts P] [--backend cpu|cpu64|cuda]\n");
        return 2;
    }
    rwkvpeft_context_params cp;
    rwkvpeft_context_params_init(&cp);
    cp.backend = backend;
    rwkvpeft_context *ctx;
    if (rwkvpeft_context_create(&cp, &ctx)) die("context");
    rwkvpeft_model *m;
    if (rwkvpeft_model_load(ctx, model, NULL, &m)) die("model");
    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    ap.method = r > 0 ? RWKVPEFT_PEFT_LORA : RWKVPEFT_PEFT_NONE;
    ap.r = r > 0 ? r : 1;
    ap.alpha = alpha;
    ap.dropout = 0;
    ap.train_parts = parts;
    ap.train_emb_head = emb_head;
    if (rwkvpeft_adapter_attach(m, &ap)) die("attach");
    if (adapter && rwkvpeft_adapter_load(m, adapter)) die("adapter");

    rp_err err;
    rp_tensorfile *bf;
    if (rp_tensorfile_open(batch, &bf, &err)) die("batch");
    const rp_named_tensor *ti = rp_tensorfile_find(bf, "inputs"), *tt = rp_tensorfile_find(bf, "targets");
    if (!ti || !tt || ti->dtype != RP_I32 || tt->dtype != RP_I32 || ti->ndim != 2 || tt->ndim != 2 ||
        ti->shape[0] != tt->shape[0] || ti->shape[1] != tt->shape[1]) {
        fprintf(stderr, "parity_dump: %s needs int32 [B,T] tensors \"inputs\" and \"targets\"\n", batch);
        return 1;
    }
    int B = (int)ti->shape[0], T = (int)ti->shape[1];
    int64_t n = (int64_t)B * T;
    int32_t *in = malloc(sizeof(int32_t) * n), *tg = malloc(sizeof(int32_t) * n);
    memcpy(in, ti->data, sizeof(int32_t) * n);
    memcpy(tg, tt->data, sizeof(int32_t) * n);
    rp_tensorfile_close(bf);
    rwkvpeft_batch b;
    rwkvpeft_batch_init(&b);
    b.batch_size = B;
    b.seq_len = T;
    b.inputs = in;
    b.targets = tg;
    float *w = malloc(sizeof(float) * n);
    double wsum;
    if (rp_batch_weights(m, &b, w, &wsum, &err)) die("batch");
    rp_workspace *ws;
    if (rp_workspace_create(m, B, T, 1, &ws) || rp_workspace_set_batch(m, ws, B, T, in, tg, w)) die("workspace");
    rp_backend *be = m->be;
    rp_dtype P_ = be->ops->par_dtype;
    size_t ps = rp_dtype_size(P_);
    void *grads;
    if (be->ops->alloc(be, &grads, (size_t)m->flat_numel * ps) ||
        be->ops->memset_zero(be, grads, (size_t)m->flat_numel * ps))
        die("grads");
    float *logits = malloc(sizeof(float) * (size_t)(n * m->V));
    if (rp_forward_backward(m, ws, grads, 1.0f, (float)(1e-4 / (double)n), 0, logits)) {
        fprintf(stderr, "parity_dump: forward/backward: %s\n", m->err.msg);
        return 1;
    }
    unsigned char lraw[8];
    be->ops->memcpy_d2h(be, lraw, rp_workspace_loss(ws), ps);
    float loss;
    rp_convert_to_f32(&loss, lraw, P_, 1);
    void *gh = malloc((size_t)m->flat_numel * ps);
    float *gf = malloc(sizeof(float) * (size_t)m->flat_numel);
    be->ops->memcpy_d2h(be, gh, grads, (size_t)m->flat_numel * ps);
    rp_convert_to_f32(gf, gh, P_, (size_t)m->flat_numel);

    int cap = 2 + m->n_params * RP_MAX_PARTS, k = 0;
    rp_named_tensor *ts = calloc((size_t)cap, sizeof *ts);
    char (*names)[RP_NAME_MAX + 8] = calloc((size_t)cap, sizeof *names);
    ts[k++] = (rp_named_tensor){"logits", RP_F32, 3, {B, T, m->V}, logits, sizeof(float) * (size_t)(n * m->V)};
    ts[k++] = (rp_named_tensor){"loss", RP_F32, 0, {0}, &loss, sizeof(float)};
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        if (!p->trainable) continue;
        for (int part = 0; part < p->nparts; part++) {
            snprintf(names[k], sizeof names[k], "grad.%s", p->part_names[part]);
            rp_named_tensor *t = &ts[k];
            t->name = names[k];
            t->dtype = RP_F32;
            t->ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) t->shape[d] = p->shape[d];
            t->data = gf + p->flat_off + part * p->part_numel;
            t->nbytes = sizeof(float) * (size_t)p->part_numel;
            k++;
        }
    }
    if (rp_tensorfile_write(out, RP_FILE_SAFETENSORS, ts, k, &err)) die("write");
    printf("parity_dump: backend %s, B=%d T=%d, loss %.8f, %d gradient tensors -> %s\n", rwkvpeft_context_backend(ctx), B,
           T, loss, k - 2, out);
    free(ts);
    free(names);
    free(gh);
    free(gf);
    free(logits);
    free(w);
    free(in);
    free(tg);
    be->ops->free(be, grads);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
    return 0;
}
