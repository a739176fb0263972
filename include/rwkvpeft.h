/*
 * rwkvpeft.h — public C API of librwkvpeft.
 *
 * librwkvpeft fine-tunes RWKV language models with parameter-efficient methods
 * (LoRA, PiSSA, Bone, Bat, state tuning; see docs/peft.md) on a CPU, CUDA or HIP backend
 * chosen at run time. It reads and writes the checkpoint and adapter files of the Python
 * project RWKV-PEFT.
 *
 * Conventions that hold for every function below
 * ------------------------------------------------
 * - Every fallible call returns an rwkvpeft_status: RWKVPEFT_OK (0) or a negative code.
 *   The numeric values of the codes never change between releases.
 * - The text of the most recent failure is kept per handle (rwkvpeft_context_last_error,
 *   rwkvpeft_model_last_error, rwkvpeft_trainer_last_error) and, for every failure, also in
 *   a thread-local slot read by rwkvpeft_last_error(); calls that create a handle report
 *   their failures there.
 * - The library never exits, aborts or writes to stdout. Diagnostics go to the log
 *   callback of the context (by default: warnings and errors to stderr).
 * - Options travel in size-versioned structs: the caller fills them with the matching
 *   *_init() function (which writes struct_size) and then changes fields. The library
 *   reads only the first struct_size bytes, so a program compiled against an older header
 *   keeps working when fields are appended. Output structs work the same way: set
 *   struct_size (or call *_init) before the call; only that many bytes are written.
 * - Strings are UTF-8, NUL-terminated; paths are passed to fopen/open unchanged.
 * - *_free(NULL) is a no-op. Handles are created by exactly one call and freed by one.
 *
 * Thread safety
 * -------------
 * Distinct handle trees may be used from different threads at the same time. A context,
 * every model created on it and every trainer created on those models form one tree,
 * because they share the backend's device stream and scratch memory: calls on handles of
 * one tree must not overlap (serialise them yourself). Functions that take no handle
 * (version, status strings, backend listing, *_init) are safe from any thread.
 */
#ifndef RWKVPEFT_H
#define RWKVPEFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(RWKVPEFT_BUILDING)
#define RWKVPEFT_API __declspec(dllexport)
#elif defined(_WIN32)
#define RWKVPEFT_API __declspec(dllimport)
#elif defined(__GNUC__)
#define RWKVPEFT_API __attribute__((visibility("default")))
#else
#define RWKVPEFT_API
#endif

/* ------------------------------------------------------------------------------------ */
/* Versions                                                                             */
/* ------------------------------------------------------------------------------------ */

#define RWKVPEFT_VERSION_MAJOR 0
#define RWKVPEFT_VERSION_MINOR 1
#define RWKVPEFT_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH */
#define RWKVPEFT_VERSION_NUMBER \
    (RWKVPEFT_VERSION_MAJOR * 10000 + RWKVPEFT_VERSION_MINOR * 100 + RWKVPEFT_VERSION_PATCH)

/* Returns RWKVPEFT_VERSION_NUMBER of the library actually loaded (compare with the
 * header's to detect a mismatched shared library). Thread-safe. */
RWKVPEFT_API uint32_t rwkvpeft_version_number(void);

/* Returns the version as "MAJOR.MINOR.PATCH" plus build details, e.g.
 * "0.1.0 (cpu openblas, cuda module)". Static storage; never NULL. Thread-safe. */
RWKVPEFT_API const char *rwkvpeft_version_string(void);

/* ------------------------------------------------------------------------------------ */
/* Status codes and errors                                                              */
/* ------------------------------------------------------------------------------------ */

typedef enum rwkvpeft_status {
    RWKVPEFT_OK = 0,
    RWKVPEFT_E_INVALID_ARGUMENT = -1, /* NULL handle, bad option value, bad token id ... */
    RWKVPEFT_E_OUT_OF_MEMORY = -2,    /* host or device allocation failed */
    RWKVPEFT_E_IO = -3,               /* a file could not be opened, read or written */
    RWKVPEFT_E_FORMAT = -4,           /* a file is malformed or truncated */
    RWKVPEFT_E_SHAPE = -5,            /* a tensor has the wrong shape or is missing */
    RWKVPEFT_E_UNSUPPORTED = -6,      /* a valid request this build cannot serve */
    RWKVPEFT_E_BACKEND = -7,          /* backend unavailable or a device call failed */
    RWKVPEFT_E_NUMERIC = -8,          /* NaN or Inf in inputs, loss or gradients */
    RWKVPEFT_E_STATE = -9,            /* call out of order (e.g. training before attach) */
    RWKVPEFT_E_INTERNAL = -10         /* a bug in librwkvpeft: please report it */
} rwkvpeft_status;

/* Short constant description of a status code ("invalid argument", ...). Never NULL. */
RWKVPEFT_API const char *rwkvpeft_status_string(rwkvpeft_status status);

/* Message of the most recent failure of any call made by this thread (""
 * when none). Valid until the next failing call in this thread. */
RWKVPEFT_API const char *rwkvpeft_last_error(void);

/* ------------------------------------------------------------------------------------ */
/* Logging                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef enum rwkvpeft_log_level {
    RWKVPEFT_LOG_ERROR = 0,
    RWKVPEFT_LOG_WARN = 1,
    RWKVPEFT_LOG_INFO = 2,
    RWKVPEFT_LOG_DEBUG = 3
} rwkvpeft_log_level;

/* Log sink. `message` has no trailing newline and is valid only during the call. */
typedef void (*rwkvpeft_log_fn)(void *user, int32_t level, const char *message);

/* ------------------------------------------------------------------------------------ */
/* Backends                                                                             */
/* ------------------------------------------------------------------------------------ */

typedef struct rwkvpeft_backend_info {
    uint32_t struct_size;
    char name[16];         /* "cpu", "cpu64", "cuda", "hip" */
    int32_t available;     /* 1 when a context can be created on it now */
    int32_t device_count;  /* devices found (1 for the CPU backends) */
    char description[192]; /* device name, or why it is unavailable */
} rwkvpeft_backend_info;

/* Number of backends this build knows (available or not). Thread-safe. */
RWKVPEFT_API int32_t rwkvpeft_backend_count(void);

