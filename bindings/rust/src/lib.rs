//! Safe Rust bindings of librwkvpeft, an embeddable C library that fine-tunes RWKV language
//! models with parameter-efficient methods (LoRA, ...).
//!
//! * [`sys`]: the C API 1:1 (hand-written `extern "C"` declarations and `#[repr(C)]` structs).
//! * This crate root: RAII handles ([`Context`], [`Model`], [`Trainer`], [`Tokenizer`],
//!   [`Dataset`], [`DatasetWriter`], [`Sampler`]) whose methods return [`Result`], with
//!   [`Error`] carrying the C status code and the library's message.
//!
//! # Thread safety (mirrors include/rwkvpeft.h)
//!
//! A context, every model created on it and every trainer created on those models form one
//! *tree* whose calls must not overlap. Here a [`Model`] borrows its [`Context`] and a
//! [`Trainer`] borrows its [`Model`], and none of the three is `Sync`, so a tree is confined
//! to one thread at a time by the type system. A `Context` with no models yet is `Send` (it
//! can be created on one thread and moved to another); models and trainers are neither
//! `Send` nor `Sync` (they borrow a `!Sync` context). Build a whole tree inside a thread (for
//! example with `std::thread::scope`) to run several trees in parallel.
//!
//! A [`Tokenizer`] is immutable after loading and is `Send + Sync`. [`Dataset`],
//! [`DatasetWriter`] and [`Sampler`] are `Send` but not `Sync` (one thread at a time).
//!
//! The lifetimes also encode the freeing order the C library requires: a trainer is dropped
//! before its model, a model before its context.

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};
use std::path::Path;
use std::ptr::{self, NonNull};

pub mod sys;

/// [`sys::RWKVPEFT_IGNORE_INDEX`]: a target that is not predicted.
pub const IGNORE_INDEX: i32 = sys::RWKVPEFT_IGNORE_INDEX;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// The status codes of the C API (values fixed forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    InvalidArgument,
    OutOfMemory,
    Io,
    Format,
    Shape,
    Unsupported,
    Backend,
    Numeric,
    State,
    Internal,
    /// A code this crate does not know (a newer library).
    Other(i32),
}

impl Status {
    pub fn from_code(code: i32) -> Status {
        match code {
            sys::RWKVPEFT_E_INVALID_ARGUMENT => Status::InvalidArgument,
            sys::RWKVPEFT_E_OUT_OF_MEMORY => Status::OutOfMemory,
            sys::RWKVPEFT_E_IO => Status::Io,
            sys::RWKVPEFT_E_FORMAT => Status::Format,
            sys::RWKVPEFT_E_SHAPE => Status::Shape,
            sys::RWKVPEFT_E_UNSUPPORTED => Status::Unsupported,
            sys::RWKVPEFT_E_BACKEND => Status::Backend,
            sys::RWKVPEFT_E_NUMERIC => Status::Numeric,
            sys::RWKVPEFT_E_STATE => Status::State,
            sys::RWKVPEFT_E_INTERNAL => Status::Internal,
            other => Status::Other(other),
        }
    }
}

/// A failed call: the C status code and the message of the failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    code: i32,
    message: String,
}

impl Error {
    /// An error with the given code and message.
    pub fn new(code: i32, message: impl Into<String>) -> Error {
        Error { code, message: message.into() }
    }

    /// The error of the most recent failing call of this thread (`rwkvpeft_last_error`).
    fn last(code: i32) -> Error {
        // SAFETY: rwkvpeft_last_error returns a NUL-terminated string (never NULL).
        let message = unsafe { cstr_to_string(sys::rwkvpeft_last_error()) };
        Error { code, message }
    }

    fn invalid(message: impl Into<String>) -> Error {
        Error::new(sys::RWKVPEFT_E_INVALID_ARGUMENT, message)
    }

    /// The raw status code (negative).
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The code as a [`Status`].
    pub fn status(&self) -> Status {
        Status::from_code(self.code)
    }

    /// The library's short description of the code ("i/o error", ...).
    pub fn status_str(&self) -> String {
        status_string(self.code)
    }

    /// The message of the failure (from the C library, or from this crate's own checks).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, code {})", self.message, self.status_str(), self.code)
    }
}

impl std::error::Error for Error {}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

fn check(status: sys::rwkvpeft_status) -> Result<()> {
    if status == sys::RWKVPEFT_OK {
        Ok(())
    } else {
        Err(Error::last(status))
    }
}

/// # Safety
/// `p` is NULL or a valid NUL-terminated string.
unsafe fn cstr_to_string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{what} contains a NUL byte")))
}

fn cpath(p: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        p.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes =
        p.to_str().ok_or_else(|| Error::invalid(format!("path {} is not UTF-8", p.display())))?.as_bytes().to_vec();
    CString::new(bytes).map_err(|_| Error::invalid(format!("path {} contains a NUL byte", p.display())))
}

fn opt_cstring(s: &Option<String>, what: &str) -> Result<Option<CString>> {
    s.as_deref().map(|s| cstring(s, what)).transpose()
}

fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |c| c.as_ptr())
}

fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(format!("{what} = {v} does not fit in int32")))
}

/// Text of a status code (`rwkvpeft_status_string`).
pub fn status_string(code: i32) -> String {
    // SAFETY: returns a static string for any code.
    unsafe { cstr_to_string(sys::rwkvpeft_status_string(code)) }
}

/// Message of the most recent failure of this thread ("" when none).
pub fn last_error() -> String {
    // SAFETY: never NULL; copied at once.
    unsafe { cstr_to_string(sys::rwkvpeft_last_error()) }
}

/// Version string of the loaded library, e.g. "0.1.0 (cpu ...)".
pub fn version() -> String {
    // SAFETY: static storage, never NULL.
    unsafe { cstr_to_string(sys::rwkvpeft_version_string()) }
}

/// MAJOR*10000 + MINOR*100 + PATCH of the loaded library (compare with
/// [`sys::RWKVPEFT_VERSION_NUMBER`]).
pub fn version_number() -> u32 {
    // SAFETY: no arguments.
    unsafe { sys::rwkvpeft_version_number() }
}

// ---------------------------------------------------------------------------------------
// Small enums
// ---------------------------------------------------------------------------------------

/// Checkpoint / adapter file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FileFormat {
    /// By file name: ".safetensors", else .pth.
    #[default]
    Auto,
    Pth,
    Safetensors,
}

impl FileFormat {
    fn raw(self) -> sys::rwkvpeft_file_format {
        match self {
            FileFormat::Auto => sys::RWKVPEFT_FORMAT_AUTO,
            FileFormat::Pth => sys::RWKVPEFT_FORMAT_PTH,
            FileFormat::Safetensors => sys::RWKVPEFT_FORMAT_SAFETENSORS,
        }
    }
}

/// Stored precision of saved tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DType {
    F32,
    #[default]
    Bf16,
    F16,
}

impl DType {
    fn raw(self) -> sys::rwkvpeft_dtype {
        match self {
            DType::F32 => sys::RWKVPEFT_DTYPE_F32,
            DType::Bf16 => sys::RWKVPEFT_DTYPE_BF16,
            DType::F16 => sys::RWKVPEFT_DTYPE_F16,
        }
    }
}

/// Log verbosity of a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing is logged.
    Off = -1,
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl LogLevel {
    fn from_raw(v: i32) -> LogLevel {
        match v {
            i32::MIN..=-1 => LogLevel::Off,
            0 => LogLevel::Error,
            1 => LogLevel::Warn,
            2 => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }
}

/// Adapter method (`rwkvpeft_peft_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeftMethod {
    /// No adapter: only train_parts (or everything, with full_finetune).
    None,
    Lora,
    /// LoRA initialised from a randomized SVD of W.
    Pissa,
    Bone,
    Bat,
    /// State tuning: a trainable initial WKV state per layer.
    State,
    /// A raw method code (for methods newer than this crate).
    Raw(i32),
}

