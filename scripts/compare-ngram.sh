#!/usr/bin/env bash
# n-gram drafting against llama.cpp, same model, same prompts, same run:
# greedy, -t 2, chat-formatted prompts in scripts/spec-prompts/ (a repetition,
# a 40-line function to rewrite with a variable renamed, free text).
# Plain speed: rllama cli / llama-completion eval t/s; drafting: the
# "decoded ... t/s" line of rllama cli --spec-type T / llama-speculative-simple
# --spec-type T. Each drafting run is paired with a plain run of the same
# program right before it (the machine drifts); prints t/s and the speed-up
# over that plain run.
# early-exit (rllama only) needs HEADS=heads.gguf (rllama graft).
#   usage: scripts/compare-ngram.sh   env: MODEL=path N=200 TYPES="ngram-simple ngram-mod ngram-lookup" PROMPTS="repeat rename free" HEADS=file
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${RLLAMA_MODELS:-$HOME/.cache/rllama/models}
shared=${SHARED:-$root/../shared}
lbin=$("$shared/tools/build-llama-cpp.sh" | tail -1)
model=${MODEL:-$models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
n=${N:-200}; types=${TYPES:-"ngram-simple ngram-map-k ngram-mod ngram-lookup"}; prompts=${PROMPTS:-"repeat rename free"}
(cd "$root" && cargo build --release -q)
rl="$root/target/release/rllama"
rate_eval() { grep -v "prompt eval" | sed -n 's/.* eval time = .*, *\([0-9.]*\) tokens per second.*/\1/p' | tail -1; }
rate_dec() { sed -n 's/.*decoded .* speed: *\([0-9.]*\) t\/s.*/\1/p' | tail -1; }
acc() { sed -n 's/.*accept *= *\([-0-9.na]*\)%.*/\1/p' | tail -1; }
echo "| prompt | type | rllama t/s | x plain | accept % | llama.cpp t/s | x plain | accept % |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for p in $prompts; do
  f="$root/scripts/spec-prompts/$p.txt"
  for t in $types; do
    rp=$("$rl" cli -m "$model" -f "$f" -n "$n" --temp 0 -t 2 -no-cnv 2>&1 >/dev/null | rate_eval)
    extra=(); [ "$t" = early-exit ] && extra=(--spec-heads "${HEADS:?early-exit needs HEADS=heads.gguf}")
    ro=$("$rl" cli -m "$model" -f "$f" -n "$n" --temp 0 -t 2 -no-cnv --spec-type "$t" "${extra[@]}" 2>&1 >/dev/null)
    rs=$(echo "$ro" | rate_dec); ra=$(echo "$ro" | acc)
    if [ "$t" = ngram-lookup ] || [ "$t" = early-exit ]; then ls="-"; la="-"; lp=1; else
      lp=$("$lbin/llama-completion" -m "$model" -f "$f" -n "$n" --temp 0 -t 2 -no-cnv 2>&1 >/dev/null | rate_eval)
      lo=$("$lbin/llama-speculative-simple" -m "$model" -f "$f" -n "$n" --temp 0 -t 2 --spec-type "$t" 2>&1 >/dev/null || true)
      ls=$(echo "$lo" | rate_dec); la=$(echo "$lo" | acc); fi
    python3 -c "import sys; p,t,rs,rp,ra,ls,lp,la=sys.argv[1:]; f=lambda a,b: '%.2f'%(float(a)/float(b)) if a not in ('','-') else '-'; print('| %s | %s | %s | %s | %s | %s | %s | %s |'%(p,t,rs,f(rs,rp),ra,ls,f(ls,lp),la))" "$p" "$t" "$rs" "$rp" "$ra" "$ls" "$lp" "$la"
  done
done
