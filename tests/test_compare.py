"""Comparing a run with a baseline: McNemar, the interval of the change, verdicts, partial overlap."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.baseline import read_baseline, write_baseline
from evalkit.cli import main as cli
from evalkit.compare import Policy, Snapshot, compare, hashes_of
from evalkit.errors import EvalkitError
from evalkit.stats import mcnemar_exact, paired_difference_interval
from tests.reports_helpers import candidate_result, write_record

GOLDEN = Path(__file__).parent / "golden"


def test_mcnemar_matches_the_binomial_tail_by_hand():
    # 9 examples got worse, 1 better: p = 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 2 * (1 + 10) / 1024.
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024, abs=1e-15)
    assert mcnemar_exact(1, 9) == mcnemar_exact(9, 1)
    # 10 of 10 flips in one direction: 2 / 1024. No flips: no evidence, p = 1. Balanced flips: capped at 1.
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0


def test_paired_interval_by_hand():
    # Newcombe's hybrid score interval for a=8 (both right), b=5 (first only), c=4 (second only), d=9:
    # p1 = 13/26, p2 = 12/26, Wilson (0.3204, 0.6796) and (0.2875, 0.6441), phi = (72 - 20) / sqrt(13*13*12*14).
    lo, hi = paired_difference_interval(8, 5, 4, 9)
    assert lo == pytest.approx(-0.2463, abs=5e-4)
    assert hi == pytest.approx(0.1752, abs=5e-4)
    # Swapping the runs mirrors the interval; identical runs give exactly [0, 0].
    assert paired_difference_interval(8, 4, 5, 9) == pytest.approx((-hi, -lo))
    assert paired_difference_interval(50, 0, 0, 50) == (0.0, 0.0)


def _runs(worse: int, better: int, n: int = 100, right: int = 80):
    """Baseline with ``right`` of ``n`` correct; the current run loses ``worse`` of them and gains ``better``."""
    before = [i < right for i in range(n)]
    after = list(before)
    for i in range(worse):
        after[i] = False
    for i in range(better):
        after[right + i] = True
    return Snapshot.from_result(candidate_result(before)), Snapshot.from_result(candidate_result(after))


def test_significant_drop_beyond_max_drop_regresses():
    base, cur = _runs(worse=10, better=0)
    result = compare(cur, base, Policy())
    assert result.status == "regressed" and result.regressed
    assert result.gate.model_dump() == {
        "metric": "accuracy",
        "drop": pytest.approx(0.10),
        "p_value": pytest.approx(2 / 1024),
        "worse": 10,
        "better": 0,
    }
    assert result.metrics["accuracy"].delta == pytest.approx(-0.10)
    lo, hi = result.metrics["accuracy"].ci95
    assert lo < -0.10 < hi < 0
    assert [f.id for f in result.flipped] == [f"t-{i:03d}" for i in range(10)]
    assert result.flipped[0].model_dump() == {
        "id": "t-000",
        "direction": "worse",
        "baseline": 1.0,
        "current": 0.0,
        "baseline_output": "billing",
    }
    assert result.reason == (
        "accuracy dropped 0.100 (more than max_drop 0) and McNemar p = 0.002 < alpha 0.05: "
        "0.800 -> 0.700 on 100 shared examples (95% CI of the change -0.162 to -0.041); "
        "10 got worse, 0 better"
    )


def test_verdicts_at_the_max_drop_boundary():
    base, cur = _runs(worse=10, better=0)  # a drop of exactly 0.10, p = 0.002
    assert compare(cur, base, Policy(max_drop=0.10)).status == "within noise"
    assert not compare(cur, base, Policy(max_drop=0.10)).regressed
    assert compare(cur, base, Policy(max_drop=0.09)).regressed
    # The same drop fails only when the paired test is below alpha.
    assert not compare(cur, base, Policy(alpha=2 / 1024)).regressed
    assert compare(cur, base, Policy(alpha=2 / 1024 + 1e-9)).regressed


def test_insignificant_drop_passes_unless_strict():
    base, cur = _runs(worse=3, better=1)  # drop 0.02, p = 0.625
    loose = compare(cur, base, Policy())
    assert loose.status == "within noise" and not loose.regressed
    assert loose.gate.p_value == pytest.approx(0.625)
    strict = compare(cur, base, Policy(strict=True))
    assert strict.regressed and "the suite is strict" in strict.reason


def test_improvement_and_no_change():
    base, cur = _runs(worse=0, better=12)
    assert compare(cur, base, Policy()).status == "improved"
    assert compare(base, base, Policy()).status == "no significant change"
    assert compare(base, None, Policy()).status == "new"


def test_partial_overlap_compares_only_shared_examples_and_names_the_change():
    # Baseline: ids 0..99, all correct. Current: ids 50..149 (dataset changed), wrong on ids 50..59 only.
    base = Snapshot.from_result(candidate_result([True] * 100, ids=[f"t-{i:03d}" for i in range(100)]))
    ids = [f"t-{i:03d}" for i in range(50, 150)]
    current = Snapshot.from_result(candidate_result([i >= 10 for i in range(100)], ids=ids, dataset="e" * 64))
    result = compare(current, base, Policy())
    assert result.changes == ["dataset changed (dddddddddddd -> eeeeeeeeeeee)"]
    assert (result.shared, result.only_current, result.only_baseline) == (50, 50, 50)
    # On the 50 shared examples: 1.0 before, 0.8 after (the current run's overall accuracy is 0.9).
    assert result.metrics["accuracy"].baseline == 1.0
    assert result.metrics["accuracy"].current == pytest.approx(0.8)
    assert result.gate.worse == 10 and result.regressed


def test_no_shared_examples():
    base = Snapshot.from_result(candidate_result([True] * 5, ids=list("abcde")))
    cur = Snapshot.from_result(candidate_result([True] * 5, ids=list("vwxyz")))
    result = compare(cur, base, Policy())
    assert result.status == "no shared examples" and not result.regressed


def test_repeats_compare_pass_rates_with_a_sign_test():
    base = Snapshot.from_result(candidate_result([True] * 10))
    current = candidate_result([True] * 10)
    for e in current.examples[:8]:
        e.pass_rate = 1 / 3  # sampled three times, right once
    current.metrics["accuracy"] = (8 / 3 + 2) / 10
    result = compare(Snapshot.from_result(current), base, Policy())
    assert result.gate.worse == 8 and result.gate.better == 0
    assert result.gate.drop == pytest.approx(1 - (8 / 3 + 2) / 10)
    assert result.gate.p_value == pytest.approx(2 / 256)
    assert result.regressed


def test_baseline_round_trip_and_merge(tmp_path):
    path = tmp_path / "baseline.json"
    a = Snapshot.from_result(candidate_result([True, False, True], candidate="zero_shot"))
    b = Snapshot.from_result(candidate_result([True, True, True], candidate="few_shot"))
    assert write_baseline(path, [a, b], {"tickets": "suites/tickets.eval.yaml"}, {"written": "now"}) == 2
    read = read_baseline(path)
    assert read.suite_paths == {"tickets": "suites/tickets.eval.yaml"}
    assert read.get("tickets", "zero_shot").outcomes["t-001"].values == {"accuracy": 0.0, "score": 0.0, "acc_norm": 0.0}
    assert compare(a, read.get("tickets", "zero_shot"), Policy()).status == "no significant change"
    # Merging replaces what ran and keeps the rest.
    c = Snapshot.from_result(candidate_result([False, False, False], candidate="few_shot"))
    write_baseline(path, [c], {"tickets": "suites/tickets.eval.yaml"}, {}, merge_into=read)
    merged = read_baseline(path)
    assert sorted(c for _, c in merged.entries) == ["few_shot", "zero_shot"]
    assert merged.get("tickets", "few_shot").metrics["accuracy"] == 0.0
    assert not list(tmp_path.glob(".baseline.json-*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"kind": "evalkit-baseline",\n "version": 1,\n "suites": {',
            "the baseline is not valid JSON: Expecting property name",
        ),
        (
            '{"kind": "evalkit-baseline", "version": 7, "suites": {}}',
            "the baseline has version 7; this evalkit reads version 1",
        ),
        ('{"kind": "something-else", "version": 1, "suites": {}}', "the baseline is not an evalkit baseline: at kind:"),
        (
            '{"kind": "evalkit-baseline", "version": 1, "suites": {"t": {"suite_path": "x", "candidates": {"c": {"n": 1}}}}}',
            "at suites/t/candidates/c: 'metrics' is a required property",
        ),
    ],
)
def test_a_damaged_baseline_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(EvalkitError) as info:
        read_baseline(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.fix


def _pair_of_runs(reports: Path) -> tuple[Path, Path]:
    """Two runs of the tickets suite: zero_shot unchanged, few_shot's prompt edited and 8 examples worse."""
    before = [i % 4 != 3 for i in range(40)]  # 30 of 40 correct
    after = list(before)
    for i in (0, 1, 2, 4, 5, 6, 8, 9):
        after[i] = False
    after[3] = True  # one example got better
    run_a = write_record(
        reports,
        "20261120T100000Z",
        [candidate_result(before, candidate="few_shot"), candidate_result(before, candidate="zero_shot")],
    )
    edited = candidate_result(after, candidate="few_shot", template="u" * 64)
    edited.examples[0].output = "<script>alert('x')</script> | billing"
    run_b = write_record(reports, "20261121T100000Z", [edited, candidate_result(before, candidate="zero_shot")])
    return run_a, run_b


