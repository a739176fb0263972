/* model.h — internal structures of a model: named parameters, layers, adapters, and the
 * activation workspace of one forward/backward. */
#ifndef RP_MODEL_H
#define RP_MODEL_H

#include "backend.h"
#include "internal.h"

#define RP_NAME_MAX 96
#define RP_MAX_PARTS 6

typedef enum rp_param_class {
    RP_CLS_MATRIX = 0, /* a large weight matrix: stored in the backend's act dtype */
    RP_CLS_SMALL = 1   /* vectors, low-rank mixers, adapter tensors: stored in par dtype */
} rp_param_class;

/* One named parameter. A "pack" stores several checkpoint tensors of one shape
 * contiguously (e.g. att.time_maa_w/k/v/r/g as [5,C]) because one op consumes them
 * together; I/O still sees the separate names. */
typedef struct rp_param {
    char name[RP_NAME_MAX]; /* name of the first part */
    int nparts;
    char part_names[RP_MAX_PARTS][RP_NAME_MAX];
    int ndim;          /* shape of one part, as stored in checkpoints */
    int64_t shape[4];
    int64_t part_numel;
    int64_t numel;     /* all parts */
    int cls;
    void *data;        /* device buffer (act dtype for MATRIX, par dtype for SMALL) */
    int owns_data;     /* data is its own allocation (else a view into the flat buffer) */
    int trainable;
    int64_t flat_off;  /* element offset in the trainable flat buffer, or -1 */
    float lr_scale;
    float weight_decay;
    int is_adapter;    /* created by an adapter (not part of the base checkpoint) */
    int optional;      /* may be absent from a checkpoint (e.g. att.time_state) */
    /* quantized storage (lib/qlinear.c; data is then NULL): qfmt is an rp_quant_format,
     * 0 when the parameter is dense */
    int qfmt;
    int qblock;        /* absmax block size (elements) */
    void *qdata;       /* device: packed codes, q_bytes */
    void *qabsmax;     /* device: float32 [q_nblocks] scales, or NULL (fp8) */
    size_t q_bytes;
    int64_t q_nblocks;
    int q_in_slab;     /* qdata/qabsmax are carved from the model's quantization slabs */
    void *host;        /* A-typed copy in host memory when the tensor lives there (data NULL):
                        * a frozen emb.weight under rwkvpeft_model_params.embedding_on_host */
} rp_param;

/* A device slab quantized tensors are carved from (lib/qlinear.c). */
struct rp_qslab {
    char *base;
    size_t size, used;
};

/* Kinds of the D adapter tensor of a linear (docs/peft.md). */
enum { RP_DMODE_NONE = 0, RP_DMODE_BONE = 1 /* [r,out], row-shared */, RP_DMODE_BAT = 2 /* [in/r,r,r] */ };

/* A linear layer y = x·Wᵀ (+ one adapter branch: LoRA/PiSSA through A,B, Bone/Bat
 * through D). */
typedef struct rp_linear {
    rp_param *W; /* [out,in] */
    rp_param *A; /* LoRA/PiSSA [r,in] or NULL */
    rp_param *B; /* LoRA/PiSSA [out,r] */
    rp_param *D; /* Bone [r,out] or Bat [in/r,r,r], or NULL */
    int d_mode;  /* RP_DMODE_* */
    int in, out, r;
    float scale, dropout;
    int id; /* unique per model: seeds the dropout masks */
    float *pissa_A0, *pissa_B0; /* host copies of the PiSSA init (for init_pissa.pth) */
} rp_linear;

enum { RP_LIN_ATT_R, RP_LIN_ATT_K, RP_LIN_ATT_V, RP_LIN_ATT_G, RP_LIN_ATT_O, RP_LIN_FFN_K, RP_LIN_FFN_R, RP_LIN_FFN_V, RP_LIN_COUNT };

