"""The ``evalkit`` command: model housekeeping. Suites run under pytest (``pytest suites/``)."""

from __future__ import annotations

import argparse
import sys

from evalkit.errors import EvalkitError


def _models(args: argparse.Namespace) -> int:
    from evalkit.models import ALIASES, cache_root, embedded_gguf

    print(f"model cache: {cache_root() / 'models'}")
    for alias, model in ALIASES.items():
        try:
            source = str(embedded_gguf(model))
        except EvalkitError:
            source = f"not installed ({model.install})"
        converted = sorted(p.name for p in (cache_root() / "models").glob(f"{alias}-*") if (p / "evalkit_model.json").exists())
        print(f"{alias}\n  {model.description}\n  source: {source}\n  converted: {', '.join(converted) or 'not yet'}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from evalkit.models import resolve_model

    resolved = resolve_model(args.model)
    print(f"{resolved.name}: {resolved.path} (fingerprint {resolved.fingerprint})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evalkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list model aliases and what is cached").set_defaults(func=_models)
    prepare = commands.add_parser("prepare", help="resolve a model now (converts the embedded default once)")
    prepare.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    prepare.set_defaults(func=_prepare)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EvalkitError as error:
        print(f"evalkit: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
