#!/usr/bin/env bash
# Write tests/fixtures/split-kv/: llama.cpp's layer-0 attention output (kqv_out-0,
# f32) of the one-token step after a long prompt, where its flash attention
# splits the keys over its 2 threads (KV view of 512+ cells; Qwen 0.5B: 768,
# chunks of 384) and, on Gemma,
# its sliding-window cache has become a ring (1024 cells, 1118 positions).
# The prompt is the first N bytes of tests/fixtures/rust-book-ch00-04.txt.
# Needs llama.cpp built without AVX-512 (../shared/tools/build-llama-cpp.sh
# on an AVX2-only machine): tests/split_kv.rs runs exact mode with the f16 dot
# product in that build's order (RLLAMA_F16_DOT=avx2).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
models="${RLLAMA_MODELS:-$HOME/.cache/rllama/models}"
out="$root/tests/fixtures/split-kv"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/rllama-split-kv.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# builds the dump tool (and checks our side too)
for case in "SmolLM2-135M-Instruct.Q4_1 1500" "qwen2.5-coder-0.5b-instruct-q4_k_m 4000" "gemma-3-270m-q4_k_m 5600"; do
  set -- $case
  prompt="$(head -c "$2" "$root/tests/fixtures/rust-book-ch00-04.txt")"
  RLLAMA_EXACT=1 RLLAMA_F16_DOT=avx2 STEP=1 "$here/tensor-diff/run.sh" "$models/$1.gguf" "$prompt" 0 | grep kqv_out-0
  f="$(ls "${TMPDIR:-/tmp}/rllama-tensor-diff/ref/" | grep '_kqv_out-0\.bin$')"
  # 4 x int64 dims, then the data
  tail -c +33 "${TMPDIR:-/tmp}/rllama-tensor-diff/ref/$f" > "$out/$1-$2.f32"
  echo "wrote $out/$1-$2.f32"
done
