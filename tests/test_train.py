"""The bundled LoRA trainer on a tiny random Llama: learning, staleness, atomic output, resume, attachment."""

from __future__ import annotations

import json
import textwrap

import pytest

from evalkit.errors import SuiteError, TrainingError
from evalkit.session import EvalSession
from evalkit.suite import load_suite
from evalkit.train import ensure_adapter, read_record
from tests.conftest import COLOURS, build_tiny_model, write_jsonl


def test_training_moves_accuracy_from_chance_to_above_90_percent(colours, tmp_path):
    session = EvalSession(root=tmp_path, reports_dir=tmp_path / "reports")
    spec = session.spec(colours())
    base = session.run(spec, "base")
    lora = session.run(spec, "lora")
    assert base.accuracy <= 0.4  # four colours: chance is 0.25
    assert lora.accuracy >= 0.9
    assert len(session.models) == 1  # the adapter ran on the base model already loaded
    record = read_record(tmp_path / "adapters" / "colours-lora")
    assert record["data"] == {
        "path": "data/train.jsonl",
        "sha256": record["data"]["sha256"],
        "rows": 96,
        "train_rows": 86,
        "validation_rows": 10,
    }
    assert [v["epoch"] for v in record["validation"]] == [float(e) for e in range(1, 21)]
    assert record["loss_curve"][0]["loss"] > 3 * record["loss_curve"][-1]["loss"]
    # r * (in + out) for q, k, v, o (32->32, 32->16, 32->16, 32->32) and the MLP (32->64 twice, 64->32), 2 layers
    assert record["trainable_parameters"] == 2 * 8 * (64 + 48 + 48 + 64 + 3 * 96)
    assert lora.adapter.trainable_parameters == record["trainable_parameters"]
    assert lora.cost["train_s"] == record["train_seconds"] > 0
    assert lora.cost["adapter_bytes"] == (tmp_path / "adapters/colours-lora/adapter_model.safetensors").stat().st_size
    assert 0 <= record["padding_fraction"] < 0.2
    # the base candidate is unchanged by the attached adapter
    again = EvalSession(root=tmp_path, reports_dir=tmp_path / "reports").run(load_suite(colours()), "base")
    assert [e.details["logprobs"] for e in again.examples] == [e.details["logprobs"] for e in base.examples]


