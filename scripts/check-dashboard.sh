#!/usr/bin/env bash
# Type-checks the Grafana dashboard (deploy/grafana/warren.json) against Grafana's published
# dashboard schema, offline: npm's @grafana/schema (its `Dashboard` type) and TypeScript in
# strict mode, with the JSON inlined as an object literal so that an unknown field, a wrong
# type or an unknown panel or variable kind is an error. Tools go to target/grafana
# (node_modules: installed once per machine, scripts/cached-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/grafana
check=deploy/grafana/check

scripts/cached-tools.sh npm "$tools/node_modules" "$check"
{
  echo 'import type { Dashboard } from "@grafana/schema";'
  printf 'export const dashboard: Dashboard = '
  cat deploy/grafana/warren.json
  echo ';'
} > "$tools/dashboard.ts"
(cd "$tools" && node_modules/.bin/tsc --noEmit --strict --skipLibCheck false --target es2022 \
  --module nodenext --moduleResolution nodenext dashboard.ts)
echo "deploy/grafana/warren.json: a valid Grafana dashboard (@grafana/schema $(node -p 'require("./'"$tools"'/node_modules/@grafana/schema/package.json").version'))"