/* Fills `info` for backend `index` (0 <= index < rwkvpeft_backend_count()). Probing a GPU
 * backend loads its module (dlopen) once; the result is cached. Set info->struct_size
 * first. Thread-safe. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_backend_get_info(int32_t index, rwkvpeft_backend_info *info);

/* ------------------------------------------------------------------------------------ */
/* Context: one backend instance (device, stream, threads, logging)                     */
/* ------------------------------------------------------------------------------------ */

typedef struct rwkvpeft_context rwkvpeft_context;

typedef struct rwkvpeft_context_params {
    uint32_t struct_size;
    /* "auto", "cpu", "cpu64", "cuda" or "hip". NULL or "auto": the environment variable
     * RWKVPEFT_BACKEND decides (same values); unset means auto = the first GPU backend
     * with a device, else cpu (the fallback is logged at WARN level). "cpu64" is the
     * float64 reference backend used by the gradient tests. */
    const char *backend;
    int32_t device;    /* GPU index (default 0) */
    int32_t n_threads; /* CPU threads for the CPU backends; 0 = all cores (default) */
    int32_t log_level; /* messages at or below this level are logged; -1 = none.
                          Default RWKVPEFT_LOG_WARN */
    rwkvpeft_log_fn log_fn; /* NULL: write to stderr */
    void *log_user;
    /* Folder holding librwkvpeft_cuda.so / librwkvpeft_hip.so. NULL: the environment
     * variable RWKVPEFT_MODULE_PATH, then the folder of librwkvpeft itself, then the
     * dynamic loader's search path. */
    const char *module_path;
} rwkvpeft_context_params;

/* Fills `params` with defaults (and struct_size). Thread-safe. */
RWKVPEFT_API void rwkvpeft_context_params_init(rwkvpeft_context_params *params);

/* Creates a context on the backend the params select. `params` may be NULL (defaults).
 * On failure *out is NULL and rwkvpeft_last_error() says why (e.g. "cuda: no device"). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_context_create(const rwkvpeft_context_params *params,
                                                     rwkvpeft_context **out);

/* Frees the context. All models and trainers created on it must be freed first; a
 * context that still owns them is not freed and an error is logged. */
RWKVPEFT_API void rwkvpeft_context_free(rwkvpeft_context *ctx);

/* Name of the backend the context runs on ("cpu", "cuda", ...). Never NULL. */
RWKVPEFT_API const char *rwkvpeft_context_backend(const rwkvpeft_context *ctx);

/* Message of the last failure on this context ("" if none). */
RWKVPEFT_API const char *rwkvpeft_context_last_error(const rwkvpeft_context *ctx);

/* Device memory in bytes: currently free and total (host RAM for the CPU backends). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_context_memory(rwkvpeft_context *ctx, uint64_t *free_bytes,
                                                     uint64_t *total_bytes);

/* ------------------------------------------------------------------------------------ */
/* Models                                                                               */
/* ------------------------------------------------------------------------------------ */

typedef struct rwkvpeft_model rwkvpeft_model;

/* Architecture of a fresh model (rwkvpeft_model_init). Loaded models take every size
 * from the checkpoint's tensors instead. */
typedef struct rwkvpeft_model_config {
    uint32_t struct_size;
    int32_t version;    /* RWKV generation: 5 (x052), 6 (x060) or 7 (x070). Default 6 */
    int32_t n_layer;    /* default 2 */
    int32_t n_embd;     /* C, multiple of 32 and of head_size; default 128 */
    int32_t dim_att;    /* 0 = n_embd (RWKV-7: must be n_embd) */
    int32_t dim_ffn;    /* 0 = floor(3.5*C/32)*32 as the reference (RWKV-7: 4*n_embd, fixed) */
    int32_t head_size;  /* N; default 64 */
    int32_t vocab_size; /* default 65536 */
} rwkvpeft_model_config;

RWKVPEFT_API void rwkvpeft_model_config_init(rwkvpeft_model_config *config);

/* Storage formats of quantized base weights (rwkvpeft_model_params.quant; spec §4,
 * docs/quantization.md). The codes are bitsandbytes': NF4 and FP4 in blocks of 64 with an
 * fp32 absmax per block; INT8 = bitsandbytes' non-blockwise dynamic 8-bit map with one fp32
 * absmax for the whole tensor; FP8 = float8_e4m3fn of the value itself (no scale).
 * RWKV-PEFT's "--quant 4bit" means FP4 (bitsandbytes' default 4-bit type). */
typedef enum rwkvpeft_quant_type {
    RWKVPEFT_QUANT_NONE = 0,
    RWKVPEFT_QUANT_NF4 = 1,
    RWKVPEFT_QUANT_FP4 = 2, /* also "4bit" */
    RWKVPEFT_QUANT_INT8 = 3,
    RWKVPEFT_QUANT_FP8 = 4
} rwkvpeft_quant_type;

/* How weights are held once loaded. */
typedef struct rwkvpeft_model_params {
    uint32_t struct_size;
    /* Gradient checkpointing: keep only each block's input during the forward and
     * recompute the block during the backward (less memory, ~30% more compute). 0/1. */
    int32_t grad_cp;
    /* ---- appended fields ---- */
    /* rwkvpeft_quant_type of the target linears of every block (att receptance, key,
     * value, gate, output; ffn key, receptance, value; RWKV-7 has no gate and no ffn
     * receptance linear), as RWKV-PEFT's --quant. They are
     * quantized from their float32 values at rwkvpeft_adapter_attach (PiSSA: after its SVD,
     * so W_res = W − B₀A₀ is what gets quantized), or at the first forward (evaluate,
     * logits, generate) of a model that gets no adapter; the full-precision copy is then
     * freed. A quantized weight is frozen (no gradient): an attach whose train_parts or
     * full_finetune would train one fails. Every forward/backward dequantizes one matrix
     * at a time into scratch memory. emb, head, norms, time_* and adapter tensors stay in
     * full precision. Default RWKVPEFT_QUANT_NONE. */
    int32_t quant;
    /* 1: while emb.weight is frozen it stays in host memory, and each batch's rows are
     * gathered on the host and copied to the device (B·T·n_embd values per step) instead
     * of being looked up there — saves vocab·n_embd·2 bytes of device memory (0.25 GiB at
     * RWKV-6 1.6B, 0.5 GiB at 7B) for a host-to-device copy per step. An adapter that trains
     * emb moves it back to the device. Results are identical either way; on the CPU backend
     * it only adds the copy. Default 0. */
    int32_t embedding_on_host;
} rwkvpeft_model_params;

