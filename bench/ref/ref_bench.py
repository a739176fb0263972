#!/usr/bin/env python3
"""ref_bench.py — time RWKV-PEFT's own training step (its model modules, PEFT machinery, CUDA
kernels and L2Wrap loss) on the GPU, for the side-by-side benchmark (bench/side_by_side.sh).

    python3 bench/ref/ref_bench.py --version 6 --layers 24 --embd 2048 --bsz 8 --ctx 1024 \
        --method lora [--chunk 1024] [--steps 10] [--warmup 3] [--json out.jsonl] [--tag ID]

The reference code is read from .ref/RWKV-PEFT (bench/ref/setup.sh exports it from the git
mirror; never committed). What runs is theirs: `train.py`'s own argument parser (its
add_argument calls are read out of train.py, so the defaults are theirs) and its environment
set-up, `rwkvt.peft.peft_loading.load_peft_model` (LoRA config, model class, freezing,
train_parts ["time","ln"], state tuning), the Lightning module's `training_step` (cross-entropy
+ L2Wrap; the infctx chunk loop with its states) and `configure_optimizers` (their parameter
groups and LR scales), their JIT-compiled CUDA kernels (wkv6 / wkv6state / wkv6infctx with
ctx_len baked in as _T_, wkv7 "wind backstepping"), and, for RWKV-7, their torch.compile'd
time-mix. What is ours:
  * the weights: the module constructors run on the GPU with bf16 as the default dtype (so
    their own init formulas give the decays, mixes and bonuses; the large matrices get the
    constructors' kaiming-uniform, LoRA B = 0); their generate_init_weight (an orthogonal init
    of every matrix on the CPU, minutes for 7B) is skipped by pointing --load_model at an
    empty state dict, which also gives the fine-tuning freeze (emb/head frozen);
  * the optimizer step, as DeepSpeed ZeRO-1 with bf16 does it (DeepSpeed is not installed on
    the GPU machine; bench/ref/stubs/): fp32 master copies + Adam moments of the trainable
    tensors, grad-norm clip 1.0 on the fp32 gradients, Adam (their betas/eps, no weight decay,
    their per-group LR scales), bf16 weights written back;
  * the loop: no Lightning Trainer (no callbacks, logging or data loader); random tokens.
Step = training_step (forward + loss) + backward + clip + Adam; median of --steps timed steps
after --warmup; tokens/s = B*T / median; peak = torch.cuda.max_memory_allocated after a reset
that follows the model build (weights, masters, moments, grads, activations are all inside).
Also recorded: max_memory_reserved and the device memory in use (cudaMemGetInfo) above the
empty context after the run (includes their kernels' local-memory reservation).

One JSON line per run goes to --json (impl "rwkv-peft"); a run that fails (assertion, OOM,
missing package, timeout via SIGTERM) writes a line with "error" instead of crashing.
"""
import argparse
import ast
import contextlib
import io
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Killed(Exception):
    pass


def _on_sigterm(signum, frame):
    raise Killed("killed by signal %d (time limit)" % signum)


def parse_cli():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", type=int, default=6, choices=[5, 6, 7])
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--embd", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=0, help="dim_ffn (0: theirs, 3.5C rounded for v5/v6, 4C for v7)")
    p.add_argument("--vocab", type=int, default=65536)
    p.add_argument("--bsz", type=int, default=8)
    p.add_argument("--ctx", type=int, default=1024, help="ctx_len (with --chunk: the whole sequence)")
    p.add_argument("--method", default="lora", choices=["lora", "state"])
    p.add_argument("--chunk", type=int, default=0, help="infctx: train_type infctx with chunk_ctx N")
    p.add_argument("--r", type=int, default=64)
    p.add_argument("--alpha", type=float, default=128)
    p.add_argument("--grad_cp", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--op", default="", help="their --op (default cuda; fla where their scripts need it)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", default="")
    p.add_argument("--tag", default="", help="config id written into the JSON line")
    p.add_argument("--ref", default=os.path.join(ROOT, ".ref", "RWKV-PEFT"))
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--prebuild", action="store_true", help="only JIT-build/load their CUDA kernel and exit")
    p.add_argument("--batch", default="", help="run several configs in this process (see batch_configs)")
    p.add_argument("--warm-only", action="store_true",
                   help="run --warmup steps only (fills the torch.compile caches), write no JSON")
    return p.parse_args()


def their_parser(train_py):
    """An ArgumentParser with every parser.add_argument(...) call of their train.py."""
    parser = argparse.ArgumentParser(add_help=False)
    tree = ast.parse(open(train_py).read(), train_py)
    n = 0
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "parser"):
            code = compile(ast.Expression(node), train_py, "eval")
            try:
                eval(code, {"parser": parser, "json": json, "str": str, "int": int, "float": float})
            except argparse.ArgumentError:
                pass  # the same flag in both Lightning branches
            n += 1
    if n < 30:
        raise RuntimeError("could not read train.py's arguments (%d add_argument calls)" % n)
    return parser


