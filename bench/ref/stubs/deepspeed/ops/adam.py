"""deepspeed.ops.adam stub.

RWKV-PEFT's configure_optimizers() returns FusedAdam(optim_groups, lr=..., betas=..., eps=...,
bias_correction=True, adam_w_mode=..., weight_decay=..., amsgrad=False). This stand-in keeps the
groups exactly as their code built them (each with its "my_lr_scale") so that
bench/ref/ref_bench.py can run the optimizer step the way DeepSpeed's bf16 ZeRO-1 optimizer does
(fp32 master copies + Adam moments of the trainable tensors, clip, bf16 write-back). It does not
step by itself.
"""
import torch


class FusedAdam(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8,
                 adam_w_mode=True, weight_decay=0.0, amsgrad=False, set_grad_none=True, **kwargs):
        if amsgrad:
            raise RuntimeError("FusedAdam stub: amsgrad is not supported (DeepSpeed does not either)")
        params = list(params)
        if params and isinstance(params[0], dict):  # their lr_2x / lr_3x groups can be empty
            params = [g for g in params if len(g["params"]) > 0]
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction)
        super().__init__(params, defaults)
        self.adam_w_mode = adam_w_mode

    def step(self, closure=None):  # pragma: no cover - the harness steps
        raise RuntimeError("deepspeed stub: FusedAdam.step is run by bench/ref/ref_bench.py (MasterAdam)")


class DeepSpeedCPUAdam(FusedAdam):
    """Offload variant: only chosen when a DeepSpeed strategy offloads; never in the benchmark."""
