//! Tests of the safe wrapper (and of the sys layout) against the C library.
use std::mem::{size_of, MaybeUninit};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rwkvpeft::{
    sys, AdapterParams, Batch, Context, ContextOptions, DType, DatasetWriter, FileFormat, GenerateParams, LogLevel,
    ModelConfig, ModelParams, Optimizer, PeftMethod, Quant, Sampler, SamplerParams, Status, Tokenizer, TrainParams,
};

fn tiny() -> ModelConfig {
    ModelConfig { n_layer: 2, n_embd: 64, head_size: 32, vocab_size: 64, ..Default::default() }
}

fn ctx() -> Context {
    Context::with_options(ContextOptions::backend("cpu").log_level(LogLevel::Off).n_threads(1)).expect("cpu context")
}

fn lora() -> AdapterParams {
    AdapterParams { r: 4, alpha: 8.0, dropout: 0.0, ..Default::default() }
}

/// (inputs, targets) of a toy batch [2, 16]: every target is the input + 1.
fn toy() -> (Vec<i32>, Vec<i32>) {
    let inp: Vec<i32> = (0..32).map(|i| (i * 3) % 63).collect();
    let tgt = inp.iter().map(|x| x + 1).collect();
    (inp, tgt)
}

fn tmpdir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "rwkvpeft-rs-{}-{}-{}",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn world_vocab() -> Option<PathBuf> {
    std::env::var_os("RWKVPEFT_WORLD_VOCAB").filter(|v| !v.is_empty()).map(PathBuf::from)
}

#[test]
fn version_matches_header() {
    assert_eq!(rwkvpeft::version_number(), sys::RWKVPEFT_VERSION_NUMBER);
    assert!(rwkvpeft::version().starts_with("0.1.0"));
    let e = rwkvpeft::Error::new(sys::RWKVPEFT_E_IO, "x");
    assert_eq!(e.status(), Status::Io);
    assert_eq!(e.status_str(), rwkvpeft::status_string(-3));
    assert!(!e.status_str().is_empty());
    assert_eq!(rwkvpeft::Error::new(-77, "x").status(), Status::Other(-77));
}

macro_rules! init_size {
    ($t:ty, $f:path) => {{
        let mut p = MaybeUninit::<$t>::zeroed();
        unsafe { $f(p.as_mut_ptr()) };
        let p = unsafe { p.assume_init() };
        assert_eq!(p.struct_size as usize, size_of::<$t>(), stringify!($t));
    }};
}

#[test]
fn struct_sizes_match_c() {
    init_size!(sys::rwkvpeft_context_params, sys::rwkvpeft_context_params_init);
    init_size!(sys::rwkvpeft_model_config, sys::rwkvpeft_model_config_init);
    init_size!(sys::rwkvpeft_model_params, sys::rwkvpeft_model_params_init);
    init_size!(sys::rwkvpeft_adapter_params, sys::rwkvpeft_adapter_params_init);
    init_size!(sys::rwkvpeft_merge_params, sys::rwkvpeft_merge_params_init);
    init_size!(sys::rwkvpeft_batch, sys::rwkvpeft_batch_init);
    init_size!(sys::rwkvpeft_generate_params, sys::rwkvpeft_generate_params_init);
    init_size!(sys::rwkvpeft_train_params, sys::rwkvpeft_train_params_init);
    init_size!(sys::rwkvpeft_jsonl_params, sys::rwkvpeft_jsonl_params_init);
    init_size!(sys::rwkvpeft_sampler_params, sys::rwkvpeft_sampler_params_init);
}