impl PeftMethod {
    fn raw(self) -> i32 {
        match self {
            PeftMethod::None => sys::RWKVPEFT_PEFT_NONE,
            PeftMethod::Lora => sys::RWKVPEFT_PEFT_LORA,
            PeftMethod::Pissa => sys::RWKVPEFT_PEFT_PISSA,
            PeftMethod::Bone => sys::RWKVPEFT_PEFT_BONE,
            PeftMethod::Bat => sys::RWKVPEFT_PEFT_BAT,
            PeftMethod::State => sys::RWKVPEFT_PEFT_STATE,
            PeftMethod::Raw(v) => v,
        }
    }
    fn from_raw(v: i32) -> PeftMethod {
        match v {
            sys::RWKVPEFT_PEFT_NONE => PeftMethod::None,
            sys::RWKVPEFT_PEFT_LORA => PeftMethod::Lora,
            sys::RWKVPEFT_PEFT_PISSA => PeftMethod::Pissa,
            sys::RWKVPEFT_PEFT_BONE => PeftMethod::Bone,
            sys::RWKVPEFT_PEFT_BAT => PeftMethod::Bat,
            sys::RWKVPEFT_PEFT_STATE => PeftMethod::State,
            v => PeftMethod::Raw(v),
        }
    }
}

/// Storage of the quantized block linears (`rwkvpeft_quant_type`; RWKV-PEFT's `--quant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Quant {
    /// Full precision (default).
    #[default]
    None,
    /// NormalFloat4, blocks of 64 with an fp32 absmax (bitsandbytes quantize_nf4).
    Nf4,
    /// FP4, blocks of 64 (bitsandbytes quantize_fp4; RWKV-PEFT's "4bit").
    Fp4,
    /// bitsandbytes' non-blockwise dynamic 8-bit map, one absmax per tensor.
    Int8,
    /// float8_e4m3fn of the value itself.
    Fp8,
}

impl Quant {
    fn raw(self) -> i32 {
        match self {
            Quant::None => sys::RWKVPEFT_QUANT_NONE,
            Quant::Nf4 => sys::RWKVPEFT_QUANT_NF4,
            Quant::Fp4 => sys::RWKVPEFT_QUANT_FP4,
            Quant::Int8 => sys::RWKVPEFT_QUANT_INT8,
            Quant::Fp8 => sys::RWKVPEFT_QUANT_FP8,
        }
    }
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrSchedule {
    Cos,
    Exp,
    Wsd,
}

impl LrSchedule {
    fn raw(self) -> i32 {
        match self {
            LrSchedule::Cos => sys::RWKVPEFT_LR_COS,
            LrSchedule::Exp => sys::RWKVPEFT_LR_EXP,
            LrSchedule::Wsd => sys::RWKVPEFT_LR_WSD,
        }
    }
    fn from_raw(v: i32) -> LrSchedule {
        match v {
            sys::RWKVPEFT_LR_EXP => LrSchedule::Exp,
            sys::RWKVPEFT_LR_WSD => LrSchedule::Wsd,
            _ => LrSchedule::Cos,
        }
    }
}

/// How the Adam moments are stored (`rwkvpeft_optimizer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Optimizer {
    /// AdamW with float32 moments (the reference's; default).
    AdamW,
    /// AdamW with blockwise 8-bit moments (~6 bytes less per trainable value; extension).
    AdamW8bit,
}

impl Optimizer {
    fn raw(self) -> i32 {
        match self {
            Optimizer::AdamW => sys::RWKVPEFT_OPTIM_ADAMW,
            Optimizer::AdamW8bit => sys::RWKVPEFT_OPTIM_ADAMW_8BIT,
        }
    }
    fn from_raw(v: i32) -> Optimizer {
        match v {
            sys::RWKVPEFT_OPTIM_ADAMW_8BIT => Optimizer::AdamW8bit,
            _ => Optimizer::AdamW,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

/// One backend of this build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    pub name: String,
    pub available: bool,
    pub device_count: i32,
    /// Device name, or why the backend is unavailable.
    pub description: String,
}

fn chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every backend this build knows (available or not).
pub fn backends() -> Result<Vec<BackendInfo>> {
    // SAFETY: plain calls; info is a valid, sized struct.
    let n = unsafe { sys::rwkvpeft_backend_count() };
    let mut out = Vec::new();
    for i in 0..n {
        let mut info = sys::rwkvpeft_backend_info {
            struct_size: std::mem::size_of::<sys::rwkvpeft_backend_info>() as u32,
            name: [0; 16],
            available: 0,
            device_count: 0,
            description: [0; 192],
        };
        check(unsafe { sys::rwkvpeft_backend_get_info(i, &mut info) })?;
        out.push(BackendInfo {
            name: chars_to_string(&info.name),
            available: info.available != 0,
            device_count: info.device_count,
            description: chars_to_string(&info.description),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------------------

type LogFn = Box<dyn Fn(LogLevel, &str) + Send + 'static>;

/// Options of [`Context::with_options`] (`rwkvpeft_context_params`).
pub struct ContextOptions {
    /// "auto" (None: `$RWKVPEFT_BACKEND` decides), "cpu", "cpu64", "cuda", "hip".
    pub backend: Option<String>,
    /// GPU index.
    pub device: i32,
    /// CPU threads (0 = all cores).
    pub n_threads: i32,
    /// Messages at or below this level are logged. Default: Warn.
    pub log_level: LogLevel,
    /// Folder of the GPU modules (None: `$RWKVPEFT_MODULE_PATH`, the library's folder, ...).
    pub module_path: Option<std::path::PathBuf>,
    log: Option<LogFn>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        let mut p = std::mem::MaybeUninit::<sys::rwkvpeft_context_params>::zeroed();
        // SAFETY: init fills every field.
        let p = unsafe {
            sys::rwkvpeft_context_params_init(p.as_mut_ptr());
            p.assume_init()
        };
        ContextOptions {
            backend: None,
            device: p.device,
            n_threads: p.n_threads,
            log_level: LogLevel::from_raw(p.log_level),
            module_path: None,
            log: None,
        }
    }
}

impl fmt::Debug for ContextOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextOptions")
            .field("backend", &self.backend)
            .field("device", &self.device)
            .field("n_threads", &self.n_threads)
            .field("log_level", &self.log_level)
            .field("module_path", &self.module_path)
            .field("log", &self.log.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl ContextOptions {
    /// Options for `backend` (otherwise defaults).
    pub fn backend(backend: &str) -> ContextOptions {
        ContextOptions { backend: Some(backend.to_string()), ..Default::default() }
    }

    /// Same options with a log level.
    pub fn log_level(mut self, level: LogLevel) -> ContextOptions {
        self.log_level = level;
        self
    }

    /// Same options with a thread count.
    pub fn n_threads(mut self, n: i32) -> ContextOptions {
        self.n_threads = n;
        self
    }

    /// Sends log messages to `f` instead of stderr. It is called on the thread that makes
    /// the library call; a panic inside it is caught and dropped.
    pub fn log<F: Fn(LogLevel, &str) + Send + 'static>(mut self, f: F) -> ContextOptions {
        self.log = Some(Box::new(f));
        self
    }
}

/// One backend instance (device, stream, threads, logging). See the crate docs for the
/// thread-safety rules.
pub struct Context {
    ptr: NonNull<sys::rwkvpeft_context>,
    // the log closure, owned here and freed after the context
    log: Option<Box<LogFn>>,
}

// SAFETY: a context with its (borrowing) models is one tree; the header allows a tree to be
// used from any thread as long as calls do not overlap. Context is not Sync and models /
// trainers borrow it, so while any of them exists the whole tree is pinned to one thread;
// the log closure is Send.
unsafe impl Send for Context {}

unsafe extern "C" fn log_trampoline(user: *mut c_void, level: i32, message: *const c_char) {
    if user.is_null() {
        return;
    }
    // SAFETY: user is the Box<LogFn> owned by the Context, alive while the context is.
    let f = &*(user as *const LogFn);
    let msg = cstr_to_string(message);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(LogLevel::from_raw(level), &msg)));
}

impl Context {
    /// A context on `backend` ("cpu", "cuda", "auto", ...) with default options.
    pub fn new(backend: &str) -> Result<Context> {
        Context::with_options(ContextOptions::backend(backend))
    }

    /// A context from options.
    pub fn with_options(options: ContextOptions) -> Result<Context> {
        let backend = opt_cstring(&options.backend, "backend")?;
        let module_path = options.module_path.as_deref().map(cpath).transpose()?;
        let mut p = std::mem::MaybeUninit::<sys::rwkvpeft_context_params>::zeroed();
        // SAFETY: init fills the struct.
        let mut p = unsafe {
            sys::rwkvpeft_context_params_init(p.as_mut_ptr());
            p.assume_init()
        };
        p.backend = opt_ptr(&backend);
        p.device = options.device;
        p.n_threads = options.n_threads;
        p.log_level = options.log_level as i32;
        p.module_path = opt_ptr(&module_path);
        let log = options.log.map(Box::new);
        if let Some(b) = &log {
            p.log_fn = Some(log_trampoline);
            p.log_user = &**b as *const LogFn as *mut c_void;
        }
        let mut out = ptr::null_mut();
        // SAFETY: p and its strings are valid for the call; out receives the handle.
        check(unsafe { sys::rwkvpeft_context_create(&p, &mut out) })?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(sys::RWKVPEFT_E_INTERNAL, "NULL context"))?;
        Ok(Context { ptr, log })
    }

    /// The raw handle (for use with [`sys`]).
    pub fn as_ptr(&self) -> *mut sys::rwkvpeft_context {
        self.ptr.as_ptr()
    }

    /// Name of the backend the context runs on ("cpu", "cuda", ...).
    pub fn backend(&self) -> String {
        // SAFETY: valid handle; never NULL.
        unsafe { cstr_to_string(sys::rwkvpeft_context_backend(self.ptr.as_ptr())) }
    }

    /// Message of the last failure on this context ("" if none).
    pub fn last_error(&self) -> String {
        // SAFETY: valid handle.
        unsafe { cstr_to_string(sys::rwkvpeft_context_last_error(self.ptr.as_ptr())) }
    }

    /// (free, total) device memory in bytes (host RAM on the CPU backends).
    pub fn memory(&self) -> Result<(u64, u64)> {
        let (mut free, mut total) = (0u64, 0u64);
        // SAFETY: valid handle and out pointers.
        check(unsafe { sys::rwkvpeft_context_memory(self.ptr.as_ptr(), &mut free, &mut total) })?;
        Ok((free, total))
    }

    /// A fresh model with the reference's initialisation (deterministic for a seed).
    pub fn new_model(&self, config: &ModelConfig, params: &ModelParams, seed: u64) -> Result<Model<'_>> {
        let c = config.to_sys();
        let p = params.to_sys();
        let mut out = ptr::null_mut();
        // SAFETY: valid handle and structs.
        check(unsafe { sys::rwkvpeft_model_init(self.ptr.as_ptr(), &c, &p, seed, &mut out) })?;
        Model::from_raw(out)
    }

    /// Loads a .pth or .safetensors RWKV checkpoint.
    pub fn load_model(&self, path: impl AsRef<Path>, params: &ModelParams) -> Result<Model<'_>> {
        let path = cpath(path.as_ref())?;
        let p = params.to_sys();
        let mut out = ptr::null_mut();
        // SAFETY: valid handle, path and struct.
        check(unsafe { sys::rwkvpeft_model_load(self.ptr.as_ptr(), path.as_ptr(), &p, &mut out) })?;
        Model::from_raw(out)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every model borrowed the context, so all are gone; the log closure is
        // freed after the context (it may log while closing).
        unsafe { sys::rwkvpeft_context_free(self.ptr.as_ptr()) };
        self.log.take();
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("backend", &self.backend()).finish()
    }
}