RWKVPEFT_API void rwkvpeft_model_params_init(rwkvpeft_model_params *params);

/* Loads an RWKV checkpoint: a PyTorch .pth (zip + pickle as torch.save writes it; bf16,
 * fp16 or fp32 tensors) or a .safetensors file, recognised by content. The architecture
 * version and every size are inferred from tensor names and shapes; any missing tensor or
 * shape that disagrees is an RWKVPEFT_E_SHAPE error naming the tensor and the expected
 * shape. `params` may be NULL. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_model_load(rwkvpeft_context *ctx, const char *path,
                                                 const rwkvpeft_model_params *params,
                                                 rwkvpeft_model **out);

/* Creates a model with the reference's initialisation rules (RWKV-LM/RWKV-PEFT
 * generate_init_weight), deterministic for a given seed on every backend. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_model_init(rwkvpeft_context *ctx,
                                                 const rwkvpeft_model_config *config,
                                                 const rwkvpeft_model_params *params,
                                                 uint64_t seed, rwkvpeft_model **out);

typedef enum rwkvpeft_file_format {
    RWKVPEFT_FORMAT_AUTO = 0,       /* by file name: ".safetensors" else .pth */
    RWKVPEFT_FORMAT_PTH = 1,        /* torch.save zip format, loadable by torch.load */
    RWKVPEFT_FORMAT_SAFETENSORS = 2
} rwkvpeft_file_format;

typedef enum rwkvpeft_dtype {
    RWKVPEFT_DTYPE_F32 = 0,
    RWKVPEFT_DTYPE_BF16 = 1,
    RWKVPEFT_DTYPE_F16 = 2
} rwkvpeft_dtype;

/* Writes the model's current weights (the base weights; an attached adapter is not
 * folded in: use rwkvpeft_model_merge first for that; with PiSSA attached the linears hold
 * W_res = W − B₀A₀; quantized linears are written as their dequantized values) as a plain
 * RWKV checkpoint with the reference's key names. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_model_save(rwkvpeft_model *model, const char *path,
                                                 rwkvpeft_file_format format,
                                                 rwkvpeft_dtype dtype);

typedef struct rwkvpeft_model_info {
    uint32_t struct_size;
    int32_t version;
    int32_t n_layer;
    int32_t n_embd;
    int32_t dim_att;
    int32_t dim_ffn;
    int32_t n_head;
    int32_t head_size;
    int32_t vocab_size;
    int32_t dim_mix;   /* v6 ddlerp low-rank width (time_maa_w1 cols / 5); 0 for v5, v7 */
    int32_t dim_decay; /* v6 decay low-rank width (time_decay_w1 cols); v7: att.w1 cols; 0 for v5 */
    int64_t n_params;    /* all base parameters */
    int64_t n_trainable; /* elements that receive gradients (after attach) */
    /* ---- appended fields ---- */
    /* RWKV-7 low-rank widths (spec §1.2; 0 for v5/v6): decay w1/w2, in-context learning rate
     * a1/a2, value residual v1/v2, gate g1/g2. */
    int32_t dim_w;
    int32_t dim_a;
    int32_t dim_v;
    int32_t dim_g;
} rwkvpeft_model_info;

RWKVPEFT_API rwkvpeft_status rwkvpeft_model_get_info(const rwkvpeft_model *model,
                                                     rwkvpeft_model_info *info);

/* Frees the model and its adapter. Trainers created on it must be freed first. */
RWKVPEFT_API void rwkvpeft_model_free(rwkvpeft_model *model);

RWKVPEFT_API const char *rwkvpeft_model_last_error(const rwkvpeft_model *model);

/* ------------------------------------------------------------------------------------ */
/* Adapters (PEFT)                                                                      */
/* ------------------------------------------------------------------------------------ */

typedef enum rwkvpeft_peft_method {
    RWKVPEFT_PEFT_NONE = 0, /* no adapter: only train_parts (or everything, full_finetune) */
    RWKVPEFT_PEFT_LORA = 1,
    /* LoRA initialised from a randomized SVD of W (rank r, svd_niter power iterations):
     * A = diag(√S)·Vᵀ, B = U·diag(√S), W ← W − B·A; no scaling, no dropout. */
    RWKVPEFT_PEFT_PISSA = 2,
    /* Bone (RWKV-PEFT Nov-2024 "bone" 2-D / DiSHA mode "bone"): a zero-initialised [r,out]
     * tensor P, y = x·Wᵀ + fold(x)·P with fold(x)[c] = Σ_g x[g·r + c] (x zero-padded). */
    RWKVPEFT_PEFT_BONE = 3,
    /* Bat (block-affine; RWKV-PEFT d39f69c "bone" 3-D / DiSHA mode "bat"): a zero-initialised
     * [in/r,r,r] tensor D, each r×r block W_ab ← W_ab + W_ab·D_b + D_b. Needs in%r == out%r
     * == 0 for every adapted linear. */
    RWKVPEFT_PEFT_BAT = 4,
    /* State tuning: a trainable initial WKV state blocks.L.att.time_state [H,N,N] per layer
     * (zeros), shared by every sequence; nothing else trains (train_parts is ignored). */
    RWKVPEFT_PEFT_STATE = 5
} rwkvpeft_peft_method;

