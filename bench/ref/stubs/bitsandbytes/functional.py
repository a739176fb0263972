"""bitsandbytes.functional stub: every quantizer raises (quantized training is not benchmarked)."""


def _unavailable(*args, **kwargs):
    raise RuntimeError("bitsandbytes is a stub in bench/ref/stubs: --quant is not supported by the harness")


quantize_4bit = quantize_nf4 = quantize_fp4 = quantize = _unavailable
dequantize_4bit = dequantize_nf4 = dequantize_fp4 = dequantize = _unavailable
