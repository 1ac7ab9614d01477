"""How often a golden set has been read: the count, its committed ledger, max_reads, the Bonferroni interval."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from statistics import NormalDist

import pytest

from evalkit.errors import EvalkitError, SuiteError
from evalkit.golden import GoldenLedger, configuration_key, ledger_path, legacy_key, selection_interval, selection_level
from evalkit.spec import MaxReads
from evalkit.stats import wilson_interval
from evalkit.suite import load_suite

REPO = Path(__file__).resolve().parent.parent
TICKETS = "aaaaaaaaaaaaaaaa"  # a golden set's content hash
REFRESHED = "bbbbbbbbbbbbbbbb"


def hashes(template: str = "t1", *, adapter: str | None = None, dataset: str = TICKETS) -> dict[str, str | None]:
    """A result's hashes as CandidateResult.hashes() gives them."""
    return {
        "dataset": dataset,
        "template": template,
        "prompts": f"prompts-of-{template}",
        "model": "e9fecd7a5d8524a4:float32",
        "adapter": adapter,
    }


A, B, C = (configuration_key(hashes(t)) for t in ("t1", "t2", "t3"))


# --------------------------------------------------------------------------- the configuration's key


def test_the_key_is_every_hash_but_the_datasets():
    assert len(A) == 16 and int(A, 16) >= 0
    assert configuration_key(hashes("t1", dataset=REFRESHED)) == A  # the same configuration on other rows
    assert len({A, B, configuration_key(hashes("t1", adapter="0123abcd"))}) == 3
    without_adapter = {k: v for k, v in hashes("t1").items() if k != "adapter"}
    assert configuration_key(without_adapter) == A  # no adapter: None or absent alike
    assert configuration_key({**hashes("t1"), "judge": "j1"}) != A


# --------------------------------------------------------------------------- counting through the ledger file


def test_the_count_rises_once_per_distinct_configuration_and_not_on_a_rerun(tmp_path):
    path = ledger_path(tmp_path / "reports")
    assert path == tmp_path / "reports" / "golden_reads.json"

    first = GoldenLedger.read(path)  # no file yet: nothing counted
    assert first.reads("tickets", TICKETS, None).configurations == 0
    # two candidates of one suite, and a third with the same configuration as the first
    assert [first.observe("tickets", TICKETS, key, None).configurations for key in (A, B, A)] == [1, 2, 2]
    assert first.reads("tickets", TICKETS, None).new_this_run == 2
    assert first.write(path, "20261201T100000Z") is True
    assert path.read_text() == (
        "{\n"
        ' "kind": "evalkit-golden-reads",\n'
        ' "version": 1,\n'
        ' "suites": {\n'
        '  "tickets": {\n'
        f'   "{TICKETS}": [\n'
        + ",\n".join(f'    {{"key": "{k}", "run": "20261201T100000Z"}}' for k in sorted([A, B]))
        + "\n   ]\n  }\n }\n}\n"
    )

    rerun = GoldenLedger.read(path)  # the same two configurations again: not counted again, nothing written
    reads = [rerun.observe("tickets", TICKETS, key, None) for key in (B, A)]
    assert [(r.configurations, r.new_this_run) for r in reads] == [(2, 0), (2, 0)]
    before = path.read_text()
    assert rerun.write(path, "20261202T100000Z") is False
    assert path.read_text() == before

    edited = GoldenLedger.read(path)  # a hand-edited prompt is a new configuration
    assert edited.observe("tickets", TICKETS, C, None).as_json() == {
        "dataset_hash": TICKETS,
        "configurations": 3,
        "new_this_run": 1,
        "max_reads": None,
        "strict": False,
        "over_budget": False,
        "counted": True,
        "message": None,
    }
    assert edited.write(path, "20261203T100000Z-2") is True
    runs = {e["key"]: e["run"] for e in json.loads(path.read_text())["suites"]["tickets"][TICKETS]}
    assert runs == {A: "20261201T100000Z", B: "20261201T100000Z", C: "20261203T100000Z-2"}
    assert GoldenLedger.read(path).keys("tickets", TICKETS) == sorted([A, B, C])


