#!/usr/bin/env bash
# The tools `make docs` needs, installed under target/ when missing (nothing system-wide):
# - mdbook (pinned) in target/tools/bin, built with cargo;
# - lychee (pinned in docs/requirements.txt) in the virtualenv target/docs-venv.
# Each step says what it does; a tool already there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.5.4
TOOLS=target/tools
VENV=target/docs-venv

if [ -x "$TOOLS/bin/mdbook" ]; then
    echo "docs-tools: mdbook present ($("$TOOLS/bin/mdbook" --version))"
else
    echo "docs-tools: installing mdbook $MDBOOK_VERSION into $TOOLS/bin (cargo install, a few minutes)"
    cargo install mdbook --locked --version "$MDBOOK_VERSION" --root "$TOOLS"
fi

if [ -f "$VENV/.installed" ] && cmp -s docs/requirements.txt "$VENV/.installed"; then
    echo "docs-tools: lychee present ($VENV)"
else
    echo "docs-tools: installing docs/requirements.txt (lychee) into the virtualenv $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r docs/requirements.txt
    cp docs/requirements.txt "$VENV/.installed"
fi