// ---------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------

/// Architecture of a fresh model (`rwkvpeft_model_config`). `Default` = the C defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    pub version: i32,
    pub n_layer: i32,
    pub n_embd: i32,
    /// 0 = n_embd
    pub dim_att: i32,
    /// 0 = the reference's rule
    pub dim_ffn: i32,
    pub head_size: i32,
    pub vocab_size: i32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        let mut c = sys::rwkvpeft_model_config::default();
        // SAFETY: valid struct.
        unsafe { sys::rwkvpeft_model_config_init(&mut c) };
        ModelConfig {
            version: c.version,
            n_layer: c.n_layer,
            n_embd: c.n_embd,
            dim_att: c.dim_att,
            dim_ffn: c.dim_ffn,
            head_size: c.head_size,
            vocab_size: c.vocab_size,
        }
    }
}

impl ModelConfig {
    fn to_sys(self) -> sys::rwkvpeft_model_config {
        let mut c = sys::rwkvpeft_model_config::default();
        // SAFETY: valid struct.
        unsafe { sys::rwkvpeft_model_config_init(&mut c) };
        c.version = self.version;
        c.n_layer = self.n_layer;
        c.n_embd = self.n_embd;
        c.dim_att = self.dim_att;
        c.dim_ffn = self.dim_ffn;
        c.head_size = self.head_size;
        c.vocab_size = self.vocab_size;
        c
    }
}

/// How weights are held (`rwkvpeft_model_params`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ModelParams {
    /// Gradient checkpointing.
    pub grad_cp: bool,
    /// Quantization of the 8 block linears (applied at adapter attach, or at the first
    /// forward of a model without adapter; quantized weights are frozen).
    pub quant: Quant,
    /// A frozen `emb.weight` stays in host memory; each batch's rows are copied to the
    /// device (less device memory, identical results).
    pub embedding_on_host: bool,
}

impl ModelParams {
    fn to_sys(self) -> sys::rwkvpeft_model_params {
        let mut p = sys::rwkvpeft_model_params::default();
        // SAFETY: valid struct.
        unsafe { sys::rwkvpeft_model_params_init(&mut p) };
        p.grad_cp = self.grad_cp as i32;
        p.quant = self.quant.raw();
        p.embedding_on_host = self.embedding_on_host as i32;
        p
    }
}

/// Sizes of a model (`rwkvpeft_model_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelInfo {
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
    /// RWKV-7 low-rank widths (decay, in-context learning rate, value residual, gate); 0 for
    /// RWKV-5/6.
    pub dim_w: i32,
    pub dim_a: i32,
    pub dim_v: i32,
    pub dim_g: i32,
}

/// Adapter options (`rwkvpeft_adapter_params`). `Default` = the C defaults (LoRA r=8,
/// alpha=32, dropout=0.01, train_parts "time,ln", seed 42, svd_niter 4).
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterParams {
    pub method: PeftMethod,
    pub r: i32,
    pub alpha: f32,
    pub dropout: f32,
    /// Extra trainable base tensors: "time", "ln", "emb", "head" (comma separated).
    pub train_parts: String,
    pub full_finetune: bool,
    /// None: automatic (train emb/head of fresh models, as the reference does).
    pub train_emb_head: Option<bool>,
    pub seed: u64,
    /// PiSSA: power iterations of the randomized SVD.
    pub svd_niter: i32,
    /// PiSSA: an init file (init_pissa.pth) used instead of computing the SVD.
    pub pissa_init: Option<std::path::PathBuf>,
    /// Bone/Bat: suffix of the adapter tensor in saved files ("disha" or "bone"); None =
    /// the library's default.
    pub key_name: Option<String>,
}

impl Default for AdapterParams {
    fn default() -> Self {
        let mut p = std::mem::MaybeUninit::<sys::rwkvpeft_adapter_params>::zeroed();
        // SAFETY: init fills the struct; train_parts points to a static string.
        let p = unsafe {
            sys::rwkvpeft_adapter_params_init(p.as_mut_ptr());
            p.assume_init()
        };
        AdapterParams {
            method: PeftMethod::from_raw(p.method),
            r: p.r,
            alpha: p.alpha,
            dropout: p.dropout,
            train_parts: unsafe { cstr_to_string(p.train_parts) },
            full_finetune: p.full_finetune != 0,
            train_emb_head: match p.train_emb_head {
                v if v < 0 => None,
                v => Some(v != 0),
            },
            seed: p.seed,
            svd_niter: p.svd_niter,
            pissa_init: if p.pissa_init.is_null() {
                None
            } else {
                Some(unsafe { cstr_to_string(p.pissa_init) }.into())
            },
            key_name: if p.key_name.is_null() { None } else { Some(unsafe { cstr_to_string(p.key_name) }) },
        }
    }
}