typedef struct rwkvpeft_adapter_params {
    uint32_t struct_size;
    int32_t method;  /* rwkvpeft_peft_method; default LoRA */
    /* Rank: LoRA/PiSSA rank, Bone fold width, Bat block size (unused by state tuning).
     * Default 8 (the reference's lora_config default; its Bone/DiSHA default is 64). */
    int32_t r;
    float alpha;     /* LoRA only: scaling = alpha / r; default 32 */
    float dropout;   /* LoRA only: dropout on the branch input; default 0.01 */
    /* Substrings selecting extra trainable base tensors, separated by commas or spaces,
     * matched against full tensor names as the reference does: "time" (all time_*),
     * "ln" (all layer/group norms), "emb", "head". Default "time,ln" (the reference's
     * default). "" trains only the adapter. */
    const char *train_parts;
    /* 1: train every base tensor (full fine-tune; method must be NONE). Default 0. */
    int32_t full_finetune;
    /* 1: also train emb.weight and head.weight, as the reference does when the model was
     * not loaded from a file (fresh init). Default -1 = decide that way automatically. */
    int32_t train_emb_head;
    uint64_t seed; /* for A's init and dropout masks (PiSSA: the SVD test matrix); default 42 */
    /* ---- appended fields (PiSSA, Bone/Bat) ---- */
    int32_t svd_niter; /* PiSSA: power iterations of the randomized SVD; default 4 */
    /* PiSSA: an init file (init_pissa.pth as RWKV-PEFT writes it: "<module>.init_lora_A"
     * [r,in] and ".init_lora_B" [out,r], float32, optionally prefixed "model.") used
     * instead of computing the SVD: W ← W − B₀·A₀, A ← A₀, B ← B₀. Load the trained A,B
     * afterwards with rwkvpeft_adapter_load (the reference's pissa_load). NULL = compute. */
    const char *pissa_init;
    /* Bone/Bat: suffix of the adapter tensor in saved files, "disha" (RWKV-PEFT 2025, the
     * default) or "bone" (Nov-2024). Loading accepts either name. */
    const char *key_name;
} rwkvpeft_adapter_params;

RWKVPEFT_API void rwkvpeft_adapter_params_init(rwkvpeft_adapter_params *params);

/* Attaches an adapter to every target linear (v6: att receptance/key/value/output/gate,
 * ffn key/receptance/value), initialised as the reference does (LoRA: A ~ U(-1/sqrt(in),
 * 1/sqrt(in)), B = 0; PiSSA: randomized SVD of W, see RWKVPEFT_PEFT_PISSA; Bone/Bat:
 * zeros; state: zeros), and marks the trainable tensors. Once per model; call before
 * rwkvpeft_trainer_create. Method details and key names: docs/peft.md. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_adapter_attach(rwkvpeft_model *model,
                                                     const rwkvpeft_adapter_params *params);

/* Loads trainable tensors from an adapter file written by rwkvpeft_save_adapter or by
 * RWKV-PEFT (reference key names, e.g. "blocks.0.att.key.lora_A"; Bone/Bat tensors may be
 * named ".bone" or ".disha" whichever key_name the attach used). Every tensor in the file
 * must be a tensor of the model with the attached adapter with the same shape (an
 * RWKVPEFT_E_SHAPE error names the first one that is not; base-model keys overwrite the
 * base tensor); trainable tensors absent from the file keep their values, and their count
 * is logged. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_adapter_load(rwkvpeft_model *model, const char *path);

/* Writes every trainable tensor under the reference's key names (the content of
 * RWKV-PEFT's rwkv-N.pth). `dtype` is the stored precision (F32 keeps training exact on
 * resume; BF16 matches the reference's files). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_save_adapter(rwkvpeft_model *model, const char *path,
                                                   rwkvpeft_file_format format,
                                                   rwkvpeft_dtype dtype);

/* PiSSA: writes the init file the merge needs (RWKV-PEFT's init_pissa.pth): for every
 * adapted linear "<module>.init_lora_A" [r,in] and "<module>.init_lora_B" [out,r] in
 * float32, the values A and B had right after the attach. RWKVPEFT_E_STATE without an
 * attached PiSSA adapter. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_pissa_save_init(rwkvpeft_model *model, const char *path,
                                                      rwkvpeft_file_format format);

/* PiSSA: RWKVPEFT_OK when the init file at `path` holds the init of the attached adapter
 * (every element within 1e-4 of the tensor's largest magnitude: the float64 SVD may round
 * differently on another CPU or thread count), RWKVPEFT_E_SHAPE naming the first tensor that
 * is missing or differs otherwise (e.g. an init_pissa.pth left by a run on another base
 * model). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_pissa_check_init(rwkvpeft_model *model, const char *path);

/* Folds the attached adapter into the model's weights in place and detaches it, so the
 * model is afterwards a plain model (rwkvpeft_model_save then writes a merged checkpoint;
 * another adapter may be attached). LoRA: W += (alpha/r)·B·A; PiSSA: W ← W_res + B·A;
 * Bone: W[o,i] += P[i mod r, o]; Bat: W_ab += W_ab·D_b + D_b; trained base tensors
 * (train_parts) simply stay; state tuning: time_state stays a model tensor. Arithmetic in
 * float32 on the host. Free the model's trainers first (RWKVPEFT_E_STATE otherwise).
 * Quantized model (rwkvpeft_model_params.quant): W above is dequant(q), the weight that was
 * trained (PiSSA: dequant(quant(W − B₀A₀)) + B·A); an adapted linear holds the merged
 * weight in full precision afterwards, and no further quantization happens. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_model_merge(rwkvpeft_model *model);

/* File-to-file merge, as RWKV-PEFT's merge scripts (merge.py, merge_pissa.py,
 * merge_bone.py/merge_disha.py, merge_state.py) but without a model or device: every
 * adapter tensor that is not an adapter-only tensor (lora_*, bone, disha) overwrites or
 * adds the base tensor of that name (trained time/ln tensors, time_state), then the
 * method's formula folds the adapter tensors into their ".weight". Arithmetic in float32
 * (the reference computes in bf16); the result is rounded once to `dtype`. */
typedef struct rwkvpeft_merge_params {
    uint32_t struct_size;
    const char *base_path;    /* base checkpoint (.pth or .safetensors) */
    const char *adapter_path; /* adapter file (rwkv-N.pth) */
    const char *output_path;  /* merged checkpoint */
    /* rwkvpeft_peft_method of the adapter; -1 (default) = from the tensors: lora_A/B →
     * LoRA (PiSSA when pissa_init is set), 2-D bone/disha → Bone, 3-D → Bat, only
     * time_state (or no adapter tensor) → state / plain overwrite (NONE). */
    int32_t method;
    /* LoRA alpha. Required for LoRA (NAN, the default, is an error naming the flag): the
     * reference's merge.py default of 16 silently mis-scales adapters trained with 32. */
    float lora_alpha;
    const char *pissa_init;   /* PiSSA init file (required for PiSSA) */
    int32_t format;           /* rwkvpeft_file_format of the output; default AUTO */
    int32_t dtype;            /* rwkvpeft_dtype of the output; default BF16 */
    /* ---- appended fields ---- */
    /* rwkvpeft_quant_type the adapter was trained with (merge.py --quant): every target
     * linear's base weight is replaced by dequant(quant(W)) (PiSSA: dequant(quant(W −
     * B₀A₀))) computed from its float32 values before the adapter is folded in, so the
     * merged model is the model that was trained. Default RWKVPEFT_QUANT_NONE. */
    int32_t quant;
} rwkvpeft_merge_params;

