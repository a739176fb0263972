/* backend.h — the dispatch table every compute backend implements.
 *
 * The core (lib/) runs a training step only through these function pointers; a backend
 * sees buffers, shapes and element types, never a model, adapter or file. One instance of
 * rp_backend_ops exists per backend: the CPU ones are built into the library
 * (backends/cpu), the GPU ones live in modules loaded with dlopen (backends/cuda,
 * backends/hip) that export `rp_backend_ops *rwkvpeft_backend_module(uint32_t api_version)`.
 *
 * Conventions for every op
 * - Pointers are device buffers of the backend (host memory for the CPU backends) unless
 *   the comment says "host". Row-major layouts. n = rows (B*T tokens).
 * - Element types by role: "A" = the backend's act_dtype (activations and the large
 *   weight matrices), "P" = par_dtype (small parameters, trainable masters, gradients,
 *   optimizer moments, norms' statistics, WKV states). CPU: A = P = float32 (cpu64:
 *   float64). CUDA: A = bf16, P = float32.
 * - Gradients of parameters ("+=") always accumulate; the core zeroes them at the start
 *   of an accumulation window. Gradients of activations are "written" unless marked "+=".
 * - Every op returns 0 or a negative rwkvpeft_status and then leaves a message in
 *   be->err. Ops are asynchronous on GPU backends (ordered on the backend's stream);
 *   memcpy_d2h and synchronize wait.
 * - Ops never allocate device memory per call except through the backend's own scratch
 *   arena; they must not fail for lack of memory in the middle of a step once created.
 */
#ifndef RP_BACKEND_H
#define RP_BACKEND_H

#include "internal.h"

#define RP_BACKEND_API_VERSION 5 /* 3: norm_gate_fwd/bwd; 4: adam8_update; 5: norm_gate's silu_gate, act_mul_fwd/bwd, wkv6_bwd's scratch */

/* Elements per scale (absmax) of the 8-bit optimizer state (adam8_update). */
#define RP_ADAM8_BLOCK 256

typedef struct rp_backend_ops rp_backend_ops;

/* Every backend instance starts with this header (backends extend it). */
typedef struct rp_backend {
    const rp_backend_ops *ops;
    rp_err err;
    int device;
    int n_threads;
} rp_backend;

/* One contiguous run of trainable elements in the flat parameter buffer, with its
 * optimizer group settings. */
typedef struct rp_adam_segment {
    int64_t offset; /* elements from the start of the flat buffer */
    int64_t count;
    float lr_scale;
    float weight_decay;
} rp_adam_segment;

/* adam8_update's view of the segments: the non-empty ones clamped to [0, numel), sorted by
 * offset, into out (room for n): their count. Every backend searches them by flat index.
 * (Insertion sort: the trainer builds them in buffer order already.) */
static inline int rp_adam_segments_by_offset(const rp_adam_segment *in, int n, int64_t numel, rp_adam_segment *out) {
    int k = 0;
    for (int s = 0; s < n; s++) {
        rp_adam_segment sg = in[s];
        if (sg.offset < 0 || sg.count <= 0 || sg.offset >= numel) continue;
        if (sg.count > numel - sg.offset) sg.count = numel - sg.offset;
        int j = k++;
        for (; j > 0 && out[j - 1].offset > sg.offset; j--) out[j] = out[j - 1];
        out[j] = sg;
    }
    return k;
}

typedef enum rp_act_kind {
    RP_ACT_TANH = 0,    /* backward uses y */
    RP_ACT_SIGMOID = 1, /* backward uses y */
    RP_ACT_SILU = 2,    /* backward uses x */
    RP_ACT_RELU_SQ = 3, /* relu(x)^2; backward uses x, or y (f' = 2·√y) when x is NULL */
    RP_ACT_SOFTCLAMP = 4 /* −softplus(−x) − 0.5 (RWKV-7 decay clamp, < −0.5); backward uses x */
} rp_act_kind;

/* How shift_mix reads its coefficients. */
typedef enum rp_mix_form {
    RP_MIX_DELTA = 0,  /* out = x + δ⊙(coef + m)      (RWKV-6/7: coef weighs the previous token) */
    RP_MIX_CURRENT = 1 /* out = x⊙coef + shift(x)⊙(1 − coef) = x + δ⊙(1 − coef)   (RWKV-5 time_mix_*:
                        * coef weighs the current token; m must be NULL) */
} rp_mix_form;