/// Options of [`merge_files`] (`rwkvpeft_merge_params`).
#[derive(Clone, Debug, PartialEq)]
pub struct MergeParams {
    pub base_path: std::path::PathBuf,
    pub adapter_path: std::path::PathBuf,
    pub output_path: std::path::PathBuf,
    /// None: inferred from the adapter's tensors.
    pub method: Option<PeftMethod>,
    /// LoRA alpha: required for LoRA adapters (None is an error naming the option).
    pub lora_alpha: Option<f32>,
    /// PiSSA init file (required for PiSSA).
    pub pissa_init: Option<std::path::PathBuf>,
    pub format: FileFormat,
    pub dtype: DType,
    /// The quantization the adapter was trained with (merge.py --quant): the block linears
    /// become dequant(quant(W)) before the adapter is folded in.
    pub quant: Quant,
}

impl MergeParams {
    /// Defaults (method inferred, bf16 output) for the three paths.
    pub fn new(base: impl AsRef<Path>, adapter: impl AsRef<Path>, output: impl AsRef<Path>) -> MergeParams {
        MergeParams {
            base_path: base.as_ref().to_path_buf(),
            adapter_path: adapter.as_ref().to_path_buf(),
            output_path: output.as_ref().to_path_buf(),
            method: None,
            lora_alpha: None,
            pissa_init: None,
            format: FileFormat::Auto,
            dtype: DType::Bf16,
            quant: Quant::None,
        }
    }
}

/// File-to-file merge of an adapter into a base checkpoint, as RWKV-PEFT's merge scripts.
pub fn merge_files(params: &MergeParams) -> Result<()> {
    let base = cpath(&params.base_path)?;
    let adapter = cpath(&params.adapter_path)?;
    let output = cpath(&params.output_path)?;
    let pissa = params.pissa_init.as_deref().map(cpath).transpose()?;
    let mut p = std::mem::MaybeUninit::<sys::rwkvpeft_merge_params>::zeroed();
    // SAFETY: init fills the struct.
    let mut p = unsafe {
        sys::rwkvpeft_merge_params_init(p.as_mut_ptr());
        p.assume_init()
    };
    p.base_path = base.as_ptr();
    p.adapter_path = adapter.as_ptr();
    p.output_path = output.as_ptr();
    if let Some(m) = params.method {
        p.method = m.raw();
    }
    if let Some(a) = params.lora_alpha {
        p.lora_alpha = a;
    }
    p.pissa_init = opt_ptr(&pissa);
    p.format = params.format.raw();
    p.dtype = params.dtype.raw();
    p.quant = params.quant.raw();
    // SAFETY: the strings outlive the call.
    check(unsafe { sys::rwkvpeft_merge_files(&p) })
}

/// Options of text generation (`rwkvpeft_generate_params`). `Default` = the C defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    /// <= 0: greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Stop after emitting this id (included in the output); None: never stop early.
    pub stop_token: Option<i32>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        let mut p = sys::rwkvpeft_generate_params::default();
        // SAFETY: valid struct.
        unsafe { sys::rwkvpeft_generate_params_init(&mut p) };
        GenerateParams {
            max_new_tokens: p.max_new_tokens.max(0) as usize,
            temperature: p.temperature,
            top_p: p.top_p,
            seed: p.seed,
            stop_token: if p.stop_token < 0 { None } else { Some(p.stop_token) },
        }
    }
}

/// A batch borrowed from the caller: `batch_size` rows of `seq_len` tokens. Constructors
/// check the slice lengths (the C library trusts them).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    batch_size: usize,
    seq_len: usize,
    inputs: &'a [i32],
    targets: &'a [i32],
    loss_mask: Option<&'a [f32]>,
}

impl<'a> Batch<'a> {
    /// inputs and targets hold batch_size*seq_len ids (targets may be [`IGNORE_INDEX`]).
    pub fn new(inputs: &'a [i32], targets: &'a [i32], batch_size: usize, seq_len: usize) -> Result<Batch<'a>> {
        let n = batch_size.checked_mul(seq_len).ok_or_else(|| Error::invalid("batch_size*seq_len overflows"))?;
        if batch_size == 0 || seq_len == 0 {
            return Err(Error::invalid("batch_size and seq_len must be >= 1"));
        }
        if inputs.len() != n || targets.len() != n {
            return Err(Error::invalid(format!(
                "inputs ({}) and targets ({}) must hold batch_size*seq_len = {n} ids",
                inputs.len(),
                targets.len()
            )));
        }
        to_i32(batch_size, "batch_size")?;
        to_i32(seq_len, "seq_len")?;
        Ok(Batch { batch_size, seq_len, inputs, targets, loss_mask: None })
    }

    /// The same batch with per-target weights (batch_size*seq_len values).
    pub fn with_mask(mut self, mask: &'a [f32]) -> Result<Batch<'a>> {
        if mask.len() != self.inputs.len() {
            return Err(Error::invalid(format!(
                "loss mask holds {} values, the batch {}",
                mask.len(),
                self.inputs.len()
            )));
        }
        self.loss_mask = Some(mask);
        Ok(self)
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn to_sys(self) -> sys::rwkvpeft_batch {
        let mut b = std::mem::MaybeUninit::<sys::rwkvpeft_batch>::zeroed();
        // SAFETY: init fills the struct.
        let mut b = unsafe {
            sys::rwkvpeft_batch_init(b.as_mut_ptr());
            b.assume_init()
        };
        b.batch_size = self.batch_size as i32;
        b.seq_len = self.seq_len as i32;
        b.inputs = self.inputs.as_ptr();
        b.targets = self.targets.as_ptr();
        b.loss_mask = self.loss_mask.map_or(ptr::null(), |m| m.as_ptr());
        b
    }
}

/// Result of [`Model::evaluate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy (nats).
    pub loss: f64,
    /// Sum of the weights of the counted positions.
    pub n_tokens: f64,
}

/// An RWKV model on a [`Context`] (borrowed for `'c`). Neither `Send` nor `Sync`.
pub struct Model<'c> {
    ptr: NonNull<sys::rwkvpeft_model>,
    _ctx: PhantomData<&'c Context>,
}