/* One block's parameters. Which fields exist depends on the version (NULL otherwise);
 * the linears that a version lacks have lin[i].W == NULL (RWKV-7: att.gate, ffn.receptance). */
typedef struct rp_layer {
    rp_param *ln0_w, *ln0_b; /* layer 0 only */
    rp_param *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    /* RWKV-6 time mix */
    rp_param *maa_x;         /* [1,1,C] */
    rp_param *maa_wkvrg;     /* pack of 5 [1,1,C] */
    rp_param *maa_w1;        /* [C,5Dm] */
    rp_param *maa_w2;        /* [5,Dm,C] */
    rp_param *decay;         /* v6 [1,1,A]; v5 [H,N] (static decay) */
    rp_param *decay_w1;      /* [C,Dd] */
    rp_param *decay_w2;      /* [Dd,A] */
    rp_param *faaaa;         /* v5/v6 [H,N] */
    /* RWKV-5 time mix */
    rp_param *mix_kvrg;      /* pack of 4 [1,1,C]: time_mix_k, _v, _r, _g (weight of the current token) */
    /* RWKV-7 time mix */
    rp_param *x_rwkvag;      /* pack of 6 [1,1,C]: x_r, x_w, x_k, x_v, x_a, x_g */
    rp_param *w0, *w1, *w2;  /* [1,1,C], [C,Dw], [Dw,C] */
    rp_param *a0, *a1, *a2;  /* [1,1,C], [C,Da], [Da,C] */
    rp_param *v0, *v1, *v2;  /* [1,1,C], [C,Dv], [Dv,C]; NULL in layer 0 */
    rp_param *g1, *g2;       /* [C,Dg], [Dg,C] */
    rp_param *k_k, *k_a;     /* [1,1,C] */
    rp_param *r_k;           /* [H,N] */
    /* all versions */
    rp_param *lnx_w, *lnx_b; /* [A] */
    rp_param *ffn_mix;       /* v6 pack of 2 (time_maa_k, _r); v5 pack of 2 (time_mix_k, _r); v7 x_k */
    rp_param *time_state;    /* [H,N,N] or NULL */
    rp_linear lin[RP_LIN_COUNT];
    int64_t flat_lo, flat_hi; /* this block's trainable tensors: elements [flat_lo, flat_hi) of the flat buffer */
} rp_layer;

/* The architecture of a model: version and every size (spec §1.2, §1.3). */
typedef struct rp_arch {
    int version; /* 5, 6 or 7 */
    int n_layer, C, A, F, H, N, V;
    int Dm, Dd;         /* v6 low-rank widths */
    int Dw, Da, Dv, Dg; /* v7 low-rank widths */
} rp_arch;

struct rwkvpeft_context {
    const rp_backend_ops *ops;
    rp_backend *be;
    rp_err err;
    int log_level;
    rwkvpeft_log_fn log_fn;
    void *log_user;
    int n_models;
    int profiled; /* ops wrapped by lib/profile.c (RWKVPEFT_PROFILE=1) */
};

/* profile.c */
const rp_backend_ops *rp_profile_wrap(const rp_backend_ops *ops);
void rp_profile_report(const struct rwkvpeft_context *ctx);

typedef struct rp_adapter_cfg {
    int attached;
    int method;
    int r;
    float alpha, dropout;
    char train_parts[256];
    int full_finetune;
    int train_emb_head;
    uint64_t seed;
    int svd_niter;         /* PiSSA */
    char key_name[16];     /* Bone/Bat tensor suffix ("bone" or "disha") */
    int n_base_params;     /* parameters before the attach (adapter tensors follow) */
    int added_state;       /* the attach created the time_state tensors */
} rp_adapter_cfg;

struct rwkvpeft_model {
    struct rwkvpeft_context *ctx;
    rp_backend *be;
    rp_err err;

