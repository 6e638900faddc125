"""Turn CustomResourceDefinitions into the JSON schemas kubeconform reads.

The chart renders objects of three operators (KEDA, the Prometheus operator,
Strimzi) whose schemas no registry package carries, and CI reaches no other
source; so their schemas live in the repository, under
``deploy/helm/schemas/crds/<kind>_<version>.json`` (kubeconform's
``{{ .ResourceKind }}_{{ .ResourceAPIVersion }}`` layout; no folder per group:
``keda.sh`` would look like a shell script to the secret checks), made by
this script from the operators' published CRD files and committed. SOURCES.md
beside it names the files and commits they came from; re-run it to update:

    .venv/bin/python deploy/helm/schemas/crd_to_jsonschema.py CRD.yaml... --out deploy/helm/schemas/crds

Strict, as ``kubeconform -strict`` is for the built-in kinds: an object schema
that lists its properties refuses any other (``additionalProperties: false``)
unless the CRD keeps unknown fields (``x-kubernetes-preserve-unknown-fields``).
The Kubernetes extensions become plain JSON Schema: ``nullable`` admits null,
``x-kubernetes-int-or-string`` admits an integer or a string.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def convert(node: Any) -> Any:
    """A JSON schema equivalent of one OpenAPI v3 schema node of a CRD, strict."""
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {key: convert(value) for key, value in node.items() if key != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schemas_of(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each served version's schema of one CRD, by its file name."""
    spec = crd["spec"]
    kind = spec["names"]["kind"].lower()
    found: dict[str, dict[str, Any]] = {}
    for version in spec["versions"]:
        if not version.get("served", True) or "schema" not in version:
            continue
        schema = convert(version["schema"]["openAPIV3Schema"])
        schema.setdefault("properties", {})
        # metadata is checked by the API server, not by the CRD: allow any.
        schema["properties"]["metadata"] = {"type": "object"}
        found[f"{kind}_{version['name']}.json"] = schema
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("crds", nargs="+", type=Path, help="CRD YAML files (several documents each allowed)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the <kind>_<version>.json files")
    parser.add_argument("--kinds", default="", help="comma-separated kinds to keep (default: all)")
    args = parser.parse_args(argv)
    keep = {k.strip().lower() for k in args.kinds.split(",") if k.strip()}
    written = 0
    for path in args.crds:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            if keep and doc["spec"]["names"]["kind"].lower() not in keep:
                continue
            folder = args.out
            folder.mkdir(parents=True, exist_ok=True)
            for name, schema in schemas_of(doc).items():
                (folder / name).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")
                print(f"{folder / name}", file=sys.stderr)
                written += 1
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
