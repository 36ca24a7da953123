"""Does a value the bundle sets under a subchart change what the real chart renders?

For every leaf the bundle sets (a chart's values.yaml under one of its remote dependencies, and
the valuesObject of its Application), the leaf is changed to another value of the same kind, the
Application is rendered again as Argo CD renders it, and the manifests Argo CD would apply are
compared with the unchanged render. A key that a chart does not read, or that another setting
overrides, renders the same: that is the mistake this catches.
"""
from __future__ import annotations

import copy
import re

from chartlib import _DOC_SEP_RE, HELM_TEST_HOOKS

_QUANTITY = re.compile(r"^(\d+)(\.\d+)?([a-zA-Z]*)$")
_TEST_HOOK = re.compile(r"helm\.sh/hook:\s*['\"]?([\w,-]+)")


def leaves(node, path=()):
    """(path, value) of every leaf: scalars, lists (as a whole) and empty dicts."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, path + (key,))
    else:
        yield path, node


def mutate(value):
    """Another value of the same kind, or None to delete the key (empty dicts and lists)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2
    if isinstance(value, str):
        m = _QUANTITY.match(value)
        if m:  # 100m -> 101m, 5Gi -> 6Gi, "3.13" -> "4.13": still a valid quantity or version
            return f"{int(m[1]) + 1}{m[2] or ''}{m[3]}"
        return value + "-changed"
    if isinstance(value, list):
        return value[:-1] if value else None
    if isinstance(value, dict) and not value:
        return None
    raise TypeError(f"cannot mutate {value!r}")


def with_leaf(values: dict, path: tuple, new) -> dict:
    out = copy.deepcopy(values)
    node = out
    for key in path[:-1]:
        node = node[key]
    if new is None:
        del node[path[-1]]
    else:
        node[path[-1]] = new
    return out


def applied_text(helm_stdout: str) -> str:
    """The documents of `helm template` output that Argo CD applies (no Helm test hooks)."""
    kept = []
    for chunk in _DOC_SEP_RE.split(helm_stdout):
        hooks = {h for m in _TEST_HOOK.finditer(chunk) for h in m[1].split(",")}
        if not hooks & HELM_TEST_HOOKS:
            kept.append(chunk)
    return "\n---\n".join(kept)
