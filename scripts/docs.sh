#!/usr/bin/env bash
# `make docs`: build the book (docs/src -> docs/book) and check every link in it and in the
# README. Fails on anything mdBook reports (a missing include, a bad SUMMARY), on a broken
# internal link or anchor in the built book, and on a broken relative link or fragment in
# README.md or the book's sources as GitHub shows them (lychee, offline, for both). Nothing
# here goes to the network but the first install of the tools (scripts/docs-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

mdbook=$(scripts/docs-tools.sh)

echo "docs: mdbook build docs"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
NO_COLOR=1 "$mdbook" build docs 2>&1 | tee "$log"
if grep -Eq '(^|[[:space:]])(WARN|ERROR)[[:space:]]' "$log"; then
    echo "docs: mdbook reported problems (above)" >&2
    exit 1
fi

echo "docs: lychee --offline docs/book (the built book's links and anchors)"
# 404.html is mdBook's page for a web server's root ('/'), which a folder of files has not.
target/docs-venv/bin/lychee --offline --include-fragments --no-progress \
    --exclude-path docs/book/404.html docs/book

echo "docs: lychee --offline README.md docs/src (relative links and fragments)"
target/docs-venv/bin/lychee --offline --include-fragments --no-progress README.md docs/src
