"""Prompt templates: Jinja2 in a sandbox with strict undefined variables, and few-shot selection."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from evalkit.data import printable_path, refused_path
from evalkit.errors import TemplateError, did_you_mean

MAX_RESULT = 1_000_000  # items a template's `*` may build (a prompt is far shorter)
MAX_EXPONENT = 1_000


class _BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox (no attribute or method that reaches Python internals, `range` capped), with `*` and
    `**` bounded too, so a template cannot make the machine build a gigabyte string or a huge integer."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            sizes = [len(x) for x in (left, right) if isinstance(x, (str, list, tuple))]
            counts = [x for x in (left, right) if isinstance(x, int) and not isinstance(x, bool)]
            if sizes and counts and sizes[0] * counts[0] > MAX_RESULT:
                raise jinja2.exceptions.SecurityError(f"'*' would build more than {MAX_RESULT:,} items")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise jinja2.exceptions.SecurityError(f"an exponent above {MAX_EXPONENT:,}")
        return super().call_binop(context, operator, left, right)


def _environment(folder: Path | None) -> SandboxedEnvironment:
    return _BoundedSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        loader=jinja2.FileSystemLoader(str(folder)) if folder is not None else None,
        keep_trailing_newline=False,
    )


class PromptTemplate:
    """A compiled template; ``render`` turns one row's context into prompt text."""

    def __init__(
        self,
        source: str,
        *,
        path: Path | None = None,
        inline_at: tuple[Path, int | None] | None = None,
        label: str = "inline template",
    ) -> None:
        """``path``: the template file. ``inline_at``: (suite file, line) of an inline template, whose
        errors then point at the suite and are prefixed with ``label``."""
        self.source = source
        self.path = path
        self._inline_at = inline_at
        self._prefix = f"{label}: " if inline_at is not None else ""
        self.sha256 = hashlib.sha256(source.encode("utf-8")).hexdigest()
        env = _environment(path.parent if path is not None else None)
        self._env = env
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise self._error(
                f"template syntax error: {exc.message}", exc.lineno, "check the {{ }} and {% %} tags on this line"
            ) from None

    def _error(self, message: str, template_line: int | None, fix: str | None) -> TemplateError:
        if self._inline_at is not None:
            suite, line = self._inline_at
            where = f" (template line {template_line})" if template_line and "\n" in self.source.strip() else ""
            return TemplateError(f"{self._prefix}{message}{where}", path=suite, line=line, fix=fix)
        return TemplateError(message, path=self.path, line=template_line, fix=fix)

    def may_read(self, name: str) -> bool:
        """Whether the template may read ``name``: it does, or it includes, imports or extends another
        template (not followed here), which may."""
        from jinja2 import meta

        parsed = self._env.parse(self.source)
        return name in meta.find_undeclared_variables(parsed) or any(
            True for _ in meta.find_referenced_templates(parsed)
        )

    def variables(self) -> set[str]:
        """The names the template reads from its context (not those it sets itself; includes not followed)."""
        from jinja2 import meta

        return set(meta.find_undeclared_variables(self._env.parse(self.source)))

    @classmethod
    def from_file(cls, path: Path) -> PromptTemplate:
        refused = refused_path(path)
        if refused is not None:  # a NUL byte, or a name too long: the OS cannot even look it up
            problem, fix = refused
            raise TemplateError(f"template path {problem}", path=printable_path(path), fix=fix)
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"cannot read template: {exc.strerror}", path=path) from None
        except UnicodeDecodeError:
            raise TemplateError("template is not UTF-8 text", path=path, fix="save it as UTF-8") from None
        return cls(source, path=path)

    def render(self, context: dict[str, Any], *, row_label: str) -> str:
        """Render for one row; ``row_label`` (e.g. ``data.jsonl:17``) names the row in errors."""
        try:
            return self._template.render(context)
        except jinja2.UndefinedError as exc:
            names = sorted(k for k in context if not k.startswith("_"))
            fields = ", ".join(names)
            undefined = re.match(r"'([^']+)' is undefined$", exc.message or "")
            hint = did_you_mean(undefined.group(1), names) if undefined else ""
            raise self._error(
                f"{exc.message}{hint} while rendering {row_label}",
                _template_line(exc),
                f"use a field the row has ({fields}), or guard it with {{% if x is defined %}}",
            ) from None
        except jinja2.exceptions.SecurityError as exc:
            raise self._error(
                f"template tried an unsafe operation ({exc}) while rendering {row_label}",
                _template_line(exc),
                "templates may read row fields, choices and examples only",
            ) from None
        except jinja2.TemplateNotFound as exc:
            folder = (
                f"the template's folder {self.path.parent.name}/"
                if self.path is not None
                else "a template file's folder"
            )
            raise self._error(
                f"template includes '{exc.name}', which is not a file in {folder} (while rendering {row_label})",
                _template_line(exc),
                "include, import or extend only templates beside this one",
            ) from None
        except jinja2.TemplateError as exc:
            raise self._error(f"{exc} while rendering {row_label}", _template_line(exc), None) from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ArithmeticError, RecursionError) as exc:
            raise self._error(
                f"{type(exc).__name__}: {exc} while rendering {row_label}",
                _template_line(exc),
                "check the operations the template applies to this row's values",
            ) from None


def _template_line(exc: BaseException) -> int | None:
    """Line in the template where rendering failed, from the traceback jinja rewrites."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def select_fewshot(rows: Sequence[Any], k: int, seed: int) -> list[Any]:
    """``k`` rows drawn without replacement with ``seed`` (all rows, in order, if there are fewer)."""
    if k >= len(rows):
        return list(rows)
    return random.Random(seed).sample(list(rows), k)
