"""What a task kind adds through its hooks (free-text outputs, label changes against the baseline), and the
task-kind registry refusing a part that is not a TaskKind."""

from __future__ import annotations

import pytest

from evalkit import registry
from evalkit.compare import Policy, Snapshot, compare
from evalkit.errors import EvalkitError
from evalkit.tasks import TASK_KINDS, Classify, TaskKind, task_kind
from tests.reports_helpers import candidate_result


class Tagging(Classify):
    """A classifier that reports one fixed change per comparison, whatever the examples."""

    def label_changes(self, ref, cur):
        return [{"label": "tag", "examples": len(cur), "baseline": 1.0, "current": 0.5, "delta": -0.5}]


class NotAKind:
    """Published under the task-kind group by mistake."""


def _snapshots(task: str) -> tuple[Snapshot, Snapshot]:
    before, after = candidate_result([True] * 10), candidate_result([i != 0 for i in range(10)])
    before.task = after.task = task
    return Snapshot.from_result(before), Snapshot.from_result(after)


def test_the_hooks_default_to_nothing_and_classify_reports_each_labels_recall():
    base, cur = _snapshots("classify")
    ref, now = list(base.outcomes.values()), list(cur.outcomes.values())
    assert TaskKind.label_changes(task_kind("generate"), ref, now) is None
    assert task_kind("generate").label_changes(ref, now) is None
    # example 0 (gold 'billing', as is example 5) lost: billing's recall 1 -> 0.5, the other labels kept theirs
    assert task_kind("classify").label_changes(ref, now) == [
        {"label": "billing", "examples": 2, "baseline": 1.0, "current": 0.5, "delta": -0.5}
    ]
    assert task_kind("classify").outputs(None, None) is None  # type: ignore[arg-type]  (no free-text outputs)


def test_a_comparison_reports_what_the_task_kind_adds():
    TASK_KINDS.add("tagging", Tagging())
    try:
        base, cur = _snapshots("tagging")
        [change] = compare(cur, base, Policy()).labels
        assert (change.label, change.examples, change.delta) == ("tag", 10, -0.5)
    finally:
        TASK_KINDS.remove("tagging")
    base, cur = _snapshots("generate")
    assert compare(cur, base, Policy()).labels is None
    assert "labels" not in compare(cur, base, Policy()).as_json()
    base, cur = _snapshots("not-installed")  # a run record of a kind this evalkit does not know
    assert compare(cur, base, Policy()).labels is None


def test_the_registry_refuses_an_entry_point_that_is_not_a_task_kind(monkeypatch):
    class EntryPoint:
        def __init__(self, name: str, loaded: object) -> None:
            self.name, self.value, self.loaded = name, f"pkg:{name}", loaded

        def load(self):
            return self.loaded

    published = [EntryPoint("odd", NotAKind), EntryPoint("tagging", Tagging)]
    monkeypatch.setattr(registry, "entry_points", lambda group: published if group == "evalkit.task_kinds" else [])
    kinds = TASK_KINDS.copy()
    assert isinstance(kinds.get("tagging"), Tagging)  # a TaskKind subclass is instantiated
    with pytest.raises(EvalkitError) as info:
        kinds.get("odd")
    assert info.value.message == (
        "task kind 'odd' from entry point 'pkg:odd' must be an instance of evalkit.tasks.TaskKind; "
        "got class tests.test_task_kinds.NotAKind"
    )
    assert info.value.fix == "point the entry point at an instance of evalkit.tasks.TaskKind"
    with pytest.raises(EvalkitError, match="task kind 'wrong' must be an instance of evalkit.tasks.TaskKind"):
        kinds.add("wrong", NotAKind())  # type: ignore[arg-type]


def test_another_candidates_outputs_need_a_kind_with_free_text_outputs(tmp_path):
    from evalkit.runner import Resources, RunServices
    from evalkit.suite import load_suite
    from evalkit.testing import ScriptedBackend
    from tests.conftest import write_jsonl

    write_jsonl(tmp_path / "data.jsonl", [{"id": f"q{i}", "text": f"item {i}", "label": "no"} for i in range(3)])
    path = tmp_path / "stock.eval.yaml"
    path.write_text(
        'suite: stock\ndataset: {path: data.jsonl}\ntask: {kind: classify, choices: ["yes", "no"], target: label}\n'
        'candidates:\n  plain: {template: "Q: {{ text }}\\nA:"}\n'
    )
    spec = load_suite(path)
    backend = ScriptedBackend(lambda asked: "no", miss=-2.0)
    services = RunServices(spec, "plain", Resources(backend=lambda *_: backend), None)
    with pytest.raises(EvalkitError) as info:
        services.outputs_of("plain")
    assert info.value.message == "task kind 'classify' has no free-text outputs to compare"
    assert str(info.value) == f"{path}: task kind 'classify' has no free-text outputs to compare"
