#!/usr/bin/env bash
# Lossless early-exit drafting by layer subset on Qwen2.5-Coder-1.5B: for
# each exit of HEADS (rllama graft; `L` = the first L blocks, `L+T` = those
# plus the last T), on a code prompt (rename) and a prose prompt (free):
# acceptance of drafted tokens and tg t/s with that exit pinned and one
# token drafted per round (RLLAMA_SPEC_FIXED=1), the measured draft time per
# token against a plain step, then plain decoding and the automatic choice
# (every exit allowed, draft length and exit chosen per round).
#   usage: scripts/early-exit-subsets.sh HEADS.gguf   env: MODEL=path N=200 PROMPTS="rename free"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${RLLAMA_MODELS:-$HOME/.cache/rllama/models}
model=${MODEL:-$models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
heads=${1:?usage: scripts/early-exit-subsets.sh HEADS.gguf}
n=${N:-200}; prompts=${PROMPTS:-"rename free"}
(cd "$root" && cargo build --release -q)
rl="$root/target/release/rllama"
exits=$("$rl" cli -m "$model" -p x -n 1 -no-cnv --spec-type early-exit --spec-heads "$heads" --spec-exit-layer 0 2>&1 | sed -n 's/.*has exits \(.*\)$/\1/p' | tr -d ',' || true)
run() { "$rl" cli -m "$model" -f "$root/scripts/spec-prompts/$1.txt" -n "$n" --temp 0 -t 2 -no-cnv "${@:2}" 2>&1 >/dev/null; }
dec() { sed -n 's/.*decoded .* speed: *\([0-9.]*\) t\/s.*/\1/p' | tail -1; }
echo "| prompt | exit | blocks run | accept % | ms/draft token | x step | tg t/s | x plain |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for p in $prompts; do
  plain=$(run "$p" | grep -v "prompt eval" | sed -n 's/.* eval time = .*( *\([0-9.]*\) ms per token, *\([0-9.]*\) tokens per second.*/\1 \2/p' | tail -1)
  t1=${plain% *}; tp=${plain#* }
  echo "| $p | plain | all | - | - | - | $tp | 1.00 |"
  for e in $exits auto; do
    if [ "$e" = auto ]; then out=$(run "$p" --spec-type early-exit --spec-heads "$heads"); else
      out=$(RLLAMA_SPEC_FIXED=1 run "$p" --spec-type early-exit --spec-heads "$heads" --spec-exit-layer "$e"); fi
    ts=$(echo "$out" | dec)
    if [ "$e" = auto ]; then
      used=$(echo "$out" | sed -n 's/^ *exit *\([0-9+]*\): \([0-9]*\) drafts, \([0-9]*\) tokens drafted, \([0-9]*\) accepted.*/\1:\2:\3:\4/p' | awk -F: '$2>0 {printf "%s%s (%s of %s)", sep, $1, $4, $3; sep=", "}')
      echo "| $p | auto: ${used:-none} | - | - | - | - | $ts | $(python3 -c "print('%.2f'%($ts/$tp))") |"
      continue
    fi
    line=$(echo "$out" | grep -E "^ *exit +${e//+/\\+}:")
    acc=$(echo "$line" | sed -n 's/.*(\([0-9.]*\)%).*/\1/p'); ms=$(echo "$line" | sed -n 's/.*, \([0-9.]*\) ms per drafted token.*/\1/p')
    b=$(( ${e%%+*} + $( [ "$e" != "${e#*+}" ] && echo "${e#*+}" || echo 0) ))
    python3 -c "import sys; p,e,b,acc,ms,t1,ts,tp=sys.argv[1:]; print('| %s | %s | %s | %s | %s | %.2f | %s | %.2f |'%(p,e,b,acc,ms,float(ms)/float(t1),ts,float(ts)/float(tp)))" "$p" "$e" "$b" "$acc" "$ms" "$t1" "$ts" "$tp"
  done
done
