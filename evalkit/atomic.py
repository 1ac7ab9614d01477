"""Publishing a finished folder in place of an old one, so readers never see a half-written folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_directory(staged: Path, target: Path) -> None:
    """Move the complete folder ``staged`` to ``target`` by renames (same file system).

    The old ``target``, if any, is renamed aside first and deleted last; a crash in between leaves no
    ``target`` at all rather than a mixture of old and new files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
