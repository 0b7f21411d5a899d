#!/usr/bin/env bash
# Does a low-rank adapter give a low-bit model back a high-bit model's quality?
# Qwen2.5-Coder-1.5B: Q8_0 (requantized from the Q4_K_M file) is the reference;
# Q2_K of the same source; extract-lora -m Q8_0 --base Q2_K at ranks 8/32/128
# applied to the Q2_K. Prints size, tg128 t/s (rllama bench), PPL and KLD vs the
# Q8_0 logits of llama-perplexity, same-top-1.
#   usage: scripts/lora-study.sh    env: CHUNKS=10 RANKS="8 32 128" WORK=/tmp/lora-study
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${RLLAMA_MODELS:-$HOME/.cache/rllama/models}
shared=${SHARED:-$root/../shared}
lbin=$("$shared/tools/build-llama-cpp.sh" | tail -1)
work=${WORK:-/tmp/lora-study}; mkdir -p "$work"
chunks=${CHUNKS:-10}; ranks=${RANKS:-"8 32 128"}
rl="$root/target/release/rllama"
(cd "$root" && cargo build --release -q)
src="$models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
text="$root/tests/fixtures/rust-book-ch00-04.txt"
[ -f "$work/q8_0.gguf" ] || "$rl" quantize --allow-requantize "$src" "$work/q8_0.gguf" Q8_0 >/dev/null 2>&1
[ -f "$work/q2_k.gguf" ] || "$rl" quantize --allow-requantize "$src" "$work/q2_k.gguf" Q2_K >/dev/null 2>&1
[ -f "$work/q8_0.kld" ] || "$lbin/llama-perplexity" -m "$work/q8_0.gguf" -f "$text" -c 512 --chunks "$chunks" -t 2 --kl-divergence-base "$work/q8_0.kld" >/dev/null 2>&1
for r in $ranks; do
  [ -f "$work/r$r.gguf" ] || "$rl" extract-lora -m "$work/q8_0.gguf" --base "$work/q2_k.gguf" -o "$work/r$r.gguf" --rank "$r" 2>&1 | tail -2 | head -1 >&2
done
row() { # name model [lora]
  local name=$1 m=$2; shift 2
  local size=$(du -m "$m" | cut -f1); [ $# -gt 0 ] && size="$size + $(du -m "$2" | cut -f1)"
  local tg=$("$rl" bench -m "$m" "$@" -p 0 -n 128 -r 2 -t 2 -o json | python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)[0]["avg_ts"])')
  local out=$("$rl" perplexity -m "$m" "$@" -c 512 -t 2 --kl-divergence-base "$work/q8_0.kld" --kl-divergence 2>&1)
  local ppl=$(echo "$out" | sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\).*/\1/p')
  local kld=$(echo "$out" | sed -n 's/^Mean    KLD: *\([-0-9.]*\).*/\1/p')
  local top=$(echo "$out" | sed -n 's/^Same top p: *\([0-9.]*\).*/\1/p')
  echo "| $name | $size | $tg | $ppl | $kld | $top |"
}
echo "| model | MiB | tg128 t/s | PPL | KLD vs Q8_0 | same top % |"
echo "|---|---:|---:|---:|---:|---:|"
row Q8_0 "$work/q8_0.gguf"
row Q4_K_M "$src"
row Q2_K "$work/q2_k.gguf"
for r in $ranks; do row "Q2_K + LoRA r$r" "$work/q2_k.gguf" --lora "$work/r$r.gguf"; done