typedef enum rp_quant_format {
    RP_QUANT_NF4 = 1,
    RP_QUANT_FP4 = 2,
    RP_QUANT_INT8 = 3, /* 256-entry code table, one absmax per block (block = whole tensor allowed) */
    RP_QUANT_FP8_E4M3 = 4
} rp_quant_format;

struct rp_backend_ops {
    uint32_t api_version; /* RP_BACKEND_API_VERSION */
    uint32_t struct_size; /* sizeof(rp_backend_ops) the backend was built with */
    const char *name;
    rp_dtype act_dtype;
    rp_dtype par_dtype;

    /* ---- discovery and lifetime ---------------------------------------------------- */
    /* Number of usable devices (>0), or 0 with the reason written to desc. Host-only. */
    int (*probe)(char *desc, size_t desc_size);
    rp_backend *(*create)(int device, int n_threads, rp_err *err);
    void (*destroy)(rp_backend *be);

    /* ---- memory ---------------------------------------------------------------------- */
    int (*alloc)(rp_backend *be, void **ptr, size_t bytes); /* 64-byte aligned, uninitialised */
    void (*free)(rp_backend *be, void *ptr);                /* NULL allowed */
    int (*memcpy_h2d)(rp_backend *be, void *dst, const void *host_src, size_t bytes);
    int (*memcpy_d2h)(rp_backend *be, void *host_dst, const void *src, size_t bytes);
    int (*memcpy_d2d)(rp_backend *be, void *dst, const void *src, size_t bytes);
    /* 2-D copy: `rows` rows of `row_bytes`, with byte pitches. */
    int (*memcpy_2d)(rp_backend *be, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                     size_t row_bytes, size_t rows);
    int (*memset_zero)(rp_backend *be, void *dst, size_t bytes);
    /* Element type conversion of n elements (types among A, P, F32, BF16, F16, F64). */
    int (*convert)(rp_backend *be, void *dst, rp_dtype dt, const void *src, rp_dtype st, int64_t n);
    int (*synchronize)(rp_backend *be);
    int (*memory_info)(rp_backend *be, uint64_t *free_bytes, uint64_t *total_bytes);

    /* ---- dense algebra ----------------------------------------------------------------- */
    /* For each of `batch` problems p: C_p = alpha·op(A_p)·op(B_p) + beta·C_p, where op(X) is
     * X or Xᵀ (trans_*), op(A) is m×k and op(B) is k×n, all row-major with row strides
     * lda/ldb/ldc (elements). X_p = X + p·stride_x. Operand types are given per operand;
     * a backend may answer RWKVPEFT_E_UNSUPPORTED for a combination it lacks. Accumulation
     * is in at least float32; a product of operands of different types may be computed at
     * the precision of the narrower one (the CUDA backend rounds an f32 parameter operand to
     * bf16 to use the tensor cores, as the reference's bf16 parameters do). beta == 0
     * ignores the old C (NaN in C does not leak). */
    int (*gemm)(rp_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                const void *a, rp_dtype ta, int64_t lda, int64_t stride_a,
                const void *b, rp_dtype tb, int64_t ldb, int64_t stride_b, float beta,
                void *c, rp_dtype tc, int64_t ldc, int64_t stride_c, int batch);

    /* ---- embedding ---------------------------------------------------------------------- */
    /* out[i,:] = table[ids[i],:]. out A [n,C]; table A [V,C]; ids int32 [n] (device),
     * already validated to lie in [0,V). */
    int (*embedding_fwd)(rp_backend *be, void *out, const void *table, const int32_t *ids,
                         int64_t n, int C);
    /* dtable[ids[i],:] += dout[i,:]. dtable P [V,C]; dout A. */
    int (*embedding_bwd)(rp_backend *be, void *dtable, const void *dout, const int32_t *ids,
                         int64_t n, int C);