RWKVPEFT_API void rwkvpeft_merge_params_init(rwkvpeft_merge_params *params);

/* Runs the file merge. Errors name the file and tensor (a missing .weight for an adapter
 * tensor, a shape that does not fit the method, a PiSSA init that lacks a module). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_merge_files(const rwkvpeft_merge_params *params);

/* ------------------------------------------------------------------------------------ */
/* Batches and evaluation                                                               */
/* ------------------------------------------------------------------------------------ */

#define RWKVPEFT_IGNORE_INDEX (-100)

typedef struct rwkvpeft_batch {
    uint32_t struct_size;
    int32_t batch_size; /* B */
    int32_t seq_len;    /* T */
    const int32_t *inputs;  /* [B*T] token ids in [0, vocab) */
    const int32_t *targets; /* [B*T] next-token ids, or RWKVPEFT_IGNORE_INDEX */
    /* [B*T] optional per-target weights (the reference's loss_mask); NULL = all 1.
     * loss = sum(mask*ce) / sum(mask) over positions with a target. */
    const float *loss_mask;
} rwkvpeft_batch;

RWKVPEFT_API void rwkvpeft_batch_init(rwkvpeft_batch *batch);

typedef struct rwkvpeft_eval_result {
    uint32_t struct_size;
    double loss;     /* mean cross-entropy over counted positions (nats) */
    double n_tokens; /* sum of weights of counted positions */
} rwkvpeft_eval_result;

/* Loss only (no gradients, no L2Wrap): forward + cross-entropy of the batch with the
 * attached adapter applied. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_evaluate(rwkvpeft_model *model, const rwkvpeft_batch *batch,
                                               rwkvpeft_eval_result *result);

/* Logits of every position: `tokens` [batch_size*seq_len] in, `logits` [batch_size*seq_len*
 * vocab_size] float32 out (caller-allocated), with the attached adapter applied. Each
 * sequence starts from the zero state (or the trained initial state of state tuning). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_model_logits(rwkvpeft_model *model, const int32_t *tokens,
                                                   int32_t batch_size, int32_t seq_len,
                                                   float *logits);

typedef struct rwkvpeft_generate_params {
    uint32_t struct_size;
    int32_t max_new_tokens; /* default 100 */
    float temperature;      /* <= 0: greedy (argmax). Default 1.0 */
    float top_p;            /* nucleus sampling mass in (0,1]; default 0.85 */
    uint64_t seed;          /* sampling seed; default 0 */
    int32_t stop_token;     /* stop after emitting this id; default 0 (end of text); -1: never */
} rwkvpeft_generate_params;

RWKVPEFT_API void rwkvpeft_generate_params_init(rwkvpeft_generate_params *params);

/* Continues `prompt` (n_prompt >= 1 ids) with the attached adapter applied, running the
 * model as an RNN (constant memory per token). Writes up to `capacity` new ids to `out`
 * and their count to *n_out; stops at max_new_tokens, capacity or the stop token (which is
 * included in the output). Deterministic for a given seed on a given backend. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_generate(rwkvpeft_model *model, const int32_t *prompt,
                                               size_t n_prompt,
                                               const rwkvpeft_generate_params *params,
                                               int32_t *out, size_t capacity, size_t *n_out);

/* ------------------------------------------------------------------------------------ */
/* Training                                                                             */
/* ------------------------------------------------------------------------------------ */

typedef struct rwkvpeft_trainer rwkvpeft_trainer;

typedef enum rwkvpeft_lr_schedule {
    RWKVPEFT_LR_COS = 0, /* HEAD: lr_final + (lr_init-lr_final)(1+cos(pi*step/total))/2 */
    RWKVPEFT_LR_EXP = 1, /* NOV: lr_init*(lr_final/lr_init)^progress (linear if one is 0) */
    RWKVPEFT_LR_WSD = 2  /* HEAD: linear warmup then cosine to 0 */
} rwkvpeft_lr_schedule;

/* Optimizer of rwkvpeft_train_params.optimizer. */
typedef enum rwkvpeft_optimizer {
    RWKVPEFT_OPTIM_ADAMW = 0,      /* AdamW with float32 moments (the reference's) */
    RWKVPEFT_OPTIM_ADAMW_8BIT = 1  /* AdamW with blockwise 8-bit moments (extension) */
} rwkvpeft_optimizer;

