"""The trainer's hyperparameter search (Optuna), over-fitting detection, TensorBoard curves and training on
two processes, on the tiny random Llama and the colours suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.errors import SuiteError
from evalkit.session import EvalSession
from evalkit.suite import load_suite
from evalkit.train import ensure_adapter
from evalkit.train.trainer import find_overfitting, overfitting_message

SEARCH = """\
search:
  trials: {trials}
  learning_rate: {learning_rate}
  lora.r: [4, 8]
  objective: {objective}
  seed: 0
"""


def search_block(
    trials: int = 3, learning_rate: str = "{low: 1.0e-3, high: 3.0e-2, log: true}", objective="validation_accuracy"
) -> str:
    return SEARCH.format(trials=trials, learning_rate=learning_rate, objective=objective)


def test_a_seeded_search_picks_the_same_trial_twice_and_the_adapter_takes_its_settings(colours, tmp_path):
    suite = colours(epochs=2, extra=search_block())
    first = ensure_adapter(suite, "colours-lora").record
    second = ensure_adapter(suite, "colours-lora", mode="always").record
    one, two = first["search"], second["search"]
    assert [t["params"] for t in one["trials"]] == [t["params"] for t in two["trials"]]
    assert one["best"] == two["best"]
    assert one["complete"] + one["pruned"] == 3 and len(one["trials"]) == 3
    best = one["best"]
    assert best["value"] == max(t["value"] for t in one["trials"] if t["state"] == "complete")
    # the adapter is trained with the best trial's settings, and its validation matches that trial's
    assert first["config"]["learning_rate"] == best["params"]["learning_rate"]
    assert first["config"]["lora"]["r"] == best["params"]["lora.r"]
    trial = next(t for t in one["trials"] if t["number"] == best["trial"])
    assert [e["val_accuracy"] for e in trial["epochs"]] == [v["accuracy"] for v in first["validation"]]
    assert all(set(e) == {"epoch", "train_loss", "val_loss", "val_accuracy"} for e in trial["epochs"])
    assert all(t["seconds"] > 0 for t in one["trials"])
    # the search's time is part of what the adapter cost
    adapter = ensure_adapter(suite, "colours-lora")
    assert not adapter.trained_now  # an unchanged search space never searches again
    assert adapter.cost()["train_s"] == pytest.approx(second["train_seconds"] + two["seconds"], abs=1e-3)


def test_a_changed_search_space_retrains(colours):
    suite = colours(epochs=1, extra=search_block(trials=2))
    ensure_adapter(suite, "colours-lora")
    changed = colours(epochs=1, extra=search_block(trials=2, learning_rate="[1.0e-2, 2.0e-2]"))
    with pytest.raises(Exception, match="hyperparameters changed: search"):
        ensure_adapter(changed, "colours-lora", mode="never")


def test_pruning_stops_a_trial_whose_validation_trails_the_median(colours, tmp_path):
    from evalkit.train.search import open_study

    suite = colours(
        epochs=3, extra=search_block(trials=3, learning_rate="[3.0e-2, 1.0e-7]", objective="validation_loss")
    )
    spec = load_suite(suite)
    settings = spec.train["colours-lora"].search
    # Queue the order: two trials that learn, then one that cannot (a learning rate of 1e-7).
    partial = _partial_search_folder(tmp_path, spec)
    study = open_study(settings, partial)
    for learning_rate in (3.0e-2, 3.0e-2, 1.0e-7):
        study.enqueue_trial({"learning_rate": learning_rate, "lora.r": 8})
    lines: list[str] = []
    record = ensure_adapter(spec, "colours-lora", notify=lines.append).record["search"]
    states = [(t["params"]["learning_rate"], t["state"], t["pruned_at_epoch"]) for t in record["trials"]]
    assert states == [(3.0e-2, "complete", None), (3.0e-2, "complete", None), (1.0e-7, "pruned", 1.0)]
    assert len(record["trials"][2]["epochs"]) == 1  # stopped after its first epoch of three
    assert record["pruned"] == 1 and record["complete"] == 2
    assert "colours-lora trial 3/3: pruned after epoch 1 (trails the median trial)" in lines


def _partial_search_folder(root: Path, spec) -> Path:
    """Where ensure_adapter keeps the study of this suite's adapter (its partial folder, tagged with the hash)."""
    from evalkit.models import resolve_model
    from evalkit.train.adapters import _expected, _partial_folder
    from evalkit.train.examples import build_training_set

    resolved = resolve_model(spec.model.name, base_dir=spec.path.parent)
    training = build_training_set(spec, "colours-lora", resolved.path)
    partial, _ = _partial_folder(
        spec.train["colours-lora"].output_path, _expected(training, resolved.fingerprint).content_hash
    )
    return partial / "search"


class Interrupt(Exception):
    pass


