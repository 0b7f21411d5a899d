"""Dequantize with the Python `gguf` package (the numpy reference).
usage: dequant.py blocks TYPE IN OUT      -- IN holds whole blocks of TYPE
       dequant.py tensor MODEL NAME ROWS OUT  -- first ROWS rows of a tensor
Writes little-endian float32 to OUT."""
import sys
import numpy as np
import gguf
from gguf.quants import dequantize

def qtype(name):
    return gguf.GGMLQuantizationType[name.upper()]

if sys.argv[1] == "blocks":
    t = qtype(sys.argv[2])
    data = np.fromfile(sys.argv[3], dtype=np.uint8)
    bs, ts = gguf.GGML_QUANT_SIZES[t]
    out = dequantize(data.reshape(-1, ts), t)
    out.astype(np.float32).tofile(sys.argv[4])
else:
    r = gguf.GGUFReader(sys.argv[2])
    t = next(t for t in r.tensors if t.name == sys.argv[3])
    rows = int(sys.argv[4])
    data = np.asarray(t.data)
    out = dequantize(data[:rows], t.tensor_type)
    np.asarray(out, dtype=np.float32).tofile(sys.argv[5])
