#!/usr/bin/env bash
# Speed side by side: rllama bench vs llama.cpp's llama-bench vs ik_llama.cpp's
# llama-bench (with and without -rtr 1, when ik is built), run alternately on the
# same files and thread counts; prints t/s and the ratios rllama / llama.cpp and
# rllama / best ik for pp512, tg128 and pp4.
#   usage: scripts/compare-llama-cpp.sh            (all models, -t 2 and -t 1)
#   env:   MODELS="smollm2 qwen-q4_k_m ..." (names below), THREADS="2 1", REPS=3,
#          DEPTHS="0 2048" (also pp512 and tg128 after that many tokens in the KV
#          cache: -d for rllama and llama.cpp; ik_llama.cpp has no -d, its
#          -gp 2048,128 gives tg128 at that depth), RLLAMA_MODELS (model cache,
#          default ~/.cache/rllama/models)
# Builds llama.cpp with ../shared/tools/build-llama-cpp.sh if needed; ik_llama.cpp is
# used when ~/.cache/ik_llama.cpp-ref/build/bin/llama-bench exists (build it with
# ../shared/tools/build-ik-llama-cpp.sh GIT_DIR). The Qwen Q8_0/Q4_0/IQ4_XS/Q2_K files
# are made once from the Q4_K_M file with llama-quantize --allow-requantize.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${RLLAMA_MODELS:-$HOME/.cache/rllama/models}
shared=${SHARED:-$root/../shared}
lbin=$("$shared/tools/build-llama-cpp.sh" | tail -1)
ikbin=${IK_LLAMA_CPP_HOME:-$HOME/.cache/ik_llama.cpp-ref}/build/bin
[ -x "$ikbin/llama-bench" ] || { echo "note: ik_llama.cpp not built, comparing with llama.cpp only" >&2; ikbin=""; }
(cd "$root" && cargo build --release -q)
rl="$root/target/release/rllama"

qwen="$models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
for t in Q8_0 Q4_0 IQ4_XS Q2_K; do
  f="$models/qwen2.5-coder-0.5b-instruct-$(echo $t | tr A-Z a-z).gguf"
  if [ -f "$qwen" ] && [ ! -f "$f" ]; then
    "$lbin/llama-quantize" --allow-requantize "$qwen" "$f.tmp" "$t" >/dev/null 2>&1 && mv "$f.tmp" "$f"
  fi
done

declare -A file=(
  [smollm2]=SmolLM2-135M-Instruct.Q4_1.gguf
  [qwen-q4_k_m]=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
  [gemma]=gemma-3-270m-q4_k_m.gguf
  [qwen15]=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
  [qwen-q8_0]=qwen2.5-coder-0.5b-instruct-q8_0.gguf
  [qwen-q4_0]=qwen2.5-coder-0.5b-instruct-q4_0.gguf
  [qwen-iq4_xs]=qwen2.5-coder-0.5b-instruct-iq4_xs.gguf
  [qwen-q2_k]=qwen2.5-coder-0.5b-instruct-q2_k.gguf
)
MODELS=${MODELS:-"smollm2 qwen-q4_k_m gemma qwen15 qwen-q8_0 qwen-q4_0 qwen-iq4_xs qwen-q2_k"}
THREADS=${THREADS:-"2 1"}
REPS=${REPS:-3}
DEPTHS=${DEPTHS:-0}
out=$(mktemp -d)
for t in $THREADS; do
  for m in $MODELS; do
    f="$models/${file[$m]}"
    [ -f "$f" ] || { echo "skip $m: $f missing" >&2; continue; }
    echo "== $m -t $t" >&2
    for dep in $DEPTHS; do
      if [ "$dep" = 0 ]; then
        args=(-m "$f" -p 512,4 -n 128 -r "$REPS" -t "$t" -o json)
        ikargs=("${args[@]}")
      else
        args=(-m "$f" -p 512 -n 128 -d "$dep" -r "$REPS" -t "$t" -o json)
        ikargs=(-m "$f" -p 0 -n 0 -gp "$dep,128" -r "$REPS" -t "$t" -o json)
      fi
      "$rl" bench "${args[@]}" > "$out/$m.$t.$dep.rllama.json"
      "$lbin/llama-bench" "${args[@]}" > "$out/$m.$t.$dep.llama.json" 2>/dev/null
      if [ -n "$ikbin" ]; then
        "$ikbin/llama-bench" "${ikargs[@]}" > "$out/$m.$t.$dep.ik.json" 2>/dev/null || true
        "$ikbin/llama-bench" "${ikargs[@]}" -rtr 1 > "$out/$m.$t.$dep.ikrtr.json" 2>/dev/null || true
      fi
    done
  done
done
python3 - "$out" "$THREADS" "$MODELS" "$DEPTHS" <<'PY'
import json, sys, os
d, threads, models, depths = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
def load(p, dep):
    # test names as llama-bench prints them: pp512, tg128, pp512 @ d2048;
    # ik's -gp D,128 rows (n_prompt D, n_gen 128) are tg128 at depth D
    try:
        r = {}
        for x in json.load(open(p)):
            at = f" @ d{dep}" if dep != "0" else ""
            if x.get('n_gen', 0) and x.get('n_prompt', 0):
                key = f"tg{x['n_gen']}{at}"
            else:
                key = (f"pp{x['n_prompt']}" if x['n_gen'] == 0 else f"tg{x['n_gen']}") + at
            r[key] = x['avg_ts']
        return r
    except Exception:
        return {}
print("| model | threads | test | rllama | llama.cpp | ik | ik -rtr 1 | rllama/llama.cpp | rllama/best ik |")
print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
for t in threads:
    for m in models:
        for dep in depths:
            R = {k: load(os.path.join(d, f"{m}.{t}.{dep}.{k}.json"), dep) for k in ["rllama", "llama", "ik", "ikrtr"]}
            if not R["rllama"]: continue
            tests = ["pp512", "tg128", "pp4"] if dep == "0" else [f"pp512 @ d{dep}", f"tg128 @ d{dep}"]
            for test in tests:
                a = R["rllama"].get(test); l = R["llama"].get(test)
                iks = [v for v in (R["ik"].get(test), R["ikrtr"].get(test)) if v]
                f = lambda v: f"{v:.1f}" if v else "-"
                rl = f"{a/l:.2f}" if a and l else "-"
                ri = f"{a/max(iks):.2f}" if a and iks else "-"
                print(f"| {m} | {t} | {test} | {f(a)} | {f(l)} | {f(R['ik'].get(test))} | {f(R['ikrtr'].get(test))} | {rl} | {ri} |")
PY
