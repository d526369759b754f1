"""Metadata the user adds: a per-domain CSV joined to samples by sample id or file name.

The CSV's key column is ``sample_id`` (``"{domain}/{path}"`` as in samples.csv, or the path
under the domain root) or, failing that, ``file_name``. Every other column (or those listed in
``metadata_columns``) becomes a field ``user_<column>``: numeric when every non-empty cell of
it, over all domains, is a number (float64, NaN where missing), text otherwise ("" where
missing). A sample without a row is missing, never invented, and counted.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from domain_gap.data.errors import DataError
from domain_gap.data.records import SampleRecord

KEYS = ("sample_id", "file_name")
PREFIX = "user_"

__all__ = ["KEYS", "PREFIX", "UserTable", "join_tables", "parse_metadata_csv", "typed_columns"]


@dataclass(frozen=True)
class UserTable:
    """One domain's CSV: its key column and the raw cells of the chosen columns per key."""

    source: str
    key: str
    columns: tuple[str, ...]
    rows: Mapping[str, tuple[str, ...]]


def parse_metadata_csv(data: bytes, source: str, columns: Sequence[str] | None) -> UserTable:
    """The CSV's rows by key; a column not in the header or a repeated key is a DataError."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{source}: not UTF-8 text; expected a CSV file") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    key = next((k for k in KEYS if k in header), None)
    if key is None:
        raise DataError(f"{source}: no key column; expected a header with one of {list(KEYS)}")
    wanted = list(columns) if columns is not None else [h for h in header if h not in KEYS]
    absent = [c for c in wanted if c not in header]
    if absent:
        raise DataError(f"{source}: column(s) {absent} not in the header {header}")
    index = [header.index(c) for c in wanted]
    k = header.index(key)
    rows: dict[str, tuple[str, ...]] = {}
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        cells = [c.strip() for c in cells] + [""] * (len(header) - len(cells))
        if cells[k] in rows:
            raise DataError(f"{source}: line {line}: {key} {cells[k]!r} is repeated")
        rows[cells[k]] = tuple(cells[i] for i in index)
    return UserTable(source, key, tuple(wanted), rows)


def _row_of(table: UserTable, record: SampleRecord) -> tuple[str, ...] | None:
    if table.key == "file_name":
        return table.rows.get(record.file_name)
    rel = record.sample_id.split("/", 1)[1]
    return table.rows.get(record.sample_id, table.rows.get(rel))


def join_tables(
    tables: Mapping[str, UserTable], records: Sequence[SampleRecord]
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Raw cells of every user column for ``records`` ("" where missing), and per domain the
    number of records that have no row in their domain's CSV."""
    _check_unambiguous(tables, records)
    names = sorted({c for t in tables.values() for c in t.columns})
    cells: dict[str, list[str]] = {c: [] for c in names}
    missing: dict[str, int] = {d: 0 for d in tables}
    for r in records:
        table = tables.get(r.domain)
        row = None if table is None else _row_of(table, r)
        if table is not None and row is None:
            missing[r.domain] += 1
        values = {} if row is None else dict(zip(table.columns, row, strict=True))  # type: ignore[union-attr]
        for c in names:
            cells[c].append(values.get(c, ""))
    return cells, missing


def _check_unambiguous(tables: Mapping[str, UserTable], records: Sequence[SampleRecord]) -> None:
    """A file name joins one frame only: a CSV row whose name several frames share is an error."""
    seen: dict[tuple[str, str], str] = {}
    for r in records:
        table = tables.get(r.domain)
        if table is None or table.key != "file_name" or r.file_name not in table.rows:
            continue
        other = seen.setdefault((r.domain, r.file_name), r.sample_id)
        if other != r.sample_id:
            raise DataError(
                f"{table.source}: file_name {r.file_name!r} names both {other!r} and "
                f"{r.sample_id!r}; key the CSV by sample_id instead"
            )


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def typed_columns(cells: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """``user_<column>`` arrays: float64 (NaN missing) when every non-empty cell is a finite
    number, else str ("" missing)."""
    out: dict[str, np.ndarray] = {}
    for name, values in cells.items():
        present = [v for v in values if v != ""]
        if present and all(_number(v) is not None for v in present):
            out[PREFIX + name] = np.array([np.nan if v == "" else float(v) for v in values])
        else:
            out[PREFIX + name] = np.array(list(values), dtype=str)
    return out
