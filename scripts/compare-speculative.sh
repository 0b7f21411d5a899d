#!/usr/bin/env bash
# Speculative decoding side by side: plain rllama, rllama speculative and
# llama.cpp's llama-speculative on the same target/draft pair, prompt and n_draft.
#   scripts/compare-speculative.sh TARGET.gguf DRAFT.gguf [n_draft] [reps]
# Prints decode t/s of each (mean of reps, alternating runs), acceptance, ratios.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${LLAMA_CPP_REF:-$HOME/.cache/llama.cpp-ref}/build/bin"
rl="$here/../target/release/rllama"
t="$1"; d="$2"; nd="${3:-8}"; reps="${4:-3}"
p="${PROMPT:-The history of the Roman Empire}"; n="${N:-200}"; th="${THREADS:-2}"
speed() { grep -o "speed: *[0-9.]*" | tail -1 | awk '{print $2}'; }
plain=(); spec=(); llama=(); acc=""; lacc=""
for r in $(seq "$reps"); do
  plain+=("$("$rl" speculative -m "$t" -md "$d" --spec-draft-n-max 0 -p "$p" -n "$n" --temp 0 -t "$th" 2>&1 >/dev/null | grep decoded | speed)")
  out=$("$rl" speculative -m "$t" -md "$d" --spec-draft-n-max "$nd" -p "$p" -n "$n" --temp 0 -t "$th" 2>&1 >/dev/null)
  spec+=("$(echo "$out" | grep decoded | speed)"); acc="$(echo "$out" | grep -E "n_drafted|n_accept " | tr -s ' ' | tr '\n' ' ')"
  out=$("$bin/llama-speculative" -m "$t" -md "$d" --spec-draft-n-max "$nd" -p "$p" -n "$n" --temp 0 -t "$th" 2>&1)
  llama+=("$(echo "$out" | grep decoded | speed)"); lacc="$(echo "$out" | grep -oE "accept += [0-9.]+%")"
done
mean() { printf '%s\n' "$@" | awk '{s+=$1} END {printf "%.1f", s/NR}'; }
P=$(mean "${plain[@]}"); S=$(mean "${spec[@]}"); L=$(mean "${llama[@]}")
echo "$(basename "$t") + $(basename "$d"), n_draft $nd, $n tokens, -t $th: plain rllama $P t/s | rllama speculative $S t/s ($acc) | llama-speculative $L t/s ($lacc)"
awk -v p="$P" -v s="$S" -v l="$L" 'BEGIN {printf "  speculative/plain %.2f, rllama speculative/llama-speculative %.2f\n", s/p, s/l}'
