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


def _nested(node: dict[str, Any], defs: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """The path and schema of each model ``node`` holds (directly, as a mapping's values, or a list's items;
    several for a union of models)."""
    if "$ref" in node:
        return [(path, defs[node["$ref"].rsplit("/", 1)[1]])]
    if "anyOf" in node:
        return [found for option in node["anyOf"] for found in _nested(option, defs, path)]
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        last = path.rsplit(".", 1)[-1]
        key = "<candidate>" if last in ("<suite>", "candidates") else _KEYS.get(last, "<key>")
        return _nested(node["additionalProperties"], defs, f"{path}.{key}")
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        return _nested(node["items"], defs, f"{path}[]")
    return []


def _rows(
    schema: dict[str, Any], defs: dict[str, Any], models: dict[str, type], prefix: str, above: tuple[str, ...] = ()
) -> list[str]:
    """A model's fields as table rows, its nested models' below each (a model holding itself, as a trained
    judge's calibration holds the prompted one's, is described once)."""
    above = (*above, schema.get("title", ""))
    comments = _field_comments(models[schema["title"]]) if schema.get("title") in models else {}
    required = set(schema.get("required", []))
    rows = []
    for name, node in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        described = node.get("description") or comments.get(name, "")
        nested = _nested(node, defs, path)
        if len(nested) == 1 and not described and nested[0][0] == path:  # the model itself, not a mapping of it
            described = nested[0][1].get("description") or ""
        needed = "yes" if name in required else ""
        rows.append(f"| `{path}` | {_type(node, defs)} | {needed} | {_text(described)} |")
        for inner_path, inner in nested:
            if inner.get("title") not in above:
                rows += _rows(inner, defs, models, inner_path, above)
    return rows


def _files(record: Any, models: dict[str, type]) -> list[tuple[str, type]]:
    """The record models that are whole files (no other model holds them), in the order the module defines
    them, each titled by the file its docstring names (``results.json``, ``examples.jsonl``, ...)."""
    held = {name for model in models.values() for name in record.json_schema(model).get("$defs", {})}
    roots = sorted((m for n, m in models.items() if n not in held), key=lambda m: inspect.getsourcelines(m)[1])
    titled = []
    for model in roots:
        doc = inspect.getdoc(model) or ""
        named = re.search(r"``([^`]*\.jsonl?)``", doc)
        title = named.group(1).rsplit("/", 1)[-1] if named else model.__name__
        titled.append((f"{title} (each line)" if doc.startswith("One line of") else title, model))
    return titled


def record_tables() -> str:
    """The field reference of every file evalkit records (results.json, examples.jsonl, baseline.json, ...),
    as markdown tables."""
    from pydantic import BaseModel

    from evalkit import record

    models = {
        name: value
        for name, value in vars(record).items()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == record.__name__
        and not name.startswith("_")
    }
    out = []
    for title, model in _files(record, models):
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
