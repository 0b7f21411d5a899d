#!/usr/bin/env bash
# Write tests/fixtures/split-kv/: for the one-token step after a long prompt,
# llama.cpp's layer-0 attention output (kqv_out-0, f32) and a 64-bit FNV-1a
# hash of its logits (result_output). Past 256 positions its flash attention
# splits the keys over its 2 threads (KV view of 512+ cells; Qwen 0.5B: 768,
# chunks of 384) and on Gemma past 1,024 its sliding-window cache is a ring.
# The prompt is the first N bytes of tests/fixtures/rust-book-ch00-04.txt.
# Needs llama.cpp built without AVX-512 (../shared/tools/build-llama-cpp.sh
# on an AVX2-only machine): tests/split_kv.rs runs exact mode as that build
# rounds (RLLAMA_GGML_BUILD=avx2).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
models="${RLLAMA_MODELS:-$HOME/.cache/rllama/models}"
out="$root/tests/fixtures/split-kv"
dumps="${TMPDIR:-/tmp}/rllama-tensor-diff/ref"
mkdir -p "$out"
for case in "SmolLM2-135M-Instruct.Q4_1 1500" "qwen2.5-coder-0.5b-instruct-q4_k_m 4000" "gemma-3-270m-q4_k_m 5600"; do
  set -- $case
  prompt="$(head -c "$2" "$root/tests/fixtures/rust-book-ch00-04.txt")"
  # builds the dump tool and shows our side's agreement too
  RLLAMA_EXACT=1 RLLAMA_GGML_BUILD=avx2 STEP=1 "$here/tensor-diff/run.sh" "$models/$1.gguf" "$prompt" 0 | grep -E 'kqv_out-0|result_output'
  # 4 x int64 dims, then the data
  tail -c +33 "$dumps/$(ls "$dumps" | grep '_kqv_out-0\.bin$')" > "$out/$1-$2.f32"
  echo "wrote $out/$1-$2.f32"
  python3 - "$dumps/$(ls "$dumps" | grep '_result_output\.bin$')" > "$out/$1-$2.logits.fnv" <<'PY'
import sys
h = 0xcbf29ce484222325
for b in open(sys.argv[1], 'rb').read()[32:]:
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print(f'{h:016x}')
PY
  echo "wrote $out/$1-$2.logits.fnv"
done
