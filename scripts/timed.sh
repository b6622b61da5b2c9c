#!/usr/bin/env bash
# `scripts/timed.sh NAME COMMAND...`: runs COMMAND and then prints how long it took, as
# "timing: NAME N s", whatever its exit status (which it returns). CI's log then shows where
# its minutes go (docs/src/getting-started.md, "Where CI's time goes").
name=$1
shift
start=$(date +%s)
status=0
"$@" || status=$?
echo "timing: $name $(( $(date +%s) - start )) s (exit $status)"
exit "$status"
