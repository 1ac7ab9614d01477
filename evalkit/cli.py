"""The ``evalkit`` command: adapters and model housekeeping. Suites run under pytest (``pytest suites/``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError


def _models(args: argparse.Namespace) -> int:
    from evalkit.models import ALIASES, cache_root, embedded_gguf

    print(f"model cache: {cache_root() / 'models'}")
    for alias, model in ALIASES.items():
        try:
            source = str(embedded_gguf(model))
        except EvalkitError:
            source = f"not installed ({model.install})"
        converted = sorted(
            p.name for p in (cache_root() / "models").glob(f"{alias}-*") if (p / "evalkit_model.json").exists()
        )
        print(f"{alias}\n  {model.description}\n  source: {source}\n  converted: {', '.join(converted) or 'not yet'}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from evalkit.models import resolve_model

    resolved = resolve_model(args.model)
    print(f"{resolved.name}: {resolved.path} (fingerprint {resolved.fingerprint})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from evalkit.suite import load_suite
    from evalkit.train import ensure_adapter, read_record
    from evalkit.train.processes import rank

    spec = load_suite(args.suite)
    if not spec.train:
        raise EvalkitError(
            "the suite has no `train:` section",
            path=spec.path,
            fix="add `train: {<adapter name>: {output: ..., data: ..., prompt: ...}}`",
        )
    names = [args.adapter] if args.adapter else list(spec.train)
    if args.search:
        names = [n for n in names if n in spec.train and spec.train[n].search is not None]
        if not names:
            raise EvalkitError(
                f"no adapter of the suite{' named ' + args.adapter if args.adapter else ''} has a `search:` block",
                path=spec.path,
                fix="add `search: {trials: 12, learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}}` "
                "to a `train:` entry (see README, Searching hyperparameters)",
            )
    main_process = rank() == 0  # under a launcher, one process speaks

    def say(line: str) -> None:
        if main_process:
            print(line, flush=True)

    for name in names:
        # Cross-validation leaves the adapter's weights as they are, so asking for it forces a run.
        # (An unknown name is reported by ensure_adapter.)
        recorded = (read_record(spec.train[name].output_path) if name in spec.train else None) or {}
        recorded = recorded.get("cross_validation") or {}
        retrain = args.force or (args.folds is not None and recorded.get("folds") != args.folds)
        adapter = ensure_adapter(
            spec,
            name,
            mode="always" if retrain else "auto",
            notify=say,
            progress_bar=main_process and sys.stderr.isatty(),
            folds=args.folds,
            reports_dir=Path(args.reports),
        )
        if adapter.record and main_process:  # other processes of a distributed run write nothing
            _print_training(name, adapter)
    return 0


def _print_training(name: str, adapter) -> None:
    r = adapter.record
    state = "trained" if adapter.trained_now else "up to date"
    print(f"{name}: {state} -> {adapter.path}")
    best = r.get("best_validation_accuracy")
    print(
        f"  {r['data']['train_rows']} training rows, {r['data']['validation_rows']} validation rows"
        + (f", best validation accuracy {best:.3f} ({r['best_checkpoint']})" if best is not None else "")
    )
    print(
        f"  {r['train_seconds']:.1f}s training, {r['tokens_per_second']:.0f} tokens/s, "
        f"{r['trainable_parameters']:,} trainable parameters, {r['adapter_bytes'] / 1e6:.2f} MB"
    )
    if r.get("overfitting"):
        o = r["overfitting"]
        print(f"  over-fitting from epoch {o['epoch']:g}; the adapter keeps epoch {r.get('best_epoch')}")
    if r.get("search"):
        from evalkit.train.report import search_table

        print(search_table(r["search"]))
    cv = r.get("cross_validation")
    if cv:
        print(f"  {cv['folds']}-fold cross-validation accuracy {cv['mean']:.3f} ± {cv['stdev']:.3f}")
    if adapter.contamination:
        print(
            f"  warning: {len(adapter.contamination)} training row(s) duplicate golden test rows: "
            + "; ".join(str(d) for d in adapter.contamination[:5]),
            file=sys.stderr,
        )


def _diff(args: argparse.Namespace) -> int:
    from evalkit.diff import diff_runs

    text, regressed = diff_runs(
        args.run_a,
        args.run_b,
        reports=Path(args.reports),
        max_drop=args.max_drop,
        alpha=args.alpha,
        strict=args.strict,
        html=Path(args.html) if args.html else None,
    )
    if args.output:
        from evalkit.atomic import write_text_atomically

        write_text_atomically(Path(args.output), text)
    else:
        print(text, end="")
    return 1 if regressed else 0


def _cache(args: argparse.Namespace) -> int:
    from evalkit.cache import DATABASE, ResultCache

    folder = Path(args.dir)
    if not (folder / DATABASE).is_file():
        print(f"no result cache at {folder}")
        return 0
    if args.clear:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{folder / DATABASE}{suffix}").unlink(missing_ok=True)
        print(f"cleared the result cache at {folder}")
        return 0
    summary = ResultCache(folder, warn=lambda message: print(message, file=sys.stderr)).summary()
    print(f"result cache {folder}: {summary['entries']} answers, {summary['bytes'] / 1e6:.1f} MB")
    for (kind, model, adapter), count in summary["by_model"].items():
        print(f"  {count:>7}  {kind:<10} model {model}" + (f" adapter {adapter[:16]}" if adapter else ""))
    return 0


def _history(args: argparse.Namespace) -> int:
    from evalkit.history import history_table, read_history

    print(history_table(read_history(Path(args.reports) / "runs", last=args.last, suite=args.suite)), end="")
    return 0


def _init(args: argparse.Namespace) -> int:
    from evalkit.starter import next_command, write_starter

    written, shape = write_starter(args.data_file, name=args.name, model=args.model, force=args.force)
    if args.data_file is not None:
        fields = ", ".join(shape.fields)
        labels = f"; label set of `{shape.target}`: {', '.join(shape.labels)}" if shape.kind == "classify" else ""
        print(f"read {args.data_file}: fields {fields}{labels}")
    print("wrote:")
    width = max(len(str(w.path)) for w in written)
    for w in written:
        print(f"  {w.path!s:<{width}}  {w.what}")
    print(f"next: {next_command(written)}")
    return 0


def _add_init_command(commands: Any) -> None:
    init = commands.add_parser(
        "init",
        help="write a starter suite, prompt and threshold (into suites/ and prompts/) from a data file",
        description="Write suites/NAME.eval.yaml and prompts/NAME.j2 in the current folder from DATA_FILE's "
        "fields: a classify task when a field has a few distinct values (its label set becomes the choices), "
        "else a generate task scored by exact match on a target field. Without DATA_FILE, a tiny example "
        "dataset is written too (suites/data/example.jsonl). Existing files are never overwritten without --force.",
    )
    init.add_argument("data_file", metavar="DATA_FILE", nargs="?", help="golden rows: .jsonl, .json, .csv or .parquet")
    init.add_argument("--name", help="the suite's name and file names (default: the data file's name, or example)")
    init.add_argument("--model", default="smollm2-135m-instruct", help="the suite's model: an alias or a local folder")
    init.add_argument("--force", action="store_true", help="overwrite files that already exist")
    init.set_defaults(func=_init)


def _search(args: argparse.Namespace) -> int:
    from evalkit.backends import open_backend
    from evalkit.cache import ResultCache
    from evalkit.prompt_search import ensure_prompt_search, search_table
    from evalkit.runner import answering_backend
    from evalkit.suite import load_suite

    spec = load_suite(args.suite)
    searched = [name for name, c in spec.candidates.items() if c.search is not None]
    if args.candidate is not None:
        if args.candidate not in searched:
            what = "has no candidate" if args.candidate not in spec.candidates else "has no `search:` on candidate"
            raise EvalkitError(
                f"suite '{spec.name}' {what} '{args.candidate}'",
                path=spec.path,
                fix=f"candidates with a `search:`: {', '.join(searched) or 'none'}",
            )
        searched = [args.candidate]
    if not searched:
        raise EvalkitError(
            "no candidate of the suite has a `search:` block",
            path=spec.path,
            fix="add `search: {trials: 24, fewshot.k: [0, 2, 4, 8]}` to a candidate with a `fewshot:` pool",
        )
    cache = ResultCache(Path(args.cache_dir), warn=lambda m: print(m, file=sys.stderr)) if args.cache_dir else None

    def say(line: str) -> None:
        print(line, flush=True)

    bases: dict[str, Any] = {}  # one backend per model the searched candidates run on
    try:
        for name in searched:
            candidate = spec.candidates[name]
            model = spec.model_for(name)
            key = model.model_dump_json()
            if key not in bases:
                bases[key] = open_backend(model, spec.path.parent, notify=say)
            base = bases[key]
            adapter = None
            if candidate.adapter is not None:
                from evalkit.train import ensure_adapter

                adapter = ensure_adapter(spec, candidate.adapter, notify=say)
            backend = answering_backend(spec, base, adapter, cache, model=model.name)
            mode = "always" if args.force else "auto"
            outcome = ensure_prompt_search(spec, candidate, backend, mode=mode, notify=say)
            print(f"{spec.name}::{name}: {'searched' if outcome.searched_now else 'up to date'}")
            print(search_table(outcome))
    finally:
        for opened in bases.values():
            opened.close()
        if cache is not None:
            cache.close()
    return 0


def _add_search_command(commands: Any) -> None:
    search = commands.add_parser(
        "search",
        help="search a candidate's prompt (demos, order, calibration, template) on a dev split of its pool",
        description="Run (or resume) the `search:` of a suite's candidates and write each one's artifact "
        "(prompts/.search/<suite>/<candidate>.json). A current artifact is left as it is unless --force.",
    )
    search.add_argument("suite", help="suite file (*.eval.yaml)")
    search.add_argument("candidate", nargs="?", help="only this candidate (default: every candidate with a search)")
    search.add_argument("--force", action="store_true", help="search again even when the artifact is current")
    search.add_argument(
        "--cache-dir", default=".evalkit_cache", help="the result cache (default: .evalkit_cache; '' for none)"
    )
    search.set_defaults(func=_search)


def _add_train_command(commands: Any) -> None:
    train = commands.add_parser("train", help="train a suite's adapters when missing or stale")
    train.add_argument("suite", help="suite file (*.eval.yaml) with a `train:` section")
    train.add_argument("--adapter", help="train only this adapter (default: every adapter of the suite)")
    train.add_argument("--force", action="store_true", help="retrain even when the adapter is up to date")
    train.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="K",
        help="also run K-fold cross-validation and report mean and spread of validation accuracy",
    )
    train.add_argument(
        "--search",
        action="store_true",
        help="only the adapters with a `search:` block: run (or resume) their hyperparameter search",
    )
    train.add_argument(
        "--reports", default="reports", help="where report_to tools write, under training/<adapter>/ (default: reports)"
    )
    train.set_defaults(func=_train)


def _export(args: argparse.Namespace) -> int:
    from evalkit.export import export_adapter
    from evalkit.models import resolve_model
    from evalkit.suite import load_suite, suites_defining, the_suite_defining
    from evalkit.train import ensure_adapter

    if args.suite:  # the suite named: its own mistakes are reported
        named = load_suite(args.suite)
        owners, searched = ([named] if args.adapter in named.train else []), f"in {args.suite}"
    else:
        owners, searched = suites_defining(args.adapter, sorted(Path("suites").glob("**/*.eval.yaml"))), "under suites/"
    fix = "name the suite that trains it: evalkit export ADAPTER --suite suites/<file>.eval.yaml"
    spec = the_suite_defining(args.adapter, owners, searched=searched, fix=fix)
    adapter = ensure_adapter(spec, args.adapter, mode="never")  # the adapter as trained: missing or stale is an error
    base = resolve_model(spec.model.name, base_dir=spec.path.parent, notify=print, allow_pickle=spec.model.allow_pickle)
    suffix = ".gguf" if args.format == "gguf" else f"-merged.{args.outtype}.gguf"
    output = Path(args.output) if args.output else adapter.path.parent / f"{adapter.name}{suffix}"
    written = export_adapter(
        adapter.path,
        base.path,
        output,
        format=args.format,
        outtype=args.outtype,
        converter=Path(args.converter) if args.converter else None,
    )
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
    if args.format == "gguf":
        print(
            f"serve it beside {spec.model.name} under the name {adapter.key}: an `openai` model asks its server for "
            f"the adapter by that name (llama-cpp-python: a model entry with model_alias {adapter.key} and "
            f"lora_path {written})"
        )
    else:
        print("serve it as a model of its own, and evaluate it as a run of `models:` (docs/comparing.md)")
    return 0


def _add_export_command(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="write a trained adapter as llama.cpp serves it (GGUF), with llama.cpp's own converters",
        description="Convert a trained adapter for llama.cpp: a GGUF LoRA file served beside the base model "
        "(--format gguf), or the base with the adapter merged in (--format merged-gguf). vLLM serves the peft "
        "folder as it is.",
    )
    export.add_argument("adapter", help="the adapter's name in a suite's `train:` section")
    export.add_argument("--suite", help="the suite that trains it (default: the one under suites/ that does)")
    export.add_argument("--format", choices=["gguf", "merged-gguf"], default="gguf")
    from evalkit.export import OUTTYPES  # standard library only: the command line stays light

    export.add_argument("--outtype", choices=OUTTYPES, default="f16", help="weights (default f16)")
    export.add_argument("--output", help="the file to write (default: adapters/<name>.gguf beside the adapter)")
    export.add_argument("--converter", help="a llama.cpp checkout whose converters to use (default: fetched once)")
    export.set_defaults(func=_export)


def _lm_eval(argv: list[str]) -> int:
    """lm-eval's own command line, with evalkit's model (``--model evalkit``) registered; its exit (help,
    a usage error) is lm-eval's."""
    try:
        from lm_eval.__main__ import cli_evaluate

        import evalkit.harness.lm  # noqa: F401 - registers --model evalkit
    except ImportError:
        print("evalkit: lm-eval is not installed: pip install 'evalkit[lm-eval]'", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = ["evalkit lm-eval", *argv]
    try:
        cli_evaluate()
    except (OSError, ValueError, KeyError) as error:  # a task or dataset lm-eval cannot read
        print(f"evalkit lm-eval: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm-eval"]:  # every argument after it is lm-eval's, --help included
        return _lm_eval(argv[1:])
    parser = argparse.ArgumentParser(prog="evalkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list model aliases and what is cached").set_defaults(func=_models)
    prepare = commands.add_parser("prepare", help="resolve a model now (converts the embedded default once)")
    prepare.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    prepare.set_defaults(func=_prepare)
    _add_init_command(commands)
    _add_train_command(commands)
    _add_search_command(commands)
    _add_export_command(commands)
    diff = commands.add_parser(
        "diff",
        help="compare two run records (or a run with the baseline); exit code 1 when RUN_B regressed",
        description="Compare RUN_B with RUN_A as a run is compared with its baseline. Each RUN is a run folder, "
        "its results.json, a run id under <reports>/runs, 'latest', or 'baseline' (<reports>/baseline.json).",
    )
    diff.add_argument("run_a", metavar="RUN_A", help="the reference (older) run")
    diff.add_argument("run_b", metavar="RUN_B", help="the run to judge")
    diff.add_argument(
        "--reports", default="reports", help="reports folder for run ids, latest and baseline (default: reports)"
    )
    diff.add_argument("--max-drop", type=float, default=None, help="override each suite's baseline max_drop")
    diff.add_argument("--alpha", type=float, default=None, help="override each suite's baseline alpha")
    diff.add_argument("--strict", action="store_true", default=None, help="fail on any drop")
    diff.add_argument("--output", "-o", help="write the markdown here instead of printing it")
    diff.add_argument("--html", metavar="FILE", help="also write the comparison as a self-contained HTML page")
    diff.set_defaults(func=_diff)
    history = commands.add_parser(
        "history", help="each candidate's metric across the last runs, marked where what produced it changed"
    )
    history.add_argument("suite", nargs="?", help="only this suite (its `suite:` name)")
    history.add_argument("--reports", default="reports", help="reports folder (default: reports)")
    history.add_argument("--last", type=int, default=10, help="how many of the newest runs (default: 10)")
    history.set_defaults(func=_history)
    cache = commands.add_parser("cache", help="what the result cache holds, or --clear it")
    cache.add_argument("--dir", default=".evalkit_cache", help="the cache folder (default: .evalkit_cache)")
    cache.add_argument("--clear", action="store_true", help="delete every stored answer")
    cache.set_defaults(func=_cache)
    commands.add_parser(  # handled before parsing: its arguments are lm-eval's
        "lm-eval",
        help="lm-eval's command line with evalkit's model: evalkit lm-eval run --model evalkit --model_args "
        "name=smollm2-135m-instruct --tasks arc_easy",
    )
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EvalkitError as error:
        print(f"evalkit: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # an output file or folder that cannot be written
        print(f"evalkit: {error.filename or ''}: {error.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
