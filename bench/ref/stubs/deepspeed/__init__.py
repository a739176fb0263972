"""Stub of DeepSpeed for bench/ref/ref_bench.py (see ../README.md). Not DeepSpeed."""
__version__ = "0.0.0+librwkvpeft-stub"
from . import checkpointing  # noqa: F401  (rwkvt/rwkv*/model.py: deepspeed.checkpointing.checkpoint)
from . import ops  # noqa: F401