def test_adapter_on_the_shared_base_equals_a_fresh_peft_model(colours, tmp_path, colour_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalkit.backends.hf import peft_quietly

    suite = colours(epochs=2)
    adapter = ensure_adapter(suite, "colours-lora")
    result = EvalSession(root=tmp_path, reports_dir=tmp_path / "r").run(load_suite(suite), "lora")
    tokenizer = AutoTokenizer.from_pretrained(colour_model)
    with peft_quietly():
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(colour_model), str(adapter.path)).eval()
    example = result.examples[0]
    prompt_ids = tokenizer(example.prompt).input_ids
    for choice, logprob in example.details["logprobs"].items():
        choice_ids = tokenizer(example.prompt + " " + choice).input_ids[len(prompt_ids) :]
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + choice_ids])).logits[0].log_softmax(-1)
        expected = sum(float(logits[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(choice_ids))
        assert logprob == pytest.approx(expected, abs=1e-4)


def test_unchanged_suite_reuses_the_adapter_and_any_change_retrains(colours, tmp_path):
    suite = colours(epochs=1)
    first = ensure_adapter(suite, "colours-lora")
    assert first.trained_now
    again = ensure_adapter(suite, "colours-lora")
    assert not again.trained_now and again.content_hash == first.content_hash

    rows = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    row = json.loads(rows[5])
    row["text"] = "lemon 101"
    rows[5] = json.dumps(row)
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(TrainingError) as error:
        ensure_adapter(suite, "colours-lora", mode="never")
    assert error.value.message == (
        "adapter 'colours-lora' cannot be used: its training rows, prompt template or completions changed"
    )
    assert (
        error.value.fix
        == f"train it with `evalkit train {suite} --adapter colours-lora`, or run with --evalkit-train=auto"
    )
    changed_row = ensure_adapter(suite, "colours-lora")
    assert changed_row.trained_now and changed_row.content_hash != first.content_hash

    suite = colours(epochs=1, extra="weight_decay: 5.0e-3\n")
    with pytest.raises(TrainingError, match=r"hyperparameters changed: weight_decay 0\.0 -> 0\.005"):
        ensure_adapter(suite, "colours-lora", mode="never")
    assert ensure_adapter(suite, "colours-lora").trained_now
    assert not ensure_adapter(suite, "colours-lora").trained_now
    assert ensure_adapter(suite, "colours-lora", mode="always").trained_now


def test_never_mode_refuses_a_missing_adapter(colours):
    with pytest.raises(TrainingError, match="adapter 'colours-lora' cannot be used: it has not been trained yet"):
        ensure_adapter(colours(), "colours-lora", mode="never")


def test_adapter_trained_for_another_base_model_is_refused(colours, tmp_path):
    ensure_adapter(colours(epochs=1), "colours-lora")
    other = build_tiny_model(tmp_path / "other-model", seed=1)
    with pytest.raises(TrainingError, match=r"cannot be used: it was trained for another base model \(fingerprint "):
        ensure_adapter(colours(epochs=1, model=other), "colours-lora", mode="never")


class Interrupt(Exception):
    pass


def test_interrupted_training_leaves_no_adapter_and_resumes(colours, tmp_path):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 15:  # an epoch is 11 steps: one checkpoint exists
                raise Interrupt

    suite = colours(epochs=2)
    output = tmp_path / "adapters" / "colours-lora"
    with pytest.raises(Interrupt):
        ensure_adapter(suite, "colours-lora", callbacks=[StopAt()])
    assert not output.exists()
    with pytest.raises(TrainingError, match="it has not been trained yet"):
        ensure_adapter(suite, "colours-lora", mode="never")
    assert (tmp_path / "adapters" / ".colours-lora.partial" / "checkpoints" / "checkpoint-11").is_dir()

    resumed = ensure_adapter(suite, "colours-lora")
    assert resumed.record["resumed_from"] == "checkpoint-11"
    assert resumed.record["global_steps"] == 22
    assert [v["epoch"] for v in resumed.record["validation"]] == [1.0, 2.0]
    assert not (tmp_path / "adapters" / ".colours-lora.partial").exists()

    uninterrupted = ensure_adapter(suite, "colours-lora", mode="always")
    assert uninterrupted.record["resumed_from"] is None
    curve = {p["step"]: p["loss"] for p in uninterrupted.record["loss_curve"]}
    for point in resumed.record["loss_curve"]:
        assert point["loss"] == pytest.approx(curve[point["step"]], rel=1e-4)


def test_training_rows_that_duplicate_test_rows_fail_the_candidate(colours, tmp_path):
    test_rows = (tmp_path / "data" / "test.jsonl").read_text().splitlines()
    leaked = json.loads(test_rows[3])
    with (tmp_path / "data" / "train.jsonl").open("a") as f:
        f.write(json.dumps({**leaked, "id": "copied"}) + "\n")
    session = EvalSession(root=tmp_path, reports_dir=tmp_path / "reports")
    result = session.run(session.spec(colours(epochs=1)), "lora")
    assert result.failures == [
        "adapter 'colours-lora' was trained on 1 row(s) that duplicate golden test rows "
        "(train.jsonl:97 = test.jsonl:4): remove them from the training data, or set "
        "`allow_contamination: true` in its `train:` entry"
    ]
    assert result.adapter.contamination == ["train.jsonl:97 = test.jsonl:4"]
    allowed = EvalSession(root=tmp_path, reports_dir=tmp_path / "reports")
    result = allowed.run(allowed.spec(colours(epochs=1, extra="allow_contamination: true\n")), "lora")
    assert result.failures == []


def test_cross_validation_reports_mean_and_spread(colours):
    adapter = ensure_adapter(colours(epochs=1), "colours-lora", folds=3)
    cv = adapter.record["cross_validation"]
    assert cv["folds"] == 3 and len(cv["accuracy"]) == 3
    assert cv["mean"] == pytest.approx(sum(cv["accuracy"]) / 3, abs=1e-4)
    assert cv["stdev"] >= 0


def test_generate_tasks_learn_the_target_and_to_stop(tmp_path, tiny_model):
    rows = [{"id": f"r{i}", "word": w, "code": f"{w[:2].upper()}{i % 3}"} for i, w in enumerate(list(COLOURS) * 6)]
    write_jsonl(tmp_path / "train.jsonl", rows[:40])
    write_jsonl(tmp_path / "test.jsonl", [{**r, "word": r["word"] + "s"} for r in rows[:8]])
    suite = tmp_path / "codes.eval.yaml"
    suite.write_text(
        textwrap.dedent(f"""\
        suite: codes
        model: {tiny_model}
        dataset: {{path: test.jsonl}}
        task: {{kind: generate, target: code, max_new_tokens: 8}}
        train:
          codes-lora:
            output: adapters/codes-lora
            data: train.jsonl
            template: "Word: {{{{ word }}}}\\nCode:"
            epochs: 1
        candidates:
          lora: {{template: "Word: {{{{ word }}}}\\nCode:", adapter: codes-lora}}
        """)
    )
    from transformers import AutoTokenizer

    from evalkit.train.examples import build_training_set
    from evalkit.train.trainer import encode_rows

    training = build_training_set(load_suite(suite), "codes-lora", tiny_model)
    assert training.completions[0] == " AP0"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded = encode_rows(training, tokenizer, max_length=64)
    assert encoded[0].input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(encoded[0].input_ids[-encoded[0].completion_length :]) == " AP0<|im_end|>"


def test_completion_loss_equals_the_full_logits_loss(tiny_model):
    """Computing logits only for the last positions changes nothing but the work done."""
    import torch
    from transformers import AutoModelForCausalLM

    from evalkit.train.trainer import CompletionCollator, completion_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    features = [
        {"input_ids": [5, 6, 7, 8, 9, 10], "completion_length": 2},
        {"input_ids": [11, 12, 13], "completion_length": 1},
        {"input_ids": [14, 15, 16, 17], "completion_length": 3},
    ]
    batch = CompletionCollator(pad_id=0)(features)
    assert batch["input_ids"].tolist()[1] == [0, 0, 0, 11, 12, 13]
    assert batch["completion_labels"].tolist() == [[-100, 9, 10], [-100, -100, 13], [15, 16, 17]]
    with torch.no_grad():
        loss, count = completion_loss(model, batch)
        expected, n = 0.0, 0
        for f in features:  # each row alone, full logits, standard shifted loss on the completion
            ids = torch.tensor([f["input_ids"]])
            labels = ids.clone()
            labels[0, : len(f["input_ids"]) - f["completion_length"]] = -100
            out = model(input_ids=ids, labels=labels)
            expected += float(out.loss) * f["completion_length"]
            n += f["completion_length"]
    assert count == n == 6
    assert float(loss) == pytest.approx(expected / n, rel=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("    adapter: colours-lora\n", None),
        (
            "    adapter: colour-lora\n",
            "candidate 'lora' uses adapter 'colour-lora', which the suite does not define (did you mean 'colours-lora'?)",
        ),
    ],
)
def test_candidate_adapter_must_be_defined(colours, change, message):
    path = colours()
    path.write_text(path.read_text().replace("    adapter: colours-lora\n", change))
    if message is None:
        assert load_suite(path).candidates["lora"].adapter == "colours-lora"
        return
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert error.value.message == message
    assert error.value.line == path.read_text().splitlines().index(change.rstrip("\n")) + 1


def test_train_section_typos_name_the_allowed_keys(colours):
    path = colours()
    path.write_text(path.read_text().replace("    epochs:", "    epoch:"))
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert error.value.message == "unknown key 'epoch' (did you mean 'epochs'?)"
    assert "learning_rate" in error.value.fix and "validation" in error.value.fix


def test_unknown_target_module_lists_the_linear_layers(colours):
    with pytest.raises(TrainingError) as error:
        ensure_adapter(colours(layers="[qkv_proj]"), "colours-lora")
    assert error.value.message == "adapter 'colours-lora': the base model has no linear layer named qkv_proj"
    assert (
        error.value.fix
        == "set lora.target_modules to some of: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"
    )


def test_attached_adapters_switch_by_name_and_leave_the_base_untouched(colours, tmp_path, tiny_model):
    import shutil

    from evalkit.backends.base import ChoiceRequest, GenerateRequest
    from evalkit.backends.hf import HFBackend
    from evalkit.models import folder_fingerprint

    first = ensure_adapter(colours(epochs=1), "colours-lora")
    first_copy = shutil.copytree(first.path, tmp_path / "first-copy")
    second = ensure_adapter(colours(epochs=2), "colours-lora")  # a changed config is a new version
    assert first.key != second.key
    backend = HFBackend(tiny_model, fingerprint=folder_fingerprint(tiny_model))
    requests = [ChoiceRequest("Item: sun 612\nColour:", (" red", " green", " blue", " yellow"))]
    generate = [GenerateRequest("Item: sky 700\nColour:", 4)]
    before = backend.score_choices(requests)
    text_before = backend.generate(generate)

    one = backend.with_adapter(first.key, first_copy)
    view = backend.with_adapter(second.key, second.path)
    tuned = view.score_choices(requests)
    assert tuned[0].logprobs != before[0].logprobs
    assert backend.score_choices(requests) == before  # the base with every adapter disabled
    assert backend.generate(generate) == text_before
    assert view.score_choices(requests) == tuned
    assert one.score_choices(requests)[0].logprobs not in (tuned[0].logprobs, before[0].logprobs)
    assert view.score_choices(requests) == tuned  # switching back and forth by name
    assert view.fingerprint == f"{backend.fingerprint}+{second.key}"
    assert backend.with_adapter(second.key, second.path).score_choices(requests) == tuned  # attached once


def test_a_row_longer_than_max_length_names_the_row(colours):
    with pytest.raises(TrainingError) as error:
        ensure_adapter(colours(extra="max_length: 8\n"), "colours-lora")
    assert error.value.path.endswith("train.jsonl") and error.value.line == 1
    assert (
        error.value.message.startswith("row is ")
        and "over max_length 8 of adapter 'colours-lora'" in error.value.message
    )
    assert error.value.fix == "shorten the row, or raise `max_length:` in the suite's `train:` entry"


def test_training_json_is_written_from_the_typed_record_and_reads_back_into_it(colours, tmp_path):
    """A training.json this version writes, and one written before the record was typed (with a search,
    cross-validation and a data check), both read into TrainingRecord and write back byte for byte."""
    from pathlib import Path

    from evalkit.record import TrainingRecord
    from evalkit.train.adapters import TrainedAdapter, read_training_record

    adapter = ensure_adapter(colours(epochs=1), "colours-lora")
    text = (adapter.path / "training.json").read_text(encoding="utf-8")
    record = read_training_record(adapter.path)
    assert record is not None and record == adapter.training
    assert json.dumps(record.as_json(), indent=2) + "\n" == text
    assert adapter.record == read_record(adapter.path) == json.loads(text)
    assert record.data is not None and (record.data.rows, record.data.train_rows) == (96, 86)
    assert record.search is None and record.cross_validation is None and record.epochs[0].epoch == 1.0

    golden = (Path(__file__).parent / "golden" / "colours-lora.training.json").read_text(encoding="utf-8")
    old = TrainingRecord.model_validate(json.loads(golden))
    assert json.dumps(old.as_json(), indent=2) + "\n" == golden
    assert list(json.loads(golden)) == list(json.loads(text))  # the same keys, in the same order
    assert old.search is not None and old.search.best.params == {"learning_rate": 0.0064664227174145595, "lora.r": 4}
    assert [t.state for t in old.search.trials] == ["complete", "complete"]
    assert old.cross_validation is not None and old.cross_validation.folds == 2
    assert [c.check for c in old.data_checks] == ["duplicates"]
    summary = TrainedAdapter("colours-lora", tmp_path, old, trained_now=False).summary()
    assert summary["train_s"] == round(old.train_seconds + old.search.seconds, 3)
    assert list(summary["search"]["trials"][0]) == [
        "number", "state", "params", "value", "epochs", "pruned_at_epoch", "seconds"
    ]  # fmt: skip

    (adapter.path / "training.json").write_text('{"adapter": "colours-lora"}', encoding="utf-8")
    assert read_training_record(adapter.path) is None  # not a training record: the adapter is incomplete
    other_process = TrainedAdapter("colours-lora", adapter.path, None, trained_now=True)
    assert other_process.record == {}
    with pytest.raises(TrainingError, match="written by the first process"):
        other_process.cost()