    /* ---- normalisation ------------------------------------------------------------------- */
    /* Group normalisation of each row of x [n, G·S] in G groups of S channels (LayerNorm
     * is G = 1; RWKV's ln_x is G = heads): y = (x − mean)·rstd·w + b with biased variance,
     * rstd = 1/sqrt(var + eps). x,y A; w,b P [G·S] (b may be NULL = 0); mean,rstd P [n,G]
     * written (needed by the backward). y may not alias x. */
    int (*norm_fwd)(rp_backend *be, void *y, void *mean, void *rstd, const void *x, const void *w,
                    const void *b, int64_t n, int G, int S, float eps);
    /* dx += ∂L/∂x; dw += ; db += (dw/db may be NULL when frozen). dy,x,dx A. */
    int (*norm_bwd)(rp_backend *be, void *dx, void *dw, void *db, const void *dy, const void *x,
                    const void *w, const void *mean, const void *rstd, int64_t n, int G, int S);
    /* The normalisation gated by a second input in one pass (RWKV-5/6: GroupNorm(ln_x) ⊙
     * SiLU(g)): out = (norm(x)·w + b) ⊙ γ with γ = gate (silu_gate 0) or SiLU(gate)
     * (silu_gate 1: gate holds the activation's input, so neither SiLU(g) nor its backward
     * needs a pass or a buffer of its own); gate and out A [n,G·S]; mean, rstd as norm_fwd.
     * The ungated y is not stored. out may not alias x or gate. */
    int (*norm_gate_fwd)(rp_backend *be, void *out, void *mean, void *rstd, const void *x, const void *w,
                         const void *b, const void *gate, int silu_gate, int64_t n, int G, int S, float eps);
    /* Its backward from dout: dgate = ∂L/∂gate (dout ⊙ y, times SiLU'(gate) when silu_gate;
     * y recomputed from x, mean, rstd, w, b) and dx = ∂L/∂x are written (not added); dw += ,
     * db += (NULL when frozen). */
    int (*norm_gate_bwd)(rp_backend *be, void *dx, void *dgate, void *dw, void *db, const void *dout, const void *x,
                         const void *w, const void *b, const void *gate, int silu_gate, const void *mean,
                         const void *rstd, int64_t n, int G, int S);

    /* ---- token shift and mixing ----------------------------------------------------------- */
    /* With δ = shift(x) − x per sequence (shift(x)_t = x_{t−1}; at t = 0 the row of x_prev
     * [B,C] or 0 when x_prev is NULL), for each slot s < n_slots:
     *     out[s] = x + δ ⊙ (coef[s] + m[s])      (form RP_MIX_DELTA; m NULL: no m term)
     *     out[s] = x + δ ⊙ (1 − coef[s])         (form RP_MIX_CURRENT; m must be NULL)
     * x A [B,T,C]; coef P [n_slots,C]; m A [n_slots,B·T,C]; out A [n_slots,B·T,C]. */
    int (*shift_mix_fwd)(rp_backend *be, void *out, const void *x, const void *x_prev,
                         const void *coef, const void *m, int form, int n_slots, int B, int T, int C);
    /* Backward of shift_mix_fwd for dout [n_slots,B·T,C]: dx += ; dx_prev += (NULL: not
     * wanted); dcoef += (NULL: frozen; RP_MIX_CURRENT: += −Σ dout⊙δ); dm written (NULL: not
     * wanted). */
    int (*shift_mix_bwd)(rp_backend *be, void *dx, void *dx_prev, void *dcoef, void *dm,
                         const void *dout, const void *x, const void *x_prev, const void *coef,
                         const void *m, int form, int n_slots, int B, int T, int C);

