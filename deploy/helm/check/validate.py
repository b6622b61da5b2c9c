"""Validates rendered manifests offline: core kinds against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: an unknown field is an error) for the oldest and newest
Kubernetes the chart supports, KEDA kinds against KEDA's CRD schemas (validate-keda.js).

usage: validate.py NODE_MODULES MANIFEST.yaml..."""

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

VERSIONS = ["1.27.0", "1.37.0"]
HERE = Path(__file__).resolve().parent


def main(node_modules, paths):
    failures, core, keda = [], 0, []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if not doc:
                continue
            where = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
                keda.append(doc)
                continue
            core += 1
            for version in VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    field = "/".join(str(part) for part in e.absolute_path)
                    failures.append(f"{where} (Kubernetes {version}): {field}: {e.message}")
                except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                    failures.append(f"{where} (Kubernetes {version}): {e}")
    print(f"Kubernetes schemas {', '.join(VERSIONS)}: {core} objects, {len(failures)} failures")
    lines = "".join(json.dumps(doc) + "\n" for doc in keda)
    checked = subprocess.run(
        ["node", str(HERE / "validate-keda.js")],
        input=lines,
        text=True,
        env={"NODE_PATH": node_modules, "PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures or checked.returncode else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
