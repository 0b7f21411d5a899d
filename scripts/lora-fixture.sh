#!/usr/bin/env bash
# llama.cpp's outputs with the test LoRA adapters, as fixtures for tests/lora.rs:
#   tests/fixtures/lora-greedy-<key>.jsonl  case ("one": --lora A; "two":
#       --lora-scaled A:0.5,B:1.5), prompt, stdout of llama-completion (the
#       reference flags: -n 64 --temp 0 --seed 23 -t 2 -no-cnv -c 2048), base
#       (the same without adapters, from ../shared/reference)
#   tests/fixtures/lora-ppl-<key>.jsonl     case, ppl of llama-perplexity -c 512
#       --chunks 4 with the adapters, base_ppl without
#   tests/fixtures/lora-export-sha256.txt   <key> sha256 of llama-export-lora -m MODEL
#       --lora A --lora-scaled B:0.7
# The adapters are written by rllama (seeded: the same bytes on every machine).
#   usage: scripts/lora-fixture.sh
#   env:   KLD_CHUNKS=20 also prints rllama's KL divergence against
#          llama-perplexity's --lora logits over that many chunks (not a fixture)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${RLLAMA_MODELS:-$HOME/.cache/rllama/models}
shared=${SHARED:-$root/../shared}
lbin=$("$shared/tools/build-llama-cpp.sh" | tail -1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd "$root" && cargo build --release -q && RLLAMA_LORA_OUT="$out" cargo test --release -q --test lora -- --ignored write_test_adapters >/dev/null)
text="$root/tests/fixtures/rust-book-ch00-04.txt"
declare -A file=([smollm2-135m-q4_1]=SmolLM2-135M-Instruct.Q4_1.gguf [qwen2.5-coder-0.5b-q4_k_m]=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf)
: > "$root/tests/fixtures/lora-export-sha256.txt.tmp"
for key in smollm2-135m-q4_1 qwen2.5-coder-0.5b-q4_k_m; do
  m="$models/${file[$key]}"
  stem=$(basename "$m" .gguf)
  a="$out/$stem-lora0.gguf"; b="$out/$stem-lora1.gguf"
  [ -f "$a" ] || { echo "skip $key: no adapters (model missing?)" >&2; continue; }
  "$lbin/llama-export-lora" -m "$m" --lora "$a" --lora-scaled "$b:0.7" -o "$out/merged.gguf" >/dev/null 2>&1
  echo "$key $(sha256sum "$out/merged.gguf" | cut -d' ' -f1)" >> "$root/tests/fixtures/lora-export-sha256.txt.tmp"
  rm -f "$out/merged.gguf"
  greedy="$root/tests/fixtures/lora-greedy-$key.jsonl"; : > "$greedy.tmp"
  for case in one two; do
    if [ $case = one ]; then flags=(--lora "$a"); else flags=(--lora-scaled "$a:0.5,$b:1.5"); fi
    while IFS= read -r line; do
      prompt=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["prompt"], end="")' "$line")
      "$lbin/llama-completion" -m "$m" -p "$prompt" -n 64 --temp 0 --seed 23 -t 2 -no-cnv -c 2048 "${flags[@]}" > "$out/stdout" 2>/dev/null
      python3 - "$line" "$case" "$out/stdout" >> "$greedy.tmp" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(json.dumps({"case": sys.argv[2], "prompt": r["prompt"], "stdout": open(sys.argv[3], encoding="utf-8", errors="surrogateescape").read(), "base": r["stdout"]}))
PY
    done < "$shared/reference/greedy-$key.jsonl"
  done
  mv "$greedy.tmp" "$greedy"
  ppl() { "$lbin/llama-perplexity" -m "$m" -f "$text" -c 512 --chunks 4 -t 2 "$@" 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p'; }
  base=$(ppl)
  one=$(ppl --lora "$a")
  two=$(ppl --lora-scaled "$a:0.5,$b:1.5")
  printf '{"case": "one", "ppl": %s, "base_ppl": %s}\n{"case": "two", "ppl": %s, "base_ppl": %s}\n' "$one" "$base" "$two" "$base" > "$root/tests/fixtures/lora-ppl-$key.jsonl"
  echo "$key: PPL base $base, one $one, two $two" >&2
  if [ -n "${KLD_CHUNKS:-}" ]; then
    for case in one two; do
      if [ $case = one ]; then flags=(--lora "$a"); else flags=(--lora-scaled "$a:0.5,$b:1.5"); fi
      "$lbin/llama-perplexity" -m "$m" -f "$text" -c 512 --chunks "$KLD_CHUNKS" -t 2 "${flags[@]}" --kl-divergence-base "$out/base.kld" >/dev/null 2>&1
      for mode in --exact ""; do
        echo "$key $case rllama ${mode:-fast} vs llama.cpp, $KLD_CHUNKS chunks:" >&2
        "$root/target/release/rllama" perplexity -m "$m" -c 512 -t 2 $mode "${flags[@]}" --kl-divergence-base "$out/base.kld" --kl-divergence 2>&1 | grep -E "Mean +PPL\(Q\)|Mean +PPL\(base\)|Mean +KLD|Same top" >&2
      done
    done
  fi
done
mv "$root/tests/fixtures/lora-export-sha256.txt.tmp" "$root/tests/fixtures/lora-export-sha256.txt"