def test_summary_md_is_pinned_for_a_fixed_pair_of_runs(tmp_path, capsys):
    reports = tmp_path / "reports"
    _pair_of_runs(reports)
    assert cli(["diff", "20261120T100000Z", "20261121T100000Z", "--reports", str(reports)]) == 1
    out = capsys.readouterr().out
    expected = (GOLDEN / "summary.md").read_text(encoding="utf-8")
    assert out == expected


def test_diff_with_no_regression_exits_zero_and_accepts_baseline(tmp_path, capsys):
    reports = tmp_path / "reports"
    run_a, run_b = _pair_of_runs(reports)
    assert cli(["diff", str(run_a), str(run_a / "results.json"), "--reports", str(reports)]) == 0
    assert "All 2 candidates passed." in capsys.readouterr().out
    # Loosened policy from the command line: the 0.175 drop is within max_drop 0.2.
    assert cli(["diff", str(run_a), str(run_b), "--max-drop", "0.2", "--reports", str(reports)]) == 0
    capsys.readouterr()
    baseline = reports / "baseline.json"
    write_baseline(
        baseline,
        [Snapshot.from_result(candidate_result([True] * 40, candidate="few_shot"))],
        {"tickets": "suites/tickets.eval.yaml"},
        {},
    )
    assert cli(["diff", "baseline", "latest", "--reports", str(reports)]) == 1
    out = capsys.readouterr().out
    assert "| few_shot    | accuracy | 0.575 [0.42, 0.71] | 1.000      | -0.425" in out
    assert "| zero_shot   | accuracy | 0.750 [0.60, 0.86] | -          | -" in out  # not in that baseline
    assert "✅ pass (new)" in out