    int version;
    int n_layer, C, A, F, H, N, V, Dm, Dd;
    int Dw, Da, Dv, Dg; /* RWKV-7 low-rank widths */
    int grad_cp;
    int from_file;
    int quant;         /* rwkvpeft_quant_type requested for the target linears */
    int quant_pending; /* they are still to be quantized (at attach or the first forward) */
    int emb_on_host;   /* rwkvpeft_model_params.embedding_on_host */
    void *qcode;       /* device float32 [256]: the int8 dynamic code table, once per model */
    /* device slabs the quantized codes and scales are carved from (lib/qlinear.c): one
     * allocation per few hundred tensors instead of two each, so the driver's allocation
     * granularity is paid per slab, not per tensor */
    struct rp_qslab *qslabs;
    int n_qslabs, cap_qslabs;
    size_t qslab_pending; /* bytes rp_model_quantize still has to place (sizes new slabs) */

    rp_param *params; /* owned array; pointers into it stay valid (allocated once) */
    int n_params, cap_params;
    rp_layer *layers;
    rp_param *emb, *head, *ln_out_w, *ln_out_b;

    rp_adapter_cfg adapter;
    void *fold;          /* Bone/Bat: P [fold_rows, r] with fold[i][c] = (i mod r == c) */
    int64_t fold_rows;
    void *flat;          /* trainable flat buffer (par dtype) */
    int64_t flat_numel;
    int64_t n_trainable; /* elements that train (may be < flat_numel for packs) */
    rp_adam_segment *segs;
    int n_segs;

    struct rp_workspace *eval_ws;
    int n_trainers;
};

/* ---- model.c: parameters, init, checkpoint I/O --------------------------------------- */
/* Builds the parameter table of an architecture (no storage yet). */
int rp_model_create(rwkvpeft_model *m, const rp_arch *arch, int with_state);
/* The reference's low-rank widths of a fresh model of width C (spec §1.2): v6 Dm, Dd; v7
 * Dw, Da, Dv, Dg. */
void rp_arch_default_widths(rp_arch *arch);
int rp_model_alloc_params(rwkvpeft_model *m);
int rp_model_init_weights(rwkvpeft_model *m, uint64_t seed);
int rp_model_load_file(rwkvpeft_model *m, const char *path);
int rp_model_save_file(rwkvpeft_model *m, const char *path, int kind, rp_dtype dtype, int adapter_only);
void rp_model_destroy(rwkvpeft_model *m);
rp_param *rp_model_find_param(rwkvpeft_model *m, const char *name, int *part);

/* Appends a parameter of `nparts` stacked parts named names[0..nparts) (the first names the
 * whole), each of shape d0[,d1[,d2]] (ndim of them); not trainable, lr_scale 1, data placed
 * later. NULL when the table (cap_params) is full. */
rp_param *rp_model_add_param(rwkvpeft_model *m, int cls, int nparts, const char **names, int ndim, int64_t d0,
                             int64_t d1, int64_t d2);
/* Copies host f32 values into a parameter (all parts, or part `part` >= 0). */
int rp_param_upload_f32(rwkvpeft_model *m, rp_param *p, int part, const float *src);
/* Reads a parameter into host f32. */
int rp_param_download_f32(rwkvpeft_model *m, rp_param *p, float *dst);
/* The block a parameter belongs to ("blocks.<l>." names), or -1. */
int rp_param_layer(const rp_param *p);

/* Gradient pointer of a trainable parameter inside grad_flat, or NULL when frozen. */
void *rp_param_grad(const rwkvpeft_model *m, const rp_param *p, void *grad_flat);

/* ---- peft.c: adapters ------------------------------------------------------------------- */
int rp_adapter_attach(rwkvpeft_model *m, const rwkvpeft_adapter_params *ap);
int rp_adapter_load(rwkvpeft_model *m, const char *path);
/* Frees what an attach added beyond parameters (host PiSSA copies, the fold matrix). */
void rp_adapter_release(rwkvpeft_model *m);
/* Writes init_pissa.pth ({module}.init_lora_A/B, float32) of the attached PiSSA adapter. */
int rp_pissa_save_init(rwkvpeft_model *m, const char *path, int kind);
/* 0 when the file holds exactly the attached PiSSA init, else E_SHAPE (or the open error). */
int rp_pissa_check_init(rwkvpeft_model *m, const char *path);