typedef struct rwkvpeft_train_params {
    uint32_t struct_size;
    float lr_init;  /* default 6e-4 (reference default; its scripts use 2e-5) */
    float lr_final; /* default 1e-5 */
    int32_t lr_schedule; /* rwkvpeft_lr_schedule; default COS */
    /* Optimizer steps over which the schedule runs (after it: lr_final). 0 = constant
     * lr_init. */
    int64_t total_steps;
    /* Warmup steps: lr *= 0.01 + 0.99*step/warmup while step < warmup (WSD: its own
     * linear warmup). <= 0: none. Default -1. */
    int32_t warmup_steps;
    float beta1;        /* default 0.9 */
    float beta2;        /* default 0.99 */
    float adam_eps;     /* default 1e-8 */
    float weight_decay; /* AdamW decay for >=2-D tensors; default 0 */
    float grad_clip;    /* global L2 norm clip; default 1.0; <= 0 disables */
    int32_t accumulate_grad_batches; /* micro-batches per optimizer step; default 1 */
    int32_t layerwise_lr; /* reference LR groups (time_decay 2x, ...); default 1 */
    /* Long-context training (the reference's infctx): a batch longer than chunk_ctx tokens is
     * processed chunk_ctx tokens at a time, every layer's token-shift and WKV states carried
     * from chunk to chunk in fp32, so activation memory depends on chunk_ctx and not on the
     * sequence length. 0 (default): off. */
    int32_t chunk_ctx;
    /* With chunk_ctx: 1 (default) = the gradient flows through the carried states across all
     * chunks (each chunk's forward is recomputed once in a backward sweep from its saved start
     * state; the gradient equals the un-chunked model's); 0 = truncated, the reference's
     * semantics (states detached between chunks; each chunk's mean loss weighted by its
     * length). */
    int32_t infctx_full;
    /* rwkvpeft_optimizer: how the Adam moments are stored. RWKVPEFT_OPTIM_ADAMW (default):
     * float32 m and v, as the reference. RWKVPEFT_OPTIM_ADAMW_8BIT: m and v in 8 bits per
     * element, blockwise (256 elements per float32 scale; Dettmers et al. 2021), updated in
     * float32 — 8 bytes per trainable value become ~2.03, saving ~6 bytes per trainable value
     * (~1.6 GiB at 7B QLoRA), with a loss curve that tracks fp32 Adam closely but not bit for
     * bit. An extension: RWKV-PEFT has no 8-bit optimizer. Other values are
     * RWKVPEFT_E_INVALID_ARGUMENT. */
    int32_t optimizer;
} rwkvpeft_train_params;

RWKVPEFT_API void rwkvpeft_train_params_init(rwkvpeft_train_params *params);

/* Creates a trainer (optimizer state for the trainable tensors only, gradient buffers,
 * activation memory) for a model with an attached adapter. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_trainer_create(rwkvpeft_model *model,
                                                     const rwkvpeft_train_params *params,
                                                     rwkvpeft_trainer **out);

RWKVPEFT_API void rwkvpeft_trainer_free(rwkvpeft_trainer *trainer);

RWKVPEFT_API const char *rwkvpeft_trainer_last_error(const rwkvpeft_trainer *trainer);

typedef struct rwkvpeft_step_result {
    uint32_t struct_size;
    double loss;      /* this micro-batch's loss (mean CE, as the reference logs it) */
    double grad_norm; /* global gradient norm before clipping (0 if no optimizer step) */
    double lr;        /* base learning rate used for this micro-batch */
    int32_t optimizer_step_taken; /* 1 when this call completed an accumulation window */
    int64_t step;     /* optimizer steps taken so far */
    int64_t tokens;   /* tokens processed so far */
} rwkvpeft_step_result;

/* One micro-batch: forward, loss (cross-entropy + L2Wrap), backward, and every
 * accumulate_grad_batches calls an optimizer step (clip, Adam, schedule). A batch whose
 * loss or gradients are not finite makes the call fail with RWKVPEFT_E_NUMERIC and the
 * optimizer step is skipped (weights unchanged). `result` may be NULL. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_train_step(rwkvpeft_trainer *trainer,
                                                 const rwkvpeft_batch *batch,
                                                 rwkvpeft_step_result *result);

/* Saves / restores the training state: the trainable weights in full precision, the Adam
 * moments, an unfinished accumulation window and the step counters (safetensors format).
 * Loading it into a trainer of the same model configuration continues training exactly as
 * if it had not stopped (whatever precision the adapter file was saved in). A state file of
 * a different trainable set (other adapter, rank or train_parts) is RWKVPEFT_E_SHAPE; one
 * saved with the other optimizer (fp32 vs 8-bit AdamW) is RWKVPEFT_E_INVALID_ARGUMENT. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_trainer_save_state(rwkvpeft_trainer *trainer,
                                                         const char *path);
RWKVPEFT_API rwkvpeft_status rwkvpeft_trainer_load_state(rwkvpeft_trainer *trainer,
                                                         const char *path);

/* ------------------------------------------------------------------------------------ */
/* Tokenizer: the RWKV World tokenizer (rwkv_vocab_v20230424.txt format)                */
/* ------------------------------------------------------------------------------------ */

typedef struct rwkvpeft_tokenizer rwkvpeft_tokenizer;

/* Loads a World vocabulary file (lines "<id> <python literal> <byte length>"). Every
 * malformed line is an RWKVPEFT_E_FORMAT error naming the line number. Thread-safe; the
 * tokenizer is immutable afterwards and may be shared between threads. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_tokenizer_load(const char *vocab_path,
                                                     rwkvpeft_tokenizer **out);

RWKVPEFT_API void rwkvpeft_tokenizer_free(rwkvpeft_tokenizer *tokenizer);

/* Largest token id + 1 (65530 for the World vocabulary; id 0 is end-of-document). */
RWKVPEFT_API int32_t rwkvpeft_tokenizer_vocab_size(const rwkvpeft_tokenizer *tokenizer);

/* Encodes `len` bytes of `text` (any bytes, not only valid UTF-8) by greedy longest match.
 * Writes at most `capacity` ids to `ids` (may be NULL when capacity is 0) and the number
 * of ids the whole text needs to *n_ids; if that exceeds capacity the call returns
 * RWKVPEFT_E_INVALID_ARGUMENT after filling the buffer, so callers can size and retry. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_tokenizer_encode(const rwkvpeft_tokenizer *tokenizer,
                                                       const char *text, size_t len,
                                                       int32_t *ids, size_t capacity,
                                                       size_t *n_ids);

/* Decodes ids to bytes (id 0 decodes to nothing). Writes at most `capacity` bytes (no NUL
 * terminator is added) and the total byte count to *n_bytes; same sizing rule as encode.
 * An id outside the vocabulary is RWKVPEFT_E_INVALID_ARGUMENT. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_tokenizer_decode(const rwkvpeft_tokenizer *tokenizer,
                                                       const int32_t *ids, size_t n_ids,
                                                       char *bytes, size_t capacity,
                                                       size_t *n_bytes);

/* ------------------------------------------------------------------------------------ */
/* Datasets: Megatron binidx files (<prefix>.bin + <prefix>.idx) as json2binidx writes     */
/* ------------------------------------------------------------------------------------ */

typedef struct rwkvpeft_dataset rwkvpeft_dataset;