def test_an_interrupted_search_resumes_from_the_stored_study(colours, tmp_path):
    from transformers import TrainerCallback

    class StopInSecondTrial(TrainerCallback):
        trainings = 0

        def on_train_begin(self, args, state, control, **kwargs):
            StopInSecondTrial.trainings += 1

        def on_step_end(self, args, state, control, **kwargs):
            if StopInSecondTrial.trainings == 2 and state.global_step == 3:
                raise Interrupt

    suite = colours(epochs=1, extra=search_block(trials=3))
    with pytest.raises(Interrupt):
        ensure_adapter(suite, "colours-lora", callbacks=[StopInSecondTrial()])
    assert not (tmp_path / "adapters" / "colours-lora").exists()
    import optuna

    stored = optuna.load_study(
        study_name="evalkit", storage=f"sqlite:///{tmp_path / 'adapters/.colours-lora.partial/search/search.db'}"
    )
    first, interrupted = stored.trials
    assert (first.state.name, interrupted.state.name) == ("COMPLETE", "FAIL")

    lines: list[str] = []
    record = ensure_adapter(suite, "colours-lora", notify=lines.append).record["search"]
    assert "colours-lora: resuming the search after 1 finished trials" in lines
    assert record["resumed_after"] == 1
    numbers = [t["number"] for t in record["trials"]]
    assert numbers == [0, 2, 3]  # trial 1 was interrupted; 2 retries it, 3 is new
    assert record["trials"][0]["params"] == first.params and record["trials"][0]["value"] == first.value
    assert record["trials"][1]["params"] == interrupted.params
    assert not (tmp_path / "adapters" / ".colours-lora.partial").exists()


def test_search_settings_errors_name_the_line_and_the_choices(colours):
    with pytest.raises(SuiteError) as error:
        load_suite(colours(extra=search_block().replace("lora.r:", "lora.rank:")))
    assert str(error.value).endswith(  # the line of the `search:` block
        "colours.eval.yaml:16: train.colours-lora.search.space: 'lora.rank' is not a searchable parameter "
        "(searchable: learning_rate, epochs, batch_size, gradient_accumulation_steps, warmup_ratio, weight_decay, "
        "lr_scheduler, lora.r, lora.alpha, lora.dropout; options: trials, objective, pruner, seed)"
    )
    with pytest.raises(
        SuiteError, match=r"search: lora.r = 0 is not a valid value: Input should be greater than or equal to 1"
    ):
        load_suite(colours(extra=search_block().replace("[4, 8]", "[0, 8]")))
    with pytest.raises(SuiteError, match=r"low \(0.03\) must be below high \(0.001\)"):
        load_suite(colours(extra=search_block(learning_rate="{low: 3.0e-2, high: 1.0e-3}")))


def test_evalkit_train_search_needs_a_search_block(colours, capsys):
    assert main(["train", str(colours(epochs=1)), "--search"]) == 2
    assert "no adapter of the suite has a `search:` block" in capsys.readouterr().err


def test_evalkit_train_search_prints_every_trial(colours, capsys):
    assert main(["train", str(colours(epochs=1, extra=search_block(trials=2))), "--search"]) == 0
    out = capsys.readouterr().out
    assert "colours-lora trial 1/2: learning_rate=" in out
    assert "  search: 2 complete, 0 pruned" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("trial"))
    assert header.split() == [
        "trial",
        "learning_rate",
        "lora.r",
        "val",
        "accuracy",
        "per",
        "epoch",
        "state",
        "value",
        "time",
    ]


def test_overfitting_is_found_where_validation_rises_while_training_falls():
    def epochs(train, val):
        return [
            {"epoch": float(i + 1), "train_loss": t, "val_loss": v, "val_accuracy": 0.5}
            for i, (t, v) in enumerate(zip(train, val))
        ]

    found = find_overfitting(epochs([3.0, 2.0, 1.5, 1.0, 0.5], [2.0, 1.0, 1.2, 1.4, 1.6]), patience=2)
    assert found == {
        "epoch": 4.0,
        "train_loss": 1.0,
        "val_loss": 1.4,
        "best_epoch": 2.0,
        "best_val_loss": 1.0,
        "patience": 2,
    }
    assert overfitting_message("tickets-lora", found) == (
        "tickets-lora: over-fitting at epoch 4: validation loss 1.4000 has stayed above its best "
        "(1.0000, epoch 2) for 2 epochs while training loss fell to 1.0000"
    )
    assert find_overfitting(epochs([3.0, 2.0, 2.5, 1.0], [2.0, 1.0, 1.2, 1.4]), patience=2) is None  # training rose too
    assert (
        find_overfitting(epochs([3.0, 2.0, 1.5, 1.0], [2.0, 1.0, 0.9, 1.4]), patience=2) is None
    )  # validation improved
    assert find_overfitting(epochs([3.0, 2.0, 1.5], [2.0, 1.0, 1.2]), patience=2) is None  # one epoch is not enough


