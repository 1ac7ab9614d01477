"""The result cache: only misses reach the model, each miss says why, and nothing is lost or mixed up."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import textwrap
import time
from pathlib import Path

import pytest

from evalkit.backends.base import ChoiceRequest, GenerateRequest
from evalkit.cache import CachedBackend, ResultCache
from evalkit.runner import Resources, evaluate_candidate
from evalkit.suite import load_suite
from evalkit.testing import RecordingBackend
from tests.conftest import TICKET_ROWS, write_jsonl


class Counting(RecordingBackend):
    """A backend that counts the requests it is asked to compute, and how often it is asked to load."""

    @property
    def requests(self) -> int:
        return len(self.received)


SUITE = """\
    suite: tickets
    model: TINY_MODEL
    dataset: {path: data/tickets.jsonl}
    task: {kind: classify, choices: [billing, technical, account, shipping, other], target: label}
    candidates:
      short: {template: "Ticket: {{ text }}\\nCategory:"}
      long: {template: "Support ticket: {{ text }}\\nThe category is:"}
    """


class Runner:
    """Evaluates suites the way a session does: a shared cache, a model loaded only when a request misses."""

    def __init__(self, tiny_backend, cache_dir: Path) -> None:
        self.backend = Counting(tiny_backend)
        self.cache = ResultCache(cache_dir)

    @property
    def loads(self) -> int:
        return self.backend.loads

    def run(self, spec, candidate):
        return evaluate_candidate(spec, candidate, Resources(backend=lambda *_: self.backend, cache=self.cache))


def _rows(result):
    return [(e.id, e.output, e.correct, e.details["logprobs"]) for e in result.examples]


def test_second_run_loads_no_model_and_makes_no_call(suite_dir, tiny_backend, tmp_path):
    spec = load_suite(suite_dir(SUITE))
    first = Runner(tiny_backend, tmp_path / "cache")
    cold = [first.run(spec, c) for c in ("short", "long")]
    assert first.backend.requests == 12 and first.loads == 2
    assert [r.cache.misses for r in cold] == [6, 6]

    again = Runner(tiny_backend, tmp_path / "cache")  # a new process: only the database is shared
    warm = [again.run(spec, c) for c in ("short", "long")]
    assert again.loads == 0 and again.backend.calls == 0
    assert [r.cache.hits for r in warm] == [6, 6] and [r.cache.misses for r in warm] == [0, 0]
    assert [_rows(r) for r in warm] == [_rows(r) for r in cold]
    assert [r.metrics for r in warm] == [r.metrics for r in cold]
    # The cost of a candidate is the model time of its answers, whether computed now or cached.
    assert [r.compute_s for r in warm] == [r.compute_s for r in cold]
    assert warm[0].model_fingerprint == cold[0].model_fingerprint == f"{tiny_backend.base_fingerprint}:float32"


def test_changing_one_template_reevaluates_only_that_candidate(suite_dir, tiny_backend, tmp_path):
    runner = Runner(tiny_backend, tmp_path / "cache")
    spec = load_suite(suite_dir(SUITE))
    for candidate in ("short", "long"):
        runner.run(spec, candidate)
    changed = load_suite(suite_dir(SUITE.replace("The category is:", "Category:")))
    before = runner.backend.requests
    short, long = runner.run(changed, "short"), runner.run(changed, "long")
    assert short.cache.as_json() == {
        "hits": 6,
        "misses": 0,
        "shared": 0,
        "compute_s": short.cache.compute_s,
        "miss_reasons": {},
        "first_miss": {},
    }
    assert long.cache.hits == 0 and long.cache.misses == 6
    assert long.cache.miss_reasons == {"prompt changed": 6}
    assert long.cache.first_miss == {"prompt changed": "tickets::long::a::0"}
    assert runner.backend.requests - before == 6


def test_a_miss_names_the_part_of_its_key_that_is_new(tmp_path, tiny_backend):
    cache = ResultCache(tmp_path / "cache")
    request = GenerateRequest("The order number is", 4, ("\n",))

    def ask(model, request, origin="s::c::r1::0", adapter=""):
        backend = CachedBackend(cache, tiny_backend, model=model, adapter=adapter)
        backend.generate([dataclasses.replace(request, origin=origin)])
        return dict(backend.stats.reasons)

    assert ask("m1:float32", request) == {"first evaluation of this example": 1}
    assert ask("m1:float32", request) == {}
    assert ask("m1:bfloat16", request) == {"model changed (m1:float32 -> m1:bfloat16)": 1}
    assert ask("m1:bfloat16", request, adapter="abc") == {"adapter changed (none -> abc)": 1}
    longer = GenerateRequest("The order number is", 6, ("\n",))
    assert ask("m1:bfloat16", longer, adapter="abc") == {"decoding parameters changed (max_new_tokens 4 -> 6)": 1}
    assert ask("m1:bfloat16", GenerateRequest("Order:", 6, ("\n",)), adapter="abc") == {"prompt changed": 1}
    # Without an example id, a prompt seen before explains itself by its closest (then latest) earlier answer.
    assert ask("m2:bfloat16", request, origin=None) == {"model changed (m1:bfloat16 -> m2:bfloat16)": 1}
    assert ask("m2:float32", GenerateRequest("never seen", 4), origin=None) == {"new prompt": 1}


def test_identical_requests_are_computed_once(tmp_path, tiny_backend):
    counting = Counting(tiny_backend)
    backend = CachedBackend(ResultCache(tmp_path / "cache"), counting, model="m")
    request = ChoiceRequest("Ticket: refund\nCategory:", (" billing", " other"))
    results = backend.score_choices([request, request, request])
    assert counting.requests == 1 and backend.stats.shared == 2
    assert results[0] == results[1] == results[2]
    # Greedy generation ignores the seed, so identical greedy requests share one answer across repeats.
    backend.generate([GenerateRequest("Hi", 3, seed=1), GenerateRequest("Hi", 3, seed=2)])
    assert counting.requests == 2
    sampled = [GenerateRequest("Hi", 3, temperature=1.0, seed=s) for s in (1, 2)]
    backend.generate(sampled)
    assert counting.requests == 4


def test_a_row_and_the_content_free_inputs_of_its_demos_reach_the_model_in_one_call(
    tmp_path, tiny_backend, monkeypatch
):
    monkeypatch.setattr("evalkit.cache.COMMIT_EVERY", 8)
    recording = RecordingBackend(tiny_backend)
    choices = (" billing", " other")
    demos = [f"Ticket: demo {i} {'x' * (7 * i)}\nCategory: billing\n" for i in range(6)]  # a demo set per row
    rows = [
        ChoiceRequest(f"{d}Ticket: a much longer question than any blank, row {i}\nCategory:", choices)
        for i, d in enumerate(demos)
    ]
    blanks = [ChoiceRequest(f"{d}Ticket: {b}\nCategory:", choices) for d in demos for b in ("N/A", "", "[MASK]")]
    CachedBackend(ResultCache(tmp_path / "cache"), recording, model="m").score_choices(rows + blanks)
    calls, start = [], 0
    for size in [8, 8, 8]:  # COMMIT_EVERY requests a call
        calls.append([r.prompt for r in recording.received[start : start + size]])
        start += size
    assert recording.calls == 3
    for demo in demos:  # by length, a row would go with other rows, apart from its own blanks
        (call,) = [c for c in calls if any(p.startswith(demo) for p in c)]
        assert sum(p.startswith(demo) for p in call) == 4


def test_cached_answers_equal_computed_ones_exactly(tmp_path, tiny_backend):
    requests = [
        ChoiceRequest("Ticket: my invoice is wrong\nCategory:", (" billing", " technical support")),
        ChoiceRequest("Q: 2 + 3?\nA:", (" 5", " five")),
    ]
    computed = tiny_backend.score_choices(requests)
    cache = ResultCache(tmp_path / "cache")
    CachedBackend(cache, tiny_backend, model="m").score_choices(requests)

    class Broken(Counting):
        def load(self) -> float:
            raise AssertionError("the model must not be loaded")

    assert CachedBackend(cache, Broken(tiny_backend), model="m").score_choices(requests) == computed


def test_an_interrupted_call_keeps_the_batches_it_finished(tmp_path, tiny_backend, monkeypatch):
    monkeypatch.setattr("evalkit.cache.COMMIT_EVERY", 2)
    counting = Counting(tiny_backend)
    calls = {"n": 0}

    class DiesOnThirdBatch(Counting):
        def generate(self, requests):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return super().generate(requests)

    dying = DiesOnThirdBatch(tiny_backend)
    cache = ResultCache(tmp_path / "cache")
    requests = [GenerateRequest(f"Item {i}:", 3) for i in range(6)]
    with pytest.raises(KeyboardInterrupt):
        CachedBackend(cache, dying, model="m").generate(requests)
    assert cache.count() == 4  # two batches of two were committed before the interruption
    resumed = CachedBackend(ResultCache(tmp_path / "cache"), counting, model="m")
    results = resumed.generate(requests)
    assert counting.requests == 2 and resumed.stats.hits == 4
    assert results == tiny_backend.generate(requests)


def test_a_corrupt_database_is_set_aside_with_a_warning(tmp_path, tiny_backend):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "results.sqlite").write_bytes(b"this is not a database" * 100)
    warnings = []
    cache = ResultCache(folder, warn=warnings.append)
    backend = CachedBackend(cache, tiny_backend, model="m")
    backend.generate([GenerateRequest("Hi", 2)])
    assert cache.count() == 1
    assert len(warnings) == 1 and "could not be read" in warnings[0] and "a new one started" in warnings[0]
    assert [p.name.startswith("results.sqlite.broken-") for p in folder.iterdir() if "broken" in p.name] == [True]
    assert (folder / ".gitignore").read_text() == "*\n"


def test_a_database_from_another_schema_version_is_rebuilt(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    with sqlite3.connect(folder / "results.sqlite") as conn:
        conn.execute("PRAGMA user_version=99")
    warnings = []
    assert ResultCache(folder, warn=warnings.append).count() == 0
    assert "cache schema version 99" in warnings[0]


# ---------------------------------------------------------------------------------------------- plugin


@pytest.fixture
def project(pytester, tiny_model):
    write_jsonl(pytester.path / "suites" / "data" / "tickets.jsonl", TICKET_ROWS)
    (pytester.path / "suites" / "tickets.eval.yaml").write_text(
        textwrap.dedent(SUITE).replace("TINY_MODEL", str(tiny_model)).replace("data/", "data/")
    )
    (pytester.path / "tox.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester


def test_plugin_second_run_answers_everything_from_the_cache(project):
    first = project.runpytest("suites")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["result cache *.evalkit_cache: 0 of 12 requests answered from it (0%), 12 computed*"])
    second = project.runpytest("suites")
    second.assert_outcomes(passed=2)
    second.stdout.fnmatch_lines(
        ["result cache *: 12 of 12 requests answered from it (100%), 0 computed; the model was not loaded"]
    )
    assert "loaded in" not in second.stdout.str()


def test_plugin_verbose_run_says_why_requests_missed(project):
    project.runpytest("suites").assert_outcomes(passed=2)
    suite = project.path / "suites" / "tickets.eval.yaml"
    suite.write_text(suite.read_text().replace("The category is:", "Category:"))
    result = project.runpytest("suites", "-v")
    result.stdout.fnmatch_lines(
        [
            "result cache *: 6 of 12 requests answered from it (50%), 6 computed",
            "  tickets::long: 6 missed: 6 prompt changed (first: tickets::long::a::0)",
        ]
    )


def test_plugin_no_cache_and_cache_dir_options(project):
    project.runpytest("suites", "--evalkit-no-cache").stdout.fnmatch_lines(
        ["result cache off (--evalkit-no-cache): 12 requests computed"]
    )
    assert not (project.path / ".evalkit_cache").exists()
    project.runpytest("suites", "--evalkit-cache-dir", "elsewhere")
    assert (project.path / "elsewhere" / "results.sqlite").is_file()
    assert not (project.path / ".evalkit_cache").exists()


def test_plugin_xdist_workers_share_the_cache(project):
    pytest.importorskip("xdist")
    alone = project.runpytest("suites", "--evalkit-no-cache")
    alone.assert_outcomes(passed=2)
    parallel = project.runpytest("suites", "-n", "2")
    parallel.assert_outcomes(passed=2)
    again = project.runpytest("suites", "-n", "2")
    again.stdout.fnmatch_lines(["result cache *: 12 of 12 requests answered from it (100%), 0 computed*"])
    import json

    records = sorted((project.path / "reports" / "runs").iterdir())
    rows = [[json.loads(line) for line in (r / "examples.jsonl").read_text().splitlines()] for r in records]
    strip = lambda run: sorted(
        (e["suite"], e["candidate"], e["id"], e["output"], json.dumps(e["details"], sort_keys=True)) for e in run
    )  # noqa: E731
    assert strip(rows[0]) == strip(rows[1]) == strip(rows[2])


def test_cli_shows_and_clears_the_cache(tmp_path, tiny_backend, capsys):
    from evalkit.cli import main

    folder = tmp_path / "cache"
    CachedBackend(ResultCache(folder), tiny_backend, model="m1:float32").generate(
        [GenerateRequest("a", 2), GenerateRequest("b", 2)]
    )
    assert main(["cache", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"result cache {folder}: 2 answers, ")
    assert out[1].split() == ["2", "generate", "model", "m1:float32"]
    assert main(["cache", "--dir", str(folder), "--clear"]) == 0
    assert capsys.readouterr().out == f"cleared the result cache at {folder}\n"
    assert main(["cache", "--dir", str(folder)]) == 0
    assert capsys.readouterr().out == f"no result cache at {folder}\n"


def test_a_chat_request_is_keyed_by_its_turns_and_a_plain_one_as_before():
    from evalkit.cache import generate_parts

    plain = GenerateRequest("Hello", 8)
    chat = GenerateRequest("Hello", 8, messages=(("user", "Hello"),))
    other_system = GenerateRequest("Hello", 8, messages=(("system", "Be brief."), ("user", "Hello")))
    keys = {generate_parts(r, "model", "").key for r in (plain, chat, other_system)}
    assert len(keys) == 3
    # Plain prompts keep the keys they had before chat turns existed: earlier caches stay valid.
    import hashlib

    assert generate_parts(plain, "model", "").request == hashlib.sha256(b"Hello").hexdigest()


def test_memoise_computes_once_per_key_and_keeps_the_seconds_it_took(tmp_path):
    from evalkit.cache import KeyParts

    cache = ResultCache(tmp_path / "cache")
    parts = KeyParts("robustness", "m1", "", "r" * 64, "{}")
    calls: list[int] = []

    def compute() -> dict:
        calls.append(1)
        time.sleep(0.02)
        return {"held": 3, "rows": ["a", "b"]}

    assert cache.memoise(parts, compute) == {"held": 3, "rows": ["a", "b"]}
    again = ResultCache(tmp_path / "cache")  # another process, the same store
    assert again.memoise(parts, compute) == {"held": 3, "rows": ["a", "b"]}
    assert len(calls) == 1
    [(result, seconds)] = again.lookup([parts.key]).values()
    assert json.loads(result) == {"held": 3, "rows": ["a", "b"]} and seconds >= 0.02
    other = dataclasses.replace(parts, params='{"tries": 2}')  # another key part: computed again
    assert again.memoise(other, lambda: [1]) == [1] and len(calls) == 1
    assert again.count() == 2


def test_memoise_encodes_and_decodes_and_a_backend_without_a_cache_always_computes(tmp_path, tiny_backend):
    from evalkit.cache import KeyParts

    parts = KeyParts("robustness", "m1", "", "s" * 64, "{}")
    cache = ResultCache(tmp_path / "cache")
    backend = CachedBackend(cache, tiny_backend, model="m1:float32")
    first = backend.memoise(parts, lambda: (1, 2), encode=lambda v: json.dumps(list(v)), decode=lambda t: ("read", t))
    assert first == (1, 2)  # computed: the value itself
    assert backend.memoise(parts, lambda: (9, 9), decode=lambda t: ("read", t)) == ("read", "[1, 2]")
    assert backend.stats.hits == backend.stats.misses == 0  # a memoised value is not a model answer
    uncached = CachedBackend(None, tiny_backend)
    computed: list[int] = []
    for _ in range(2):
        uncached.memoise(parts, lambda: computed.append(1))
    assert computed == [1, 1]
