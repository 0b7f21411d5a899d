"""Write per-tensor SHA-256 lines for llama-quantize outputs: the fixture that
tests/quantize.rs compares rllama's quantizer against.
usage: quantize-fixture.py KEY TYPE FILE.gguf >> tests/fixtures/llama-quantize-sha256.txt
Line format: KEY TYPE tensor_name ggml_type sha256(data bytes)."""
import hashlib, os, sys
ref = os.environ.get("LLAMA_CPP_REF", os.path.expanduser("~/.cache/llama.cpp-ref"))
sys.path.insert(0, os.path.join(ref, "src", "gguf-py"))
import gguf

key, qtype, path = sys.argv[1:4]
for t in gguf.GGUFReader(path).tensors:
    print(key, qtype, t.name, t.tensor_type.name.lower(), hashlib.sha256(t.data.tobytes()).hexdigest())
