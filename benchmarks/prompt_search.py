"""The prompt's search on the demo's suites (BENCHMARKS.md, "Prompt search"): the `searched` candidate of
suites/tickets.eval.yaml (or --suite suites/orders.eval.yaml) searched from a cold result cache on the
embedded default model, what each trial cost against evaluating its configuration once on the same dev
rows, and the chosen prompt read once on the golden rows next to the hand-written prompts.

    .venv/bin/python benchmarks/prompt_search.py [search] [reeval] [golden] [chunks] [--suite FILE] [--reeval N]
        [--cache DIR] [--out FILE] [--copy] [--extra-pool benchmarks/data/tickets_extra.jsonl --dev-rows 100]

search   the 24-trial search from a cold result cache (a new temporary one unless --cache); it writes the
         candidate's artifact where the suite keeps it (prompts/.search/ticket-routing/searched.json)
reeval   the best complete trial and the next ones in trial order (--reeval N) evaluated once more on the
         same dev rows without any cache, in one call as a run evaluates a candidate: what a trial costs
         against evaluating its configuration once
golden   the chosen prompt read once on the golden rows (with the hand-written ones, --golden), and the
         optimism gap between its dev and test accuracy
chunks   each --configuration (JSON settings) scored on the dev split as a trial scores it (dev chunks,
         a new result cache) and once (one call, no cache), alternately --repeat times: what the chunks
         and the cache cost, with the machine's noise in plain sight; needs no search

--copy searches a copy of the suite in --workdir (default: a folder in the system's temporary directory,
kept so that the parts can run one at a time), with its artifact there too, so the demo's committed
artifact is left as it is. --extra-pool (which implies --copy) adds rows to the candidate's few-shot pool
(benchmarks/data/tickets_extra.jsonl: 150 tickets written for this project, 30 a label, disjoint from the
suite's rows) and --dev-rows sets the dev split's size.

Figures go to --out (default benchmarks/results/prompt_search.json), merged with what is there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def suite_copy(
    suite: Path,
    extra: Path | None,
    dev_rows: int | None,
    folder: Path,
    *,
    model: str | None = None,
    trials: int | None = None,
) -> Path:
    """A copy of ``suite`` in ``folder`` whose searched candidate keeps its artifact in ``folder`` (and draws
    from its pool plus ``extra`` rows, with a dev split of ``dev_rows``, when given); only the candidates
    the benchmark reads (searched, few_shot, zero_shot) are kept, every path made absolute; ``model`` and
    ``trials`` replace the suite's model and the search's trial count (the benchmark's smoke test)."""
    import yaml

    config = yaml.safe_load(suite.read_text())
    here = suite.parent

    def absolute(relative: str) -> str:
        return str((here / relative).resolve())

    config["dataset"]["path"] = absolute(config["dataset"]["path"])
    for key in ("train", "robustness", "baseline", "max_reads"):
        config.pop(key, None)
    keep = {"searched", "few_shot", "zero_shot"}
    config["candidates"] = {k: v for k, v in config["candidates"].items() if k in keep}
    config["thresholds"] = {}
    for candidate in config["candidates"].values():
        candidate["prompt"] = absolute(candidate["prompt"])
        if "fewshot" in candidate:
            candidate["fewshot"]["path"] = absolute(candidate["fewshot"]["path"])
    searched = config["candidates"]["searched"]
    search = searched["search"]
    search["template"] = [absolute(t) for t in search["template"]]
    search["artifact"] = str(folder / "searched.json")
    if model is not None:
        config["model"] = model
    if trials is not None:
        search["trials"] = trials
    if extra is not None:
        pool = Path(searched["fewshot"]["path"])
        combined = folder / f"{pool.stem}_and_{extra.stem}.jsonl"
        combined.write_text(pool.read_text() + extra.read_text())
        rows = sum(1 for line in combined.read_text().splitlines() if line.strip())
        searched["fewshot"]["path"] = str(combined)
        if dev_rows:
            search["dev"]["fraction"] = dev_rows / rows
    path = folder / suite.name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "parts", nargs="*", default=["search", "reeval", "golden"], help="search, reeval, golden, chunks"
    )
    parser.add_argument("--configuration", action="append", default=[], help="JSON settings (chunks)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each way (chunks)")
    parser.add_argument("--reeval", type=int, default=4, help="complete trials evaluated once more, without a cache")
    parser.add_argument("--golden", default="searched,few_shot,zero_shot", help="candidates read on the golden rows")
    parser.add_argument("--cache", help="the result cache folder (default: a new temporary one: a cold search)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prompt_search.json"))
    parser.add_argument("--suite", default="suites/tickets.eval.yaml", help="the suite (its `searched` candidate)")
    parser.add_argument("--extra-pool", help="JSONL rows added to the searched candidate's few-shot pool")
    parser.add_argument("--dev-rows", type=int, help="the dev split's size (with --extra-pool)")
    parser.add_argument("--copy", action="store_true", help="search a copy of the suite in --workdir")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "evalkit-prompt-search-benchmark"))
    parser.add_argument("--model", help="another model for the copy (with --copy)")
    parser.add_argument("--trials", type=int, help="another trial count for the copy (with --copy)")
    args = parser.parse_args(argv)

    import torch

    from evalkit.backends import open_backend
    from evalkit.backends.base import ChoiceRequest
    from evalkit.backends.hf import HFBackend
    from evalkit.cache import CachedBackend, ResultCache
    from evalkit.data import load_dataset
    from evalkit.prompt_search import _Search, ensure_prompt_search, search_outcome, search_table
    from evalkit.runner import Resources, evaluate_candidate
    from evalkit.suite import load_suite

    suite_path = ROOT / args.suite
    if args.extra_pool or args.copy or args.model or args.trials:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        extra = Path(args.extra_pool) if args.extra_pool else None
        suite_path = suite_copy(suite_path, extra, args.dev_rows, workdir, model=args.model, trials=args.trials)
    spec = load_suite(suite_path)
    candidate = spec.candidates["searched"]
    base = open_backend(spec.model, spec.path.parent)
    assert isinstance(base, HFBackend), "the benchmark runs the embedded model in process"
    base.load()
    # The first forward passes of a process run slower (kernels chosen, memory taken): warm up before timing.
    base.score_choices([ChoiceRequest("Ticket: my parcel is late\nCategory:", (" billing", " shipping"))] * 4)
    out = Path(args.out)
    figures: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    figures["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    figures["load_average_at_start"] = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as temporary:
        cache = ResultCache(Path(args.cache or temporary))
        if "chunks" in args.parts:
            configurations = [with_template_from(ROOT / args.suite, c) for c in args.configuration]
            figures["chunks"] = chunks_against_once(spec, candidate, base, configurations, args.repeat)
            if args.parts == ["chunks"]:
                return save(out, figures)
        if "search" in args.parts:
            started = time.perf_counter()
            outcome = ensure_prompt_search(
                spec, candidate, CachedBackend(cache, base), mode="always", notify=lambda line: print(line, flush=True)
            )
            figures["search_wall_s"] = round(time.perf_counter() - started, 1)
            print(search_table(outcome))
        found = search_outcome(spec, "searched")
        assert candidate.fewshot_path is not None
        figures["pool_rows"] = len(load_dataset(candidate.fewshot_path, id_field=spec.id_field))
        assert found is not None, "search first"
        outcome = found
        figures["chosen"] = {
            "settings": outcome.settings,
            "demo_ids": outcome.demo_ids,
            "dev_accuracy": outcome.dev_accuracy,
            "dev_ci95": list(outcome.dev_ci95),
            "dev_n": outcome.dev_n,
            "search_s": outcome.search_s,
            "trials": len(outcome.distinct),
            "draws": len(outcome.trials),  # with the repeats, which took an earlier trial's score
            "trial_seconds": [t.seconds for t in outcome.trials],
        }
        if "reeval" in args.parts:  # each configuration scored once on the same dev rows, no cache at all
            assert candidate.fewshot_path is not None
            pool = load_dataset(candidate.fewshot_path, id_field=spec.id_field)
            search = _Search(spec, candidate, CachedBackend(None, base), pool, None)
            search.split()
            # complete trials that computed their answers (one answered from the cache took under a second)
            complete = [t for t in outcome.trials if t.state == "complete" and (t.seconds or 0) >= 1]
            chosen = sorted(complete, key=lambda t: (t.number != outcome.best_trial, t.number))[: args.reeval]
            rows = []
            for t in chosen:
                base.prefixes.clear()  # no prefix an earlier trial computed either
                began = time.perf_counter()
                value, _, _, _ = search.evaluate(t.params, chunks=1)
                once = time.perf_counter() - began
                rows.append(
                    {
                        "trial": t.number,
                        "trial_s": t.seconds,
                        "evaluate_once_s": round(once, 3),
                        "ratio": round((t.seconds or 0) / once, 3),
                        "dev_accuracy": value,
                        "params": t.params,
                    }
                )
                print(
                    f"trial {t.number + 1}: {t.seconds:.1f}s in the search, {once:.1f}s evaluated once "
                    f"({(t.seconds or 0) / once:.2f}x), dev {value:.3f}",
                    flush=True,
                )
            figures["reeval"] = rows
        if "golden" in args.parts:  # the golden rows, read once, next to the hand-written prompts
            resources = Resources(backend=lambda *_: base, cache=cache, search_mode="never")
            golden = figures.setdefault("golden", {})
            for name in args.golden.split(","):
                began = time.perf_counter()
                result = evaluate_candidate(spec, name, resources)
                golden[name] = {
                    "accuracy": result.metrics["accuracy"],
                    "ci95": list(result.ci95["accuracy"]),
                    "n": result.n,
                    "seconds": round(time.perf_counter() - began, 1),
                }
                print(f"{name}: test accuracy {result.metrics['accuracy']:.3f} {result.ci95['accuracy']}", flush=True)
            if "searched" in golden:
                gap = outcome.optimism_gap(golden["searched"]["accuracy"], tuple(golden["searched"]["ci95"]))
                figures["optimism_gap"] = gap.model_dump(mode="json")
                print(json.dumps(figures["optimism_gap"]))
    return save(out, figures)


def with_template_from(suite: Path, configuration: str) -> str:
    """``configuration`` (JSON settings) with its template written as the suite writes it, made absolute
    (the suite's copy lives elsewhere)."""
    params = json.loads(configuration)
    if "template" in params:
        params["template"] = str((suite.parent / params["template"]).resolve())
    return json.dumps(params)


def save(out: Path, figures: dict[str, Any]) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def chunks_against_once(
    spec: Any, candidate: Any, base: Any, configurations: list[str], repeat: int
) -> list[dict[str, Any]]:
    """Each configuration (JSON settings) scored on the dev split as a trial scores it (in the search's
    dev chunks, through a new result cache) and once (one call, no cache), alternately ``repeat`` times,
    no prefix kept between runs: what the chunks and the cache cost, machine noise shown by the repeats."""
    from evalkit.cache import CachedBackend, ResultCache
    from evalkit.data import load_dataset
    from evalkit.prompt_search import _Search

    assert candidate.fewshot_path is not None
    pool = load_dataset(candidate.fewshot_path, id_field=spec.id_field)
    rows = []
    for text in configurations:
        params = json.loads(text)
        seconds: dict[str, list[float]] = {"chunks": [], "once": []}
        for _ in range(repeat):
            for way in ("chunks", "once"):
                with tempfile.TemporaryDirectory() as folder:
                    cache = ResultCache(Path(folder)) if way == "chunks" else None
                    search = _Search(spec, candidate, CachedBackend(cache, base), pool, None)
                    search.split()
                    base.prefixes.clear()
                    began = time.perf_counter()
                    search.evaluate(params, chunks=None if way == "chunks" else 1)
                    seconds[way].append(round(time.perf_counter() - began, 2))
        ratio = sorted(seconds["chunks"])[repeat // 2] / sorted(seconds["once"])[repeat // 2]
        rows.append({"params": params, "dev_rows": len(search.dev), **seconds, "ratio_of_medians": round(ratio, 3)})
        print(f"{text}: in chunks {seconds['chunks']} s, once {seconds['once']} s ({ratio:.2f}x)", flush=True)
    return rows


if __name__ == "__main__":
    main()