def test_diff_names_a_missing_run(tmp_path, capsys):
    reports = tmp_path / "reports"
    _pair_of_runs(reports)
    assert cli(["diff", "nope", "latest", "--reports", str(reports)]) == 2
    err = capsys.readouterr().err
    assert "no run 'nope'" in err and "20261121T100000Z" in err
    (reports / "latest" / "results.json").write_text('{"schema_version": 99}')
    assert cli(["diff", "20261120T100000Z", "latest", "--reports", str(reports)]) == 2
    assert "schema_version 99; this evalkit reads 1, 2 and 3" in capsys.readouterr().err


def test_run_folders_are_pruned_to_the_newest(tmp_path):
    from evalkit.report.writer import prune_runs

    reports = tmp_path / "reports"
    for day in range(20, 25):
        write_record(reports, f"202611{day}T100000Z", [candidate_result([True, False])])
    removed = prune_runs(reports / "runs", keep=2)
    assert [p.name for p in removed] == ["20261120T100000Z", "20261121T100000Z", "20261122T100000Z"]
    assert sorted(p.name for p in (reports / "runs").iterdir()) == ["20261123T100000Z", "20261124T100000Z"]
    latest = json.loads((reports / "latest" / "results.json").read_text())
    assert latest["run"]["run_id"] == "20261124T100000Z"


def test_runs_within_one_second_keep_their_order_through_pruning(tmp_path):
    """Twelve runs that start in the same second, keeping two: ids never go back to a pruned one, and
    `-10` sorts after `-9`."""
    import datetime as dt

    from evalkit.results import new_run_id

    reports = tmp_path / "reports"
    second = dt.datetime(2026, 11, 24, 10, 0, 0, tzinfo=dt.UTC)
    ids = []
    for _ in range(12):
        ids.append(new_run_id(reports / "runs", second))
        write_record_kept(reports, ids[-1])
    assert ids == ["20261124T100000Z"] + [f"20261124T100000Z-{n}" for n in range(2, 13)]
    assert sorted(p.name for p in (reports / "runs").iterdir()) == ["20261124T100000Z-11", "20261124T100000Z-12"]