def test_an_entry_keyed_before_the_task_settings_were_hashed_is_renamed_not_counted_again(tmp_path):
    path = ledger_path(tmp_path / "reports")
    old = GoldenLedger.read(path)
    for key in (A, B):  # written by an evalkit whose keys had no task settings
        old.observe("tickets", TICKETS, key, None)
    old.write(path, "20261201T100000Z")
    current = {**hashes("t1"), "task": "decoding-1"}
    assert legacy_key(current) == A and configuration_key(current) not in (A, B)
    assert legacy_key(hashes("t1")) is None

    ledger = GoldenLedger.read(path)
    reads = ledger.observe("tickets", TICKETS, configuration_key(current), None, legacy=legacy_key(current))
    assert (reads.configurations, reads.new_this_run) == (2, 0)  # the same configuration, under its new key
    changed = {**current, "task": "decoding-2"}  # then its decoding changes: a configuration of its own
    reads = ledger.observe("tickets", TICKETS, configuration_key(changed), None, legacy=legacy_key(changed))
    assert (reads.configurations, reads.new_this_run) == (3, 1)
    assert ledger.write(path, "20261202T100000Z") is True
    runs = {e["key"]: e["run"] for e in json.loads(path.read_text())["suites"]["tickets"][TICKETS]}
    assert runs == {
        configuration_key(current): "20261201T100000Z",  # keeps the run that first measured it
        B: "20261201T100000Z",
        configuration_key(changed): "20261202T100000Z",
    }


def test_a_new_dataset_hash_starts_at_one_and_suites_count_apart(tmp_path):
    path = tmp_path / "golden_reads.json"
    ledger = GoldenLedger.read(path)
    for key in (A, B, C):
        ledger.observe("tickets", TICKETS, key, None)
    ledger.write(path, "20261201T100000Z")

    refreshed = GoldenLedger.read(path)
    assert refreshed.observe("tickets", REFRESHED, A, None).configurations == 1
    assert refreshed.observe("orders", TICKETS, A, None).configurations == 1  # another suite on the same rows
    assert refreshed.reads("tickets", TICKETS, None).configurations == 3  # the old set's count is kept
    refreshed.write(path, "20261202T100000Z")
    suites = json.loads(path.read_text())["suites"]
    assert sorted(suites) == ["orders", "tickets"] and sorted(suites["tickets"]) == [TICKETS, REFRESHED]


def test_a_run_limited_to_its_first_rows_is_not_counted(tmp_path):
    path = tmp_path / "golden_reads.json"
    ledger = GoldenLedger.read(path)
    ledger.observe("tickets", TICKETS, A, None)
    reads = ledger.observe("tickets", TICKETS, B, MaxReads(limit=1, strict=True), limited=True)
    assert (reads.configurations, reads.new_this_run, reads.counted) == (1, 1, False)
    assert not reads.over_budget and not reads.fails and reads.message is None
    ledger.write(path, "20261201T100000Z")
    assert GoldenLedger.read(path).keys("tickets", TICKETS) == [A]
    alone = GoldenLedger.read(tmp_path / "other.json")
    alone.observe("tickets", TICKETS, A, None, limited=True)
    assert alone.write(tmp_path / "other.json", "20261201T100000Z") is False
    assert not (tmp_path / "other.json").exists()


def test_two_runs_writing_one_ledger_keep_each_others_configurations(tmp_path):
    path = tmp_path / "golden_reads.json"
    one, other = GoldenLedger.read(path), GoldenLedger.read(path)
    one.observe("tickets", TICKETS, A, None)
    other.observe("tickets", TICKETS, B, None)
    other.observe("tickets", TICKETS, A, None)
    assert one.write(path, "20261201T100000Z") and other.write(path, "20261201T100500Z")
    runs = {e["key"]: e["run"] for e in json.loads(path.read_text())["suites"]["tickets"][TICKETS]}
    assert runs == {A: "20261201T100000Z", B: "20261201T100500Z"}
    assert [p.name for p in tmp_path.iterdir()] == ["golden_reads.json"]  # no temporary file left behind


def test_a_key_listed_twice_counts_once_with_its_earliest_run(tmp_path):
    path = tmp_path / "golden_reads.json"
    entries = [{"key": A, "run": "20261203T100000Z"}, {"key": A, "run": "20261201T100000Z-2"}]
    path.write_text(json.dumps({"kind": "evalkit-golden-reads", "version": 1, "suites": {"t": {TICKETS: entries}}}))
    ledger = GoldenLedger.read(path)
    assert ledger.reads("t", TICKETS, None).configurations == 1
    ledger.observe("t", TICKETS, B, None)
    ledger.write(path, "20261204T100000Z")
    runs = {e["key"]: e["run"] for e in json.loads(path.read_text())["suites"]["t"][TICKETS]}
    assert runs == {A: "20261201T100000Z-2", B: "20261204T100000Z"}


