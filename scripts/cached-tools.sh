#!/usr/bin/env bash
# Usage: scripts/cached-tools.sh venv LINK REQUIREMENTS...   (a Python virtualenv, pip)
#        scripts/cached-tools.sh npm  LINK PACKAGE-DIR       (LINK: a node_modules, npm ci)
#
# Points LINK (a path under target/) at the tools the pinned files name, installed once per
# machine under $WARREN_CACHE_DIR/tools (~/.cache/warren/tools, beside the model) and named
# after those files' contents: a fresh clone (CI's) reuses what an earlier run installed
# instead of downloading it again, and a changed pin gets a new install. Each install is made
# where it is used (a virtualenv's scripts name their interpreter by absolute path), finished
# with a marker, and made again if the marker is missing (an install cut short). A lock keeps
# two runs from installing the same one. Old installs are not pruned: remove the folder.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,3p' "$0" >&2
  exit 2
fi
kind=$1
link=${2%/}
shift 2
cache=$(realpath -m "${WARREN_CACHE_DIR:-$HOME/.cache/warren}/tools")
# Part of every key: change it when the way an install is made below changes.
recipe=1
case "$kind" in
  venv) key=$( (echo "$recipe"; python3 --version; cat "$@") | sha256sum | cut -c1-16) ;;
  npm) key=$( (echo "$recipe"; node --version; cat "$1/package.json" "$1/package-lock.json") | sha256sum | cut -c1-16) ;;
  *) echo "cached-tools: unknown kind $kind (venv or npm)" >&2; exit 2 ;;
esac
installed="$cache/${link//\//-}-$key"
mkdir -p "$cache"
exec 9>"$installed.lock"
flock 9
if [ ! -e "$installed/.complete" ]; then
  echo "cached-tools: installing $* into $installed" >&2
  rm -rf "$installed"
  case "$kind" in
    venv)
      python3 -m venv "$installed"
      requirements=()
      for file in "$@"; do requirements+=(-r "$file"); done
      "$installed/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
      ;;
    npm)
      mkdir -p "$installed"
      cp "$1/package.json" "$1/package-lock.json" "$installed/"
      (cd "$installed" && npm ci --no-audit --no-fund --loglevel=error)
      ;;
  esac
  touch "$installed/.complete"
fi
mkdir -p "$(dirname "$link")"
# The link itself, or a folder an older layout installed there; never the shared install.
if [ -L "$link" ]; then rm -f "$link"; else rm -rf "$link"; fi
case "$kind" in
  venv) ln -s "$installed" "$link" ;;
  npm) ln -s "$installed/node_modules" "$link" ;;
esac
