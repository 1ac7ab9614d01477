"""Dataset loading: JSONL, JSON, CSV, Parquet and saved `datasets` folders, with row-level errors."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import DatasetError

SUPPORTED = ".jsonl, .json, .csv, .parquet, or a folder written by `datasets.Dataset.save_to_disk`"


@dataclass(frozen=True, slots=True)  # one per golden row, kept for the whole run: no per-instance dict
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


def printable_path(path: str | Path, keep: int = 60) -> str:
    """``path`` as an error message shows it: a NUL byte written ``\\x00``, and a very long path shortened
    to its first and last characters."""
    text = os.fspath(path).replace("\x00", "\\x00")
    if len(text) <= keep:
        return text
    return f"{text[: keep // 2]}...{text[-(keep // 3) :]}"


def _fs_limits(path: Path) -> tuple[int, int]:
    """The longest file name and the longest path the file system holding ``path`` (or its nearest existing
    parent) allows, in bytes."""
    folder = path if path.is_absolute() else Path.cwd() / path
    for candidate in (folder, *folder.parents):
        try:
            if len(os.fsencode(candidate)) < 4096 and candidate.is_dir():
                return os.pathconf(candidate, "PC_NAME_MAX"), os.pathconf(candidate, "PC_PATH_MAX")
        except (OSError, ValueError):
            continue
    return 255, 4096


def refused_path(path: str | Path) -> tuple[str, str] | None:
    """Why the operating system refuses ``path`` whatever the disk holds (a NUL byte; a name or a path
    longer than the file system allows), as (what is wrong, the fix); None for a path it accepts."""
    text = os.fspath(path)
    if "\x00" in text:
        return (
            "contains a NUL byte (\\x00), which no file name can hold",
            "remove the NUL byte from the path (in a double-quoted YAML string it is written \\0 or \\x00)",
        )
    try:
        whole = len(os.fsencode(os.path.abspath(text)))
    except UnicodeEncodeError:
        return "cannot be encoded for this file system", "use a path of plain characters"
    name_max, path_max = _fs_limits(Path(text))
    longest = max((len(os.fsencode(part)) for part in Path(text).parts), default=0)
    if longest > name_max:
        return (
            f"has a file or folder name {longest:,} bytes long; the file system allows at most {name_max:,}",
            f"shorten that name to at most {name_max:,} bytes",
        )
    if whole >= path_max:  # the limit counts the terminating NUL byte
        return (
            f"is {whole:,} bytes long once resolved; the file system allows at most {path_max - 1:,}",
            "use a shorter path (fewer or shorter folder names)",
        )
    return None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def row_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()[:16]


def load_dataset(path: str | Path, *, limit: int | None = None, id_field: str = "id") -> Dataset:
    """Load the rows of ``path`` (the first ``limit`` if given); raise DatasetError naming the line or row."""
    refused = refused_path(path)
    if refused is not None:
        problem, fix = refused
        raise DatasetError(f"dataset path {problem}", path=printable_path(path), fix=fix)
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
    shared: dict[str, str] = {}
    records.reverse()  # taken from the end, each record let go once its row is made
    for number in range(1, len(records) + 1):
        line, fields = records.pop()
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
        rows.append(Row(fields=_sharing(fields, shared), id=example_id, number=number, line=line))
    return Dataset(path=path, rows=tuple(rows), content_hash=_rows_hash(rows))


def _rows_hash(rows: list[Row]) -> str:
    """The hash of every row's fields (canonical JSON, a line each), fed a row at a time."""
    digest = hashlib.sha256()
    for i, row in enumerate(rows):
        digest.update((("\n" if i else "") + canonical_json(row.fields)).encode("utf-8"))
    return digest.hexdigest()[:16]


SHARED_TEXT = 64  # field values up to this many characters are kept once however many rows repeat them


def _sharing(fields: dict[str, Any], shared: dict[str, str]) -> dict[str, Any]:
    """``fields`` with the same values, its field names and short texts (a label, a choice every row
    offers) one string object for all rows (``shared`` keeps them): a parser makes a new string for each
    row's every name and value."""

    def one(value: Any) -> Any:
        if type(value) is str and len(value) <= SHARED_TEXT:
            return shared.setdefault(value, value)
        if isinstance(value, list):
            return [one(v) for v in value]
        return value

    return {shared.setdefault(k, k) if type(k) is str else k: one(v) for k, v in fields.items()}


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