def test_overtraining_on_few_rows_is_reported_and_the_best_epoch_kept(colours, tmp_path):
    from tests.conftest import colour_rows, write_jsonl

    write_jsonl(tmp_path / "data" / "train.jsonl", colour_rows(32, 1, "tr", range(100, 550)))
    suite = colours(epochs=15)
    suite.write_text(suite.read_text().replace("fraction: 0.1", "fraction: 0.3").replace("1.0e-2", "3.0e-2"))
    lines: list[str] = []
    record = ensure_adapter(suite, "colours-lora", notify=lines.append).record
    found = record["overfitting"]
    assert found is not None
    assert any(line.startswith(f"colours-lora: over-fitting at epoch {found['epoch']:g}: ") for line in lines)
    by_epoch = {e["epoch"]: e for e in record["epochs"]}
    assert found["val_loss"] > found["best_val_loss"] == by_epoch[found["best_epoch"]]["val_loss"]
    assert by_epoch[found["epoch"] - 1]["train_loss"] > found["train_loss"]
    # the adapter keeps the best epoch by validation accuracy, not the last one
    best_accuracy = max(e["val_accuracy"] for e in record["epochs"])
    assert by_epoch[record["best_epoch"]]["val_accuracy"] == best_accuracy
    assert record["best_epoch"] < found["epoch"]


def test_tensorboard_receives_the_training_and_validation_curves(colours, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    suite = colours(epochs=2, extra="report_to: [tensorboard]\n")
    record = ensure_adapter(suite, "colours-lora", reports_dir=tmp_path / "reports").record
    (events,) = (tmp_path / "reports" / "training" / "colours-lora").glob("*/tensorboard/events.out.tfevents.*")
    board = EventAccumulator(str(events.parent))
    board.Reload()
    scalars = board.Tags()["scalars"]
    assert {"train/loss", "eval/loss", "eval/accuracy"} <= set(scalars)
    val_loss = [(e.step, e.value) for e in board.Scalars("eval/loss")]
    assert val_loss == [(v["step"], pytest.approx(v["loss"], rel=1e-5)) for v in record["validation"]]
    accuracy = [e.value for e in board.Scalars("eval/accuracy")]
    assert accuracy == [pytest.approx(v["accuracy"]) for v in record["validation"]]
    train = [(e.step, e.value) for e in board.Scalars("train/loss")]
    assert train == [(p["step"], pytest.approx(p["loss"], rel=1e-5)) for p in record["loss_curve"]]
    # where the curves go is not part of what the adapter is: no retraining without it
    assert not ensure_adapter(colours(epochs=2), "colours-lora").trained_now


def test_two_processes_train_one_adapter_that_the_suite_then_uses(colours, tmp_path):
    suite = colours(epochs=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    done = subprocess.run(
        [*launch, "-m", "evalkit", "train", str(suite)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("colours-lora: trained -> ") == 1  # one process speaks and writes
    record = json.loads((tmp_path / "adapters" / "colours-lora" / "training.json").read_text())
    assert record["processes"] == 2
    # 86 training rows, 8 rows per process and step: 6 steps an epoch on two processes (11 on one)
    assert record["global_steps"] == 12
    assert [v["epoch"] for v in record["validation"]] == [1.0, 2.0]
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["colours-lora"]
    session = EvalSession(root=tmp_path, reports_dir=tmp_path / "reports", train_mode="never")
    result = session.run(session.spec(suite), "lora")
    assert result.adapter.content_hash == record["content_hash"]
    assert len(result.examples) == 40


def test_a_search_refuses_to_run_under_a_launcher(colours, monkeypatch):
    from evalkit.errors import TrainingError

    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun and accelerate launch set in every process
    with pytest.raises(TrainingError) as error:
        ensure_adapter(colours(epochs=1, extra=search_block(trials=2)), "colours-lora")
    assert "adapter 'colours-lora' has a `search:`; a search runs its trials in one process" in str(error.value)
    assert "fix: run `evalkit train SUITE --search` without a launcher" in str(error.value)


def test_a_cross_validated_search_scores_each_trial_by_its_fold_mean_and_logs_every_trial(colours, tmp_path, capsys):
    suite = colours(epochs=1, extra=search_block(trials=2, objective="cv_accuracy") + "report_to: [tensorboard]\n")
    suite.write_text(suite.read_text().replace("validation: {fraction: 0.1}", "validation: {fraction: 0.1, folds: 2}"))
    assert main(["train", str(suite), "--search", "--reports", str(tmp_path / "reports")]) == 0
    record = json.loads((tmp_path / "adapters" / "colours-lora" / "training.json").read_text())
    for trial in record["search"]["trials"]:
        folds = trial["epochs"]
        assert [f["fold"] for f in folds] == [1, 2]
        assert trial["value"] == pytest.approx(sum(f["best_val_accuracy"] for f in folds) / 2)
    out = capsys.readouterr().out
    assert "colours-lora trial 2/2 fold 2/2: epoch 1/1" in out
    (run,) = (tmp_path / "reports" / "training" / "colours-lora").iterdir()
    logged = sorted(
        p.parent.parent.name if p.parent.parent != run else "adapter" for p in run.glob("**/tensorboard/events.*")
    )
    assert logged == ["adapter", "trial-1-fold-1", "trial-1-fold-2", "trial-2-fold-1", "trial-2-fold-2"]
