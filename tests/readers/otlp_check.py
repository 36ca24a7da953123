#!/usr/bin/env python3
"""Structural checks of OTLP profiles (proto v1.10) requests recorded by otlp_receiver.py.

Each line of the file is one ExportProfilesServiceRequest as MessageToDict(preserving_proto_field_name)
produced it: fields at their default value are absent (an absent index means 0) and 64-bit integers are
strings. Prints one line per violation and exits 1 if there is any (or if the file holds no request,
unless --allow-empty).

Usage: python tests/readers/otlp_check.py FILE [--allow-empty]
As a library: check_request(dict) -> [str], check_file(path) -> [str].
"""
import argparse
import json
import sys

# Tables whose index 0 must hold the zero value (spec: "must always be zero value ... and present").
ZERO_VALUE_TABLES = (
    "mapping_table",
    "location_table",
    "function_table",
    "link_table",
    "attribute_table",
    "stack_table",
)

# Index fields by name and the dictionary table they point into. These names mean the same thing
# wherever they occur in the request, so the walk below checks them all, including ones in messages
# this file does not mention explicitly.
INDEX_FIELDS = {
    "stack_index": "stack_table",
    "location_indices": "location_table",
    "mapping_index": "mapping_table",
    "function_index": "function_table",
    "link_index": "link_table",
    "attribute_indices": "attribute_table",
}


def _int(value, default=0):
    """MessageToDict writes int64/uint64/fixed64 as strings and int32 as numbers."""
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _table_for(key):
    if key.endswith("_strindex"):
        return "string_table"
    return INDEX_FIELDS.get(key)


def _walk(node, path, tables, out):
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("_"):  # the receiver's own annotations
                continue
            sub = f"{path}.{key}" if path else key
            table = _table_for(key)
            if table is None:
                _walk(value, sub, tables, out)
                continue
            size = len(tables.get(table, []))
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                idx = _int(item)
                where = f"{sub}[{i}]" if isinstance(value, list) else sub
                if idx is None or not 0 <= idx < size:
                    out.append(f"{where} = {item!r} out of range of {table} (len {size})")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, f"{path}[{i}]", tables, out)


def _value_type(vt, strings, where, out):
    if vt is None:
        out.append(f"{where} not set")
        return
    idx = _int(vt.get("type_strindex"))
    if idx is not None and 0 <= idx < len(strings) and strings[idx] == "":
        out.append(f"{where}.type is the empty string")


def check_request(req):
    """Returns the list of violations in one decoded request (empty when it is well formed)."""
    out = []
    dictionary = req.get("dictionary")
    if not isinstance(dictionary, dict):
        out.append("dictionary missing")
        dictionary = {}
    for table in ZERO_VALUE_TABLES:
        rows = dictionary.get(table)
        if not rows:
            out.append(f"dictionary.{table} is empty (index 0 must hold the zero value)")
        elif rows[0] != {}:
            out.append(f"dictionary.{table}[0] = {json.dumps(rows[0])}, want the zero value {{}}")
    strings = dictionary.get("string_table", [])
    if not strings:
        out.append('dictionary.string_table is empty (index 0 must be "")')
    elif strings[0] != "":
        out.append(f'dictionary.string_table[0] = {strings[0]!r}, want ""')

    _walk(req, "", dictionary, out)

    for r, rp in enumerate(req.get("resource_profiles", [])):
        for s, sp in enumerate(rp.get("scope_profiles", [])):
            for p, prof in enumerate(sp.get("profiles", [])):
                where = f"resource_profiles[{r}].scope_profiles[{s}].profiles[{p}]"
                _value_type(prof.get("sample_type"), strings, f"{where}.sample_type", out)
                _value_type(prof.get("period_type"), strings, f"{where}.period_type", out)
                for field in ("period", "time_unix_nano", "duration_nano"):
                    value = _int(prof.get(field))
                    if value is None or value <= 0:
                        out.append(f"{where}.{field} = {prof.get(field)!r}, want > 0")
                for i, sample in enumerate(prof.get("samples", [])):
                    values = sample.get("values", [])
                    if len(values) != 1:
                        out.append(f"{where}.samples[{i}].values = {values!r}, want one value")
                    elif (_int(values[0]) or 0) <= 0:
                        out.append(f"{where}.samples[{i}].values = {values!r}, want > 0")
    return out


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_file(path, allow_empty=False):
    """Returns violations prefixed with the 1-based request number in the file."""
    requests = load(path)
    if not requests and not allow_empty:
        return [f"{path}: no requests"]
    return [f"request {n}: {v}" for n, req in enumerate(requests, 1) for v in check_request(req)]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Check OTLP profiles requests recorded by otlp_receiver")
    ap.add_argument("file")
    ap.add_argument("--allow-empty", action="store_true", help="a file with no request is not an error")
    args = ap.parse_args(argv)
    violations = check_file(args.file, args.allow_empty)
    for v in violations:
        print(v)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
