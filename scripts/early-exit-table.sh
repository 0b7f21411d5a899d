#!/usr/bin/env bash
# Lossy early exit (--early-exit-threshold P) on Qwen2.5-Coder-1.5B: for each
# threshold, tg t/s (rllama cli, 128 tokens, free-text prompt), the share of
# blocks skipped, PPL, KLD and same-top-1 against the full model (rllama
# perplexity --kl-divergence over the Rust book fixture; the base file is the
# full model's, from rllama perplexity --kl-divergence-base).
#   usage: scripts/early-exit-table.sh HEADS.gguf   env: MODEL=path CHUNKS=4 THRESHOLDS="0.5 0.8 0.9 0.95 0.99"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${RLLAMA_MODELS:-$HOME/.cache/rllama/models}
model=${MODEL:-$models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
heads=${1:?usage: scripts/early-exit-table.sh HEADS.gguf}
chunks=${CHUNKS:-4}; thresholds=${THRESHOLDS:-"0.5 0.8 0.9 0.95 0.99"}
(cd "$root" && cargo build --release -q)
rl="$root/target/release/rllama"
text="$root/tests/fixtures/rust-book-ch00-04.txt"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$rl" perplexity -m "$model" -f "$text" -c 512 --chunks "$chunks" -t 2 --kl-divergence-base "$work/base.kld" >/dev/null 2>&1
tg() { "$rl" cli -m "$model" -f "$root/scripts/spec-prompts/free.txt" -n 128 --temp 0 -t 2 -no-cnv "$@" 2>&1 >/dev/null | grep -v prompt | sed -n 's/.* eval time = .*, *\([0-9.]*\) tokens per second.*/\1/p' | tail -1; }
echo "| threshold | tg t/s | blocks skipped (tg) | blocks skipped (ppl) | PPL | KLD | same top % |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
full=$("$rl" perplexity -m "$model" --kl-divergence-base "$work/base.kld" --kl-divergence -t 2 2>&1)
echo "| full model | $(tg) | 0% | 0% | $(echo "$full" | sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\).*/\1/p') | 0 | 100 |"
for p in $thresholds; do
  gen=$("$rl" cli -m "$model" -f "$root/scripts/spec-prompts/free.txt" -n 128 --temp 0 -t 2 -no-cnv --spec-heads "$heads" --early-exit-threshold "$p" 2>&1 >/dev/null)
  ts=$(echo "$gen" | grep -v prompt | sed -n 's/.* eval time = .*, *\([0-9.]*\) tokens per second.*/\1/p' | tail -1)
  sk=$(echo "$gen" | sed -n 's/.*, \([0-9.]*\)% of the blocks skipped.*/\1/p')
  out=$("$rl" perplexity -m "$model" --kl-divergence-base "$work/base.kld" --kl-divergence -t 2 --spec-heads "$heads" --early-exit-threshold "$p" 2>&1)
  sp=$(echo "$out" | sed -n 's/.*, \([0-9.]*\)% of the blocks skipped.*/\1/p')
  ppl=$(echo "$out" | sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\).*/\1/p')
  kld=$(echo "$out" | sed -n 's/^Mean    KLD: *\([-0-9.]*\).*/\1/p')
  top=$(echo "$out" | sed -n 's/^Same top p: *\([0-9.]*\).*/\1/p')
  echo "| $p | $ts | $sk% | $sp% | $ppl | $kld | $top |"
done
