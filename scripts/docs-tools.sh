#!/usr/bin/env bash
# The tools `make docs` needs, installed when missing; each step says what it does:
# - mdbook (pinned), built with `cargo install` into cargo's own bin folder ($CARGO_HOME/bin,
#   ~/.cargo/bin by default), so that a fresh checkout on the same machine does not build it
#   again (a few minutes on 2 cores);
# - lychee (pinned in docs/requirements.txt) in the virtualenv target/docs-venv, installed once
#   per machine (scripts/cached-tools.sh).
# Prints the path of the mdbook to use.
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.5.4
VENV=target/docs-venv
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

if [ "$("$CARGO_BIN/mdbook" --version 2>/dev/null)" = "mdbook v$MDBOOK_VERSION" ]; then
    echo "docs-tools: mdbook $MDBOOK_VERSION present ($CARGO_BIN)" >&2
else
    echo "docs-tools: installing mdbook $MDBOOK_VERSION into $CARGO_BIN (cargo install, a few minutes)" >&2
    cargo install mdbook --locked --version "$MDBOOK_VERSION" >&2
fi

scripts/cached-tools.sh venv "$VENV" docs/requirements.txt >&2
echo "$CARGO_BIN/mdbook"
