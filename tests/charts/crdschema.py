"""Validate custom resources against the openAPIV3Schema of the CRDs that the real render installs,
as strictly as `kubectl apply --validate=strict` does: an unknown field is an error unless the
schema preserves unknown fields there."""
from __future__ import annotations

import copy

import jsonschema


def _strict(node):
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}] + out.get("anyOf", [])
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out.setdefault("additionalProperties", True)
    return out


def schemas(crds: list[dict]) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD."""
    out = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec.get("versions", []):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if version.get("served", True) and schema:
                strict = _strict(copy.deepcopy(schema))
                # The API server checks these itself; CRD schemas often leave them out.
                props = strict.setdefault("properties", {})
                props["metadata"] = {"type": "object"}
                props.setdefault("apiVersion", {"type": "string"})
                props.setdefault("kind", {"type": "string"})
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = strict
    return out


def errors(obj: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(obj)]
