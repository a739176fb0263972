//! Raw FFI declarations of include/rwkvpeft.h, written by hand (no bindgen).
//!
//! Every `RWKVPEFT_API` function and every struct of the header, with the same names, field
//! order and C types (`#[repr(C)]`). `bindings/check_drift.py` compares this file with the
//! header. Enums are `i32` type aliases (C enums are int-sized here), so any value the
//! library returns is representable.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_void};

pub const RWKVPEFT_VERSION_MAJOR: u32 = 0;
pub const RWKVPEFT_VERSION_MINOR: u32 = 1;
pub const RWKVPEFT_VERSION_PATCH: u32 = 0;
pub const RWKVPEFT_VERSION_NUMBER: u32 =
    RWKVPEFT_VERSION_MAJOR * 10000 + RWKVPEFT_VERSION_MINOR * 100 + RWKVPEFT_VERSION_PATCH;

pub type rwkvpeft_status = i32;
pub const RWKVPEFT_OK: rwkvpeft_status = 0;
pub const RWKVPEFT_E_INVALID_ARGUMENT: rwkvpeft_status = -1;
pub const RWKVPEFT_E_OUT_OF_MEMORY: rwkvpeft_status = -2;
pub const RWKVPEFT_E_IO: rwkvpeft_status = -3;
pub const RWKVPEFT_E_FORMAT: rwkvpeft_status = -4;
pub const RWKVPEFT_E_SHAPE: rwkvpeft_status = -5;
pub const RWKVPEFT_E_UNSUPPORTED: rwkvpeft_status = -6;
pub const RWKVPEFT_E_BACKEND: rwkvpeft_status = -7;
pub const RWKVPEFT_E_NUMERIC: rwkvpeft_status = -8;
pub const RWKVPEFT_E_STATE: rwkvpeft_status = -9;
pub const RWKVPEFT_E_INTERNAL: rwkvpeft_status = -10;

pub type rwkvpeft_log_level = i32;
pub const RWKVPEFT_LOG_ERROR: rwkvpeft_log_level = 0;
pub const RWKVPEFT_LOG_WARN: rwkvpeft_log_level = 1;
pub const RWKVPEFT_LOG_INFO: rwkvpeft_log_level = 2;
pub const RWKVPEFT_LOG_DEBUG: rwkvpeft_log_level = 3;

pub type rwkvpeft_file_format = i32;
pub const RWKVPEFT_FORMAT_AUTO: rwkvpeft_file_format = 0;
pub const RWKVPEFT_FORMAT_PTH: rwkvpeft_file_format = 1;
pub const RWKVPEFT_FORMAT_SAFETENSORS: rwkvpeft_file_format = 2;

pub type rwkvpeft_dtype = i32;
pub const RWKVPEFT_DTYPE_F32: rwkvpeft_dtype = 0;
pub const RWKVPEFT_DTYPE_BF16: rwkvpeft_dtype = 1;
pub const RWKVPEFT_DTYPE_F16: rwkvpeft_dtype = 2;

pub type rwkvpeft_peft_method = i32;
pub const RWKVPEFT_PEFT_NONE: rwkvpeft_peft_method = 0;
pub const RWKVPEFT_PEFT_LORA: rwkvpeft_peft_method = 1;
pub const RWKVPEFT_PEFT_PISSA: rwkvpeft_peft_method = 2;
pub const RWKVPEFT_PEFT_BONE: rwkvpeft_peft_method = 3;
pub const RWKVPEFT_PEFT_BAT: rwkvpeft_peft_method = 4;
pub const RWKVPEFT_PEFT_STATE: rwkvpeft_peft_method = 5;

pub type rwkvpeft_quant_type = i32;
pub const RWKVPEFT_QUANT_NONE: rwkvpeft_quant_type = 0;
pub const RWKVPEFT_QUANT_NF4: rwkvpeft_quant_type = 1;
pub const RWKVPEFT_QUANT_FP4: rwkvpeft_quant_type = 2;
pub const RWKVPEFT_QUANT_INT8: rwkvpeft_quant_type = 3;
pub const RWKVPEFT_QUANT_FP8: rwkvpeft_quant_type = 4;