def test_only_keys_and_run_ids_evalkit_makes_reach_the_file(tmp_path):
    ledger = GoldenLedger()
    with pytest.raises(ValueError, match="'ticket-routing::plain' is not a configuration key"):
        ledger.observe("tickets", TICKETS, "ticket-routing::plain", None)
    ledger.observe("tickets", TICKETS, A, None)
    with pytest.raises(ValueError, match="'latest' is not a run id"):
        ledger.write(tmp_path / "golden_reads.json", "latest")
    assert not (tmp_path / "golden_reads.json").exists()


def test_an_unwritable_ledger_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("reports").write_text("a file where the reports folder should be")
    ledger = GoldenLedger()
    ledger.observe("tickets", TICKETS, A, None)
    with pytest.raises(EvalkitError) as error:
        ledger.write(Path("reports") / "golden_reads.json", "20261201T100000Z")
    assert str(error.value) == (
        "reports/golden_reads.json: cannot write the golden-read ledger: reports is not a folder\n"
        "  fix: make the reports folder writable, or move it with --evalkit-reports"
    )


def test_the_ledger_is_committed_beside_the_baseline():
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "reports/golden_reads.json"], cwd=REPO, capture_output=True, check=False
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 1  # not ignored, unlike reports/runs/ and reports/latest/


# --------------------------------------------------------------------------- max_reads


MESSAGE = (
    "suite 'ticket-routing': its golden set has judged 41 distinct configurations, over max_reads 40; "
    "refresh it with new rows (docs/baselines.md#refreshing-a-golden-set) or raise max_reads"
)


@pytest.mark.parametrize("strict", [False, True])
def test_past_max_reads_a_suite_warns_or_fails(strict):
    ledger = GoldenLedger()
    budget = MaxReads(limit=40, strict=strict)
    keys = [configuration_key(hashes(f"t{i}")) for i in range(41)]
    at_budget = [ledger.observe("ticket-routing", TICKETS, key, budget) for key in keys[:40]][-1]
    assert (at_budget.configurations, at_budget.over_budget, at_budget.message) == (40, False, None)
    assert ledger.observe("ticket-routing", TICKETS, keys[0], budget).over_budget is False  # a re-run
    past = ledger.observe("ticket-routing", TICKETS, keys[40], budget)
    assert (past.configurations, past.max_reads, past.strict, past.over_budget) == (41, 40, strict, True)
    assert past.message == MESSAGE
    assert past.fails is strict
    assert ledger.observe("ticket-routing", TICKETS, keys[3], budget).over_budget  # stays over until refreshed
    assert ledger.observe("ticket-routing", REFRESHED, keys[40], budget).over_budget is False


# --------------------------------------------------------------------------- a damaged ledger

FIX = (
    "  fix: restore it from version control (git checkout -- reports/golden_reads.json); it is the only count "
    "of how often each golden set has been read, so deleting it would restart every count "
    "(docs/baselines.md#refreshing-a-golden-set)"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"kind": "evalkit-golden-reads",\n "version": 1,\n "suites": {"t": [}\n}',
            "reports/golden_reads.json:3: the golden-read ledger is not valid JSON: Expecting value\n" + FIX,
        ),
        (
            json.dumps({"kind": "evalkit-golden-reads", "version": 1, "suites": {"t": {TICKETS: [{"key": "x1"}]}}}),
            f"reports/golden_reads.json: the golden-read ledger is not one evalkit wrote: at suites/t/{TICKETS}/0: "
            "'run' is a required property\n" + FIX,
        ),
        (
            json.dumps({"kind": "evalkit-baseline", "version": 1, "suites": {}}),
            "reports/golden_reads.json: the golden-read ledger is not one evalkit wrote: at kind: "
            "'evalkit-golden-reads' was expected\n" + FIX,
        ),
        (
            json.dumps({"kind": "evalkit-golden-reads", "version": 2, "suites": {}}),
            "reports/golden_reads.json: the golden-read ledger has version 2; this evalkit reads version 1\n"
            "  fix: upgrade evalkit to the version that wrote it",
        ),
    ],
    ids=["not-json", "entry-without-run", "another-file", "newer-version"],
)
def test_a_damaged_ledger_names_the_file_and_the_fix(tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    path = ledger_path(Path("reports"))
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(EvalkitError) as error:
        GoldenLedger.read(path)
    assert str(error.value) == expected
    with pytest.raises(EvalkitError):  # nor is a damaged file overwritten by a run's write
        ledger = GoldenLedger()
        ledger.observe("t", TICKETS, A, None)
        ledger.write(path, "20261201T100000Z")
    assert path.read_text() == text


# --------------------------------------------------------------------------- the selection-adjusted interval


def test_the_bonferroni_interval_is_wilsons_at_level_one_minus_alpha_over_m():
    correct, n, m = 101, 160, 41
    assert selection_level(m) == pytest.approx(1 - 0.05 / 41)
    z = NormalDist().inv_cdf(1 - 0.05 / (2 * m))  # two-sided, at level 1 - 0.05/m
    p = correct / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    low, high = selection_interval(correct, n, m)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.5034, 0.7430)
    ordinary = wilson_interval(correct, n)
    assert (round(ordinary[0], 4), round(ordinary[1], 4)) == (0.5542, 0.7021)
    assert low < ordinary[0] and high > ordinary[1]  # wider than the ordinary 95% interval
    assert selection_interval(correct, n, 1) == ordinary  # equal at m = 1
    assert selection_interval(correct, n, 0) == ordinary  # nothing counted yet: one look
    widths = [(lambda i: i[1] - i[0])(selection_interval(correct, n, k)) for k in (1, 2, 10, 100)]
    assert widths == sorted(widths) and len(set(widths)) == 4
    assert selection_interval(160, 160, 41)[1] == 1.0


