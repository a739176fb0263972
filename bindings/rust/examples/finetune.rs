//! Fine-tunes a tiny fresh RWKV-6 with LoRA on the bundled sample text and prints the loss
//! as it falls.
//!
//!   cargo run --offline --example finetune [steps]
//!
//! With $RWKVPEFT_WORLD_VOCAB set, data/sample/keeper_notes.jsonl goes through the World
//! tokenizer (jsonl -> binidx with the library's converter); otherwise the bytes of
//! data/sample/keeper_notes.txt become ids 1..=256. Either way a Sampler cuts training
//! windows from a binidx dataset written to a temporary folder. Exits with status 1 when
//! the loss does not fall.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rwkvpeft::{
    AdapterParams, Context, ContextOptions, DatasetWriter, GenerateParams, JsonlParams, LogLevel, ModelConfig,
    ModelParams, Sampler, SamplerParams, Tokenizer, TrainParams,
};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn run(steps: usize, tmp: &Path) -> rwkvpeft::Result<bool> {
    println!("librwkvpeft {}", rwkvpeft::version());
    let vocab = std::env::var_os("RWKVPEFT_WORLD_VOCAB").filter(|v| !v.is_empty()).map(PathBuf::from);
    let prefix = tmp.join("keeper");
    let tokenizer = match &vocab {
        Some(v) => {
            let params = JsonlParams::new(repo_file("data/sample/keeper_notes.jsonl"), &prefix, v);
            let (docs, _) = rwkvpeft::jsonl_to_binidx(&params, None)?;
            println!("data: keeper_notes.jsonl -> {docs} documents (World tokenizer)");
            Some(Tokenizer::load(v)?)
        }
        None => {
            let text = std::fs::read(repo_file("data/sample/keeper_notes.txt"))
                .map_err(|e| rwkvpeft::Error::new(-3, format!("keeper_notes.txt: {e}")))?;
            let ids: Vec<i32> = text.iter().map(|&b| b as i32 + 1).collect();
            let mut w = DatasetWriter::create(&prefix, 0, 257)?;
            w.add(&ids)?;
            w.finish()?;
            println!("data: keeper_notes.txt -> {} byte ids (set RWKVPEFT_WORLD_VOCAB for the tokenizer)", ids.len());
            None
        }
    };
    let vocab_size = tokenizer.as_ref().map_or(257, |_| 65536);

    let backend = std::env::var("RWKVPEFT_BACKEND").unwrap_or_else(|_| "auto".into());
    let ctx = Context::with_options(ContextOptions::backend(&backend).log_level(LogLevel::Error))?;
    println!("backend: {}", ctx.backend());
    let config = ModelConfig { n_layer: 2, n_embd: 64, head_size: 32, vocab_size, ..Default::default() };
    let mut model = ctx.new_model(&config, &ModelParams::default(), 1234)?;
    model.attach(&AdapterParams { r: 8, alpha: 16.0, dropout: 0.0, ..Default::default() })?;
    println!("model: {:?}", model.info()?);

    let mut sp = SamplerParams::new(&prefix);
    sp.ctx_len = 64;
    sp.micro_bsz = 4;
    sp.epoch_steps = 1000;
    sp.seed = 7;
    let mut sampler = Sampler::new(&sp, None)?;
    let mut losses = Vec::with_capacity(steps);
    {
        let mut trainer = model.trainer(&TrainParams::constant_lr(5e-3))?;
        for step in 0..steps {
            let batch = sampler.next_batch()?;
            let r = trainer.step(&batch.as_batch())?;
            losses.push(r.loss);
            if step % 5 == 0 || step + 1 == steps {
                println!("step {step:3}  loss {:.4}  grad-norm {:.3}", r.loss, r.grad_norm);
            }
        }
    } // the trainer is dropped before the model is used mutably again

    let k = (steps / 5).max(1);
    let first = losses[..k].iter().sum::<f64>() / k as f64;
    let last = losses[steps - k..].iter().sum::<f64>() / k as f64;
    println!("mean loss of the first {k} steps {first:.4}, of the last {k} steps {last:.4}");

    if let Some(tok) = &tokenizer {
        let prompt = tok.encode("Keeper's note,")?;
        let out =
            model.generate(&prompt, &GenerateParams { max_new_tokens: 24, temperature: 0.0, ..Default::default() })?;
        println!("sample: Keeper's note,{}", tok.decode_lossy(&out)?);
    }
    model.save_adapter(tmp.join("adapter.safetensors"), rwkvpeft::FileFormat::Auto, rwkvpeft::DType::Bf16)?;
    Ok(last < first)
}

fn main() -> ExitCode {
    let steps = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(40usize).max(2);
    let tmp = std::env::temp_dir().join(format!("rwkvpeft-finetune-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&tmp) {
        eprintln!("finetune: {}: {e}", tmp.display());
        return ExitCode::FAILURE;
    }
    let result = run(steps, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    match result {
        Ok(true) => {
            println!("the loss fell");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("finetune: the loss did not fall");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("finetune: {e}");
            ExitCode::FAILURE
        }
    }
}
