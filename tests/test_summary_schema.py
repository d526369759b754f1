"""The result contract: summary.schema.json is the schema of the types, and it is enforced."""

from __future__ import annotations

import json

from domain_gap.analysis import schema
from domain_gap.analysis.results import SCHEMA_VERSION, GapTest, to_json


def test_committed_schema_is_generated_from_the_types() -> None:
    assert schema.SCHEMA_PATH.read_text(encoding="utf-8") == schema.schema_text()
    assert schema.main(["--check"]) == 0
    committed = json.loads(schema.SCHEMA_PATH.read_text(encoding="utf-8"))
    assert committed["properties"]["schema_version"] == {"const": SCHEMA_VERSION}
    assert SCHEMA_VERSION in committed["$id"]


def test_per_sample_fields_are_neither_written_nor_in_the_schema() -> None:
    c2st = schema.summary_schema()["$defs"]["C2STResult"]["properties"]
    assert "probs" not in c2st and "most_target_like_source" not in c2st
    assert {"auc", "auc_ci", "ci_method", "significant"} <= set(c2st)


def test_to_json_writes_nan_as_null_and_tuples_as_lists() -> None:
    test = GapTest("x", float("nan"), (0.1, None), "m", None, None, None, "t", "r")
    out = to_json(test)
    assert out["value"] is None and out["ci"] == [0.1, None]
    json.dumps(out, allow_nan=False)
