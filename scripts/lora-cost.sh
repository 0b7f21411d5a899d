#!/usr/bin/env bash
# What a LoRA adapter costs in generation, rllama against llama.cpp, same run,
# same file: a seeded random adapter (rank $RANK on q, k, v, o, gate, up,
# down; F16) for Qwen2.5-Coder-1.5B Q4_K_M. rllama: `bench -p 0 -n 128` with
# and without `--lora`; llama.cpp (llama-bench has no --lora): the eval t/s of
# llama-completion -n 128 with and without it. Rounds alternate (noisy machine).
#   usage: scripts/lora-cost.sh     env: RANK=16 ROUNDS=3 MODEL=path THREADS=2
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${RLLAMA_MODELS:-$HOME/.cache/rllama/models}
shared=${SHARED:-$root/../shared}
lbin=$("$shared/tools/build-llama-cpp.sh" | tail -1)
model=${MODEL:-$models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
rank=${RANK:-16}; rounds=${ROUNDS:-3}; t=${THREADS:-2}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
ad="$work/lora-r$rank.gguf"
(cd "$root" && cargo build --release -q && RLLAMA_LORA_MODEL="$model" RLLAMA_LORA_RANK="$rank" RLLAMA_LORA_OUT="$ad" \
  cargo test --release -q --test lora -- --ignored write_bench_adapter >/dev/null)
rl="$root/target/release/rllama"
tg() { "$rl" bench -m "$model" -p 0 -n 128 -r 2 -t "$t" -o json "$@" | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)[0]["avg_ts"])'; }
eval_ts() { "$lbin/llama-completion" -m "$model" -p "Write a function that sorts a list." -n 128 --ignore-eos --temp 0 -t "$t" -no-cnv "$@" 2>&1 >/dev/null |
  grep -v "prompt eval" | sed -n "s/.* eval time = .*, *\([0-9.]*\) tokens per second.*/\1/p" | tail -1; }
echo "| round | rllama | rllama --lora | cost | llama.cpp | llama.cpp --lora | cost |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for i in $(seq "$rounds"); do
  a=$(tg); b=$(tg --lora "$ad"); c=$(eval_ts); d=$(eval_ts --lora "$ad")
  python3 -c "import sys; a,b,c,d=map(float,sys.argv[2:]); print('| %s | %.2f | %.2f | %.1f%% | %.2f | %.2f | %.1f%% |' % (sys.argv[1],a,b,100*(1-b/a),c,d,100*(1-d/c)))" "$i" "$a" "$b" "$c" "$d"
done