pub type rwkvpeft_lr_schedule = i32;
pub const RWKVPEFT_LR_COS: rwkvpeft_lr_schedule = 0;
pub const RWKVPEFT_LR_EXP: rwkvpeft_lr_schedule = 1;
pub const RWKVPEFT_LR_WSD: rwkvpeft_lr_schedule = 2;

pub type rwkvpeft_optimizer = i32;
pub const RWKVPEFT_OPTIM_ADAMW: rwkvpeft_optimizer = 0;
pub const RWKVPEFT_OPTIM_ADAMW_8BIT: rwkvpeft_optimizer = 1;

pub const RWKVPEFT_IGNORE_INDEX: i32 = -100;

/// Log sink: `message` has no trailing newline and is valid only during the call.
pub type rwkvpeft_log_fn = Option<unsafe extern "C" fn(user: *mut c_void, level: i32, message: *const c_char)>;

/// Progress callback of `rwkvpeft_jsonl_params`; non-zero cancels.
pub type rwkvpeft_progress_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, bytes_done: u64, bytes_total: u64, docs: u64) -> i32>;

macro_rules! opaque {
    ($($name:ident),*) => {$(
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
            _not_send_sync: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
        }
    )*};
}
opaque!(
    rwkvpeft_context,
    rwkvpeft_model,
    rwkvpeft_trainer,
    rwkvpeft_tokenizer,
    rwkvpeft_dataset,
    rwkvpeft_dataset_writer,
    rwkvpeft_sampler
);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rwkvpeft_backend_info {
    pub struct_size: u32,
    pub name: [c_char; 16],
    pub available: i32,
    pub device_count: i32,
    pub description: [c_char; 192],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rwkvpeft_context_params {
    pub struct_size: u32,
    pub backend: *const c_char,
    pub device: i32,
    pub n_threads: i32,
    pub log_level: i32,
    pub log_fn: rwkvpeft_log_fn,
    pub log_user: *mut c_void,
    pub module_path: *const c_char,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rwkvpeft_model_config {
    pub struct_size: u32,
    pub version: i32,
    pub n_layer: i32,
    pub n_embd: i32,
    pub dim_att: i32,
    pub dim_ffn: i32,
    pub head_size: i32,
    pub vocab_size: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rwkvpeft_model_params {
    pub struct_size: u32,
    pub grad_cp: i32,
    // appended in 0.1 (issue 6)
    pub quant: i32,
    pub embedding_on_host: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rwkvpeft_model_info {
    pub struct_size: u32,
    pub version: i32,
    pub n_layer: i32,
    pub n_embd: i32,
    pub dim_att: i32,
    pub dim_ffn: i32,
    pub n_head: i32,
    pub head_size: i32,
    pub vocab_size: i32,
    pub dim_mix: i32,
    pub dim_decay: i32,
    pub n_params: i64,
    pub n_trainable: i64,
    pub dim_w: i32,
    pub dim_a: i32,
    pub dim_v: i32,
    pub dim_g: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rwkvpeft_adapter_params {
    pub struct_size: u32,
    pub method: i32,
    pub r: i32,
    pub alpha: f32,
    pub dropout: f32,
    pub train_parts: *const c_char,
    pub full_finetune: i32,
    pub train_emb_head: i32,
    pub seed: u64,
    // appended in 0.1 (issue 4)
    pub svd_niter: i32,
    pub pissa_init: *const c_char,
    pub key_name: *const c_char,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rwkvpeft_merge_params {
    pub struct_size: u32,
    pub base_path: *const c_char,
    pub adapter_path: *const c_char,
    pub output_path: *const c_char,
    pub method: i32,
    pub lora_alpha: f32,
    pub pissa_init: *const c_char,
    pub format: i32,
    pub dtype: i32,
    // appended in 0.1 (issue 6)
    pub quant: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rwkvpeft_batch {
    pub struct_size: u32,
    pub batch_size: i32,
    pub seq_len: i32,
    pub inputs: *const i32,
    pub targets: *const i32,
    pub loss_mask: *const f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rwkvpeft_eval_result {
    pub struct_size: u32,
    pub loss: f64,
    pub n_tokens: f64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rwkvpeft_generate_params {
    pub struct_size: u32,
    pub max_new_tokens: i32,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop_token: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rwkvpeft_train_params {
    pub struct_size: u32,
    pub lr_init: f32,
    pub lr_final: f32,
    pub lr_schedule: i32,
    pub total_steps: i64,
    pub warmup_steps: i32,
    pub beta1: f32,
    pub beta2: f32,
    pub adam_eps: f32,
    pub weight_decay: f32,
    pub grad_clip: f32,
    pub accumulate_grad_batches: i32,
    pub layerwise_lr: i32,
    pub chunk_ctx: i32,
    pub infctx_full: i32,
    pub optimizer: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rwkvpeft_step_result {
    pub struct_size: u32,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub optimizer_step_taken: i32,
    pub step: i64,
    pub tokens: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rwkvpeft_jsonl_params {
    pub struct_size: u32,
    pub jsonl_path: *const c_char,
    pub output_prefix: *const c_char,
    pub vocab_path: *const c_char,
    pub fields: *const c_char,
    pub append_eod: i32,
    pub progress: rwkvpeft_progress_fn,
    pub progress_user: *mut c_void,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rwkvpeft_sampler_params {
    pub struct_size: u32,
    pub data_file: *const c_char,
    pub data_type: *const c_char,
    pub vocab_path: *const c_char,
    pub dataload: *const c_char,
    pub loss_mask: *const c_char,
    pub mask_id: *const c_char,
    pub sft_fields: *const c_char,
    pub ctx_len: i32,
    pub micro_bsz: i32,
    pub epoch_steps: i64,
    pub data_shuffle: i32,
    pub seed: u64,
    pub my_pile_stage: i32,
    pub magic_prime: i64,
    pub my_pile_shift: i64,
    pub tokenizer: *const rwkvpeft_tokenizer,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rwkvpeft_sampler_info {
    pub struct_size: u32,
    pub n_docs: i64,
    pub n_tokens: i64,
    pub epoch_steps: i64,
    pub ctx_len: i32,
    pub micro_bsz: i32,
    pub magic_epoch_count: i64,
}

extern "C" {
    // versions, errors
    pub fn rwkvpeft_version_number() -> u32;
    pub fn rwkvpeft_version_string() -> *const c_char;
    pub fn rwkvpeft_status_string(status: rwkvpeft_status) -> *const c_char;
    pub fn rwkvpeft_last_error() -> *const c_char;

    // backends
    pub fn rwkvpeft_backend_count() -> i32;
    pub fn rwkvpeft_backend_get_info(index: i32, info: *mut rwkvpeft_backend_info) -> rwkvpeft_status;

    // context
    pub fn rwkvpeft_context_params_init(params: *mut rwkvpeft_context_params);
    pub fn rwkvpeft_context_create(
        params: *const rwkvpeft_context_params,
        out: *mut *mut rwkvpeft_context,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_context_free(ctx: *mut rwkvpeft_context);
    pub fn rwkvpeft_context_backend(ctx: *const rwkvpeft_context) -> *const c_char;
    pub fn rwkvpeft_context_last_error(ctx: *const rwkvpeft_context) -> *const c_char;
    pub fn rwkvpeft_context_memory(
        ctx: *mut rwkvpeft_context,
        free_bytes: *mut u64,
        total_bytes: *mut u64,
    ) -> rwkvpeft_status;

    // models
    pub fn rwkvpeft_model_config_init(config: *mut rwkvpeft_model_config);
    pub fn rwkvpeft_model_params_init(params: *mut rwkvpeft_model_params);
    pub fn rwkvpeft_model_load(
        ctx: *mut rwkvpeft_context,
        path: *const c_char,
        params: *const rwkvpeft_model_params,
        out: *mut *mut rwkvpeft_model,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_model_init(
        ctx: *mut rwkvpeft_context,
        config: *const rwkvpeft_model_config,
        params: *const rwkvpeft_model_params,
        seed: u64,
        out: *mut *mut rwkvpeft_model,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_model_save(
        model: *mut rwkvpeft_model,
        path: *const c_char,
        format: rwkvpeft_file_format,
        dtype: rwkvpeft_dtype,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_model_get_info(model: *const rwkvpeft_model, info: *mut rwkvpeft_model_info) -> rwkvpeft_status;
    pub fn rwkvpeft_model_free(model: *mut rwkvpeft_model);
    pub fn rwkvpeft_model_last_error(model: *const rwkvpeft_model) -> *const c_char;

    // adapters
    pub fn rwkvpeft_adapter_params_init(params: *mut rwkvpeft_adapter_params);
    pub fn rwkvpeft_adapter_attach(
        model: *mut rwkvpeft_model,
        params: *const rwkvpeft_adapter_params,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_adapter_load(model: *mut rwkvpeft_model, path: *const c_char) -> rwkvpeft_status;
    pub fn rwkvpeft_save_adapter(
        model: *mut rwkvpeft_model,
        path: *const c_char,
        format: rwkvpeft_file_format,
        dtype: rwkvpeft_dtype,
    ) -> rwkvpeft_status;

    pub fn rwkvpeft_pissa_save_init(
        model: *mut rwkvpeft_model,
        path: *const c_char,
        format: rwkvpeft_file_format,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_pissa_check_init(model: *mut rwkvpeft_model, path: *const c_char) -> rwkvpeft_status;
    pub fn rwkvpeft_model_merge(model: *mut rwkvpeft_model) -> rwkvpeft_status;
    pub fn rwkvpeft_merge_params_init(params: *mut rwkvpeft_merge_params);
    pub fn rwkvpeft_merge_files(params: *const rwkvpeft_merge_params) -> rwkvpeft_status;

    // batches, evaluation, generation
    pub fn rwkvpeft_batch_init(batch: *mut rwkvpeft_batch);
    pub fn rwkvpeft_evaluate(
        model: *mut rwkvpeft_model,
        batch: *const rwkvpeft_batch,
        result: *mut rwkvpeft_eval_result,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_model_logits(
        model: *mut rwkvpeft_model,
        tokens: *const i32,
        batch_size: i32,
        seq_len: i32,
        logits: *mut f32,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_generate_params_init(params: *mut rwkvpeft_generate_params);
    pub fn rwkvpeft_generate(
        model: *mut rwkvpeft_model,
        prompt: *const i32,
        n_prompt: usize,
        params: *const rwkvpeft_generate_params,
        out: *mut i32,
        capacity: usize,
        n_out: *mut usize,
    ) -> rwkvpeft_status;

    // training
    pub fn rwkvpeft_train_params_init(params: *mut rwkvpeft_train_params);
    pub fn rwkvpeft_trainer_create(
        model: *mut rwkvpeft_model,
        params: *const rwkvpeft_train_params,
        out: *mut *mut rwkvpeft_trainer,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_trainer_free(trainer: *mut rwkvpeft_trainer);
    pub fn rwkvpeft_trainer_last_error(trainer: *const rwkvpeft_trainer) -> *const c_char;
    pub fn rwkvpeft_train_step(
        trainer: *mut rwkvpeft_trainer,
        batch: *const rwkvpeft_batch,
        result: *mut rwkvpeft_step_result,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_trainer_save_state(trainer: *mut rwkvpeft_trainer, path: *const c_char) -> rwkvpeft_status;
    pub fn rwkvpeft_trainer_load_state(trainer: *mut rwkvpeft_trainer, path: *const c_char) -> rwkvpeft_status;

    // tokenizer
    pub fn rwkvpeft_tokenizer_load(vocab_path: *const c_char, out: *mut *mut rwkvpeft_tokenizer) -> rwkvpeft_status;
    pub fn rwkvpeft_tokenizer_free(tokenizer: *mut rwkvpeft_tokenizer);
    pub fn rwkvpeft_tokenizer_vocab_size(tokenizer: *const rwkvpeft_tokenizer) -> i32;
    pub fn rwkvpeft_tokenizer_encode(
        tokenizer: *const rwkvpeft_tokenizer,
        text: *const c_char,
        len: usize,
        ids: *mut i32,
        capacity: usize,
        n_ids: *mut usize,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_tokenizer_decode(
        tokenizer: *const rwkvpeft_tokenizer,
        ids: *const i32,
        n_ids: usize,
        bytes: *mut c_char,
        capacity: usize,
        n_bytes: *mut usize,
    ) -> rwkvpeft_status;

    // datasets
    pub fn rwkvpeft_dataset_open(prefix: *const c_char, out: *mut *mut rwkvpeft_dataset) -> rwkvpeft_status;
    pub fn rwkvpeft_dataset_free(dataset: *mut rwkvpeft_dataset);
    pub fn rwkvpeft_dataset_num_docs(dataset: *const rwkvpeft_dataset) -> i64;
    pub fn rwkvpeft_dataset_num_tokens(dataset: *const rwkvpeft_dataset) -> i64;
    pub fn rwkvpeft_dataset_doc(
        dataset: *const rwkvpeft_dataset,
        index: i64,
        token_offset: *mut i64,
        n_tokens: *mut i64,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_dataset_read(
        dataset: *const rwkvpeft_dataset,
        offset: i64,
        n: i64,
        tokens: *mut i32,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_dataset_last_error(dataset: *const rwkvpeft_dataset) -> *const c_char;
    pub fn rwkvpeft_dataset_writer_create(
        prefix: *const c_char,
        dtype_code: i32,
        vocab_size: i32,
        out: *mut *mut rwkvpeft_dataset_writer,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_dataset_writer_add(
        writer: *mut rwkvpeft_dataset_writer,
        tokens: *const i32,
        n: i64,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_dataset_writer_finish(writer: *mut rwkvpeft_dataset_writer) -> rwkvpeft_status;
    pub fn rwkvpeft_dataset_writer_free(writer: *mut rwkvpeft_dataset_writer);
    pub fn rwkvpeft_dataset_writer_last_error(writer: *const rwkvpeft_dataset_writer) -> *const c_char;
    pub fn rwkvpeft_jsonl_params_init(params: *mut rwkvpeft_jsonl_params);
    pub fn rwkvpeft_jsonl_to_binidx(
        params: *const rwkvpeft_jsonl_params,
        n_docs: *mut i64,
        n_skipped: *mut i64,
    ) -> rwkvpeft_status;

    // samplers
    pub fn rwkvpeft_sampler_params_init(params: *mut rwkvpeft_sampler_params);
    pub fn rwkvpeft_sampler_create(
        params: *const rwkvpeft_sampler_params,
        out: *mut *mut rwkvpeft_sampler,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_sampler_free(sampler: *mut rwkvpeft_sampler);
    pub fn rwkvpeft_sampler_next(
        sampler: *mut rwkvpeft_sampler,
        inputs: *mut i32,
        targets: *mut i32,
        mask: *mut f32,
        seq_len: *mut i32,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_sampler_set_position(sampler: *mut rwkvpeft_sampler, epoch: i64, step: i64) -> rwkvpeft_status;
    pub fn rwkvpeft_sampler_get_position(
        sampler: *const rwkvpeft_sampler,
        epoch: *mut i64,
        step: *mut i64,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_sampler_get_info(
        sampler: *const rwkvpeft_sampler,
        info: *mut rwkvpeft_sampler_info,
    ) -> rwkvpeft_status;
    pub fn rwkvpeft_sampler_last_error(sampler: *const rwkvpeft_sampler) -> *const c_char;
}
