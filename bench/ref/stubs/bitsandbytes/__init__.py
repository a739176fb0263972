"""Stub of bitsandbytes for bench/ref/ref_bench.py (see ../README.md): RWKV-PEFT imports it at
module level (rwkvt/peft/rwkvLinear.py) but uses it only for --quant, which is not benchmarked."""
__version__ = "0.0.0+librwkvpeft-stub"
from . import functional  # noqa: F401
