#!/usr/bin/env bash
# `scripts/timed.sh NAME COMMAND...`: runs COMMAND and then prints how long it took, as
# "timing: NAME N s", whatever its exit status (which it returns). CI's log then shows where
# its minutes go (docs/src/getting-started.md, "Where CI's time goes"). With
# WARREN_TIMINGS=FILE set, the line is appended to FILE too, and a phase's start is noted
# there ("started: NAME at HH:MM:SS"), so that a run cut short can still say where it was.
name=$1
shift
start=$(date +%s)
if [ -n "${WARREN_TIMINGS:-}" ]; then
  echo "started: $name at $(date -u +%H:%M:%S)" >>"$WARREN_TIMINGS"
fi
status=0
"$@" || status=$?
line="timing: $name $(( $(date +%s) - start )) s (exit $status)"
echo "$line"
if [ -n "${WARREN_TIMINGS:-}" ]; then
  echo "$line" >>"$WARREN_TIMINGS"
fi
exit "$status"