/* ---- pissa.c: randomized low-rank SVD (Halko et al.), host, float64 ------------------- */
/* W row-major [out,in] (float32). Writes A0 = diag(√S)·Vᵀ [r,in] and B0 = U·diag(√S)
 * [out,r] of a rank-r approximation W ≈ U·diag(S)·Vᵀ found with a Gaussian test matrix
 * drawn from `seed` and `niter` power iterations (QR re-orthonormalised). Deterministic.
 * Needs 1 <= r <= min(out,in). */
int rp_pissa_svd(const float *W, int out, int in, int r, int niter, uint64_t seed, float *A0, float *B0, rp_err *err);
/* Exact SVD reference for tests: the r largest singular values of W (host, float64 LAPACK)
 * and the Frobenius norm of W minus its best rank-r approximation. */
int rp_svd_best_rank_error(const float *W, int out, int in, int r, double *err_fro, rp_err *err);

/* ---- merge.c: folding adapters into weights --------------------------------------------- */
/* Folds the attached adapter into the base weights (host float32 arithmetic) and detaches
 * it: the model becomes a plain model (time_state of state tuning stays a parameter). */
int rp_model_merge(rwkvpeft_model *m);
int rp_merge_files(const rwkvpeft_merge_params *p, rp_err *err);

/* ---- qlinear.c: quantized target linears (docs/quantization.md) ------------------------- */
/* Quantizes every target linear that is still dense, from its float32 values, and drops the
 * dense copy; no-op unless m->quant_pending. NaN/Inf is RWKVPEFT_E_NUMERIC naming the
 * tensor. */
int rp_model_quantize(rwkvpeft_model *m);
/* Replaces p's storage by quant(host) (format fmt; the dense copy, if any, is freed). */
int rp_param_quantize_host(rwkvpeft_model *m, rp_param *p, int fmt, const float *host);
/* Gives a quantized p dense storage again holding dequant(q) (act dtype). */
int rp_param_unquantize(rwkvpeft_model *m, rp_param *p);
/* Host float32 dequantized values of a quantized parameter. */
int rp_param_dequant_host(rwkvpeft_model *m, rp_param *p, float *dst);
/* Frees the quantized storage of p (not the dense data). */
void rp_param_free_quant(rwkvpeft_model *m, rp_param *p);
/* Puts emb.weight where it belongs: in host memory when embedding_on_host is asked and it is
 * frozen, else on the device (moving it if needed). */
int rp_model_place_embedding(rwkvpeft_model *m);
/* Frees the quantization slabs (model destruction, after every parameter's rp_param_free_quant). */
void rp_model_free_qslabs(rwkvpeft_model *m);
/* Device bytes held by the parameters: dense data of their own, quantized codes and scales,
 * the int8 code table and the flat trainable buffer. */
int64_t rp_model_param_bytes(const rwkvpeft_model *m);
/* 1 when `name` is the weight of one of the 8 target linears of a block (spec §3.1). */
int rp_is_target_linear_weight(const char *name);
/* dequant(quant(x)) in place (host float32), for merges. */
int rp_quant_roundtrip(int fmt, float *x, int64_t n, rp_err *err);

/* ---- rwkv.c: the graph (RWKV-5, -6, -7) --------------------------------------------------- */
typedef struct rp_workspace rp_workspace;