impl<'c> Model<'c> {
    fn from_raw(p: *mut sys::rwkvpeft_model) -> Result<Model<'c>> {
        let ptr = NonNull::new(p).ok_or_else(|| Error::new(sys::RWKVPEFT_E_INTERNAL, "NULL model"))?;
        Ok(Model { ptr, _ctx: PhantomData })
    }

    /// The raw handle (for use with [`sys`]).
    pub fn as_ptr(&self) -> *mut sys::rwkvpeft_model {
        self.ptr.as_ptr()
    }

    /// Sizes and parameter counts.
    pub fn info(&self) -> Result<ModelInfo> {
        let mut i = sys::rwkvpeft_model_info {
            struct_size: std::mem::size_of::<sys::rwkvpeft_model_info>() as u32,
            ..Default::default()
        };
        // SAFETY: valid handle and struct.
        check(unsafe { sys::rwkvpeft_model_get_info(self.ptr.as_ptr(), &mut i) })?;
        Ok(ModelInfo {
            version: i.version,
            n_layer: i.n_layer,
            n_embd: i.n_embd,
            dim_att: i.dim_att,
            dim_ffn: i.dim_ffn,
            n_head: i.n_head,
            head_size: i.head_size,
            vocab_size: i.vocab_size,
            dim_mix: i.dim_mix,
            dim_decay: i.dim_decay,
            n_params: i.n_params,
            n_trainable: i.n_trainable,
            dim_w: i.dim_w,
            dim_a: i.dim_a,
            dim_v: i.dim_v,
            dim_g: i.dim_g,
        })
    }

    /// Message of the last failure on this model ("" if none).
    pub fn last_error(&self) -> String {
        // SAFETY: valid handle.
        unsafe { cstr_to_string(sys::rwkvpeft_model_last_error(self.ptr.as_ptr())) }
    }

    /// Writes the base weights as an RWKV checkpoint.
    pub fn save(&self, path: impl AsRef<Path>, format: FileFormat, dtype: DType) -> Result<()> {
        let path = cpath(path.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::rwkvpeft_model_save(self.ptr.as_ptr(), path.as_ptr(), format.raw(), dtype.raw()) })
    }

    /// Attaches an adapter (once per model, before creating a trainer; `&mut` makes the
    /// compiler reject it while a trainer borrows the model).
    pub fn attach(&mut self, params: &AdapterParams) -> Result<()> {
        let parts = cstring(&params.train_parts, "train_parts")?;
        let mut p = std::mem::MaybeUninit::<sys::rwkvpeft_adapter_params>::zeroed();
        // SAFETY: init fills the struct.
        let mut p = unsafe {
            sys::rwkvpeft_adapter_params_init(p.as_mut_ptr());
            p.assume_init()
        };
        p.method = params.method.raw();
        p.r = params.r;
        p.alpha = params.alpha;
        p.dropout = params.dropout;
        p.train_parts = parts.as_ptr();
        p.full_finetune = params.full_finetune as i32;
        p.train_emb_head = params.train_emb_head.map_or(-1, |b| b as i32);
        p.seed = params.seed;
        p.svd_niter = params.svd_niter;
        let pissa = params.pissa_init.as_deref().map(cpath).transpose()?;
        let key = opt_cstring(&params.key_name, "key_name")?;
        p.pissa_init = opt_ptr(&pissa);
        p.key_name = opt_ptr(&key);
        // SAFETY: valid handle; the strings outlive the call.
        check(unsafe { sys::rwkvpeft_adapter_attach(self.ptr.as_ptr(), &p) })
    }

    /// Loads trainable tensors from an adapter file (ours or RWKV-PEFT's).
    pub fn load_adapter(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = cpath(path.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::rwkvpeft_adapter_load(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Writes every trainable tensor under the reference's key names.
    pub fn save_adapter(&self, path: impl AsRef<Path>, format: FileFormat, dtype: DType) -> Result<()> {
        let path = cpath(path.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::rwkvpeft_save_adapter(self.ptr.as_ptr(), path.as_ptr(), format.raw(), dtype.raw()) })
    }

    /// PiSSA: writes the init file a later merge needs (RWKV-PEFT's init_pissa.pth).
    pub fn save_pissa_init(&self, path: impl AsRef<Path>, format: FileFormat) -> Result<()> {
        let path = cpath(path.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::rwkvpeft_pissa_save_init(self.ptr.as_ptr(), path.as_ptr(), format.raw()) })
    }

    /// PiSSA: Ok when the init file at `path` holds the init of the attached adapter, else
    /// an error with [`Status::Shape`] naming the first tensor that differs.
    pub fn check_pissa_init(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = cpath(path.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::rwkvpeft_pissa_check_init(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Folds the attached adapter into the weights and detaches it (`&mut`: no trainer
    /// may borrow the model).
    pub fn merge(&mut self) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe { sys::rwkvpeft_model_merge(self.ptr.as_ptr()) })
    }

    /// Loss of a batch (no gradients).
    pub fn evaluate(&self, batch: &Batch<'_>) -> Result<EvalResult> {
        let b = batch.to_sys();
        let mut r = sys::rwkvpeft_eval_result {
            struct_size: std::mem::size_of::<sys::rwkvpeft_eval_result>() as u32,
            ..Default::default()
        };
        // SAFETY: the batch's slices were checked to hold B*T elements.
        check(unsafe { sys::rwkvpeft_evaluate(self.ptr.as_ptr(), &b, &mut r) })?;
        Ok(EvalResult { loss: r.loss, n_tokens: r.n_tokens })
    }

    /// Logits of every position: `tokens` holds batch_size*seq_len ids; the result holds
    /// batch_size*seq_len*vocab_size values (row-major [B, T, V]).
    pub fn logits(&self, tokens: &[i32], batch_size: usize, seq_len: usize) -> Result<Vec<f32>> {
        let n = batch_size.checked_mul(seq_len).filter(|&n| n > 0 && n == tokens.len()).ok_or_else(|| {
            Error::invalid(format!(
                "tokens ({}) must hold batch_size*seq_len ({batch_size}*{seq_len}) >= 1 ids",
                tokens.len()
            ))
        })?;
        let vocab = self.info()?.vocab_size as usize;
        let len = n.checked_mul(vocab).ok_or_else(|| Error::invalid("logits size overflows"))?;
        let mut out = vec![0f32; len];
        // SAFETY: tokens holds B*T ids, out B*T*V floats.
        check(unsafe {
            sys::rwkvpeft_model_logits(
                self.ptr.as_ptr(),
                tokens.as_ptr(),
                to_i32(batch_size, "batch_size")?,
                to_i32(seq_len, "seq_len")?,
                out.as_mut_ptr(),
            )
        })?;
        Ok(out)
    }

    /// New token ids continuing `prompt` (>= 1 ids).
    pub fn generate(&self, prompt: &[i32], params: &GenerateParams) -> Result<Vec<i32>> {
        let mut p = sys::rwkvpeft_generate_params::default();
        // SAFETY: valid struct.
        unsafe { sys::rwkvpeft_generate_params_init(&mut p) };
        p.max_new_tokens = to_i32(params.max_new_tokens, "max_new_tokens")?;
        p.temperature = params.temperature;
        p.top_p = params.top_p;
        p.seed = params.seed;
        p.stop_token = params.stop_token.unwrap_or(-1);
        let mut out = vec![0i32; params.max_new_tokens];
        let mut n = 0usize;
        // SAFETY: prompt and out are valid for their lengths.
        check(unsafe {
            sys::rwkvpeft_generate(
                self.ptr.as_ptr(),
                prompt.as_ptr(),
                prompt.len(),
                &p,
                out.as_mut_ptr(),
                out.len(),
                &mut n,
            )
        })?;
        out.truncate(n.min(params.max_new_tokens));
        Ok(out)
    }

    /// A trainer for this model (an adapter must be attached). It borrows the model.
    pub fn trainer(&self, params: &TrainParams) -> Result<Trainer<'_>> {
        let p = params.to_sys();
        let mut out = ptr::null_mut();
        // SAFETY: valid handle and struct.
        check(unsafe { sys::rwkvpeft_trainer_create(self.ptr.as_ptr(), &p, &mut out) })?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(sys::RWKVPEFT_E_INTERNAL, "NULL trainer"))?;
        Ok(Trainer { ptr, _model: PhantomData })
    }
}

impl Drop for Model<'_> {
    fn drop(&mut self) {
        // SAFETY: trainers borrowed the model, so all are gone.
        unsafe { sys::rwkvpeft_model_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("info", &self.info().ok()).finish()
    }
}

// ---------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------

/// Optimizer options (`rwkvpeft_train_params`). `Default` = the C defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainParams {
    pub lr_init: f32,
    pub lr_final: f32,
    pub lr_schedule: LrSchedule,
    /// Steps of the schedule; 0 = constant lr_init.
    pub total_steps: i64,
    /// <= 0: none.
    pub warmup_steps: i32,
    pub beta1: f32,
    pub beta2: f32,
    pub adam_eps: f32,
    pub weight_decay: f32,
    /// <= 0 disables clipping.
    pub grad_clip: f32,
    pub accumulate_grad_batches: i32,
    pub layerwise_lr: bool,
    /// Long-context training: sequences longer than this are processed in chunks with
    /// carried states; 0 = off.
    pub chunk_ctx: i32,
    /// With chunk_ctx: gradients flow through the carried states (true, default) or the
    /// states are detached between chunks (false, the reference's truncated mode).
    pub infctx_full: bool,
    /// fp32 AdamW (default) or 8-bit AdamW.
    pub optimizer: Optimizer,
}