#[test]
fn defaults_land_in_the_right_fields() {
    let t = TrainParams::default();
    assert_eq!((t.lr_init, t.lr_final, t.warmup_steps, t.total_steps), (6e-4, 1e-5, -1, 0));
    assert_eq!((t.beta1, t.beta2, t.adam_eps, t.grad_clip), (0.9, 0.99, 1e-8, 1.0));
    assert_eq!((t.accumulate_grad_batches, t.layerwise_lr, t.weight_decay), (1, true, 0.0));
    assert_eq!((t.chunk_ctx, t.infctx_full, t.optimizer), (0, true, Optimizer::AdamW));
    let a = AdapterParams::default();
    assert_eq!(a.method, PeftMethod::Lora);
    assert_eq!((a.r, a.alpha, a.dropout, a.seed), (8, 32.0, 0.01, 42));
    assert_eq!((a.train_parts.as_str(), a.full_finetune, a.train_emb_head), ("time,ln", false, None));
    assert_eq!((a.svd_niter, a.pissa_init.as_deref(), a.key_name.as_deref()), (4, None, None));
    let g = GenerateParams::default();
    assert_eq!((g.max_new_tokens, g.temperature, g.top_p, g.seed, g.stop_token), (100, 1.0, 0.85, 0, Some(0)));
    let c = ModelConfig::default();
    assert_eq!((c.version, c.n_layer, c.n_embd, c.head_size, c.vocab_size), (6, 2, 128, 64, 65536));
    let s = SamplerParams::new("x");
    assert_eq!((s.data_type.as_str(), s.dataload.as_str(), s.loss_mask.as_str()), ("binidx", "get", "none"));
    assert_eq!((s.ctx_len, s.micro_bsz, s.data_shuffle, s.my_pile_shift), (1024, 12, true, -1));
    let o = ContextOptions::default();
    assert_eq!((o.backend.as_deref(), o.log_level, o.n_threads), (None, LogLevel::Warn, 0));
}

#[test]
fn backends_list_cpu() {
    let b = rwkvpeft::backends().unwrap();
    let cpu = b.iter().find(|b| b.name == "cpu").expect("cpu backend");
    assert!(cpu.available && cpu.device_count == 1 && !cpu.description.is_empty());
    assert!(b.iter().any(|b| b.name == "cpu64"));
}

#[test]
fn context_basics() {
    let c = ctx();
    assert_eq!(c.backend(), "cpu");
    let (free, total) = c.memory().unwrap();
    assert!(free > 0 && free <= total);
    assert_eq!(c.last_error(), "");
}

#[test]
fn model_info_and_attach() {
    let c = ctx();
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 1).unwrap();
    let i = m.info().unwrap();
    assert_eq!((i.version, i.n_layer, i.n_embd, i.n_head, i.vocab_size, i.n_trainable), (6, 2, 64, 2, 64, 0));
    m.attach(&lora()).unwrap();
    assert!(m.info().unwrap().n_trainable > 0);
}

#[test]
fn training_lowers_the_loss() {
    let c = ctx();
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 1234).unwrap();
    m.attach(&lora()).unwrap();
    let (inp, tgt) = toy();
    let b = Batch::new(&inp, &tgt, 2, 16).unwrap();
    let mut t = m.trainer(&TrainParams::constant_lr(1e-2)).unwrap();
    let losses: Vec<f64> = (0..12).map(|_| t.step(&b).unwrap().loss).collect();
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[11] < 0.5 * losses[0], "{losses:?}");
    let r = t.step(&b).unwrap();
    assert!(r.optimizer_step_taken && r.step == 13 && r.tokens == 13 * 32 && r.grad_norm > 0.0);
    // evaluation through the model while the trainer borrows it
    let ev = m.evaluate(&b).unwrap();
    assert!(ev.loss < losses[0] && ev.n_tokens == 32.0);
}

#[test]
fn training_with_8bit_adamw() {
    let c = ctx();
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 1234).unwrap();
    m.attach(&lora()).unwrap();
    let (inp, tgt) = toy();
    let b = Batch::new(&inp, &tgt, 2, 16).unwrap();
    let p = TrainParams { optimizer: Optimizer::AdamW8bit, ..TrainParams::constant_lr(1e-2) };
    let mut t = m.trainer(&p).unwrap();
    let losses: Vec<f64> = (0..12).map(|_| t.step(&b).unwrap().loss).collect();
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[11] < 0.5 * losses[0], "{losses:?}");
}