/* Opens <prefix>.idx and memory-maps <prefix>.bin. Every dtype code of the format (1
 * uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float32, 7 float64, 8 uint16) is accepted;
 * tokens are returned as int32 and a value that is not an integral id in [0, 2^31) is an
 * error when read. Structural problems are RWKVPEFT_E_FORMAT naming the file and offset. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_dataset_open(const char *prefix, rwkvpeft_dataset **out);

RWKVPEFT_API void rwkvpeft_dataset_free(rwkvpeft_dataset *dataset);

/* Number of sequences (documents) and total tokens in the .bin file. */
RWKVPEFT_API int64_t rwkvpeft_dataset_num_docs(const rwkvpeft_dataset *dataset);
RWKVPEFT_API int64_t rwkvpeft_dataset_num_tokens(const rwkvpeft_dataset *dataset);

/* Token offset (in the flat token stream) and length of document `index`. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_dataset_doc(const rwkvpeft_dataset *dataset, int64_t index,
                                                  int64_t *token_offset, int64_t *n_tokens);

/* Copies n tokens starting at flat token offset `offset` (may cross documents). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_dataset_read(const rwkvpeft_dataset *dataset, int64_t offset,
                                                   int64_t n, int32_t *tokens);

RWKVPEFT_API const char *rwkvpeft_dataset_last_error(const rwkvpeft_dataset *dataset);

typedef struct rwkvpeft_dataset_writer rwkvpeft_dataset_writer;

/* Creates <prefix>.bin/.idx for writing. `dtype_code` as in the format (0 = choose like
 * json2binidx: uint16 when vocab_size < 65500, else int32). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_dataset_writer_create(const char *prefix, int32_t dtype_code,
                                                            int32_t vocab_size,
                                                            rwkvpeft_dataset_writer **out);

/* Appends one document (sequence). Ids must fit the dtype. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_dataset_writer_add(rwkvpeft_dataset_writer *writer,
                                                         const int32_t *tokens, int64_t n);

/* Writes the index and closes both files; the writer must still be freed. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_dataset_writer_finish(rwkvpeft_dataset_writer *writer);

/* Frees the writer; an unfinished writer removes its partial files. */
RWKVPEFT_API void rwkvpeft_dataset_writer_free(rwkvpeft_dataset_writer *writer);

RWKVPEFT_API const char *rwkvpeft_dataset_writer_last_error(const rwkvpeft_dataset_writer *writer);

/* jsonl -> binidx conversion, as json2binidx (RWKVTokenizer, --append-eod). */
typedef struct rwkvpeft_jsonl_params {
    uint32_t struct_size;
    const char *jsonl_path;    /* input: one JSON object per line */
    const char *output_prefix; /* writes <prefix>.bin / <prefix>.idx */
    const char *vocab_path;    /* World vocabulary file */
    /* Field(s) to tokenize: "text" (default). For SFT data give two fields separated by a
     * comma, e.g. "instruction,output": each record becomes the reference's SFT prompt
     * (spec §5.5) followed by the response and "\n\x17". */
    const char *fields;
    int32_t append_eod; /* append token 0 after each document; default 1 */
    /* Progress callback, called about every 0.2 s and at the end with bytes read so far
     * and the input size. Returning non-zero cancels (RWKVPEFT_E_STATE). May be NULL. */
    int32_t (*progress)(void *user, uint64_t bytes_done, uint64_t bytes_total, uint64_t docs);
    void *progress_user;
} rwkvpeft_jsonl_params;

RWKVPEFT_API void rwkvpeft_jsonl_params_init(rwkvpeft_jsonl_params *params);

/* Converts. A line that is not a JSON object, lacks a field, or has a non-string field is
 * an RWKVPEFT_E_FORMAT error "<file>:<line>: <what is wrong>" and nothing is written
 * under the output prefix (no line is skipped silently; empty lines are the only lines
 * skipped, and they are counted in *n_skipped). On success *n_docs holds the document
 * count (the reference prints it as data_nums). Pointers may be NULL. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_jsonl_to_binidx(const rwkvpeft_jsonl_params *params,
                                                      int64_t *n_docs, int64_t *n_skipped);

/* ------------------------------------------------------------------------------------ */
/* Samplers: training batches (inputs, targets, loss mask) from a dataset               */
/* ------------------------------------------------------------------------------------ */

/* A sampler turns a dataset into the reference's micro-batches (spec §5.4-§5.6): windows
 * of ctx_len+1 tokens, inputs = window[0:ctx_len], targets = window[1:ctx_len+1], with
 * RWKVPEFT_IGNORE_INDEX and mask 0 wherever nothing is to be predicted.
 *
 * Determinism: every random choice (window offsets, the per-epoch shuffle) is a pure
 * function of (seed, epoch, position in the epoch), computed by the library's own
 * counter-based generator. The same parameters give bit-identical batches on every
 * machine, and rwkvpeft_sampler_set_position() resumes a run exactly: the position is the
 * sampler's only state. (The reference's numpy/torch random streams are not reproduced.)
 *
 * Epochs: an epoch is epoch_steps batches of micro_bsz samples (S = epoch_steps*micro_bsz
 * samples). Sample k of epoch e uses index idx = k, or, with data_shuffle, the k-th element
 * of a pseudo-random permutation of [0, S) drawn for epoch e. Document-based modes (pad,
 * only, jsonl, sft) read document (e*S + idx) mod n_docs: the reference reads document
 * idx, i.e. the same first S documents every epoch (and crashes when S > n_docs); the two
 * agree whenever S == n_docs.
 *
 * Batches whose mask sums to zero are never returned: such a batch (every sample without
 * a single target, e.g. documents of one token) is skipped and the position moves on, so
 * the caller's loss sum(mask*ce)/sum(mask) is always well defined (create fails when no
 * document at all can give a target). See docs/data.md.
 *
 * Thread safety: a sampler must not be used by two threads at once; distinct samplers are
 * independent. A tokenizer passed in the params may be shared with other users. */

typedef struct rwkvpeft_sampler rwkvpeft_sampler;

