"""`evalkit export ADAPTER`: a trained adapter in the form a server deploys, converted by llama.cpp's own
converters rather than by hand.

- ``gguf``: the LoRA adapter as a GGUF LoRA file (``convert_lora_to_gguf.py``), which llama.cpp serves
  beside its base model (llama-cpp-python's ``lora_path``; llama-server's ``--lora``).
- ``merged-gguf``: the base model with the adapter merged in (peft's ``merge_and_unload``), written as one
  GGUF model (``convert_hf_to_gguf.py``), in float32, float16 or 8-bit (``q8_0``), as teams often deploy.

vLLM serves the peft folder as it is (``--enable-lora --lora-modules NAME=adapters/NAME``): it needs no
export. The converters ship in the llama-cpp-python source distribution of the installed version; the first
export fetches it through pip (so a pip mirror is honoured) and keeps the scripts in evalkit's cache.
``--converter`` points at a llama.cpp checkout instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from evalkit.errors import EvalkitError, shown_path

Format = Literal["gguf", "merged-gguf"]
OUTTYPES = ("f32", "f16", "q8_0")
PACKAGE = "llama_cpp_python"
# what the export needs of the source distribution (relative to vendor/llama.cpp/)
CONVERTER_PARTS = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/")
Notify = Callable[[str], None]


def converter_dir(notify: Notify = print) -> Path:
    """llama.cpp's converters of the installed llama-cpp-python, fetched once into evalkit's cache."""
    from importlib.metadata import PackageNotFoundError, version

    from evalkit.models import cache_root, file_lock

    try:
        installed = version(PACKAGE)
    except PackageNotFoundError:
        raise EvalkitError(
            "exporting to GGUF uses llama.cpp's converters, and llama-cpp-python is not installed",
            fix="pip install 'evalkit[llamacpp]', or pass --converter with a llama.cpp checkout",
        ) from None
    target = cache_root() / "llama.cpp-converters" / installed
    if (target / "convert_lora_to_gguf.py").is_file():
        return target
    with file_lock(target.with_suffix(".lock")):
        if (target / "convert_lora_to_gguf.py").is_file():
            return target
        notify(f"fetching llama.cpp's converters (the llama-cpp-python {installed} source distribution, once)")
        with tempfile.TemporaryDirectory() as folder:
            fetched = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    f"llama-cpp-python=={installed}",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "--disable-pip-version-check",
                    "-q",
                    "-d",
                    folder,
                ],
                capture_output=True,
                text=True,
            )
            archives = list(Path(folder).glob("*.tar.gz"))
            if fetched.returncode != 0 or not archives:
                raise EvalkitError(
                    f"pip could not fetch the llama-cpp-python {installed} source distribution: "
                    f"{fetched.stderr.strip()[-500:]}",
                    fix="check the package index is reachable, or pass --converter with a llama.cpp checkout",
                )
            staging = Path(folder) / "converters"
            _extract(archives[0], staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging), str(target))
    return target


def _extract(archive: Path, into: Path) -> None:
    """The converter scripts of ``archive`` (and the gguf package they import) laid out under ``into``."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            _, _, inside = member.name.partition("/vendor/llama.cpp/")
            if not inside or not (member.isfile() and any(inside.startswith(p) for p in CONVERTER_PARTS)):
                continue
            member.name = inside
            tar.extract(member, into, filter="data")
    if not (into / "convert_lora_to_gguf.py").is_file():
        raise EvalkitError(f"{archive.name} holds no vendor/llama.cpp/convert_lora_to_gguf.py", fix="pass --converter")


def _run(script: Path, args: list[str], what: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)  # the converters need their own gguf package, newer than PyPI's
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise EvalkitError(
            f"llama.cpp's {script.name} failed to write the {what}: {done.stderr.strip()[-800:]}",
            fix="see the converter's message above",
        )


def export_adapter(
    adapter_path: Path,
    base_path: Path,
    output: Path,
    *,
    format: Format = "gguf",
    outtype: str = "f16",
    converter: Path | None = None,
    notify: Notify = print,
) -> Path:
    """Write the adapter in ``adapter_path`` (a peft folder, trained on the model in the Hugging Face folder
    ``base_path``) to ``output`` as a GGUF LoRA file or a merged GGUF model; the file written."""
    if outtype not in OUTTYPES:
        raise EvalkitError(f"unknown --outtype '{outtype}'", fix=f"use one of: {', '.join(OUTTYPES)}")
    scripts = converter if converter is not None else converter_dir(notify)
    if not (scripts / "convert_lora_to_gguf.py").is_file():
        raise EvalkitError(
            f"{shown_path(scripts)} has no convert_lora_to_gguf.py", fix="--converter names a llama.cpp checkout"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    if format == "gguf":
        _run(
            scripts / "convert_lora_to_gguf.py",
            ["--base", str(base_path), "--outfile", str(partial), "--outtype", outtype, str(adapter_path)],
            "GGUF adapter",
        )
    else:
        with tempfile.TemporaryDirectory(dir=output.parent) as folder:
            merged = Path(folder) / "merged"
            merge_adapter(adapter_path, base_path, merged)
            _run(
                scripts / "convert_hf_to_gguf.py",
                ["--outfile", str(partial), "--outtype", outtype, str(merged)],
                "merged GGUF model",
            )
    partial.replace(output)  # a finished file or none
    return output


def merge_adapter(adapter_path: Path, base_path: Path, into: Path) -> None:
    """The base model with the adapter merged in, saved as a Hugging Face folder (with its tokenizer)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_path)).merge_and_unload()
    merged.save_pretrained(str(into))
    AutoTokenizer.from_pretrained(str(base_path)).save_pretrained(str(into))
