"""Dequantize with the Python `gguf` package (the numpy reference).
usage: dequant.py TYPE IN OUT [TYPE IN OUT ...]  -- IN holds whole blocks of TYPE
Writes little-endian float32 to each OUT (one process for every job: importing
numpy and gguf costs more than the dequantization)."""
import sys
import numpy as np
import gguf
from gguf.quants import dequantize

args = sys.argv[1:]
for i in range(0, len(args), 3):
    t = gguf.GGMLQuantizationType[args[i].upper()]
    data = np.fromfile(args[i + 1], dtype=np.uint8)
    bs, ts = gguf.GGML_QUANT_SIZES[t]
    out = dequantize(data.reshape(-1, ts), t)
    out.astype(np.float32).tofile(args[i + 2])