typedef struct rwkvpeft_sampler_params {
    uint32_t struct_size;
    /* binidx: the path prefix (without .bin/.idx); jsonl and sft: the .jsonl file. */
    const char *data_file;
    /* "binidx" (default), "jsonl" (HEAD: each record's "text" tokenized without EOD,
     * truncated to ctx_len+1 tokens and right-padded) or "sft" (records with the two fields
     * of sft_fields; the reference's prompt template; prompt tokens get no target). */
    const char *data_type;
    /* World vocabulary file; required for jsonl, sft and loss_mask "se" (NULL otherwise:
     * "qa" then uses the World ids of "User:" and "Assistant:"). Ignored when `tokenizer`
     * is set. */
    const char *vocab_path;
    /* binidx only: "get" (default; uniform random windows over the flat token stream),
     * "pad" (window starting at a document; targets after the document are ignored) or
     * "only" (one document, truncated to ctx_len+1 tokens, no filling: variable length). */
    const char *dataload;
    /* "none" (default), "pad" (targets inside the document only: what pad/only/jsonl
     * always do here, so it changes nothing), "qa" (only the spans from "Assistant:" up to
     * the next "User:") or "se" (the same with the markers of mask_id). A window with no
     * marked target falls back to all of its document's targets. */
    const char *loss_mask;
    /* JSON object {"mask0": "<text>", "mask1": "<text>"} for "se": mask0 switches the mask
     * off, mask1 on. NULL = {"mask0":"0","mask1":"1"} (the reference's default). */
    const char *mask_id;
    /* "query,response": the two record fields for data_type sft. NULL = "query,response". */
    const char *sft_fields;
    int32_t ctx_len;       /* T; default 1024 */
    int32_t micro_bsz;     /* B; default 12 (the reference's default) */
    /* Batches per epoch. 0 (default) = automatic: n_docs / micro_bsz for the document
     * modes, 40320 / micro_bsz with my_pile_stage in 1..3, else 1000 (the reference's
     * default). */
    int64_t epoch_steps;
    int32_t data_shuffle;  /* 1 (default): permute the indices of every epoch */
    uint64_t seed;         /* default 0; every value gives a deterministic stream */
    /* Pretraining's "magic prime" sampling (binidx + get only): my_pile_stage in 1..3 reads
     * sample ii = 1 + epoch*S + idx at token ((floor(magic_prime*(sqrt(5)-1)/2) * ii^3) mod
     * magic_prime) * ctx_len + my_pile_shift. magic_prime must be a prime, = 2 (mod 3),
     * with 0.99 < magic_prime / (n_tokens / ctx_len) <= 1. Stage 4 = plain get. 0
     * (default) = off. my_pile_shift < 0 (default -1) means 0. */
    int32_t my_pile_stage;
    int64_t magic_prime;
    int64_t my_pile_shift;
    /* Optional already-loaded tokenizer (not owned; must outlive the sampler). */
    const rwkvpeft_tokenizer *tokenizer;
} rwkvpeft_sampler_params;

/* Fills `params` with the defaults above (and struct_size). Thread-safe. */
RWKVPEFT_API void rwkvpeft_sampler_params_init(rwkvpeft_sampler_params *params);

/* Opens the data and checks the parameters: unknown mode names, ctx_len or micro_bsz < 1,
 * a dataset too small for a window (get needs more than ctx_len+1 tokens), no documents,
 * a bad magic prime, malformed mask_id are RWKVPEFT_E_INVALID_ARGUMENT; data file errors
 * are those of rwkvpeft_dataset_open / rwkvpeft_jsonl_to_binidx ("<file>:<line>: ...");
 * data in which no document can give a single target is RWKVPEFT_E_FORMAT.
 * jsonl and sft files are read and tokenized here, once (only the first ctx_len+1 tokens
 * of each record are kept). On failure *out is NULL and rwkvpeft_last_error() says why. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_sampler_create(const rwkvpeft_sampler_params *params,
                                                     rwkvpeft_sampler **out);

RWKVPEFT_API void rwkvpeft_sampler_free(rwkvpeft_sampler *sampler);

/* Produces the batch at the current position and advances it. Each of inputs, targets and
 * mask must hold micro_bsz*ctx_len elements; mask may be NULL. The batch is written as
 * micro_bsz rows of *seq_len elements each (row b starts at b * *seq_len): *seq_len is
 * ctx_len, except for dataload "only" where it is the longest real length in the batch
 * (>= 1; shorter rows are padded with input 0, target IGNORE, mask 0). inputs are token
 * ids; targets are the next token or RWKVPEFT_IGNORE_INDEX; mask is 1.0 exactly where the
 * target is not ignored, else 0.0. Fails with RWKVPEFT_E_FORMAT when a token value in
 * the .bin is not an id (the position then stays where it was). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_sampler_next(rwkvpeft_sampler *sampler, int32_t *inputs,
                                                   int32_t *targets, float *mask,
                                                   int32_t *seq_len);

/* Position of the next batch: epoch >= 0 and step in [0, epoch_steps). A new sampler is at
 * (0, 0). Setting a position saved with get_position continues the identical sequence. */
RWKVPEFT_API rwkvpeft_status rwkvpeft_sampler_set_position(rwkvpeft_sampler *sampler,
                                                           int64_t epoch, int64_t step);
RWKVPEFT_API rwkvpeft_status rwkvpeft_sampler_get_position(const rwkvpeft_sampler *sampler,
                                                           int64_t *epoch, int64_t *step);

typedef struct rwkvpeft_sampler_info {
    uint32_t struct_size;
    int64_t n_docs;      /* binidx sequences, or jsonl/sft records */
    int64_t n_tokens;    /* tokens of the .bin; for jsonl/sft the tokens kept */
    int64_t epoch_steps; /* batches per epoch (resolved when the params said 0) */
    int32_t ctx_len;
    int32_t micro_bsz;
    /* magic_prime / (epoch_steps*micro_bsz) when my_pile_stage is 1..3 (the reference's
     * epoch_count in that mode), else 0. */
    int64_t magic_epoch_count;
} rwkvpeft_sampler_info;

/* Fills `info` (set info->struct_size first). */
RWKVPEFT_API rwkvpeft_status rwkvpeft_sampler_get_info(const rwkvpeft_sampler *sampler,
                                                       rwkvpeft_sampler_info *info);

/* Message of the last failure on this sampler ("" if none). */
RWKVPEFT_API const char *rwkvpeft_sampler_last_error(const rwkvpeft_sampler *sampler);

#ifdef __cplusplus
}
#endif

#endif /* RWKVPEFT_H */