#[test]
fn loss_mask_and_accumulation() {
    let c = ctx();
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 1).unwrap();
    m.attach(&lora()).unwrap();
    let (inp, tgt) = toy();
    let mut mask = vec![1f32; 32];
    mask[..4].fill(0.0);
    let b = Batch::new(&inp, &tgt, 2, 16).unwrap().with_mask(&mask).unwrap();
    let mut t = m.trainer(&TrainParams { accumulate_grad_batches: 2, ..Default::default() }).unwrap();
    assert!(!t.step(&b).unwrap().optimizer_step_taken);
    let r = t.step(&b).unwrap();
    assert!(r.optimizer_step_taken && r.step == 1);
    drop(t);
    assert_eq!(m.evaluate(&b).unwrap().n_tokens, 28.0);
}

#[test]
fn adapter_round_trip_gives_equal_logits() {
    let dir = tmpdir("adapter");
    let path = dir.join("a.safetensors");
    let (inp, tgt) = toy();
    let c = ctx();
    let trained = {
        let mut m = c.new_model(&tiny(), &ModelParams::default(), 5).unwrap();
        m.attach(&lora()).unwrap();
        let mut t = m.trainer(&TrainParams::constant_lr(1e-2)).unwrap();
        let b = Batch::new(&inp, &tgt, 2, 16).unwrap();
        for _ in 0..5 {
            t.step(&b).unwrap();
        }
        drop(t);
        m.save_adapter(&path, FileFormat::Auto, DType::F32).unwrap();
        m.save_adapter(dir.join("a.pth"), FileFormat::Pth, DType::Bf16).unwrap();
        m.logits(&inp, 2, 16).unwrap()
    };
    assert_eq!(trained.len(), 2 * 16 * 64);
    let mut m2 = c.new_model(&tiny(), &ModelParams::default(), 5).unwrap();
    m2.attach(&lora()).unwrap();
    assert_ne!(m2.logits(&inp, 2, 16).unwrap(), trained);
    m2.load_adapter(&path).unwrap();
    assert_eq!(m2.logits(&inp, 2, 16).unwrap(), trained);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn model_save_and_load() {
    let dir = tmpdir("model");
    let (inp, _) = toy();
    let c = ctx();
    let reference = {
        let m = c.new_model(&tiny(), &ModelParams::default(), 9).unwrap();
        m.save(dir.join("base.safetensors"), FileFormat::Auto, DType::F32).unwrap();
        m.logits(&inp, 2, 16).unwrap()
    };
    let m = c.load_model(dir.join("base.safetensors"), &ModelParams { grad_cp: true, ..Default::default() }).unwrap();
    let got = m.logits(&inp, 2, 16).unwrap();
    for (a, b) in got.iter().zip(&reference) {
        assert!((a - b).abs() <= 1e-5 + 1e-5 * b.abs());
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn trainer_state_resumes_exactly() {
    let dir = tmpdir("state");
    let (inp, tgt) = toy();
    let b = Batch::new(&inp, &tgt, 2, 16).unwrap();
    let c = ctx();
    let run = |split: usize| -> Vec<f64> {
        let mut m = c.new_model(&tiny(), &ModelParams::default(), 3).unwrap();
        m.attach(&lora()).unwrap();
        let mut t = m.trainer(&TrainParams::constant_lr(5e-3)).unwrap();
        let mut losses: Vec<f64> = (0..split).map(|_| t.step(&b).unwrap().loss).collect();
        if split < 6 {
            t.save_state(dir.join("s.safetensors")).unwrap();
            drop(t);
            t = m.trainer(&TrainParams::constant_lr(5e-3)).unwrap();
            t.load_state(dir.join("s.safetensors")).unwrap();
            losses.extend((split..6).map(|_| t.step(&b).unwrap().loss));
        }
        losses
    };
    assert_eq!(run(6), run(3));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn generate_is_deterministic() {
    let c = ctx();
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 2).unwrap();
    m.attach(&lora()).unwrap();
    let greedy = GenerateParams { max_new_tokens: 8, temperature: 0.0, stop_token: None, ..Default::default() };
    let g = m.generate(&[3, 4], &greedy).unwrap();
    assert_eq!(g.len(), 8);
    assert!(g.iter().all(|&t| (0..64).contains(&t)));
    assert_eq!(g, m.generate(&[3, 4], &greedy).unwrap());
    // greedy first token = argmax of the prompt's last logits
    let lg = m.logits(&[3, 4], 1, 2).unwrap();
    let last = &lg[64..];
    let argmax = (0..64).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as i32;
    assert_eq!(g[0], argmax);
    let stop = m.generate(&[3, 4], &GenerateParams { stop_token: Some(g[0]), ..greedy }).unwrap();
    assert_eq!(stop, vec![g[0]]);
    let sampled = GenerateParams { max_new_tokens: 12, temperature: 1.0, top_p: 0.9, seed: 11, stop_token: None };
    assert_eq!(m.generate(&[3], &sampled).unwrap(), m.generate(&[3], &sampled).unwrap());
    assert!(m.generate(&[3], &GenerateParams { max_new_tokens: 0, ..greedy }).unwrap().is_empty());
}

#[test]
fn merge_in_place_and_from_files() {
    let dir = tmpdir("merge");
    let (inp, tgt) = toy();
    let b = Batch::new(&inp, &tgt, 2, 16).unwrap();
    let c = ctx();
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 4).unwrap();
    m.attach(&AdapterParams { train_parts: String::new(), ..lora() }).unwrap();
    {
        let mut t = m.trainer(&TrainParams::constant_lr(1e-2)).unwrap();
        for _ in 0..4 {
            t.step(&b).unwrap();
        }
    } // m.merge() needs &mut: the compiler rejects it while the trainer lives
    let with_adapter = m.logits(&inp, 2, 16).unwrap();
    m.save_adapter(dir.join("a.safetensors"), FileFormat::Auto, DType::F32).unwrap();
    m.save(dir.join("base.safetensors"), FileFormat::Auto, DType::F32).unwrap();
    m.merge().unwrap();
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 + 1e-4 * y.abs());
    assert!(close(&m.logits(&inp, 2, 16).unwrap(), &with_adapter));
    assert_eq!(m.info().unwrap().n_trainable, 0);

    // other methods train on the merged (no longer degenerate) model
    for method in [PeftMethod::Pissa, PeftMethod::Bone, PeftMethod::State] {
        let mut m2 = c.load_model(dir.join("base.safetensors"), &ModelParams::default()).unwrap();
        m2.load_adapter(dir.join("a.safetensors")).unwrap_err(); // nothing attached yet
        m2.attach(&AdapterParams { train_parts: String::new(), ..lora() }).unwrap();
        m2.load_adapter(dir.join("a.safetensors")).unwrap();
        m2.merge().unwrap();
        let r = if method == PeftMethod::Bone { 32 } else { 4 };
        m2.attach(&AdapterParams {
            method,
            r,
            svd_niter: 2,
            train_parts: String::new(),
            train_emb_head: Some(false),
            ..lora()
        })
        .unwrap();
        let mut t = m2.trainer(&TrainParams::constant_lr(1e-2)).unwrap();
        let losses: Vec<f64> = (0..6).map(|_| t.step(&b).unwrap().loss).collect();
        assert!(losses[5] < losses[0], "{method:?}: {losses:?}");
    }

    // PiSSA init file round trip
    let mut pm = c.new_model(&tiny(), &ModelParams::default(), 8).unwrap();
    pm.attach(&AdapterParams { method: PeftMethod::Pissa, svd_niter: 2, train_parts: String::new(), ..lora() })
        .unwrap();
    pm.save_pissa_init(dir.join("init_pissa.safetensors"), FileFormat::Auto).unwrap();
    pm.check_pissa_init(dir.join("init_pissa.safetensors")).unwrap();
    let mut other = c.new_model(&tiny(), &ModelParams::default(), 9).unwrap();
    other
        .attach(&AdapterParams { method: PeftMethod::Pissa, svd_niter: 2, train_parts: String::new(), ..lora() })
        .unwrap();
    assert_eq!(other.check_pissa_init(dir.join("init_pissa.safetensors")).unwrap_err().status(), Status::Shape);

    let mut mp = rwkvpeft::MergeParams::new(
        dir.join("base.safetensors"),
        dir.join("a.safetensors"),
        dir.join("merged.safetensors"),
    );
    assert_eq!(rwkvpeft::merge_files(&mp).unwrap_err().status(), Status::InvalidArgument); // lora_alpha
    mp.lora_alpha = Some(8.0);
    mp.dtype = DType::F32;
    rwkvpeft::merge_files(&mp).unwrap();
    let merged = c.load_model(dir.join("merged.safetensors"), &ModelParams::default()).unwrap();
    assert!(close(&merged.logits(&inp, 2, 16).unwrap(), &with_adapter));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn quantized_lora_trains_and_merges() {
    let dir = tmpdir("qlora");
    let (inp, tgt) = toy();
    let b = Batch::new(&inp, &tgt, 2, 16).unwrap();
    let c = ctx();
    // a base with non-zero block linears (a fresh model's att.output/ffn.value are zero)
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 4).unwrap();
    m.attach(&AdapterParams { train_parts: String::new(), ..lora() }).unwrap();
    {
        let mut t = m.trainer(&TrainParams::constant_lr(1e-2)).unwrap();
        for _ in 0..3 {
            t.step(&b).unwrap();
        }
    }
    m.merge().unwrap();
    m.save(dir.join("base.safetensors"), FileFormat::Auto, DType::F32).unwrap();
    let mut q =
        c.load_model(dir.join("base.safetensors"), &ModelParams { quant: Quant::Nf4, ..Default::default() }).unwrap();
    q.attach(&AdapterParams { train_parts: String::new(), ..lora() }).unwrap();
    {
        let mut t = q.trainer(&TrainParams::constant_lr(1e-2)).unwrap();
        let losses: Vec<f64> = (0..8).map(|_| t.step(&b).unwrap().loss).collect();
        assert!(losses[7] < losses[0], "{losses:?}");
    }
    let with_adapter = q.logits(&inp, 2, 16).unwrap();
    q.save_adapter(dir.join("a.safetensors"), FileFormat::Auto, DType::F32).unwrap();
    let mut mp = rwkvpeft::MergeParams::new(
        dir.join("base.safetensors"),
        dir.join("a.safetensors"),
        dir.join("merged.safetensors"),
    );
    mp.lora_alpha = Some(8.0);
    mp.dtype = DType::F32;
    mp.quant = Quant::Nf4;
    rwkvpeft::merge_files(&mp).unwrap();
    let merged = c.load_model(dir.join("merged.safetensors"), &ModelParams::default()).unwrap();
    let got = merged.logits(&inp, 2, 16).unwrap();
    assert!(got.iter().zip(&with_adapter).all(|(x, y)| (x - y).abs() <= 1e-4 + 1e-4 * y.abs()));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn errors_carry_code_and_message() {
    let dir = tmpdir("errors");
    let c = ctx();
    let e = c.load_model(dir.join("missing.pth"), &ModelParams::default()).unwrap_err();
    assert_eq!(e.status(), Status::Io);
    assert_eq!(e.code(), sys::RWKVPEFT_E_IO);
    assert!(e.message().contains("missing.pth"), "{e}");
    assert!(e.to_string().contains(&e.status_str()));
    assert_eq!(rwkvpeft::last_error(), e.message());

    std::fs::write(dir.join("bad.pth"), b"PK\x03\x04 not a zip".repeat(8)).unwrap();
    let e = c.load_model(dir.join("bad.pth"), &ModelParams::default()).unwrap_err();
    assert_eq!(e.status(), Status::Format, "{e}");

    let e = Context::new("no-such-backend").unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("no-such-backend"));

    let e = c.new_model(&ModelConfig { n_embd: 65, ..tiny() }, &ModelParams::default(), 0).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = c.new_model(&ModelConfig { version: 4, ..tiny() }, &ModelParams::default(), 0).unwrap_err();
    assert_eq!(e.status(), Status::Unsupported);

    let mut m = c.new_model(&tiny(), &ModelParams::default(), 1).unwrap();
    let e = m.trainer(&TrainParams::default()).unwrap_err();
    assert_eq!(e.status(), Status::State);
    let e = m.attach(&AdapterParams { r: 0, ..lora() }).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = m.attach(&AdapterParams { method: PeftMethod::Raw(9), ..lora() }).unwrap_err();
    assert_eq!(e.status(), Status::Unsupported);
    m.attach(&lora()).unwrap();
    let e = m.attach(&lora()).unwrap_err();
    assert_eq!(e.status(), Status::State);
    let e = m.load_adapter(dir.join("none.pth")).unwrap_err();
    assert_eq!(e.status(), Status::Io);
    let e = m.load_adapter(dir.join("bad.pth")).unwrap_err();
    assert_eq!(e.status(), Status::Format);
    let e = m.save_adapter(dir.join("no/such/dir.pth"), FileFormat::Auto, DType::Bf16).unwrap_err();
    assert_eq!(e.status(), Status::Io);
    let e = m.trainer(&TrainParams { lr_init: f32::NAN, ..Default::default() }).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);

    // bad token ids
    let (inp, tgt) = toy();
    let mut bad = inp.clone();
    bad[5] = 64;
    let e = m.evaluate(&Batch::new(&bad, &tgt, 2, 16).unwrap()).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("64"), "{e}");
    let e = m.generate(&[1000], &GenerateParams::default()).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = m.logits(&[1, -5], 1, 2).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    let mut t = m.trainer(&TrainParams::default()).unwrap();
    let mut badt = tgt.clone();
    badt[0] = 70;
    let e = t.step(&Batch::new(&inp, &badt, 2, 16).unwrap()).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("70"));
    t.step(&Batch::new(&inp, &tgt, 2, 16).unwrap()).unwrap();
    let e = t.load_state(dir.join("missing.safetensors")).unwrap_err();
    assert_eq!(e.status(), Status::Io);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn batch_lengths_are_checked_before_c() {
    let (inp, tgt) = toy();
    assert_eq!(Batch::new(&inp, &tgt[..31], 2, 16).unwrap_err().status(), Status::InvalidArgument);
    assert!(Batch::new(&inp, &tgt, 4, 16).is_err());
    assert!(Batch::new(&[], &[], 0, 16).is_err());
    assert!(Batch::new(&inp, &tgt, 2, 16).unwrap().with_mask(&[1.0; 3]).is_err());
    let c = ctx();
    let m = c.new_model(&tiny(), &ModelParams::default(), 1).unwrap();
    assert!(m.logits(&inp, 3, 16).is_err());
    let e = c.load_model("nul\0byte", &ModelParams::default()).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
}