    /* ---- element-wise ------------------------------------------------------------------------ */
    /* y = f(x), n elements of A; y may alias x. */
    int (*act_fwd)(rp_backend *be, int kind, void *y, const void *x, int64_t n);
    /* dx = dy ⊙ f'(·) written (may alias dy); uses x or y as rp_act_kind says (the other
     * may be NULL). */
    int (*act_bwd)(rp_backend *be, int kind, void *dx, const void *dy, const void *x, const void *y,
                   int64_t n);
    /* y = a ⊙ b (A); y may alias a or b. */
    int (*mul_fwd)(rp_backend *be, void *y, const void *a, const void *b, int64_t n);
    /* da += dy ⊙ b; db += dy ⊙ a (either may be NULL). */
    int (*mul_bwd)(rp_backend *be, void *da, void *db, const void *dy, const void *a, const void *b,
                   int64_t n);
    /* y = f(a) ⊙ b + r (r NULL: no r term), n elements of A, in one pass with one rounding
     * (RWKV-5/6's channel-mix output x_mid + σ(r)·kv); f any rp_act_kind. y may alias any
     * input. */
    int (*act_mul_fwd)(rp_backend *be, int kind, void *y, const void *a, const void *b, const void *r, int64_t n);
    /* Its backward from dy: da = dy ⊙ b ⊙ f'(a) and db = dy ⊙ f(a), written (either may be
     * NULL: not wanted; f' from a for every kind). da or db may alias dy. */
    int (*act_mul_bwd)(rp_backend *be, int kind, void *da, void *db, const void *dy, const void *a, const void *b,
                       int64_t n);
    /* y += alpha·x (A). */
    int (*add)(rp_backend *be, void *y, const void *x, float alpha, int64_t n);
    /* y[r,:] = v (+ y[r,:] if accumulate) for n rows; y A [n,C], v P [C]. */
    int (*broadcast_rows)(rp_backend *be, void *y, const void *v, int64_t n, int C, int accumulate);
    /* dv += Σ_r dy[r,:]; dv P [C], dy A [n,C]. */
    int (*sum_rows)(rp_backend *be, void *dv, const void *dy, int64_t n, int C);
    /* y = a + (b − a) ⊙ t (A; the RWKV-7 value residual). y may alias b, not a or t. */
    int (*lerp_fwd)(rp_backend *be, void *y, const void *a, const void *b, const void *t, int64_t n);
    /* da += dy ⊙ (1 − t); db += dy ⊙ t (either may be NULL); dt = dy ⊙ (b − a) written
     * (NULL: not wanted). */
    int (*lerp_bwd)(rp_backend *be, void *da, void *db, void *dt, const void *dy, const void *a,
                    const void *b, const void *t, int64_t n);
    /* y = x ⊙ keep / (1 − p), keep_i = rp_dropout_keep(seed, i, p) (lib/kernel_common.h),
     * A, y may alias x. The same seed gives the same mask on every backend. */
    int (*dropout)(rp_backend *be, void *y, const void *x, int64_t n, float p, uint64_t seed);

    /* ---- WKV6 ------------------------------------------------------------------------------- */
    /* RWKV-6 recurrence (spec §2.2) per (b,h) with state S[j=value][i=key] (P):
     *   y_t[j] = Σ_i r_t[i]·(S[j][i] + u[i]·k_t[i]·v_t[j]);  S[j][i] ← d_t[i]·S[j][i] + k_t[i]·v_t[j]
     * with d = exp(−exp(w)). r,k,v,w,y A [B,T,H,N]; u P [H,N]. s0 P: NULL (zero state),
     * [H,N,N] shared by every sequence (s0_shared = 1) or [B,H,N,N]. s_out P [B,H,N,N]
     * receives the final states (NULL: not wanted); s_out may be the same buffer as a
     * per-sequence s0 (the state is then advanced in place). */
    int (*wkv6_fwd)(rp_backend *be, void *y, void *s_out, const void *r, const void *k,
                    const void *v, const void *w, const void *u, const void *s0, int s0_shared,
                    int B, int T, int H, int N);
    /* Backward: gr, gk, gv, gw written (A; gw is ∂L/∂w for the raw w); gu += (P, summed over
     * B; NULL = not wanted); gs0 += (P, NULL = not wanted; summed over B when s0_shared); gs_out P [B,H,N,N]
     * is ∂L/∂(final state) or NULL (= 0). scratch: device memory of scratch_bytes the op may
     * overwrite (the caller's dead buffers; 256-byte aligned, overlapping no argument), used
     * for its temporaries when large enough (the CUDA/HIP kernels want 2·B·T·H·N floats);
     * NULL or smaller: the backend's own scratch. */
    int (*wkv6_bwd)(rp_backend *be, void *gr, void *gk, void *gv, void *gw, void *gu, void *gs0,
                    const void *gy, const void *gs_out, const void *r, const void *k,
                    const void *v, const void *w, const void *u, const void *s0, int s0_shared,
                    int B, int T, int H, int N, void *scratch, size_t scratch_bytes);