/* Workspace for batches of up to B×T tokens; `training` adds what the backward needs. */
int rp_workspace_create(rwkvpeft_model *m, int B, int T, int training, rp_workspace **out);
void rp_workspace_free(rwkvpeft_model *m, rp_workspace *ws);
int rp_workspace_fits(const rp_workspace *ws, int B, int T);
/* Device bytes held by a workspace (activation records, scratch of the step). */
int64_t rp_workspace_bytes(const rp_workspace *ws);
/* Device bytes of the trainer's workspace (0 before its first step). */
int64_t rp_trainer_workspace_bytes(const rwkvpeft_trainer *t);
/* Device bytes of the optimizer moments (fp32 m and v, or the 8-bit codes, scales and tables). */
int64_t rp_trainer_optimizer_bytes(const rwkvpeft_trainer *t);

/* Uploads ids/targets/weights (host) into the workspace. weights: per-position loss
 * weights already normalised by the caller (sum = 1 over the batch for a mean). */
int rp_workspace_set_batch(rwkvpeft_model *m, rp_workspace *ws, int B, int T, const int32_t *ids,
                           const int32_t *targets, const float *weights);

/* Forward (+ loss into ws->loss_sum) and, if `grad_flat` is non-NULL, the backward that
 * accumulates parameter gradients into grad_flat. dropout_seed 0 disables dropout.
 * logits_out (host, [B*T, V] float32) receives the logits when non-NULL. */
int rp_forward_backward(rwkvpeft_model *m, rp_workspace *ws, void *grad_flat, float grad_scale,
                           float l2wrap, uint64_t dropout_seed, float *logits_out);

/* Recurrent state for generation: shift and WKV states of every layer for B sequences. */
typedef struct rp_infer_state rp_infer_state;
int rp_infer_state_create(rwkvpeft_model *m, int B, rp_infer_state **out);
void rp_infer_state_free(rwkvpeft_model *m, rp_infer_state *st);
/* Feeds T tokens per sequence (host ids [B,T]) and writes the next-token logits [B,V]. */
int rp_infer(rwkvpeft_model *m, rp_workspace *ws, rp_infer_state *st, const int32_t *ids, int T, float *logits_last);

/* Long-context training of a batch held in host memory (ids/targets [B,T], weights [B,T]
 * normalised over the whole batch), `chunk` tokens at a time with every layer's token-shift
 * and WKV states carried between chunks. full = 1: the gradient flows through the carried
 * states (each chunk is recomputed in a backward sweep from its saved start state), equal to
 * the un-chunked model's; full = 0: the reference's truncated mode (states are detached
 * inputs; each chunk's mean loss weighted by its length). *loss receives the batch loss. */
int rp_train_chunked(rwkvpeft_model *m, rp_workspace *ws, const int32_t *ids, const int32_t *targets,
                        const float *weights, int B, int T, int chunk, int full, void *gf, float grad_scale, float l2wrap,
                        uint64_t seed, double *loss);

/* Reads one par-dtype scalar from device memory (e.g. the loss sum); *rc receives the
 * backend status (NaN is returned when it fails). */
double rp_read_par_scalar(rwkvpeft_model *m, const void *dev, int *rc);

/* Device pointer of the scalar loss sum (par dtype) of the last forward. */
void *rp_workspace_loss(rp_workspace *ws);

/* ---- train.c: trainer and evaluation -------------------------------------------------- */
int rp_trainer_create(rwkvpeft_model *m, const rwkvpeft_train_params *tp, rwkvpeft_trainer **out);
void rp_trainer_destroy(rwkvpeft_trainer *t);
const char *rp_trainer_error(const rwkvpeft_trainer *t);
int rp_trainer_step(rwkvpeft_trainer *t, const rwkvpeft_batch *b, rwkvpeft_step_result *res);
int rp_trainer_save_state(rwkvpeft_trainer *t, const char *path);
int rp_trainer_load_state(rwkvpeft_trainer *t, const char *path);
int rp_evaluate(rwkvpeft_model *m, const rwkvpeft_batch *b, double *loss, double *n_tokens);
int rp_batch_weights(rwkvpeft_model *m, const rwkvpeft_batch *b, float *weights, double *wsum, rp_err *err);

#endif
