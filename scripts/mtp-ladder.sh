#!/usr/bin/env bash
# The fidelity ladder of an MTP graft on Qwen2.5-Coder-1.5B: Q8_0 (requantized
# from the Q4_K_M file: the reference), Q4_K_M, IQ4_XS and Q2_K of the same
# source, each plain and with the MTP head (one graft, HEADS, serves every
# quantization of the model). Prints file + head size, tg128 t/s (rllama
# bench: plain, and tg128+mtp after a code request and a prose request, with
# the share of drafts accepted), PPL, KLD vs Q8_0 and same-top-1 (rllama
# perplexity --kl-divergence against the Q8_0's base file; drafting is
# lossless, so a + MTP row has its file's PPL and KLD).
#   usage: scripts/mtp-ladder.sh HEADS.gguf   env: CHUNKS=10 REPS=3 WORK=/tmp/mtp-ladder
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${RLLAMA_MODELS:-$HOME/.cache/rllama/models}
heads=${1:?usage: scripts/mtp-ladder.sh HEADS.gguf}
work=${WORK:-/tmp/mtp-ladder}; mkdir -p "$work"
chunks=${CHUNKS:-10}; reps=${REPS:-3}
rl="$root/target/release/rllama"
(cd "$root" && cargo build --release -q)
src="$models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
text="$root/tests/fixtures/rust-book-ch00-04.txt"
code="Write a Python function that returns the n-th Fibonacci number iteratively, then explain it line by line."
prose="Write a short story about a lighthouse keeper who finds a message in a bottle."
for t in Q8_0 IQ4_XS Q2_K; do
  f="$work/$t.gguf"
  [ -f "$f" ] || "$rl" quantize --allow-requantize "$src" "$f" "$t" >/dev/null 2>&1
done
[ -f "$work/Q8_0.kld" ] || "$rl" perplexity -m "$work/Q8_0.gguf" -f "$text" -c 512 --chunks "$chunks" -t 2 --kl-divergence-base "$work/Q8_0.kld" >/dev/null 2>&1
head_mib=$(du -m "$heads" | cut -f1)
# t/s of the row named $2 in `bench`'s markdown table $1
ts() { awk -F'|' -v t="$2" 'NF > 3 { gsub(/ /, "", $(NF-2)) } NF > 3 && $(NF-2) == t { split($(NF-1), a, "±"); gsub(/ /, "", a[1]); print a[1] }' "$1"; }
acc() { sed -n 's/.*accepted (\([0-9.]*%\)).*/\1/p' "$1" | head -1; }
echo "| model | MiB | tg128 t/s (code / prose request) | drafts accepted (code / prose) | PPL | KLD vs Q8_0 | same top % |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for t in Q8_0 Q4_K_M IQ4_XS Q2_K; do
  f="$work/$t.gguf"; [ "$t" = Q4_K_M ] && f="$src"
  size=$(du -m "$f" | cut -f1)
  [ -s "$work/$t.ppl" ] || "$rl" perplexity -m "$f" -c 512 -t 2 --kl-divergence-base "$work/Q8_0.kld" --kl-divergence >"$work/$t.ppl" 2>&1
  out=$(cat "$work/$t.ppl")
  ppl=$(echo "$out" | sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\).*/\1/p')
  kld=$(echo "$out" | sed -n 's/^Mean    KLD: *\([-0-9.]*\).*/\1/p')
  top=$(echo "$out" | sed -n 's/^Same top p: *\([0-9.]*\).*/\1/p')
  for p in code prose; do
    [ -s "$work/$t.$p.md" ] || "$rl" bench -m "$f" -p 0 -n 128 -r "$reps" -t 2 --spec-type draft-mtp --spec-heads "$heads" --spec-prompt "${!p}" \
      >"$work/$t.$p.md" 2>"$work/$t.$p.err"
  done
  plain="$(ts "$work/$t.code.md" tg128) / $(ts "$work/$t.prose.md" tg128)"
  mtp="$(ts "$work/$t.code.md" tg128+mtp) / $(ts "$work/$t.prose.md" tg128+mtp)"
  echo "| $t | $size | $plain | | $ppl | $kld | $top |"
  [ "$t" = Q8_0 ] || echo "| $t + MTP | $size + $head_mib | $mtp | $(acc "$work/$t.code.err") / $(acc "$work/$t.prose.err") | $ppl | $kld | $top |"
done
