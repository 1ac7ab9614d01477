"""Publishing a finished folder in place of an old one, so readers never see a half-written folder."""

from __future__ import annotations

import os
import shutil
import tempfile
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_directory(target: Path) -> Path:
    """A new empty folder beside ``target`` to build its next version in, with the permissions a plain
    ``mkdir`` would give (tempfile's 0700 would otherwise survive the rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staged.chmod(0o777 & ~_umask())
    return staged


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` by a rename, so a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
