"""deepspeed.checkpointing stub: only reached by full fine-tuning with grad_cp in RWKV-PEFT."""
from torch.utils.checkpoint import checkpoint as _torch_checkpoint


def checkpoint(function, *args):
    return _torch_checkpoint(function, *args, use_reentrant=False)
