#!/usr/bin/env bash
# Compare rllama's intermediate tensors with llama.cpp's, layer by layer, for
# one prompt: prints, per tensor, the share of bit-identical elements and the
# largest difference. Needs llama.cpp built by ../shared/tools/build-llama-cpp.sh.
#   scripts/tensor-diff/run.sh MODEL.gguf "prompt text" [max_layer]
# STEP=1: the one-token step after the prompt (its greedy token) instead of
# the prompt's batch. Both programs run 2 threads.
# RLLAMA_BIN: the rllama binary (default: the release build). With a llama.cpp
# built without AVX-512, set RLLAMA_EXACT=1 RLLAMA_GGML_BUILD=avx2.
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
step=""; n=1
if [ "${STEP:-0}" = 1 ]; then step=step; n=2; fi
DUMP_DIR="$out/ref" "$tool" "$1" "$2" $step 2>/dev/null
# the last forward's tensors stay: the prompt's with -n 1, the step's with -n 2
RLLAMA_DUMP_DIR="$out/ours" "${RLLAMA_BIN:-$root/target/release/rllama}" cli -m "$1" -p "$2" -n $n -t 2 --temp 0 -no-cnv >/dev/null 2>&1
DUMP_ROOT="$out" python3 "$here/compare.py" "${3:-99}"