def write_record_kept(reports, run_id, keep=2):
    from evalkit.report.writer import write_run
    from evalkit.results import build_record, example_rows
    from tests.reports_helpers import HEADER

    results = [candidate_result([True, False])]
    header = {**HEADER, "run_id": run_id, "baseline": {"path": "reports/baseline.json", "updated": False}}
    write_run(reports, build_record(header, results), example_rows(results), keep_runs=keep)


def test_a_change_of_rendered_prompts_alone_is_named():
    before = candidate_result([True, False, True])
    after = candidate_result([True, False, True])
    before.prompts_sha256, after.prompts_sha256 = "p" * 64, "q" * 64
    result = compare(Snapshot.from_result(after), Snapshot.from_result(before), Policy())
    assert result.changes == [
        "rendered prompts changed with the same template and data (few-shot examples, "
        "chat format or system message; pppppppppppp -> qqqqqqqqqqqq)"
    ]
    after.template_sha256 = "u" * 64  # a new template explains the new prompts: named once
    result = compare(Snapshot.from_result(after), Snapshot.from_result(before), Policy())
    assert result.changes == ["prompt template changed (tttttttttttt -> uuuuuuuuuuuu)"]


def test_a_change_of_the_task_settings_is_named_and_a_baseline_without_them_is_not_a_change():
    before = candidate_result([True, False, True])
    after = candidate_result([True, False, True])
    after.task_sha256 = "d" * 16  # a baseline written before the task's settings were hashed
    assert compare(Snapshot.from_result(after), Snapshot.from_result(before), Policy()).changes == []
    before.task_sha256 = "c" * 16  # max_new_tokens edited, say
    result = compare(Snapshot.from_result(after), Snapshot.from_result(before), Policy())
    assert result.changes == ["task settings (decoding, scorer, choices) changed (cccccccccccc -> dddddddddddd)"]
    entry = {"metrics": {}, "task_sha256": "c" * 16, "dataset_hash": "x"}
    assert hashes_of(entry)["task"] == "c" * 16 and "task" not in hashes_of({"metrics": {}})


def test_the_baseline_keeps_one_example_per_line_for_reviewable_diffs(tmp_path):
    path = tmp_path / "baseline.json"
    result = candidate_result([True, False, True], outputs=["billing", "\u0000example-2 | odd", "account"])
    write_baseline(path, [Snapshot.from_result(result)], {"tickets": "suites/tickets.eval.yaml"}, {})
    lines = path.read_text().splitlines()
    example_lines = [line.strip() for line in lines if line.strip().startswith('{"id": ')]
    assert example_lines[1] == (
        '{"id": "t-001", "values": {"accuracy": 0.0, "score": 0.0, "acc_norm": 0.0}, '
        '"output": "\\u0000example-2 | odd", "target": "technical"},'
    )
    assert len(example_lines) == 3
    assert read_baseline(path).get("tickets", "few_shot").outcomes["t-001"].output == "\u0000example-2 | odd"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(value, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _mutate(document, data):
    paths = [p for p in _paths(document) if p]
    path = data.draw(st.sampled_from(paths))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_run_record_diffs_or_raises_one_clear_error(tmp_path_factory, data):
    """`evalkit diff` on a run record with one value changed or removed: a comparison or one message, exit 2."""
    reports = tmp_path_factory.mktemp("reports")
    run_a, run_b = _pair_of_runs(reports)
    target = data.draw(st.sampled_from(["results.json", "examples.jsonl"]))
    if target == "results.json":
        record = json.loads((run_b / "results.json").read_text())
        _mutate(record, data)
        (run_b / "results.json").write_text(json.dumps(record))
    else:
        rows = [json.loads(line) for line in (run_b / "examples.jsonl").read_text().splitlines()]
        _mutate(rows, data)
        (run_b / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli(["diff", str(run_a), str(run_b), "--reports", str(reports)])
    assert code in (0, 1, 2)
    if code == 2:
        assert err.getvalue().startswith(f"evalkit: {run_b}")