impl Default for TrainParams {
    fn default() -> Self {
        let mut p = sys::rwkvpeft_train_params::default();
        // SAFETY: valid struct.
        unsafe { sys::rwkvpeft_train_params_init(&mut p) };
        TrainParams {
            lr_init: p.lr_init,
            lr_final: p.lr_final,
            lr_schedule: LrSchedule::from_raw(p.lr_schedule),
            total_steps: p.total_steps,
            warmup_steps: p.warmup_steps,
            beta1: p.beta1,
            beta2: p.beta2,
            adam_eps: p.adam_eps,
            weight_decay: p.weight_decay,
            grad_clip: p.grad_clip,
            accumulate_grad_batches: p.accumulate_grad_batches,
            layerwise_lr: p.layerwise_lr != 0,
            chunk_ctx: p.chunk_ctx,
            infctx_full: p.infctx_full != 0,
            optimizer: Optimizer::from_raw(p.optimizer),
        }
    }
}

impl TrainParams {
    /// Default options with a constant learning rate.
    pub fn constant_lr(lr: f32) -> TrainParams {
        TrainParams { lr_init: lr, lr_final: lr, ..Default::default() }
    }

    fn to_sys(self) -> sys::rwkvpeft_train_params {
        let mut p = sys::rwkvpeft_train_params::default();
        // SAFETY: valid struct.
        unsafe { sys::rwkvpeft_train_params_init(&mut p) };
        p.lr_init = self.lr_init;
        p.lr_final = self.lr_final;
        p.lr_schedule = self.lr_schedule.raw();
        p.total_steps = self.total_steps;
        p.warmup_steps = self.warmup_steps;
        p.beta1 = self.beta1;
        p.beta2 = self.beta2;
        p.adam_eps = self.adam_eps;
        p.weight_decay = self.weight_decay;
        p.grad_clip = self.grad_clip;
        p.accumulate_grad_batches = self.accumulate_grad_batches;
        p.layerwise_lr = self.layerwise_lr as i32;
        p.chunk_ctx = self.chunk_ctx;
        p.infctx_full = self.infctx_full as i32;
        p.optimizer = self.optimizer.raw();
        p
    }
}

/// Result of [`Trainer::step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResult {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub optimizer_step_taken: bool,
    pub step: i64,
    pub tokens: i64,
}

/// Optimizer state of a model (borrowed for `'m`). Neither `Send` nor `Sync`.
pub struct Trainer<'m> {
    ptr: NonNull<sys::rwkvpeft_trainer>,
    _model: PhantomData<&'m ()>,
}

impl Trainer<'_> {
    /// The raw handle (for use with [`sys`]).
    pub fn as_ptr(&self) -> *mut sys::rwkvpeft_trainer {
        self.ptr.as_ptr()
    }

    /// One micro-batch: forward, backward and (every accumulate_grad_batches calls) an
    /// optimizer step.
    pub fn step(&mut self, batch: &Batch<'_>) -> Result<StepResult> {
        let b = batch.to_sys();
        let mut r = sys::rwkvpeft_step_result {
            struct_size: std::mem::size_of::<sys::rwkvpeft_step_result>() as u32,
            ..Default::default()
        };
        // SAFETY: the batch's slices were checked to hold B*T elements.
        check(unsafe { sys::rwkvpeft_train_step(self.ptr.as_ptr(), &b, &mut r) })?;
        Ok(StepResult {
            loss: r.loss,
            grad_norm: r.grad_norm,
            lr: r.lr,
            optimizer_step_taken: r.optimizer_step_taken != 0,
            step: r.step,
            tokens: r.tokens,
        })
    }

    /// Saves the full training state (weights, Adam moments, counters).
    pub fn save_state(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = cpath(path.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::rwkvpeft_trainer_save_state(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Restores a state saved by [`Trainer::save_state`].
    pub fn load_state(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = cpath(path.as_ref())?;
        // SAFETY: valid handle and path.
        check(unsafe { sys::rwkvpeft_trainer_load_state(self.ptr.as_ptr(), path.as_ptr()) })
    }

    /// Message of the last failure on this trainer ("" if none).
    pub fn last_error(&self) -> String {
        // SAFETY: valid handle.
        unsafe { cstr_to_string(sys::rwkvpeft_trainer_last_error(self.ptr.as_ptr())) }
    }
}

impl Drop for Trainer<'_> {
    fn drop(&mut self) {
        // SAFETY: owned handle, freed once.
        unsafe { sys::rwkvpeft_trainer_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Trainer")
    }
}

// ---------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------

/// The RWKV World tokenizer. Immutable: `Send + Sync`.
pub struct Tokenizer {
    ptr: NonNull<sys::rwkvpeft_tokenizer>,
}

// SAFETY: the header documents the tokenizer as immutable after loading and shareable
// between threads; failures report through the thread-local error slot.
unsafe impl Send for Tokenizer {}
unsafe impl Sync for Tokenizer {}

impl Tokenizer {
    /// Loads a World vocabulary file (rwkv_vocab_v20230424.txt).
    pub fn load(vocab_path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = cpath(vocab_path.as_ref())?;
        let mut out = ptr::null_mut();
        // SAFETY: valid path and out pointer.
        check(unsafe { sys::rwkvpeft_tokenizer_load(path.as_ptr(), &mut out) })?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(sys::RWKVPEFT_E_INTERNAL, "NULL tokenizer"))?;
        Ok(Tokenizer { ptr })
    }

    /// The raw handle (for use with [`sys`]).
    pub fn as_ptr(&self) -> *const sys::rwkvpeft_tokenizer {
        self.ptr.as_ptr()
    }

    /// Largest token id + 1.
    pub fn vocab_size(&self) -> i32 {
        // SAFETY: valid handle.
        unsafe { sys::rwkvpeft_tokenizer_vocab_size(self.ptr.as_ptr()) }
    }

    /// Ids of any bytes (a `&str` is its UTF-8).
    pub fn encode(&self, text: impl AsRef<[u8]>) -> Result<Vec<i32>> {
        let text = text.as_ref();
        // every token covers at least one byte
        let mut ids = vec![0i32; text.len()];
        let mut n = 0usize;
        // SAFETY: text and ids are valid for their lengths.
        check(unsafe {
            sys::rwkvpeft_tokenizer_encode(
                self.ptr.as_ptr(),
                text.as_ptr() as *const c_char,
                text.len(),
                ids.as_mut_ptr(),
                ids.len(),
                &mut n,
            )
        })?;
        ids.truncate(n);
        Ok(ids)
    }

    /// Bytes of ids (id 0 decodes to nothing).
    pub fn decode(&self, ids: &[i32]) -> Result<Vec<u8>> {
        let mut cap = ids.len().saturating_mul(16).max(64);
        loop {
            let mut buf = vec![0u8; cap];
            let mut n = 0usize;
            // SAFETY: ids and buf are valid for their lengths.
            let st = unsafe {
                sys::rwkvpeft_tokenizer_decode(
                    self.ptr.as_ptr(),
                    ids.as_ptr(),
                    ids.len(),
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len(),
                    &mut n,
                )
            };
            if st != sys::RWKVPEFT_OK && n > cap {
                cap = n; // the buffer was too small: retry with the size the call reported
                continue;
            }
            check(st)?;
            buf.truncate(n);
            return Ok(buf);
        }
    }

    /// Text of ids (invalid UTF-8 replaced by U+FFFD).
    pub fn decode_lossy(&self, ids: &[i32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode(ids)?).into_owned())
    }
}