# --------------------------------------------------------------------------- max_reads in a suite file

SUITE = """\
suite: tickets
model: {backend: scripted, default: billing}
dataset: {path: data.jsonl}
task: {kind: classify, choices: [billing, other], target: label}
candidates:
  plain: {template: "Ticket: {{ text }}"}
max_reads: VALUE
"""
MEANING = (
    "  fix: `max_reads:` means: how many distinct configurations (prompts, templates, models, adapters, judges) "
    "the golden set may judge before it is refreshed: a number (warn past it) or {limit: N, strict: true} "
    "(fail past it)"
)


def _suite(tmp_path: Path, value: str) -> Path:
    (tmp_path / "data.jsonl").write_text('{"id": "a", "text": "charged twice", "label": "billing"}\n')
    path = tmp_path / "tickets.eval.yaml"
    path.write_text(SUITE.replace("VALUE", value))
    return path


@pytest.mark.parametrize(
    ("value", "expected"),
    [("40", MaxReads(limit=40)), ("{limit: 40, strict: true}", MaxReads(limit=40, strict=True)), ("null", None)],
)
def test_max_reads_is_a_number_or_a_limit_and_strict(tmp_path, value, expected):
    assert load_suite(_suite(tmp_path, value)).max_reads == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "tickets.eval.yaml:7: max_reads: must be a whole number of at least 1, not 0\n" + MEANING),
        (
            "forty",
            "tickets.eval.yaml:7: max_reads: write a whole number (max_reads: 40) or a mapping "
            "(max_reads: {limit: 40, strict: true}), not 'forty'\n" + MEANING,
        ),
        (
            "true",
            "tickets.eval.yaml:7: max_reads: write a whole number (max_reads: 40) or a mapping "
            "(max_reads: {limit: 40, strict: true}), not true\n" + MEANING,
        ),
        (
            "40.5",
            "tickets.eval.yaml:7: max_reads: write a whole number (max_reads: 40) or a mapping "
            "(max_reads: {limit: 40, strict: true}), not 40.5\n" + MEANING,
        ),
        (
            "{limt: 40}",
            "tickets.eval.yaml:7: unknown key 'limt' (did you mean 'limit'?)\n  fix: allowed keys here: limit, strict",
        ),
        (
            "{strict: true}",
            "tickets.eval.yaml:7: missing required key 'max_reads.limit'\n"
            "  fix: add `limit:` (distinct configurations the golden set may judge)",
        ),
        (
            "{limit: 0, strict: true}",
            "tickets.eval.yaml:7: max_reads.limit: Input should be greater than or equal to 1\n"
            "  fix: `limit:` means: distinct configurations the golden set may judge",
        ),
        (
            "{limit: 40, strict: maybe}",
            "tickets.eval.yaml:7: max_reads.strict: Input should be a valid boolean, unable to interpret input\n"
            "  fix: `strict:` means: past the limit, fail every candidate of the suite (default: warn)",
        ),
    ],
    ids=["zero", "a-word", "a-boolean", "a-fraction", "misspelt-key", "no-limit", "limit-zero", "strict-maybe"],
)
def test_a_bad_max_reads_is_a_suite_error_at_its_line(tmp_path, monkeypatch, value, expected):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SuiteError) as error:
        load_suite(_suite(tmp_path, value))
    assert str(error.value) == expected