def kernel_tag(cli, train_type, op):
    if op != "cuda":
        return op
    if cli.version == 7:
        return "wkv7"
    if cli.version == 5:
        return "wkv5"
    name = {"": "wkv6", "state": "wkv6state", "infctx": "wkv6infctx"}[train_type]
    return "%s-T%d" % (name, cli.ctx)


def their_args(cli, empty_pth, proj_dir):
    """The args namespace as their train.py builds it, from a command line like their scripts'."""
    train_type = "infctx" if cli.chunk else ("state" if cli.method == "state" else "")
    op = cli.op or ("fla" if cli.version == 7 and train_type else "cuda")
    argv = ["--load_model", empty_pth, "--proj_dir", proj_dir, "--data_type", "binidx", "--dataload", "pad",
            "--vocab_size", str(cli.vocab), "--n_layer", str(cli.layers), "--n_embd", str(cli.embd),
            "--ctx_len", str(cli.ctx), "--micro_bsz", str(cli.bsz), "--epoch_steps", "1000", "--epoch_count", "1",
            "--lr_init", str(cli.lr), "--lr_final", str(cli.lr), "--warmup_steps", "0",
            "--beta1", "0.9", "--beta2", "0.99", "--adam_eps", "1e-8",
            "--accelerator", "gpu", "--devices", "1", "--precision", "bf16", "--strategy", "deepspeed_stage_1",
            "--grad_cp", str(cli.grad_cp), "--my_testing", {5: "x052", 6: "x060", 7: "x070"}[cli.version],
            "--op", op]
    if cli.ffn:
        argv += ["--dim_ffn", str(cli.ffn)]
    if cli.method == "lora":
        argv += ["--peft", "lora", "--lora_config",
                 json.dumps({"lora_load": "", "lora_r": cli.r, "lora_alpha": cli.alpha, "lora_dropout": 0.0})]
    if train_type:
        argv += ["--train_type", train_type]
    if cli.chunk:
        argv += ["--chunk_ctx", str(cli.chunk)]
    args = their_parser("train.py").parse_args(argv)

    # --- what their train.py does after parse_args (HEAD 5b8aac9), in order -----------------
    import datetime
    args.my_timestamp = datetime.datetime.today().strftime("%Y-%m-%d-%H-%M-%S")
    args.enable_checkpointing = False
    args.replace_sampler_ddp = False
    args.logger = False
    args.gradient_clip_val = 1.0
    args.num_sanity_val_steps = 0
    args.check_val_every_n_epoch = int(1e20)
    args.log_every_n_steps = int(1e20)
    args.max_epochs = args.epoch_count
    if args.dataload == "get":
        args.max_epochs = -1
    args.betas = (args.beta1, args.beta2)
    args.real_bsz = int(args.num_nodes) * int(args.devices) * args.micro_bsz
    os.environ["RWKV_MY_TESTING"] = args.my_testing
    os.environ["RWKV_CTXLEN"] = str(args.ctx_len)
    os.environ["RWKV_HEAD_SIZE_A"] = str(args.head_size_a)
    os.environ["RWKV_TRAIN_TYPE"] = ""
    if args.train_type == "state":
        os.environ["RWKV_TRAIN_TYPE"] = "state"
    elif args.train_type == "infctx":
        os.environ["RWKV_TRAIN_TYPE"] = "infctx"
    os.environ["WKV"] = args.op
    os.environ["FUSED_KERNEL"] = "1" if args.fused_kernel else "0"
    if args.dim_att <= 0:
        args.dim_att = args.n_embd
    if args.dim_ffn <= 0:
        args.dim_ffn = int((args.n_embd * 3.5) // 32 * 32)
    args.run_name = f"{args.vocab_size} ctx{args.ctx_len} L{args.n_layer} D{args.n_embd}"
    os.environ["RWKV_FLOAT_MODE"] = args.precision
    os.environ["RWKV_JIT_ON"] = "0"
    import torch
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    args.precision = "bf16"
    return args, train_type, op


class MasterAdam:
    """DeepSpeed ZeRO-1 bf16 optimizer step, as far as the arithmetic and memory go: fp32 master
    copies and Adam moments of the trainable bf16 tensors; bf16 grads -> fp32; global grad-norm
    clip; Adam (adam_w_mode False and weight_decay 0, as their FusedAdam call); write back bf16."""

    def __init__(self, stub_opt, lr, clip=1.0):
        import torch
        self.clip = clip
        self.params, self.masters, self.mgrads, groups = [], [], [], []
        for g in stub_opt.param_groups:
            ps = [p for p in g["params"] if p.requires_grad]
            if not ps:
                continue
            ms = [p.detach().float().clone() for p in ps]
            for m in ms:
                m.grad = torch.zeros_like(m)
            self.params += ps
            self.masters += ms
            self.mgrads += [m.grad for m in ms]
            groups.append({"params": ms, "lr": lr * float(g.get("my_lr_scale", 1.0)),
                           "weight_decay": float(g.get("weight_decay", 0.0))})
        d = stub_opt.defaults
        cls = torch.optim.AdamW if getattr(stub_opt, "adam_w_mode", False) else torch.optim.Adam
        try:
            self.inner = cls(groups, lr=lr, betas=d["betas"], eps=d["eps"], fused=True)
        except Exception:  # noqa: BLE001 - fused needs CUDA floating tensors; foreach otherwise
            self.inner = cls(groups, lr=lr, betas=d["betas"], eps=d["eps"], foreach=True)
        self.n_groups = len(groups)

    def step(self):
        import torch
        with torch.no_grad():
            return self._step()

    def _step(self):
        import torch
        grads = []
        for p, mg in zip(self.params, self.mgrads):
            if p.grad is None:
                mg.zero_()
            else:
                grads.append((mg, p.grad))
        if grads:
            torch._foreach_copy_([a for a, _ in grads], [b for _, b in grads])
        norms = torch._foreach_norm(self.mgrads)
        total = torch.linalg.vector_norm(torch.stack(norms))
        coef = torch.clamp(self.clip / (total + 1e-6), max=1.0)
        torch._foreach_mul_(self.mgrads, coef)
        self.inner.step()
        torch._foreach_copy_(self.params, self.masters)
        for p in self.params:
            p.grad = None
        return total


def gib(x):
    return x / 1073741824.0


CFG_FIELDS = ["tag", "version", "method", "layers", "embd", "bsz", "ctx", "chunk", "warmup", "steps"]


def batch_configs(cli):
    """--batch FILE: one config a line, "tag version method layers embd bsz ctx chunk warmup steps"
    (the other settings come from the command line)."""
    out = []
    for line in open(cli.batch):
        f = line.split()
        if len(f) < len(CFG_FIELDS) or f[0].startswith("#"):
            continue
        c = argparse.Namespace(**vars(cli))
        for k, v in zip(CFG_FIELDS, f):
            setattr(c, k, v if k in ("tag", "method") else int(v))
        out.append(c)
    return out


def new_record(c):
    return {"impl": "rwkv-peft", "config": c.tag, "version": c.version, "layers": c.layers, "embd": c.embd,
            "vocab": c.vocab, "bsz": c.bsz, "ctx": c.ctx, "method": c.method, "chunk": c.chunk,
            "r": c.r if c.method == "lora" else 0, "alpha": c.alpha if c.method == "lora" else 0,
            "grad_cp": c.grad_cp, "warmup": c.warmup, "steps": c.steps}


class Process:
    """What one process sets up once: paths, stubs, their environment, the CUDA kernel (their
    rwkvop module reads the environment at import, so every config of a process shares version,
    train type, op and, for RWKV-6, ctx_len)."""

    def __init__(self, cli, first):
        ref = cli.ref
        if not os.path.isfile(os.path.join(ref, "train.py")):
            raise RuntimeError("no reference code at %s: run bench/ref/setup.sh first" % ref)
        f = os.path.join(ref, "REF_COMMIT")
        self.commit = open(f).read().strip()[:12] if os.path.isfile(f) else "?"
        sys.path.insert(0, os.path.join(HERE, "stubs"))
        sys.path.insert(1, ref)
        os.chdir(ref)  # their load() calls name the kernel sources as cuda/...
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
        self.tmp = tempfile.mkdtemp(prefix="rwkvpeft_ref_")
        self.empty_pth = os.path.join(self.tmp, "empty.pth")
        import torch
        torch.save({}, self.empty_pth)
        _, train_type, op = their_args(first, self.empty_pth, self.tmp)
        self.tag = kernel_tag(first, train_type, op)
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(tempfile.gettempdir(), "rwkvpeft_ref_ext", self.tag))
        torch.cuda.init()
        self.free0, _ = torch.cuda.mem_get_info()
        t = time.time()
        import rwkvt.operator.rwkvop  # noqa: F401  (their JIT build of the CUDA kernel for this config)
        self.build_s = round(time.time() - t, 1)
        self.n_run = 0

    @staticmethod
    def _graphs():
        """graphs torch.compile (dynamo) has compiled so far in this process."""
        try:
            from torch._dynamo.utils import counters
            return int(counters["stats"]["unique_graphs"])
        except Exception:  # noqa: BLE001
            return -1

    def run(self, c, rec):
        import gc
        import torch
        rec["ref_commit"] = self.commit
        rec["torch"] = torch.__version__
        rec["kernel"] = self.tag
        rec["build_s"] = self.build_s
        args, train_type, op = their_args(c, self.empty_pth, self.tmp)
        rec["train_type"] = train_type or "none"
        rec["op"] = op
        rec["ffn"] = args.dim_ffn if c.version != 7 else 4 * args.n_embd
        if kernel_tag(c, train_type, op) != self.tag:
            raise RuntimeError("config needs kernel %s, this process has %s" % (kernel_tag(c, train_type, op), self.tag))
        self.n_run += 1
        rec["mem_before_gib"] = round(gib(torch.cuda.memory_allocated()), 3)
        warnings = []
        if rec["mem_before_gib"] > 0.25:
            warnings.append("%.2f GiB still allocated from the previous config of this process (inside the peak)"
                            % rec["mem_before_gib"])
        graphs0 = self._graphs()

        rec["phase"] = "model build (their load_peft_model)"
        t = time.time()
        from rwkvt.lightning_train.light_rwkv import RWKV
        from rwkvt.peft.peft_loading import load_peft_model
        torch.manual_seed(c.seed)
        model = opt = loss = idx = tgt = None
        try:
            # their constructors run on the GPU, in fp32 as in their train.py (the v7 init uses QR,
            # which has no bf16 kernel); then the model becomes bf16, as DeepSpeed's bf16 mode does
            with torch.device("cuda"), contextlib.redirect_stdout(io.StringIO()):
                args, model = load_peft_model(args)
            model = model.to(device="cuda", dtype=torch.bfloat16)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            model.train()
            trainable = [p for p in model.parameters() if p.requires_grad]
            rec["trainable_params"] = sum(p.numel() for p in trainable)
            rec["trainable_tensors"] = len(trainable)
            rec["total_params"] = sum(p.numel() for p in model.parameters())
            if not trainable:
                raise RuntimeError("their freezing left nothing trainable")
            del trainable
            # their configure_optimizers (groups + LR scales); the stub FusedAdam only records them
            RWKV.deepspeed_offload = property(lambda self: False)  # no Trainer attached
            opt = MasterAdam(model.configure_optimizers(), c.lr, clip=args.gradient_clip_val)
            rec["opt_groups"] = opt.n_groups
            torch.cuda.synchronize()
            rec["setup_s"] = round(time.time() - t, 1)

            B, T, V = c.bsz, c.ctx, c.vocab
            gen = torch.Generator(device="cuda")
            gen.manual_seed(c.seed)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            n = c.warmup + (0 if c.warm_only else c.steps)
            times, losses = [], []
            rec["phase"] = "steps"
            for s in range(n):
                idx = torch.randint(0, V, (B, T), device="cuda", generator=gen)
                tgt = torch.randint(0, V, (B, T), device="cuda", generator=gen)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                loss = model.training_step((idx, tgt), s)
                loss.backward()
                opt.step()
                torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                times.append(dt)
                losses.append(float(loss.detach().float().item()))
                if s == 0:
                    rec["first_step_s"] = round(dt, 2)
                    if not math.isfinite(losses[0]):
                        raise RuntimeError("loss is not finite at the first step: %r" % losses[0])
                print("ref_bench: %s step %d %.1f ms loss %.4f" % (c.tag, s, dt * 1e3, losses[-1]),
                      file=sys.stderr, flush=True)
            rec.pop("phase", None)
            if c.version == 7:
                rec["compiled_graphs"] = self._graphs() - graphs0
                if rec["compiled_graphs"] <= 0:
                    warnings.append("torch.compile compiled no graph in this config (their time-mix ran eagerly?)")
            if warnings:
                rec["warning"] = "; ".join(warnings)
            free1, _ = torch.cuda.mem_get_info()
            rec["peak_gib"] = round(gib(torch.cuda.max_memory_allocated()), 3)
            rec["reserved_gib"] = round(gib(torch.cuda.max_memory_reserved()), 3)
            rec["device_used_gib"] = round(gib(self.free0 - free1), 3)
            rec["loss"] = round(losses[-1], 4)
            if c.warm_only:
                rec["warm_s"] = [round(x, 2) for x in times]
                return
            timed = sorted(times[c.warmup:])
            med = timed[len(timed) // 2]
            rec["step_ms"] = round(med * 1e3, 2)
            rec["min_ms"] = round(timed[0] * 1e3, 2)
            rec["max_ms"] = round(timed[-1] * 1e3, 2)
            rec["tokens_per_s"] = round(B * T / med, 1)
            rec["warmup_ms"] = [round(x * 1e3, 1) for x in times[:c.warmup]]
        finally:
            del model, opt, loss, idx, tgt
            if c.version == 7:
                import torch._dynamo
                torch._dynamo.reset()  # drop the compiled code (and what it holds): the next config compiles afresh
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


def fail(rec, e):
    kind = type(e).__name__
    if "OutOfMemory" in kind or "out of memory" in str(e):
        kind = "OOM"
    msg = str(e).strip().splitlines()
    rec["error"] = "%s: %s" % (kind, " | ".join(msg[:3])[:600])
    tb = traceback.format_exc()
    rec["traceback_tail"] = tb[-1500:]
    print(tb, file=sys.stderr)


def emit(cli, rec, t0, write):
    rec["wall_s"] = round(time.time() - t0, 1)
    line = json.dumps(rec)
    print(line, flush=True)
    if write and cli.json:
        with open(cli.json, "a") as f:
            f.write(line + "\n")


def main():
    cli = parse_cli()
    cli.json = os.path.abspath(cli.json) if cli.json else ""
    cli.ref = os.path.abspath(cli.ref)
    if cli.batch:
        cli.batch = os.path.abspath(cli.batch)
    signal.signal(signal.SIGTERM, _on_sigterm)
    cfgs = batch_configs(cli) if cli.batch else [cli]
    rc = 0
    t0 = time.time()
    proc = None
    try:
        proc = Process(cli, cfgs[0])
    except BaseException as e:  # noqa: BLE001 - a failed set-up fails every config of the process
        for c in cfgs:
            rec = new_record(c)
            rec["phase"] = "kernel build/load (rwkvt.operator.rwkvop)"
            fail(rec, e)
            emit(cli, rec, t0, not cli.prebuild)
        sys.stdout.flush()
        os._exit(1)
    if cli.prebuild:
        rec = new_record(cli)
        rec["build_s"] = proc.build_s
        rec["kernel"] = proc.tag
        emit(cli, rec, t0, False)
        os._exit(0)
    for i, c in enumerate(cfgs):
        rec = new_record(c)
        t1 = time.time()
        killed = False
        try:
            proc.run(c, rec)
        except BaseException as e:  # noqa: BLE001 - every failure becomes a record
            rc = 1
            fail(rec, e)
            killed = isinstance(e, (Killed, KeyboardInterrupt))
        emit(cli, rec, t1, not (c.warm_only and "error" not in rec))
        if killed:
            for c2 in cfgs[i + 1:]:
                rec = new_record(c2)
                rec["error"] = "not run: the batch process was stopped (time limit) before it"
                emit(cli, rec, time.time(), True)
            break
    # skip interpreter teardown (compile workers, CUDA context): the records are written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