impl Drop for Tokenizer {
    fn drop(&mut self) {
        // SAFETY: owned handle; samplers using it borrowed it.
        unsafe { sys::rwkvpeft_tokenizer_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

// ---------------------------------------------------------------------------------------
// Datasets
// ---------------------------------------------------------------------------------------

/// A binidx dataset (read-only). `Send`, not `Sync`.
pub struct Dataset {
    ptr: NonNull<sys::rwkvpeft_dataset>,
}

// SAFETY: an independent handle; not Sync because failures write its last-error slot.
unsafe impl Send for Dataset {}

impl Dataset {
    /// Opens <prefix>.idx and <prefix>.bin.
    pub fn open(prefix: impl AsRef<Path>) -> Result<Dataset> {
        let p = cpath(prefix.as_ref())?;
        let mut out = ptr::null_mut();
        // SAFETY: valid path and out pointer.
        check(unsafe { sys::rwkvpeft_dataset_open(p.as_ptr(), &mut out) })?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(sys::RWKVPEFT_E_INTERNAL, "NULL dataset"))?;
        Ok(Dataset { ptr })
    }

    pub fn num_docs(&self) -> i64 {
        // SAFETY: valid handle.
        unsafe { sys::rwkvpeft_dataset_num_docs(self.ptr.as_ptr()) }
    }

    pub fn num_tokens(&self) -> i64 {
        // SAFETY: valid handle.
        unsafe { sys::rwkvpeft_dataset_num_tokens(self.ptr.as_ptr()) }
    }

    /// (token offset, length) of document `index`.
    pub fn doc(&self, index: i64) -> Result<(i64, i64)> {
        let (mut off, mut n) = (0i64, 0i64);
        // SAFETY: valid handle and out pointers.
        check(unsafe { sys::rwkvpeft_dataset_doc(self.ptr.as_ptr(), index, &mut off, &mut n) })?;
        Ok((off, n))
    }

    /// `n` tokens from flat offset `offset` (may cross documents).
    pub fn read(&self, offset: i64, n: usize) -> Result<Vec<i32>> {
        let n64 = i64::try_from(n).map_err(|_| Error::invalid("n too large"))?;
        let mut out = vec![0i32; n];
        // SAFETY: out holds n ids.
        check(unsafe { sys::rwkvpeft_dataset_read(self.ptr.as_ptr(), offset, n64, out.as_mut_ptr()) })?;
        Ok(out)
    }

    /// Tokens of document `index`.
    pub fn document(&self, index: i64) -> Result<Vec<i32>> {
        let (off, n) = self.doc(index)?;
        self.read(off, usize::try_from(n).map_err(|_| Error::invalid("negative length"))?)
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::rwkvpeft_dataset_free(self.ptr.as_ptr()) }
    }
}

/// Writes <prefix>.bin/.idx. Dropping it without [`DatasetWriter::finish`] removes the
/// partial files. `Send`, not `Sync`.
pub struct DatasetWriter {
    ptr: NonNull<sys::rwkvpeft_dataset_writer>,
}

// SAFETY: an independent handle.
unsafe impl Send for DatasetWriter {}

impl DatasetWriter {
    /// `dtype_code` as in the format (0 = uint16 when vocab_size < 65500, else int32).
    pub fn create(prefix: impl AsRef<Path>, dtype_code: i32, vocab_size: i32) -> Result<DatasetWriter> {
        let p = cpath(prefix.as_ref())?;
        let mut out = ptr::null_mut();
        // SAFETY: valid path and out pointer.
        check(unsafe { sys::rwkvpeft_dataset_writer_create(p.as_ptr(), dtype_code, vocab_size, &mut out) })?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(sys::RWKVPEFT_E_INTERNAL, "NULL writer"))?;
        Ok(DatasetWriter { ptr })
    }

    /// Appends one document.
    pub fn add(&mut self, tokens: &[i32]) -> Result<()> {
        let n = i64::try_from(tokens.len()).map_err(|_| Error::invalid("document too long"))?;
        // SAFETY: tokens valid for n ids.
        check(unsafe { sys::rwkvpeft_dataset_writer_add(self.ptr.as_ptr(), tokens.as_ptr(), n) })
    }

    /// Writes the index and closes the files.
    pub fn finish(self) -> Result<()> {
        // SAFETY: valid handle; freed by Drop afterwards.
        check(unsafe { sys::rwkvpeft_dataset_writer_finish(self.ptr.as_ptr()) })
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::rwkvpeft_dataset_writer_free(self.ptr.as_ptr()) }
    }
}

/// Options of [`jsonl_to_binidx`] (`rwkvpeft_jsonl_params`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonlParams {
    pub jsonl_path: std::path::PathBuf,
    pub output_prefix: std::path::PathBuf,
    pub vocab_path: std::path::PathBuf,
    /// "text", or "instruction,output" for SFT records.
    pub fields: String,
    pub append_eod: bool,
}

impl JsonlParams {
    pub fn new(
        jsonl_path: impl AsRef<Path>,
        output_prefix: impl AsRef<Path>,
        vocab_path: impl AsRef<Path>,
    ) -> JsonlParams {
        JsonlParams {
            jsonl_path: jsonl_path.as_ref().to_path_buf(),
            output_prefix: output_prefix.as_ref().to_path_buf(),
            vocab_path: vocab_path.as_ref().to_path_buf(),
            fields: "text".to_string(),
            append_eod: true,
        }
    }
}

type ProgressFn<'a> = &'a mut dyn FnMut(u64, u64, u64) -> bool;

struct ProgressState<'a> {
    f: ProgressFn<'a>,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn progress_trampoline(user: *mut c_void, done: u64, total: u64, docs: u64) -> i32 {
    // SAFETY: user is the ProgressState on the caller's stack, alive during the call.
    let st = &mut *(user as *mut ProgressState<'_>);
    if st.panic.is_some() {
        return 1;
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (st.f)(done, total, docs))) {
        Ok(cancel) => cancel as i32,
        Err(p) => {
            st.panic = Some(p);
            1
        }
    }
}

/// Converts a jsonl file to binidx (as json2binidx). Returns (documents, skipped empty
/// lines). `progress(bytes_done, bytes_total, docs)` returning true cancels
/// ([`Status::State`]); a panic inside it cancels and is resumed after the call.
pub fn jsonl_to_binidx(
    params: &JsonlParams,
    progress: Option<&mut dyn FnMut(u64, u64, u64) -> bool>,
) -> Result<(i64, i64)> {
    let jsonl = cpath(&params.jsonl_path)?;
    let prefix = cpath(&params.output_prefix)?;
    let vocab = cpath(&params.vocab_path)?;
    let fields = cstring(&params.fields, "fields")?;
    let mut p = std::mem::MaybeUninit::<sys::rwkvpeft_jsonl_params>::zeroed();
    // SAFETY: init fills the struct.
    let mut p = unsafe {
        sys::rwkvpeft_jsonl_params_init(p.as_mut_ptr());
        p.assume_init()
    };
    p.jsonl_path = jsonl.as_ptr();
    p.output_prefix = prefix.as_ptr();
    p.vocab_path = vocab.as_ptr();
    p.fields = fields.as_ptr();
    p.append_eod = params.append_eod as i32;
    let mut state = progress.map(|f| ProgressState { f, panic: None });
    if let Some(s) = state.as_mut() {
        p.progress = Some(progress_trampoline);
        p.progress_user = s as *mut ProgressState<'_> as *mut c_void;
    }
    let (mut docs, mut skipped) = (0i64, 0i64);
    // SAFETY: strings and state outlive the call.
    let st = unsafe { sys::rwkvpeft_jsonl_to_binidx(&p, &mut docs, &mut skipped) };
    if let Some(panic) = state.and_then(|s| s.panic) {
        std::panic::resume_unwind(panic);
    }
    check(st)?;
    Ok((docs, skipped))
}

// ---------------------------------------------------------------------------------------
// Samplers
// ---------------------------------------------------------------------------------------

/// Sampler options (`rwkvpeft_sampler_params`, without the tokenizer, which
/// [`Sampler::new`] takes). `SamplerParams::new(data_file)` = the C defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SamplerParams {
    /// binidx: the prefix; jsonl/sft: the .jsonl file.
    pub data_file: std::path::PathBuf,
    /// "binidx", "jsonl" or "sft".
    pub data_type: String,
    pub vocab_path: Option<std::path::PathBuf>,
    /// "get", "pad" or "only".
    pub dataload: String,
    /// "none", "pad", "qa" or "se".
    pub loss_mask: String,
    pub mask_id: Option<String>,
    pub sft_fields: Option<String>,
    pub ctx_len: i32,
    pub micro_bsz: i32,
    pub epoch_steps: i64,
    pub data_shuffle: bool,
    pub seed: u64,
    pub my_pile_stage: i32,
    pub magic_prime: i64,
    pub my_pile_shift: i64,
}