#[test]
fn log_callback_receives_messages() {
    let got = Arc::new(Mutex::new(Vec::<(LogLevel, String)>::new()));
    let sink = got.clone();
    let c = Context::with_options(
        ContextOptions::backend("cpu")
            .log_level(LogLevel::Debug)
            .log(move |lv, msg| sink.lock().unwrap().push((lv, msg.to_string()))),
    )
    .unwrap();
    {
        let mut m = c
            .new_model(
                &ModelConfig { n_layer: 1, n_embd: 32, head_size: 32, vocab_size: 16, ..Default::default() },
                &ModelParams::default(),
                1,
            )
            .unwrap();
        m.attach(&AdapterParams { r: 2, ..Default::default() }).unwrap();
    }
    drop(c);
    let got = got.lock().unwrap();
    assert!(got.iter().any(|(_, m)| m.contains("adapter attached")), "{got:?}");
    // a panicking callback does not unwind into C
    let c = Context::with_options(ContextOptions::backend("cpu").log_level(LogLevel::Debug).log(|_, _| panic!("boom")))
        .unwrap();
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 1).unwrap();
    m.attach(&lora()).unwrap();
}

#[test]
fn datasets_and_samplers() {
    let dir = tmpdir("data");
    let prefix = dir.join("d");
    let mut w = DatasetWriter::create(&prefix, 0, 64).unwrap();
    let docs: Vec<Vec<i32>> = (0..8).map(|d| (0..40).map(|i| 1 + (i * 7 + d) % 63).collect()).collect();
    for d in &docs {
        w.add(d).unwrap();
    }
    w.finish().unwrap();
    let ds = rwkvpeft::Dataset::open(&prefix).unwrap();
    assert_eq!((ds.num_docs(), ds.num_tokens()), (8, 320));
    assert_eq!(ds.doc(1).unwrap(), (40, 40));
    assert_eq!(ds.document(3).unwrap(), docs[3]);
    assert_eq!(ds.read(38, 4).unwrap(), vec![docs[0][38], docs[0][39], docs[1][0], docs[1][1]]);
    assert_eq!(ds.doc(8).unwrap_err().status(), Status::InvalidArgument);

    // an unfinished writer removes its files
    let w = DatasetWriter::create(dir.join("partial"), 0, 64).unwrap();
    drop(w);
    assert!(!dir.join("partial.bin").exists() && !dir.join("partial.idx").exists());

    let mut sp = SamplerParams::new(&prefix);
    sp.ctx_len = 16;
    sp.micro_bsz = 2;
    sp.epoch_steps = 5;
    sp.seed = 3;
    let mut s = Sampler::new(&sp, None).unwrap();
    let i = s.info().unwrap();
    assert_eq!((i.n_docs, i.n_tokens, i.epoch_steps, i.ctx_len, i.micro_bsz), (8, 320, 5, 16, 2));
    let b = s.next_batch().unwrap();
    assert_eq!((b.batch_size, b.seq_len, b.inputs.len(), b.mask.len()), (2, 16, 32, 32));
    assert_eq!(&b.inputs[1..16], &b.targets[..15]);
    let saved = s.position().unwrap();
    assert_eq!(saved, (0, 1));
    let after: Vec<_> = (&mut s).take(6).map(|b| b.unwrap()).collect();
    assert_eq!(s.position().unwrap(), (1, 2));
    s.set_position(saved.0, saved.1).unwrap();
    let again: Vec<_> = (0..6).map(|_| s.next_batch().unwrap()).collect();
    assert_eq!(after, again);
    assert_eq!(s.set_position(0, 5).unwrap_err().status(), Status::InvalidArgument);

    // a sampler's batches train a model
    let c = ctx();
    let mut m = c.new_model(&tiny(), &ModelParams::default(), 1).unwrap();
    m.attach(&lora()).unwrap();
    let mut t = m.trainer(&TrainParams::default()).unwrap();
    assert!(t.step(&s.next_batch().unwrap().as_batch()).unwrap().loss.is_finite());

    // sampler errors
    let e = Sampler::new(&SamplerParams { dataload: "sideways".into(), ..sp.clone() }, None).err().unwrap();
    assert_eq!(e.status(), Status::InvalidArgument);
    let e = Sampler::new(&SamplerParams::new(dir.join("missing")), None).err().unwrap();
    assert_eq!(e.status(), Status::Io);
    let e = rwkvpeft::Dataset::open(dir.join("missing")).err().unwrap();
    assert_eq!(e.status(), Status::Io);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tokenizer_round_trip() {
    let Some(vocab) = world_vocab() else {
        eprintln!("RWKVPEFT_WORLD_VOCAB not set: tokenizer test skipped");
        return;
    };
    let tok = Arc::new(Tokenizer::load(&vocab).unwrap());
    assert_eq!(tok.vocab_size(), 65530);
    for text in ["Hello, world!", "Keeper's note: 灯塔 🌊\n", "", "a\0b"] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text.as_bytes());
    }
    let raw: Vec<u8> = (0..=255).collect();
    assert_eq!(tok.decode(&tok.encode(&raw).unwrap()).unwrap(), raw);
    let long = "lighthouse ".repeat(500);
    assert_eq!(tok.decode_lossy(&tok.encode(&long).unwrap()).unwrap(), long);
    assert_eq!(tok.decode(&[1, 2, 70000]).unwrap_err().status(), Status::InvalidArgument);
    // Sync: shared between threads
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let t = tok.clone();
            std::thread::spawn(move || t.encode("the sea was grey ".repeat(40)).unwrap())
        })
        .collect();
    let outs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(outs.windows(2).all(|w| w[0] == w[1]));

    // jsonl -> binidx, and a jsonl sampler borrowing the tokenizer
    let dir = tmpdir("tok");
    let jsonl = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/sample/keeper_notes.jsonl");
    let mut calls = 0;
    let mut progress = |done: u64, total: u64, _docs: u64| {
        calls += 1;
        assert!(done <= total);
        false
    };
    let (docs, skipped) =
        rwkvpeft::jsonl_to_binidx(&rwkvpeft::JsonlParams::new(&jsonl, dir.join("k"), &vocab), Some(&mut progress))
            .unwrap();
    assert_eq!((docs, skipped), (12, 0));
    assert!(calls > 0);
    let ds = rwkvpeft::Dataset::open(dir.join("k")).unwrap();
    let first = ds.document(0).unwrap();
    assert_eq!(*first.last().unwrap(), 0);
    assert!(tok.decode_lossy(&first[..first.len() - 1]).unwrap().starts_with("Keeper's note, first morning."));
    let cancel = rwkvpeft::jsonl_to_binidx(
        &rwkvpeft::JsonlParams::new(&jsonl, dir.join("c"), &vocab),
        Some(&mut |_, _, _| true),
    );
    assert_eq!(cancel.unwrap_err().status(), Status::State);
    let mut sp = SamplerParams::new(&jsonl);
    sp.data_type = "jsonl".into();
    sp.ctx_len = 32;
    sp.micro_bsz = 3;
    let mut s = Sampler::new(&sp, Some(&tok)).unwrap();
    assert_eq!(s.next_batch().unwrap().inputs.len(), 96);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn many_create_drop_cycles() {
    let (inp, tgt) = toy();
    let b = Batch::new(&inp, &tgt, 2, 16).unwrap();
    let rss = || -> usize {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0) * 4096
    };
    let cycle = || {
        let c = ctx();
        let mut m = c.new_model(&tiny(), &ModelParams::default(), 1).unwrap();
        m.attach(&lora()).unwrap();
        let mut t = m.trainer(&TrainParams::default()).unwrap();
        t.step(&b).unwrap();
    };
    for _ in 0..20 {
        cycle();
    }
    let before = rss();
    for _ in 0..200 {
        cycle();
    }
    let grown = rss().saturating_sub(before);
    // other tests run in parallel threads of this process, so allow more noise than the
    // Python test; a leaked tiny model is ~2.7 MB, 200 of them would be ~500 MB
    assert!(grown < 64 << 20, "RSS grew by {} MB", grown >> 20);
}

