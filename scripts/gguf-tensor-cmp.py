"""Compare two GGUF files tensor by tensor: names, types, shapes and data bytes.
usage: gguf-tensor-cmp.py A.gguf B.gguf   (exit 1 on any difference)
Uses gguf-py from llama.cpp's source (LLAMA_CPP_REF, default ~/.cache/llama.cpp-ref)."""
import os, sys
ref = os.environ.get("LLAMA_CPP_REF", os.path.expanduser("~/.cache/llama.cpp-ref"))
sys.path.insert(0, os.path.join(ref, "src", "gguf-py"))
import gguf

a, b = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
ta = {t.name: t for t in a.tensors}
tb = {t.name: t for t in b.tensors}
bad = 0
if set(ta) != set(tb):
    print("tensor names differ:", sorted(set(ta) ^ set(tb)))
    bad += 1
for name in sorted(set(ta) & set(tb)):
    x, y = ta[name], tb[name]
    if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
        print(f"{name}: {x.tensor_type.name} {list(x.shape)} vs {y.tensor_type.name} {list(y.shape)}")
        bad += 1
        continue
    bx, by = x.data.tobytes(), y.data.tobytes()
    if bx != by:
        n = sum(1 for i in range(0, len(bx)) if bx[i] != by[i])
        print(f"{name}: {x.tensor_type.name} data differs in {n} of {len(bx)} bytes")
        bad += 1
print(f"{len(ta)} tensors, {bad} differ")
sys.exit(1 if bad else 0)
