"""MkDocs hooks of the documentation site (mkdocs.yml names this file).

- The repository's BENCHMARKS.md is published as a page of the site, and the pages' links to it
  (``../BENCHMARKS.md``, which is right when the files are read on GitHub) are pointed at that page.
- ``<!-- run-record-fields -->`` in a page becomes the field reference of the run record: one table per
  file, generated from the pydantic models in ``evalkit/record.py`` (their JSON schema, and the comment
  beside each field), so the reference is the schema the readers check and cannot drift from it.
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
BENCHMARKS = "BENCHMARKS.md"
MARKER = "<!-- run-record-fields -->"


# --------------------------------------------------------------------------- BENCHMARKS.md as a page


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, BENCHMARKS, abs_src_path=str(ROOT / BENCHMARKS)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri == BENCHMARKS:
        # From the repository root, the pages are docs/<page>.md; in the site they sit beside it.
        return re.sub(r"\]\(docs/", "](", markdown)
    markdown = markdown.replace(f"](../{BENCHMARKS}", f"]({BENCHMARKS}")
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, record_tables())
    return markdown


# --------------------------------------------------------------------------- the run record's fields


def _field_comments(model: type) -> dict[str, str]:
    """The comment written after each field of ``model`` in its source (``name: type = ...  # comment``)."""
    comments: dict[str, str] = {}
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return comments
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            match = re.match(r"\s*(\w+)\s*:", token.line)
            if match:
                comments[match.group(1)] = token.string.lstrip("# ").strip()
    return comments


def _type(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in node:
        return "object"
    if "anyOf" in node:
        parts = [_type(option, defs) for option in node["anyOf"]]
        return " or ".join(dict.fromkeys(parts))
    if "const" in node:
        return f"`{node['const']!r}`".replace("'", '"')
    if "enum" in node:
        return " or ".join(f'`"{value}"`' for value in node["enum"])
    kind = node.get("type", "any")
    if kind == "array":
        if "prefixItems" in node:
            return f"[{', '.join(_type(item, defs) for item in node['prefixItems'])}]"
        return f"list of {_type(node.get('items', {}), defs)}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"mapping of {_type(node['additionalProperties'], defs)}"
    return str(kind)


_KEYS = {"suites": "<suite>", "metrics": "<metric>"}


def _text(description: str) -> str:
    """A docstring as one markdown line: RST's double backticks and roles made plain."""
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", description.replace("\n", " "))
    return re.sub(r"``([^`]+)``", r"`\1`", text).replace("|", "/")


def _nested(node: dict[str, Any], defs: dict[str, Any], path: str) -> tuple[str, dict[str, Any]] | None:
    """The path and schema of the model ``node`` holds (directly, as a mapping's values, or a list's items)."""
    if "$ref" in node:
        return path, defs[node["$ref"].rsplit("/", 1)[1]]
    for option in node.get("anyOf", []):
        found = _nested(option, defs, path)
        if found:
            return found
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        last = path.rsplit(".", 1)[-1]
        key = "<candidate>" if last in ("<suite>", "candidates") else _KEYS.get(last, "<key>")
        return _nested(node["additionalProperties"], defs, f"{path}.{key}")
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        return _nested(node["items"], defs, f"{path}[]")
    return None


def _rows(schema: dict[str, Any], defs: dict[str, Any], models: dict[str, type], prefix: str) -> list[str]:
    comments = _field_comments(models[schema["title"]]) if schema.get("title") in models else {}
    required = set(schema.get("required", []))
    rows = []
    for name, node in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        described = node.get("description") or comments.get(name, "")
        nested = _nested(node, defs, path)
        if nested and not described and nested[0] == path:  # the model itself, not a mapping or list of it
            described = nested[1].get("description") or ""
        needed = "yes" if name in required else ""
        rows.append(f"| `{path}` | {_type(node, defs)} | {needed} | {_text(described)} |")
        if nested:
            rows += _rows(nested[1], defs, models, nested[0])
    return rows


def record_tables() -> str:
    """The field reference of results.json, examples.jsonl and baseline.json, as markdown tables."""
    from pydantic import BaseModel

    from evalkit import record

    models = {
        name: value
        for name, value in vars(record).items()
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == record.__name__
    }
    sections = [
        ("results.json", record.RunRecord),
        ("examples.jsonl (each line)", record.ExampleRow),
        ("baseline.json", record.BaselineFile),
    ]
    out = []
    for title, model in sections:
        schema = record.json_schema(model)
        doc = _text(schema.get("description") or "")
        out += [
            f"### {title}",
            "",
            f"{doc} Schema: `evalkit.record.{model.__name__}`.",
            "",
            "| field | type | required | meaning |",
            "| --- | --- | --- | --- |",
            *_rows(schema, schema.get("$defs", {}), models, ""),
            "",
        ]
    return "\n".join(out)