#[test]
fn distinct_trees_run_in_parallel_threads() {
    let (inp, tgt) = toy();
    let results: Vec<Vec<f64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let c = ctx();
                    let mut m = c.new_model(&tiny(), &ModelParams::default(), 42).unwrap();
                    m.attach(&lora()).unwrap();
                    let mut t = m.trainer(&TrainParams::default()).unwrap();
                    let b = Batch::new(&inp, &tgt, 2, 16).unwrap();
                    (0..3).map(|_| t.step(&b).unwrap().loss).collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results[0], results[1]);
    // a context (before it has models) may move to another thread
    let c = ctx();
    let backend = std::thread::spawn(move || c.backend()).join().unwrap();
    assert_eq!(backend, "cpu");
}

// Thread-safety markers, checked at compile time.
#[allow(dead_code)]
fn thread_safety_markers() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Context>();
    send::<Tokenizer>();
    sync::<Tokenizer>();
    send::<rwkvpeft::Dataset>();
    send::<DatasetWriter>();
    send::<Sampler<'static>>();
}

/// Fails to compile when `$t` implements `$tr` (the impls below become ambiguous).
macro_rules! assert_not_impl {
    ($t:ty, $tr:path) => {
        const _: fn() = || {
            trait AmbiguousIfImpl<A> {
                fn some_item() {}
            }
            impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
            impl<T: ?Sized + $tr> AmbiguousIfImpl<u8> for T {}
            let _ = <$t as AmbiguousIfImpl<_>>::some_item;
        };
    };
}
assert_not_impl!(Context, Sync);
assert_not_impl!(rwkvpeft::Model<'static>, Send);
assert_not_impl!(rwkvpeft::Model<'static>, Sync);
assert_not_impl!(rwkvpeft::Trainer<'static>, Send);
assert_not_impl!(rwkvpeft::Trainer<'static>, Sync);
assert_not_impl!(rwkvpeft::Dataset, Sync);
assert_not_impl!(DatasetWriter, Sync);
assert_not_impl!(Sampler<'static>, Sync);
