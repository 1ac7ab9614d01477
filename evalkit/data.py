"""Dataset loading: JSONL, JSON, CSV, Parquet and saved `datasets` folders, with row-level errors."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import DatasetError

SUPPORTED = ".jsonl, .json, .csv, .parquet, or a folder written by `datasets.Dataset.save_to_disk`"


@dataclass(frozen=True)
class Row:
    """One example: its fields, a stable id, its 1-based position and (for text formats) its line."""

    fields: dict[str, Any]
    id: str
    number: int
    line: int | None = None


@dataclass(frozen=True)
class Dataset:
    path: Path
    rows: tuple[Row, ...]
    content_hash: str

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: Row) -> dict[str, Any]:
        """Keyword arguments locating ``row`` in an error message."""
        if row.line is not None:
            return {"path": self.path, "line": row.line}
        return {"path": self.path, "row": row.number}


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def row_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()[:16]


def load_dataset(path: str | Path, *, limit: int | None = None, id_field: str = "id") -> Dataset:
    """Load the rows of ``path`` (the first ``limit`` if given); raise DatasetError naming the line or row."""
    path = Path(path)
    if not path.exists():
        raise DatasetError("dataset does not exist", path=path, fix=f"create it, or point `path:` at a {SUPPORTED}")
    if path.is_dir():
        records = _load_saved_dataset(path, limit)
    else:
        suffix = path.suffix.lower()
        loader = {".jsonl": _load_jsonl, ".json": _load_json, ".csv": _load_csv, ".parquet": _load_parquet}.get(suffix)
        if loader is None:
            raise DatasetError(f"unsupported dataset format '{suffix or path.name}'", path=path, fix=f"use {SUPPORTED}")
        records = loader(path, limit)
    if not records:
        raise DatasetError("dataset has no rows", path=path, fix="add at least one row")

    rows: list[Row] = []
    seen: dict[str, int] = {}
    for number, (line, fields) in enumerate(records, start=1):
        if not isinstance(fields, dict):
            raise DatasetError(
                f"a row must be an object of fields, got {type(fields).__name__}",
                path=path,
                line=line,
                row=None if line else number,
                fix='write each row as {"field": value, ...}',
            )
        raw_id = fields.get(id_field)
        example_id = str(raw_id) if raw_id is not None else row_hash(fields)
        if example_id in seen:
            if raw_id is not None:
                raise DatasetError(
                    f"duplicate {id_field} {raw_id!r} (also row {seen[example_id]})",
                    path=path,
                    line=line,
                    row=None if line else number,
                    fix=f"give every row a distinct `{id_field}`",
                )
            example_id = f"{example_id}-{number}"  # an exact duplicate row: keep it, with a distinct id
        seen[example_id] = number
        rows.append(Row(fields=fields, id=example_id, number=number, line=line))
    digest = hashlib.sha256("\n".join(canonical_json(r.fields) for r in rows).encode("utf-8")).hexdigest()
    return Dataset(path=path, rows=tuple(rows), content_hash=digest[:16])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text (byte {exc.start})", path=path, fix="save the file as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"cannot read dataset: {exc.strerror}", path=path) from None


def _load_jsonl(path: Path, limit: int | None) -> list[tuple[int | None, Any]]:
    records: list[tuple[int | None, Any]] = []
    for number, text in enumerate(_read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            records.append((number, json.loads(text)))
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"line is not valid JSON: {exc.msg} (column {exc.colno})",
                path=path,
                line=number,
                fix="each line of a .jsonl file must be one complete JSON object",
            ) from None
        if limit is not None and len(records) >= limit:
            break
    return records


def _load_json(path: Path, limit: int | None) -> list[tuple[int | None, Any]]:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"not valid JSON: {exc.msg}",
            path=path,
            line=exc.lineno,
            fix="a .json dataset is one JSON array of row objects",
        ) from None
    if not isinstance(value, list):
        raise DatasetError(
            f"expected a JSON array of rows, got {type(value).__name__}",
            path=path,
            fix="write [ {...}, {...} ], or use .jsonl with one object per line",
        )
    return [(None, v) for v in value[:limit]]


def _load_csv(path: Path, limit: int | None) -> list[tuple[int | None, Any]]:
    text = _read_text(path)
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise DatasetError("CSV file has no header row", path=path, fix="put the field names on the first line")
    records: list[tuple[int | None, Any]] = []
    for fields in reader:
        line = reader.line_num
        if None in fields:
            raise DatasetError(
                "row has more values than the header has columns",
                path=path,
                line=line,
                fix="quote values that contain commas",
            )
        if any(v is None for v in fields.values()):
            raise DatasetError(
                "row has fewer values than the header has columns",
                path=path,
                line=line,
                fix="fill every column, or leave it empty between commas",
            )
        records.append((line, dict(fields)))
        if limit is not None and len(records) >= limit:
            break
    return records


def _load_parquet(path: Path, limit: int | None) -> list[tuple[int | None, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DatasetError(
            f"cannot read Parquet file: {exc}", path=path, fix="rewrite it with pandas or pyarrow"
        ) from None
    if limit is not None:
        table = table.slice(0, limit)
    return [(None, row) for row in table.to_pylist()]


def _load_saved_dataset(path: Path, limit: int | None) -> list[tuple[int | None, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError or its own errors for foreign folders
        raise DatasetError(
            f"not a saved `datasets` folder: {exc}", path=path, fix=f"point `path:` at a {SUPPORTED}"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        raise DatasetError(
            f"folder holds several splits ({', '.join(loaded)})",
            path=path,
            fix=f"point `path:` at one split's folder, e.g. {path / next(iter(loaded))}",
        )
    if limit is not None:
        loaded = loaded.select(range(min(limit, len(loaded))))
    return [(None, row) for row in loaded.to_list()]
