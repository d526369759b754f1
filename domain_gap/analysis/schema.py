"""summary.json's JSON Schema, derived from the result types (one place per fact).

``python -m domain_gap.analysis.schema`` rewrites ``summary.schema.json`` next to this module;
a test checks that the committed file equals :func:`summary_schema` and that the demo's
summary validates against it. The schema follows :func:`~domain_gap.analysis.results.to_json`:
dataclasses are closed objects (every field required, no others), tuples are arrays, floats
may be null (NaN is written as null), and per-sample fields are left out.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from domain_gap.analysis.results import SCHEMA_VERSION, Summary

SCHEMA_PATH = Path(__file__).with_name("summary.schema.json")

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": ["number", "null"]},
}


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The schema of one annotation; dataclasses go to ``defs`` and are referenced."""
    if tp is Any:
        return {}
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: recursion-safe
            defs[name] = _dataclass_schema(tp, defs)
        return {"$ref": f"#/$defs/{name}"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_type_schema(a, defs) for a in args if a is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0], defs)}
        items = [_type_schema(a, defs) for a in args]
        return {
            "type": "array",
            "prefixItems": items,
            "minItems": len(items),
            "maxItems": len(items),
        }
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1], defs)}
    raise TypeError(f"no JSON Schema for the annotation {tp!r}")


def _dataclass_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {
        f.name: _type_schema(hints[f.name], defs)
        for f in dataclasses.fields(cls)
        if not f.metadata.get("per_sample")
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }
    doc = (cls.__doc__ or "").strip().split("\n")[0]
    if doc and not doc.startswith(cls.__name__ + "("):
        schema["description"] = doc
    return schema


def summary_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of summary.json at :data:`SCHEMA_VERSION`."""
    defs: dict[str, Any] = {}
    root = _dataclass_schema(Summary, defs)
    root["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"domain-gap/summary.schema.json/{SCHEMA_VERSION}",
        "title": "domain-gap summary.json",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    return json.dumps(summary_schema(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write (or with ``--check``, compare) the committed schema file."""
    text = schema_text()
    if "--check" in argv:
        same = SCHEMA_PATH.is_file() and SCHEMA_PATH.read_text(encoding="utf-8") == text
        if not same:
            print(f"{SCHEMA_PATH.name}: out of date; run python -m domain_gap.analysis.schema")
        return 0 if same else 1
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH.name} ({SCHEMA_VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