    /* ---- loss ------------------------------------------------------------------------------------ */
    /* Softmax cross-entropy over V for n rows of logits (A). targets int32 [n] (device);
     * weights P [n] (device): rows with weight 0 are skipped (their target may be any
     * value, e.g. −100); other targets must lie in [0,V). Adds Σ_i weight_i·CE_i to
     * loss_sum (P scalar, device). If dlogits is non-NULL (A [n,V], may alias logits) it
     * receives  grad_scale·weight_i·(softmax_i − onehot(target_i))
     *         + l2wrap·max_j(logits_i)·onehot(argmax_i)     (the L2Wrap term, every row). */
    int (*cross_entropy)(rp_backend *be, void *loss_sum, void *dlogits, const void *logits,
                         const int32_t *targets, const void *weights, int64_t n, int V,
                         float grad_scale, float l2wrap);

    /* ---- optimizer ------------------------------------------------------------------------- */
    /* acc[0] += Σ x² over the segments of the flat buffer x (P); acc P scalar (device). */
    int (*sumsq)(rp_backend *be, void *acc, const void *x, const rp_adam_segment *segs, int n_segs);
    /* Adam(W) over the segments (host array) of flat params/grads/m/v (P):
     *   if norm_sq is non-NULL: when it is not finite nothing changes; else with
     *   max_norm > 0, g ← g·min(1, max_norm/(sqrt(norm_sq) + 1e-6)).
     *   m ← b1·m + (1−b1)·g;  v ← b2·v + (1−b2)·g²;
     *   p ← p − lr·lr_scale·( (m/bc1)/(sqrt(v/bc2) + eps) + weight_decay·p )
     * with bc1 = 1 − b1^step, bc2 = 1 − b2^step (step ≥ 1). */
    int (*adam_update)(rp_backend *be, void *params, const void *grads, void *m, void *v,
                       const rp_adam_segment *segs, int n_segs, const void *norm_sq,
                       float max_norm, float lr, float beta1, float beta2, float eps,
                       int64_t step);

    /* ---- quantized weights -------------------------------------------------------------- */
    /* out A [n] = dequantized values. NF4/FP4: q packs two 4-bit codes per byte, first
     * element in the high nibble, absmax f32 [ceil(n/blocksize)]. INT8: q uint8 [n] indexes
     * code f32 [256], absmax f32 per block. FP8_E4M3: q holds e4m3 bytes (absmax NULL or a
     * per-block scale). */
    int (*dequant)(rp_backend *be, void *out, const void *q, const void *absmax, const void *code,
                   int format, int64_t n, int blocksize);

    /* ---- WKV7 (RWKV-7; optional: NULL means the backend cannot run RWKV-7 yet) ------- */
    /* Per (b,h) with state S[j=value][i=key] (P) and d = exp(−exp(w)) (spec §2.4):
     *   sa[j] = Σ_i a_t[i]·S[j][i];   S[j][i] ← S[j][i]·d_t[i] + sa[j]·b_t[i] + v_t[j]·k_t[i];
     *   y_t[j] = Σ_i S[j][i]·r_t[i]   (the state is updated before it is read; no bonus)
     * r,w,k,v,a,b,y A [B,T,H,N] (the model passes a = −kk, b = kk⊙a). s0 / s_out as wkv6
     * (s_out may alias a per-sequence s0). */
    int (*wkv7_fwd)(rp_backend *be, void *y, void *s_out, const void *r, const void *w, const void *k,
                    const void *v, const void *a, const void *b, const void *s0, int s0_shared, int B,
                    int T, int H, int N);
    /* gr, gw (∂L/∂w raw), gk, gv, ga, gb written (A); gs0 += (P, NULL = not wanted; summed
     * over B when shared); gs_out = ∂L/∂(final state) or NULL. */
    int (*wkv7_bwd)(rp_backend *be, void *gr, void *gw, void *gk, void *gv, void *ga, void *gb, void *gs0,
                    const void *gy, const void *gs_out, const void *r, const void *w, const void *k,
                    const void *v, const void *a, const void *b, const void *s0, int s0_shared, int B,
                    int T, int H, int N);

