#!/usr/bin/env bash
# Compare rllama's intermediate tensors with llama.cpp's, layer by layer, for
# one prompt: prints, per tensor, the share of bit-identical elements and the
# largest difference. Needs llama.cpp built by ../shared/tools/build-llama-cpp.sh.
#   scripts/tensor-diff/run.sh MODEL.gguf "prompt text" [max_layer]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
ref="${LLAMA_CPP_REF:-$HOME/.cache/llama.cpp-ref}"
out="${TMPDIR:-/tmp}/rllama-tensor-diff"
tool="$out/dump"
mkdir -p "$out"
if [ ! -x "$tool" ] || [ "$here/dump.cpp" -nt "$tool" ]; then
  g++ -O1 -std=c++17 "$here/dump.cpp" -I"$ref/src/include" -I"$ref/src/ggml/include" \
    -L"$ref/build/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$ref/build/bin" -o "$tool"
fi
rm -rf "$out/ref" "$out/ours"; mkdir -p "$out/ref" "$out/ours"
DUMP_DIR="$out/ref" "$tool" "$1" "$2" 2>/dev/null
RLLAMA_DUMP_DIR="$out/ours" "$root/target/release/rllama" cli -m "$1" -p "$2" -n 1 --temp 0 -no-cnv >/dev/null 2>&1
DUMP_ROOT="$out" python3 "$here/compare.py" "${3:-99}"
