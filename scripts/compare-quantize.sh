#!/usr/bin/env bash
# rllama quantize against llama-quantize, tensor by tensor (types, shapes, bytes).
#   scripts/compare-quantize.sh [MODEL.gguf ...]    (default: SmolLM2 and Qwen originals)
#   TYPES="Q8_0 Q4_0" to choose types. Needs llama.cpp built by ../shared/tools/build-llama-cpp.sh.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
models_dir="${RLLAMA_MODELS:-$HOME/.cache/rllama/models}"
bin="${LLAMA_CPP_REF:-$HOME/.cache/llama.cpp-ref}/build/bin"
[ -x "$bin/llama-quantize" ] || { echo "llama-quantize not found in $bin (run ../shared/tools/build-llama-cpp.sh)"; exit 1; }
types="${TYPES:-Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K IQ4_NL IQ4_XS F16 BF16 F32}"
if [ $# -eq 0 ]; then
  set -- "$models_dir/SmolLM2-135M-Instruct.Q4_1.gguf" "$models_dir/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
fi
cargo build --release --quiet --manifest-path "$root/Cargo.toml" || exit 1
out="${TMPDIR:-/tmp}/rllama-quantize-cmp"; mkdir -p "$out"
fail=0
for m in "$@"; do
  for t in $types; do
    r="$out/rllama-$t.gguf"; l="$out/llama-$t.gguf"
    "$root/target/release/rllama" quantize --allow-requantize "$m" "$r" "$t" >/dev/null 2>&1 || { echo "$(basename "$m") $t: rllama quantize failed"; fail=1; continue; }
    "$bin/llama-quantize" --allow-requantize "$m" "$l" "$t" >/dev/null 2>&1 || { echo "$(basename "$m") $t: llama-quantize failed"; fail=1; continue; }
    res=$(python3 "$here/gguf-tensor-cmp.py" "$r" "$l" 2>&1) || fail=1
    echo "$(basename "$m") $t: $(echo "$res" | tail -1)"
    echo "$res" | head -n -1 | head -5 | sed 's/^/    /'
    rm -f "$r" "$l"
  done
done
exit $fail