impl SamplerParams {
    /// The C defaults for `data_file`.
    pub fn new(data_file: impl AsRef<Path>) -> SamplerParams {
        let mut p = std::mem::MaybeUninit::<sys::rwkvpeft_sampler_params>::zeroed();
        // SAFETY: init fills the struct; its strings are static.
        let p = unsafe {
            sys::rwkvpeft_sampler_params_init(p.as_mut_ptr());
            p.assume_init()
        };
        let s = |c: *const c_char| unsafe { cstr_to_string(c) };
        let o = |c: *const c_char| if c.is_null() { None } else { Some(s(c)) };
        SamplerParams {
            data_file: data_file.as_ref().to_path_buf(),
            data_type: s(p.data_type),
            vocab_path: o(p.vocab_path).map(Into::into),
            dataload: s(p.dataload),
            loss_mask: s(p.loss_mask),
            mask_id: o(p.mask_id),
            sft_fields: o(p.sft_fields),
            ctx_len: p.ctx_len,
            micro_bsz: p.micro_bsz,
            epoch_steps: p.epoch_steps,
            data_shuffle: p.data_shuffle != 0,
            seed: p.seed,
            my_pile_stage: p.my_pile_stage,
            magic_prime: p.magic_prime,
            my_pile_shift: p.my_pile_shift,
        }
    }
}

/// What a sampler resolved (`rwkvpeft_sampler_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamplerInfo {
    pub n_docs: i64,
    pub n_tokens: i64,
    pub epoch_steps: i64,
    pub ctx_len: i32,
    pub micro_bsz: i32,
    pub magic_epoch_count: i64,
}

/// A batch produced by a [`Sampler`] (owned buffers).
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedBatch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
    pub mask: Vec<f32>,
}

impl OwnedBatch {
    /// A borrowed [`Batch`] (with the mask) for training or evaluation.
    pub fn as_batch(&self) -> Batch<'_> {
        Batch {
            batch_size: self.batch_size,
            seq_len: self.seq_len,
            inputs: &self.inputs,
            targets: &self.targets,
            loss_mask: Some(&self.mask),
        }
    }
}

/// Training batches from a dataset, as the reference samples them. It borrows the optional
/// tokenizer for `'t`. `Send` (the tokenizer is `Sync`), not `Sync`.
pub struct Sampler<'t> {
    ptr: NonNull<sys::rwkvpeft_sampler>,
    micro_bsz: usize,
    ctx_len: usize,
    _tok: PhantomData<&'t Tokenizer>,
}

// SAFETY: a sampler is independent of other handles; the tokenizer it reads is Sync.
unsafe impl Send for Sampler<'_> {}

impl<'t> Sampler<'t> {
    /// Opens the data and checks the options.
    pub fn new(params: &SamplerParams, tokenizer: Option<&'t Tokenizer>) -> Result<Sampler<'t>> {
        let data_file = cpath(&params.data_file)?;
        let data_type = cstring(&params.data_type, "data_type")?;
        let vocab = params.vocab_path.as_deref().map(cpath).transpose()?;
        let dataload = cstring(&params.dataload, "dataload")?;
        let loss_mask = cstring(&params.loss_mask, "loss_mask")?;
        let mask_id = opt_cstring(&params.mask_id, "mask_id")?;
        let sft_fields = opt_cstring(&params.sft_fields, "sft_fields")?;
        let mut p = std::mem::MaybeUninit::<sys::rwkvpeft_sampler_params>::zeroed();
        // SAFETY: init fills the struct.
        let mut p = unsafe {
            sys::rwkvpeft_sampler_params_init(p.as_mut_ptr());
            p.assume_init()
        };
        p.data_file = data_file.as_ptr();
        p.data_type = data_type.as_ptr();
        p.vocab_path = opt_ptr(&vocab);
        p.dataload = dataload.as_ptr();
        p.loss_mask = loss_mask.as_ptr();
        p.mask_id = opt_ptr(&mask_id);
        p.sft_fields = opt_ptr(&sft_fields);
        p.ctx_len = params.ctx_len;
        p.micro_bsz = params.micro_bsz;
        p.epoch_steps = params.epoch_steps;
        p.data_shuffle = params.data_shuffle as i32;
        p.seed = params.seed;
        p.my_pile_stage = params.my_pile_stage;
        p.magic_prime = params.magic_prime;
        p.my_pile_shift = params.my_pile_shift;
        p.tokenizer = tokenizer.map_or(ptr::null(), |t| t.as_ptr());
        let mut out = ptr::null_mut();
        // SAFETY: strings outlive the call; the tokenizer outlives the sampler ('t).
        check(unsafe { sys::rwkvpeft_sampler_create(&p, &mut out) })?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(sys::RWKVPEFT_E_INTERNAL, "NULL sampler"))?;
        let mut s = Sampler { ptr, micro_bsz: 0, ctx_len: 0, _tok: PhantomData };
        let info = s.info()?;
        s.micro_bsz = info.micro_bsz.max(0) as usize;
        s.ctx_len = info.ctx_len.max(0) as usize;
        Ok(s)
    }

    /// What the sampler resolved (documents, tokens, epoch_steps, ...).
    pub fn info(&self) -> Result<SamplerInfo> {
        let mut i = sys::rwkvpeft_sampler_info {
            struct_size: std::mem::size_of::<sys::rwkvpeft_sampler_info>() as u32,
            ..Default::default()
        };
        // SAFETY: valid handle and struct.
        check(unsafe { sys::rwkvpeft_sampler_get_info(self.ptr.as_ptr(), &mut i) })?;
        Ok(SamplerInfo {
            n_docs: i.n_docs,
            n_tokens: i.n_tokens,
            epoch_steps: i.epoch_steps,
            ctx_len: i.ctx_len,
            micro_bsz: i.micro_bsz,
            magic_epoch_count: i.magic_epoch_count,
        })
    }

    /// The batch at the current position; advances the position.
    pub fn next_batch(&mut self) -> Result<OwnedBatch> {
        let n = self.micro_bsz * self.ctx_len;
        let mut inputs = vec![0i32; n];
        let mut targets = vec![0i32; n];
        let mut mask = vec![0f32; n];
        let mut t = 0i32;
        // SAFETY: the buffers hold micro_bsz*ctx_len elements each.
        check(unsafe {
            sys::rwkvpeft_sampler_next(
                self.ptr.as_ptr(),
                inputs.as_mut_ptr(),
                targets.as_mut_ptr(),
                mask.as_mut_ptr(),
                &mut t,
            )
        })?;
        let seq_len = t.max(0) as usize;
        let k = self.micro_bsz * seq_len;
        inputs.truncate(k);
        targets.truncate(k);
        mask.truncate(k);
        Ok(OwnedBatch { batch_size: self.micro_bsz, seq_len, inputs, targets, mask })
    }

    /// (epoch, step) of the next batch.
    pub fn position(&self) -> Result<(i64, i64)> {
        let (mut e, mut s) = (0i64, 0i64);
        // SAFETY: valid handle and out pointers.
        check(unsafe { sys::rwkvpeft_sampler_get_position(self.ptr.as_ptr(), &mut e, &mut s) })?;
        Ok((e, s))
    }

    /// Moves to a position saved with [`Sampler::position`].
    pub fn set_position(&mut self, epoch: i64, step: i64) -> Result<()> {
        // SAFETY: valid handle.
        check(unsafe { sys::rwkvpeft_sampler_set_position(self.ptr.as_ptr(), epoch, step) })
    }
}

impl Iterator for Sampler<'_> {
    type Item = Result<OwnedBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_batch())
    }
}

impl Drop for Sampler<'_> {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::rwkvpeft_sampler_free(self.ptr.as_ptr()) }
    }
}