    /* ---- RWKV-7 key preparation and bonus (spec §1.6; NULL like wkv7) ------------------- */
    /* Per row and head h (channels c = h·N + i, C = H·N):
     *   u = k ⊙ k_k;  kk = u / max(‖u_h‖₂, 1e-12);  wa = −kk;  wb = kk ⊙ a;
     *   k_out = k ⊙ (1 + (a − 1) ⊙ k_a)
     * k, a, k_out, wa, wb A [n,C] (outputs may not alias inputs); k_k, k_a P [C]. */
    int (*v7_kprep_fwd)(rp_backend *be, void *k_out, void *wa, void *wb, const void *k, const void *a,
                        const void *k_k, const void *k_a, int64_t n, int H, int N);
    /* From dk_out, dwa, dwb (A): dk, da written (A); dk_k, dk_a += (P, NULL: frozen). */
    int (*v7_kprep_bwd)(rp_backend *be, void *dk, void *da, void *dk_k, void *dk_a, const void *dk_out,
                        const void *dwa, const void *dwb, const void *k, const void *a, const void *k_k,
                        const void *k_a, int64_t n, int H, int N);
    /* The bonus term, per row and head: y_h += (Σ_i r_h[i]·k_h[i]·r_k[h,i]) · v_h.
     * y, r, k, v A [n,H·N]; r_k P [H,N]. */
    int (*v7_bonus_fwd)(rp_backend *be, void *y, const void *r, const void *k, const void *v,
                        const void *r_k, int64_t n, int H, int N);
    /* dr, dk, dv += (A); dr_k += (P, NULL: frozen). */
    int (*v7_bonus_bwd)(rp_backend *be, void *dr, void *dk, void *dv, void *dr_k, const void *dy,
                        const void *r, const void *k, const void *v, const void *r_k, int64_t n, int H,
                        int N);

    /* ---- 8-bit AdamW (API 4; NULL: the backend has none) ------------------------------ */
    /* adam_update with the moments stored blockwise in 8 bits (lib/optim8.h). The flat
     * buffer [0, numel) is cut into blocks of RP_ADAM8_BLOCK elements (the last one short);
     * block b holds float32 scales m_absmax[b], v_absmax[b] and each element one code index
     * m_q[i], v_q[i] (uint8 [numel]) into code_m / code_v (f32 [256] device, ascending).
     * Per element inside a segment (segments: host array, disjoint, any order):
     *   m = code_m[m_q]·m_absmax[b];  v = code_v[v_q]·v_absmax[b];
     *   then clipping, the m/v update and the parameter update exactly as adam_update (the
     *   parameter uses the new m and v before they are re-quantized).
     * Then per block: absmax = max|m| (max v) over the block as float32, and each element's
     * code = the entry nearest m/absmax (v/absmax; ties to the lower index; absmax 0: the
     * index of 0.0). Elements outside every segment keep their parameter, and their
     * dequantized m, v enter the block's re-quantization unchanged; a block without any
     * segment element is not written at all. A non-finite norm_sq changes nothing. params,
     * grads P [numel]. A fresh state is every code the index of 0.0 with absmax 0. */
    int (*adam8_update)(rp_backend *be, void *params, const void *grads, uint8_t *m_q, uint8_t *v_q,
                        float *m_absmax, float *v_absmax, const float *code_m, const float *code_v,
                        int64_t numel, const rp_adam_segment *segs, int n_segs, const void *norm_sq,
                        float max_norm, float lr, float beta1, float beta2, float eps, int64_t step);
};

/* ---- backend registry (lib/backend.c) -------------------------------------------------- */

/* Built-in backends. */
extern const rp_backend_ops rp_cpu32_ops;
extern const rp_backend_ops rp_cpu64_ops;

/* Index-stable list of every backend name this build knows. */
int rp_backend_registry_count(void);
const char *rp_backend_registry_name(int index);

/* Finds (and for GPU backends loads) the ops table by name; probes the device count. On
 * failure returns NULL with the reason in err (E_BACKEND). module_path may be NULL. */
const rp_backend_ops *rp_backend_find(const char *name, const char *module_path, int *device_count,
                                      char *desc, size_t desc_size, rp_err *err);

/* The error of a failed op, copied into `err` (returns the op's code). */
static inline int rp_be_fail(rp_backend *be, int code, rp_err *err) {
    if (be->err.code == 0) {
        be->err.code = code;
        be->err.msg[0] = 0;
    }
    return rp_err_copy(err, &be->err);
}

#endif