# --------------------------------------------------------------------------- two real runs of a suite

RUN_SUITE = """\
suite: tickets
model: {backend: scripted, answers: {refund: billing, crash: technical}, default: other}
dataset: {path: data/tickets.jsonl}
task: {kind: classify, choices: [billing, technical, other], target: label}
candidates:
  plain: {template: "Ticket: {{ text }}\\nCategory:"}
  same: {template: "Ticket: {{ text }}\\nCategory:"}
  polite: {template: "PLEASE"}
max_reads: 2
"""
ROWS = [
    {"id": "t1", "text": "Please refund my last invoice", "label": "billing"},
    {"id": "t2", "text": "The app crashes when I log in", "label": "technical"},
    {"id": "t3", "text": "Do you ship to Norway?", "label": "other"},
]


def _latest(root: Path) -> tuple[str, dict]:
    """The latest run's id and its suite's golden-set count, as results.json holds them."""
    record = json.loads((root / "reports" / "latest" / "results.json").read_text())
    return record["run"]["run_id"], record.get("golden", {}).get("tickets")


def _project(pytester, suite_text: str = RUN_SUITE) -> Path:
    suite = pytester.path / "suites" / "tickets.eval.yaml"
    suite.parent.mkdir(exist_ok=True)
    (suite.parent / "data").mkdir(exist_ok=True)
    (suite.parent / "data" / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    suite.write_text(suite_text)
    (pytester.path / "tox.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return suite


def test_two_runs_of_a_suite_count_its_configurations_once(pytester):
    suite = _project(pytester)
    pytester.runpytest_subprocess("suites").assert_outcomes(passed=3)
    first_run, reads = _latest(pytester.path)
    assert (reads["configurations"], reads["new_this_run"], reads["over_budget"]) == (2, 2, False)  # same = plain
    assert reads["best"] in {"plain", "same", "polite"} and reads["selection_ci95"][0] <= reads["best_ci95"][0]
    pytester.runpytest_subprocess("suites").assert_outcomes(passed=3)
    second_run, reads = _latest(pytester.path)
    assert second_run != first_run and (reads["configurations"], reads["new_this_run"]) == (2, 0)
    suite.write_text(RUN_SUITE.replace('"PLEASE"', '"Please: {{ text }}"'))  # one prompt edited by hand
    pytester.runpytest_subprocess("suites", "--evalkit-limit", "2").assert_outcomes(passed=3)
    assert _latest(pytester.path)[1] is None  # the first rows only: not counted
    result = pytester.runpytest_subprocess("suites")
    result.assert_outcomes(passed=3)  # max_reads without strict warns
    third_run, reads = _latest(pytester.path)
    assert (reads["configurations"], reads["new_this_run"], reads["over_budget"]) == (3, 1, True)
    message = (
        "suite 'tickets': its golden set has judged 3 distinct configurations, over max_reads 2; refresh it "
        "with new rows (docs/baselines.md#refreshing-a-golden-set) or raise max_reads"
    )
    assert reads["message"] == message
    result.stdout.fnmatch_lines(["*its golden set has judged 3 distinct configurations (1 new in this run)*", message])
    assert (
        "golden set has judged 3 distinct configurations" in (pytester.path / "reports/latest/summary.md").read_text()
    )
    assert 'class="golden over-budget"' in (pytester.path / "reports/latest/report.html").read_text()
    ledger = json.loads(ledger_path(pytester.path / "reports").read_text())
    (entries,) = ledger["suites"]["tickets"].values()
    assert sorted(e["run"] for e in entries) == sorted([first_run, first_run, third_run])


def test_past_a_strict_max_reads_the_candidate_read_past_it_fails(pytester):
    _project(pytester, RUN_SUITE.replace("max_reads: 2", "max_reads: {limit: 1, strict: true}"))
    result = pytester.runpytest_subprocess("suites")
    result.assert_outcomes(passed=2, failed=1)  # plain (1), same (still 1), polite (2: past the budget)
    result.stdout.fnmatch_lines(["*tickets::polite*", "*its golden set has judged 2 distinct configurations, over*"])
    record = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())
    assert record["suites"]["tickets"]["polite"]["passed"] is False
    assert record["golden"]["tickets"]["strict"] is True
