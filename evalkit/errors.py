"""Errors a user can cause, each rendered as one message naming the file, the line or row, and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class EvalkitError(Exception):
    """A mistake in user input (suite, dataset, template, model, threshold).

    ``str(error)`` is the complete message shown to the user: ``file:line: what is wrong``
    followed by a ``fix:`` line when a fix is known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.path = shown_path(path) if path is not None else None
        self.line = line
        self.row = row
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        text = where
        if self.row is not None:
            text += f"row {self.row}: "
        text += self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    def __str__(self) -> str:
        return self.render()

    def located(self, path: str | Path, line: int | None = None) -> EvalkitError:
        """This error, placed at ``path:line`` unless it already names a file."""
        if self.path is not None:
            return self
        return type(self)(self.message, path=path, line=line, row=self.row, fix=self.fix)


class SuiteError(EvalkitError):
    """The suite file is malformed or refers to something that does not exist."""


class DatasetError(EvalkitError):
    """A dataset file cannot be read, or a row lacks what the suite needs."""


class TemplateError(EvalkitError):
    """A prompt template has a syntax error or uses something a row does not provide."""


class ModelError(EvalkitError):
    """A model cannot be found locally or cannot be loaded."""


class ThresholdError(EvalkitError):
    """A threshold expression does not parse or names an unknown metric."""


class ScorerError(EvalkitError):
    """An unknown scorer, or scorer options that do not fit it."""


def shown_path(path: str | Path) -> str:
    """``path`` as a user would type it: relative to the working directory when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def did_you_mean_path(missing: Path, written: str) -> str:
    """Return ``" (did you mean 'x'?)"`` when a sibling of the ``missing`` path has a close name;
    ``x`` is the path as the user ``written`` it, with only its last part replaced."""
    try:
        siblings = [p.name for p in missing.parent.iterdir() if not p.name.startswith(".")]
    except OSError:
        return ""
    close = difflib.get_close_matches(missing.name, siblings, n=1, cutoff=0.6)
    if not close:
        return ""
    head, _, _ = written.rstrip("/").rpartition("/")
    return f" (did you mean '{head + '/' if head else ''}{close[0]}'?)"


class TrainingError(EvalkitError):
    """An adapter cannot be trained or used as configured."""
