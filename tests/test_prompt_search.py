"""The prompt's search and its plain options: stratified and nearest demos, contextual calibration, the
`search:` block on a candidate (seeded, pruned, resumable, stored as an artifact), and the golden set kept
out of every search request."""

from __future__ import annotations

import json
import math
import random
import textwrap
from pathlib import Path

import pytest

from evalkit.backends.base import Backend, ChoiceRequest, ChoiceResult, GenerateResult, ModelIdentity
from evalkit.cache import ResultCache
from evalkit.data import load_dataset
from evalkit.errors import SuiteError
from evalkit.fewshot import select_stratified
from evalkit.prompt_search import PromptSearchError, ensure_prompt_search, search_outcome, search_table
from evalkit.runner import Resources, answering_backend, evaluate_candidate
from evalkit.suite import load_suite
from evalkit.testing import RecordingBackend
from tests.conftest import write_jsonl

LABELS = ["billing", "technical", "account"]
WORDS = {
    "billing": ["invoice", "charged", "refund", "payment", "receipt"],
    "technical": ["crash", "error", "bug", "freeze", "timeout"],
    "account": ["password", "login", "profile", "username", "locked"],
}


def ticket_rows(n: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = LABELS[i % 3]
        word = rng.choice(WORDS[label])
        rows.append(
            {"id": f"{prefix}{i}", "text": f"{prefix}{i} my {word} is {rng.choice(['bad', 'odd'])}", "label": label}
        )
    return rows


class KeywordBackend(Backend):
    """A fast deterministic model: a choice scores higher the more often the prompt names it (so demos of
    the row's own label help), with a fixed lean toward the first choices (which calibration removes)."""

    def __init__(self) -> None:
        self.identity = ModelIdentity("keyword-model", "none")

    @classmethod
    def from_config(cls, model, base_dir, *, notify=None) -> KeywordBackend:
        return cls()

    def apply_chat_template(self, messages) -> str:
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def score_choices(self, requests):
        out = []
        for r in requests:
            text = r.context.lower()
            question = text.rsplit("ticket:", 1)[-1]
            logprobs = tuple(
                -2.0
                + 0.4 * text.count(c.strip())
                + 1.5 * any(w in question for w in WORDS.get(c.strip(), []))
                - 0.3 * i
                for i, c in enumerate(r.continuations)
            )
            out.append(ChoiceResult(logprobs, (False,) * len(logprobs), len(text.split()), (1,) * len(logprobs)))
        return out

    def generate(self, requests):
        return [GenerateResult(r.prompt.strip().split()[-1], 1, 1) for r in requests]


class BatchesKeywordBackend(KeywordBackend):
    """The keyword model, keeping each call's requests."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[ChoiceRequest]] = []

    def score_choices(self, requests):
        self.batches.append(list(requests))
        return super().score_choices(requests)


FEW_SHOT = (
    "{% for ex in examples %}Ticket: {{ ex.text }}\nCategory: {{ ex.gold }}\n{% endfor %}Ticket: {{ text }}\nCategory:"
)
ZERO_SHOT = "Classify: {{ choices | join(', ') }}.\nTicket: {{ text }}\nCategory:"

SEARCH = """\
    search:
      trials: {trials}
      dev: {{fraction: 0.3}}
      chunks: 3
      fewshot.k: [0, 1, 3]
      fewshot.select: [random, stratified, nearest]
      fewshot.order: [drawn, nearest_last]
      fewshot.seed: {{low: 0, high: 1000}}
      template: [zero_shot.j2, few_shot.j2]
      calibration: [none, contextual]
      seed: {seed}
"""


@pytest.fixture
def searched(tmp_path: Path, tiny_model: Path):
    """A suite folder with disjoint pool and golden rows and two templates; returns a writer of the suite."""
    write_jsonl(tmp_path / "data" / "pool.jsonl", ticket_rows(30, 1, "p"))
    write_jsonl(tmp_path / "data" / "test.jsonl", ticket_rows(12, 2, "t"))
    (tmp_path / "few_shot.j2").write_text(FEW_SHOT)
    (tmp_path / "zero_shot.j2").write_text(ZERO_SHOT)

    def write(search: str | None = None, trials: int = 6, seed: int = 0, candidate: str = "", model: str = "") -> Path:
        block = search if search is not None else SEARCH.format(trials=trials, seed=seed)
        text = textwrap.dedent(
            f"""\
            suite: tickets
            model: {model or tiny_model}
            dataset: {{path: data/test.jsonl}}
            task: {{kind: classify, choices: [billing, technical, account], target: label}}
            candidates:
              tuned:
                prompt: few_shot.j2
                fewshot: {{path: data/pool.jsonl, k: 1}}
            """
        )
        path = tmp_path / "tickets.eval.yaml"
        path.write_text(text + block + candidate)
        return path

    write.root = tmp_path
    return write


def _strip_timing(artifact: dict) -> dict:
    artifact = dict(artifact)
    artifact.pop("timing")
    artifact["trials"] = [{k: v for k, v in t.items() if k != "seconds"} for t in artifact["trials"]]
    return artifact


def _search(path: Path, backend: Backend, *, mode: str = "auto", cache: ResultCache | None = None, notify=None):
    spec = load_suite(path)
    candidate = spec.candidates["tuned"]
    return ensure_prompt_search(
        spec, candidate, answering_backend(spec, backend, None, cache), mode=mode, notify=notify
    ), spec


# --------------------------------------------------------------------------- plain options


def test_stratified_demos_cover_every_label():
    rows = ticket_rows(30, 0, "p")
    labels = [r["label"] for r in rows]
    for seed in range(20):
        picked = select_stratified(rows, labels, 3, seed)
        assert sorted(r["label"] for r in picked) == sorted(LABELS)
        six = select_stratified(rows, labels, 6, seed)
        assert sorted(r["label"] for r in six) == sorted(LABELS * 2) and len({r["id"] for r in six}) == 6
    assert select_stratified(rows, labels, 6, 1) == select_stratified(rows, labels, 6, 1)


def test_nearest_demos_equal_a_direct_tfidf_computation(searched, tiny_backend):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    from evalkit.data import load_dataset
    from evalkit.tasks import prepare

    path = searched(search="", candidate="")
    text = path.read_text().replace("k: 1}", "k: 3, select: nearest}")
    path.write_text(text)
    spec = load_suite(path)
    golden = load_dataset(spec.dataset_path)
    prepared = prepare(spec, spec.candidates["tuned"], golden, tiny_backend.apply_chat_template)
    pool = [json.loads(line) for line in (searched.root / "data" / "pool.jsonl").read_text().splitlines()]
    vectorizer = TfidfVectorizer()
    matrix = vectorizer.fit_transform([r["text"] for r in pool])
    for row, prompt in zip(golden.rows, prepared.prompts):
        similarity = cosine_similarity(vectorizer.transform([row.fields["text"]]), matrix)[0]
        expected = sorted(range(len(pool)), key=lambda i: (-round(float(similarity[i]), 10), i))[:3]
        assert [r.id for r in prepared.demos.rows_for(row.fields)] == [pool[i]["id"] for i in expected]
        shown = [line.removeprefix("Ticket: ") for line in prompt.splitlines() if line.startswith("Ticket: ")]
        assert shown == [pool[i]["text"] for i in expected] + [row.fields["text"]]  # most similar first
    path.write_text(text.replace("select: nearest}", "select: nearest, order: nearest_last}"))
    spec = load_suite(path)
    reordered = prepare(spec, spec.candidates["tuned"], golden, tiny_backend.apply_chat_template)
    first = golden.rows[0].fields
    assert reordered.demos.rows_for(first) == prepared.demos.rows_for(first)[::-1]


def test_contextual_calibration_equals_a_hand_computation(searched, tiny_backend):
    path = searched(search="", candidate="")
    path.write_text(path.read_text().replace("k: 1}", "k: 2, seed: 3}\n    calibration: contextual"))
    spec = load_suite(path)
    result = evaluate_candidate(spec, "tuned", Resources(backend=lambda *_: tiny_backend))

    pool = {r["id"]: r for r in ticket_rows(30, 1, "p")}
    demos = [pool[i] for i in random.Random(3).sample(sorted(pool, key=lambda k: int(k[1:])), 2)]
    shots = "".join(f"Ticket: {d['text']}\nCategory: {d['label']}\n" for d in demos)
    choices = tuple(" " + c for c in LABELS)

    def probabilities(text: str) -> list[float]:
        (answer,) = tiny_backend.score_choices([ChoiceRequest(f"{shots}Ticket: {text}\nCategory:", choices)])
        exp = [math.exp(v) for v in answer.logprobs]
        return [e / sum(exp) for e in exp]

    content_free = [probabilities(t) for t in ("N/A", "", "[MASK]")]
    prior = [sum(p[c] for p in content_free) / 3 for c in range(3)]
    flips = 0
    for example, row in zip(result.examples, ticket_rows(12, 2, "t")):
        p = probabilities(row["text"])
        calibrated = [p[c] / prior[c] for c in range(3)]
        assert example.output == LABELS[max(range(3), key=lambda c: calibrated[c])]
        flips += example.output != LABELS[max(range(3), key=lambda c: p[c])]
    assert flips > 0  # the prior is not flat on the random model: calibration changes answers

    plain = load_suite(path.write_text(path.read_text().replace("calibration: contextual", "")) and path)
    uncalibrated = evaluate_candidate(plain, "tuned", Resources(backend=lambda *_: tiny_backend))
    assert uncalibrated.prompts_sha256 != result.prompts_sha256  # calibration is part of the identity

    from evalkit.fewshot import prompt_identity
    from evalkit.tasks import prepare

    prepared = prepare(spec, spec.candidates["tuned"], load_dataset(spec.dataset_path), None, {})
    assert prepared.calibration is not None
    prepared.calibration.measure(prepared, tiny_backend, [0])
    before = prompt_identity(prepared)
    key = next(iter(prepared.calibration.priors))
    prepared.calibration.priors[key] = tuple(p + 1e-7 for p in prepared.calibration.priors[key])
    assert prompt_identity(prepared) == before == result.prompts_sha256  # not the priors' last digits


def test_content_free_requests_go_in_the_rows_call_once_per_demo_set(searched):
    """Each demo set's three content-free inputs are asked in the same backend call as its rows, so they
    share the demos' computed prefix; a set measured once is not asked again."""
    path = searched(search="", candidate="")
    path.write_text(
        path.read_text().replace("k: 1}", "k: 2, seed: 3, order: nearest_last}\n    calibration: contextual")
    )
    backend = BatchesKeywordBackend()
    result = evaluate_candidate(load_suite(path), "tuned", Resources(backend=lambda *_: backend))
    (first,) = backend.batches
    demo_sets = {e.prompt.rsplit("Ticket: ", 1)[0] for e in result.examples}  # the two demos, in either order
    assert len(demo_sets) == 2 and len(first) == 12 + 3 * 2
    content_free = sorted(tuple(r.context.rsplit("Ticket: ", 1)) for r in first if r.origin is None)
    inputs = ["N/A\nCategory:", "\nCategory:", "[MASK]\nCategory:"]
    assert content_free == sorted((demos, text) for demos in demo_sets for text in inputs)


def test_robustness_decides_a_perturbed_row_calibrated_as_the_candidate_does(searched, tiny_backend):
    from evalkit.data import load_dataset
    from evalkit.robustness.perturb import PerturbedRow
    from evalkit.tasks import prepare

    path = searched(search="", candidate="")
    path.write_text(path.read_text().replace("k: 1}", "k: 2, seed: 3}\n    calibration: contextual"))
    spec = load_suite(path)
    result = evaluate_candidate(spec, "tuned", Resources(backend=lambda *_: tiny_backend))
    raw = [max(e.details["logprobs"].items(), key=lambda kv: kv[1])[0] for e in result.examples]
    assert any(answer != e.output for answer, e in zip(raw, result.examples))  # calibration changes answers
    golden = load_dataset(spec.dataset_path)
    prepared = prepare(spec, spec.candidates["tuned"], golden, tiny_backend.apply_chat_template)
    unchanged = [PerturbedRow(r.id, {"text": r.fields["text"]}, list(LABELS)) for r in golden.rows]
    assert prepared.kind.predict(prepared, tiny_backend, unchanged) == [e.output for e in result.examples]


# --------------------------------------------------------------------------- the search


def test_a_seeded_search_picks_the_same_trials_and_artifact_twice(searched):
    path = searched(trials=8, seed=3)
    first, spec = _search(path, KeywordBackend())
    artifact_path = spec.candidates["tuned"].search_artifact_path(spec.path, spec.name)
    assert artifact_path == searched.root / "prompts" / ".search" / "tickets" / "tuned.json"
    one = json.loads(artifact_path.read_text())
    again, _ = _search(path, KeywordBackend(), mode="always")
    two = json.loads(artifact_path.read_text())
    assert _strip_timing(one) == _strip_timing(two)
    assert first.searched_now and again.searched_now and len(first.distinct) == 8
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    best = one["trials"][one["best"]["trial"]]
    assert best["state"] == "complete" and best["value"] == one["best"]["dev_accuracy"]
    assert one["best"]["dev_accuracy"] == max(t["value"] for t in one["trials"] if t["value"] is not None)
    assert one["settings"] == best["params"]
    assert len(one["excluded_ids"]) == 9  # 30% of 30 pool rows, 3 per label
    assert all(len(t["steps"]) in (1, 2, 3) for t in one["trials"])  # a running score per dev chunk
    assert set(one["hashes"]) == {"space", "pool", "templates", "model"}
    if one["demo_ids"] is not None:
        assert not set(one["demo_ids"]) & set(one["excluded_ids"])  # a dev row is never a demo
    other, _ = _search(searched(trials=8, seed=4), KeywordBackend(), mode="always")
    assert [t.params for t in other.trials] != [t.params for t in first.trials]


def test_options_that_cannot_change_the_requests_are_not_sampled(searched):
    path = searched(trials=16, seed=1)
    (searched.root / "included.j2").write_text('{% include "zero_shot.j2" %}')
    path.write_text(
        path.read_text().replace(
            "template: [zero_shot.j2, few_shot.j2]", "template: [zero_shot.j2, few_shot.j2, included.j2]"
        )
    )
    outcome, spec = _search(path, KeywordBackend())
    demo_options = {"fewshot.k", "fewshot.select", "fewshot.order", "fewshot.seed"}
    seen = set()
    for trial in outcome.trials:
        params = trial.params
        options = set(params) & demo_options
        if params["template"] == "zero_shot.j2":  # it shows no demos: none of their options is sampled
            assert options == set()
        elif params["fewshot.k"] == 0:
            assert options == {"fewshot.k"}
        else:  # a template that shows demos, or includes another, which may
            assert ("fewshot.seed" in params) == (params["fewshot.select"] != "nearest")
            assert ("fewshot.order" in params) == (params["fewshot.k"] > 1)
        assert "calibration" in params
        seen.add((params["template"], params.get("fewshot.k")))
    assert (
        ("zero_shot.j2", None) in seen and ("included.j2", 1) in seen and any(t == "few_shot.j2" and k for t, k in seen)
    )
    table = search_table(outcome).splitlines()[0].split()  # every option has its column
    assert {"fewshot.k", "fewshot.seed", "template", "calibration"} <= set(table)
    task_spec, candidate = outcome.applied(spec, spec.candidates["tuned"])
    assert candidate.fewshot is not None and candidate.fewshot.k == outcome.settings.get("fewshot.k", 1)


def test_a_repeated_configuration_is_not_run_again_nor_counted(searched):
    block = "    search:\n      trials: 3\n      chunks: 3\n      template: [zero_shot.j2]\n      calibration: [none, contextual]\n"
    path = searched(search=block)  # two configurations in all: the template shows no demos
    backend, lines = BatchesKeywordBackend(), []
    outcome, spec = _search(path, backend, notify=lines.append)
    repeats = [t for t in outcome.trials if t.same_as is not None]
    assert len(outcome.distinct) == 2 and len(outcome.trials) == 4 * 3  # it gave up after four draws a trial
    assert {frozenset(t.params.items()) for t in outcome.distinct} == {
        frozenset({"template": "zero_shot.j2", "calibration": c}.items()) for c in ("none", "contextual")
    }
    for t in repeats:
        original = outcome.trials[t.same_as]
        assert original.same_as is None and original.number < t.number and t.params == original.params
        assert (t.state, t.value, t.steps, t.seconds) == (original.state, original.value, original.steps, 0.0)
    # only the two configurations asked the model (a call per dev chunk), and the chosen one's calibration
    assert len(backend.batches) <= 2 * 3 + 1
    info = outcome.info(0.5, (0.4, 0.6))
    assert info.trials == 2 and [i for i, v in enumerate(info.trial_scores) if v is not None] == [
        t.number for t in outcome.distinct
    ]  # a repeat is not drawn again
    assert "tuned: 2 distinct configurations in 12 draws; the space seems to hold fewer than 3" in lines
    assert sum("again, not counted" in line for line in lines) == 10
    assert "as trial 1" in search_table(outcome) or "as trial 2" in search_table(outcome)


def test_no_golden_row_reaches_the_model_during_a_search(searched):
    path = searched(trials=6)
    recording = RecordingBackend(KeywordBackend())
    _search(path, recording)
    golden = [r["text"] for r in ticket_rows(12, 2, "t")]
    assert recording.received  # the search asked the model
    for prompt in recording.prompts:
        assert not [text for text in golden if text in prompt]
    pool_texts = {r["text"] for r in ticket_rows(30, 1, "p")}
    assert any(text in prompt for prompt in recording.prompts for text in pool_texts)


def test_a_pool_that_shares_a_row_with_the_golden_set_is_refused(searched):
    path = searched(trials=2)
    rows = ticket_rows(30, 1, "p")
    rows[4] = {**ticket_rows(12, 2, "t")[7], "id": "copied"}
    write_jsonl(searched.root / "data" / "pool.jsonl", rows)
    recording = RecordingBackend(KeywordBackend())
    with pytest.raises(PromptSearchError) as error:
        _search(path, recording)
    assert str(error.value).startswith(f"{searched.root / 'data' / 'pool.jsonl'}:5: the few-shot pool of candidate")
    assert "shares 1 row(s) with the golden set (pool.jsonl:5 = test.jsonl:8)" in str(error.value)
    assert not recording.received


@pytest.mark.parametrize(
    ("fewshot", "which"),
    [
        ("k: 3, select: nearest}", "its pool (select: nearest: any row may be a demo)"),
        ("k: 30, seed: 0}", "its demos"),  # a fixed set that holds every pool row
    ],
)
def test_a_plain_candidate_whose_demos_duplicate_golden_rows_fails(searched, fewshot, which):
    path = searched(search="")
    path.write_text(path.read_text().replace("k: 1}", fewshot))
    rows = ticket_rows(30, 1, "p")
    rows[4] = {**ticket_rows(12, 2, "t")[7], "id": "copied", "text": ticket_rows(12, 2, "t")[7]["text"].upper()}
    write_jsonl(searched.root / "data" / "pool.jsonl", rows)
    result = evaluate_candidate(load_suite(path), "tuned", Resources(backend=lambda *_: KeywordBackend()))
    assert not result.passed
    assert result.failures == [
        f"candidate 'tuned' shows few-shot demos that duplicate golden rows: 1 row(s) of {which} "
        "(pool.jsonl:5 = test.jsonl:8); remove them from pool.jsonl (or from the golden set)"
    ]
    write_jsonl(searched.root / "data" / "pool.jsonl", ticket_rows(30, 1, "p"))
    assert evaluate_candidate(load_suite(path), "tuned", Resources(backend=lambda *_: KeywordBackend())).failures == []


def test_every_trial_answer_goes_through_the_result_cache(searched, tmp_path):
    path = searched(trials=5)
    cache = ResultCache(tmp_path / "cache")
    _search(path, KeywordBackend(), cache=cache)
    recording = RecordingBackend(KeywordBackend())
    _search(path, recording, mode="always", cache=cache)  # the same trials again: every answer is stored
    assert recording.received == []


def test_changed_space_pool_or_template_is_stale_and_unchanged_searches_nothing(searched):
    path = searched(trials=4)
    _search(path, KeywordBackend())
    recording = RecordingBackend(KeywordBackend())
    outcome, _ = _search(path, recording)
    assert not outcome.searched_now and recording.received == []
    lines: list[str] = []
    path.write_text(path.read_text().replace("fewshot.k: [0, 1, 3]", "fewshot.k: [0, 1, 2]"))
    assert _search(path, KeywordBackend(), notify=lines.append)[0].searched_now
    assert "searching it because the search space or the candidate's options changed" in lines[0]
    (searched.root / "zero_shot.j2").write_text(ZERO_SHOT + " ")
    lines.clear()
    assert _search(path, KeywordBackend(), notify=lines.append)[0].searched_now
    assert "because template zero_shot.j2 changed" in lines[0]
    write_jsonl(searched.root / "data" / "pool.jsonl", ticket_rows(30, 5, "p"))
    with pytest.raises(PromptSearchError, match="is stale: the few-shot pool changed"):
        _search(path, KeywordBackend(), mode="never")
    assert _search(path, KeywordBackend())[0].searched_now


def test_an_interrupted_search_resumes_from_its_study(searched):
    class Interrupting(KeywordBackend):
        calls = 0

        def score_choices(self, requests):
            Interrupting.calls += 1
            if Interrupting.calls == 7:
                raise KeyboardInterrupt
            return super().score_choices(requests)

    path = searched(trials=6)
    with pytest.raises(KeyboardInterrupt):
        _search(path, Interrupting())
    studies = list((searched.root / "prompts" / ".search" / "tickets").glob(".tuned.study-*"))
    assert len(studies) == 1 and (studies[0] / "search.db").is_file()
    lines: list[str] = []
    resumed, _ = _search(path, KeywordBackend(), notify=lines.append)
    finished = [line for line in lines if "resuming the search after" in line]
    assert finished and not finished[0].endswith("after 0 finished trials")
    assert len(resumed.distinct) == 6 and not studies[0].exists()  # the study goes once the artifact is written
    assert sum(t.retry_of is not None for t in resumed.trials) <= 1  # the interrupted trial, run again


def test_pytest_policy_uses_the_artifact_as_it_is(searched, tiny_backend):
    path = searched(trials=4)
    spec = load_suite(path)
    with pytest.raises(PromptSearchError, match="prompt search of candidate 'tuned' is missing"):
        evaluate_candidate(spec, "tuned", Resources(backend=lambda *_: tiny_backend, search_mode="never"))
    resources = Resources(backend=lambda *_: tiny_backend, search_mode="auto")
    result = evaluate_candidate(spec, "tuned", resources)
    outcome = resources.prompt_searches[("tickets", "tuned")]
    assert outcome.searched_now and search_outcome(spec, "tuned") == dataclass_replace(outcome, searched_now=False)
    assert result.n == 12 and 0 <= outcome.dev_accuracy <= 1
    gap = outcome.optimism_gap(result.metrics["accuracy"], result.ci95["accuracy"])
    assert gap.gap == pytest.approx(outcome.dev_accuracy - result.metrics["accuracy"], abs=1e-6)
    again = Resources(backend=lambda *_: tiny_backend, search_mode="never")
    assert evaluate_candidate(spec, "tuned", again).metrics == result.metrics  # the artifact, as it is


def dataclass_replace(outcome, **changes):
    import dataclasses

    return dataclasses.replace(outcome, **changes)


def test_evalkit_search_prints_a_line_per_trial_and_a_table(searched, capsys, monkeypatch):
    from evalkit.cli import main

    path = searched(trials=3)
    path.write_text(path.read_text())
    monkeypatch.chdir(searched.root)
    assert main(["search", str(path), "tuned", "--cache-dir", ""]) == 0
    out = capsys.readouterr().out
    assert [out.count(f"({n}/3): ") for n in (1, 2, 3)] == [1, 1, 1] and "[#######" in out
    assert out.count("tuned trial ") == 3 + out.count("again, not counted")  # repeats say so and are not counted
    assert "tickets::tuned: searched" in out and "* best: trial" in out
    assert main(["search", str(path)]) == 0
    assert "tickets::tuned: up to date" in capsys.readouterr().out
    assert main(["search", str(path), "nope"]) == 2
    assert "suite 'tickets' has no candidate 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    "block, line, message",
    [
        (
            "    search:\n      trials: 3\n      fewshot.k: [0, 100]\n",
            11,
            "search: fewshot.k = 100 is not a valid value: Input should be less than or equal to 64",
        ),
        (
            "    search:\n      trials: 3\n      fewshot.select: [random, closest]\n",
            11,
            "search: fewshot.select = 'closest' is not a valid value: Input should be 'random', 'stratified' or 'nearest'",
        ),
        (
            "    search:\n      trials: 3\n      temperature: [0, 0.5]\n",
            11,
            "'temperature' applies to generate tasks only",
        ),
        (
            "    search:\n      trials: 3\n      fewshot.kk: [1]\n",
            11,
            "'fewshot.kk' is not a searchable option (did you mean 'fewshot.k'?)",
        ),
        (
            "    search:\n      trials: 3\n      template: [missing.j2]\n",
            11,
            "prompt template 'missing.j2' does not exist",
        ),
        (
            "    search:\n      trials: 3\n      fewshot.seed: {low: 5, high: 1}\n",
            11,
            "candidates.tuned.search.fewshot.seed: low (5) must be below high (1)",
        ),
        (
            "    search:\n      trials: 3\n      fewshot.seed: {low: 0.5, high: 3}\n",
            11,
            "search: 'fewshot.seed' takes whole numbers: a range of integers",
        ),
        (
            "    search:\n      trials: 3\n      calibration: [none, platt]\n",
            11,
            "search: calibration = 'platt' is not a valid value: Input should be 'none' or 'contextual'",
        ),
        (
            "    search:\n      trials: 0\n      fewshot.k: [1]\n",
            10,
            "candidates.tuned.search.trials: Input should be greater than or equal to 1",
        ),
        (
            "    search:\n      trials: 3\n      objective: test_accuracy\n      fewshot.k: [1]\n",
            11,
            "candidates.tuned.search.objective: Input should be 'dev_accuracy' or 'cv_accuracy'",
        ),
        (
            "    search:\n      trials: 3\n      dev: {fraction: 1.5}\n      fewshot.k: [1]\n",
            11,
            "candidates.tuned.search.dev.fraction: Input should be less than 1",
        ),
        ("    search:\n      trials: 3\n", 9, "name at least one option to search"),
        ("    calibration: always\n", 9, "candidates.tuned.calibration: Input should be 'none' or 'contextual'"),
    ],
)
def test_each_bad_search_setting_names_its_line(searched, block, line, message):
    path = searched(search=block)
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    assert str(error.value).startswith(f"{path}:{line}: {message}"), str(error.value)


def test_a_search_without_a_pool_and_generate_only_options(searched):
    path = searched(search="")
    path.write_text(
        path.read_text().replace("    fewshot: {path: data/pool.jsonl, k: 1}\n", "")
        + "    search: {trials: 2, calibration: [none]}\n"
    )
    with pytest.raises(SuiteError, match=r":8: candidate 'tuned' has a `search:` but no few-shot pool"):
        load_suite(path)
    generate = path.read_text().replace(
        "{kind: classify, choices: [billing, technical, account], target: label}", "{kind: generate, target: label}"
    )
    path.write_text(
        generate.replace("calibration: [none]", "fewshot.k: [1]").replace(
            "    search:", "    fewshot: {path: data/pool.jsonl}\n    calibration: contextual\n    search:"
        )
    )
    with pytest.raises(SuiteError, match=r":9: calibration: contextual divides out a label prior"):
        load_suite(path)


def test_cross_validated_objective_scores_every_pool_row_in_folds(searched):
    block = SEARCH.format(trials=3, seed=0).replace(
        "      chunks: 3\n", "      objective: cv_accuracy\n      folds: 3\n"
    )
    outcome, _ = _search(searched(search=block), KeywordBackend())
    assert outcome.objective == "cv_accuracy" and outcome.excluded_ids == [] and outcome.dev_n == 30
    assert all(1 <= len(t.steps) <= 3 for t in outcome.trials)
    complete = [t for t in outcome.trials if t.state == "complete"]
    assert all(len(t.steps) == 3 and t.value == t.steps[-1] for t in complete)  # the mean over the folds


def test_a_generate_search_chooses_decoding_options_too(searched):
    from evalkit.prompt_search import apply_settings

    path = searched(search="")
    text = path.read_text().replace(
        "{kind: classify, choices: [billing, technical, account], target: label}", "{kind: generate, target: label}"
    )
    block = """\
    chat: true
    search:
      trials: 4
      dev: {fraction: 0.3}
      system: [null, "Answer with one word."]
      max_new_tokens: {low: 2, high: 8}
      temperature: [0.0]
      stop: [["\\n"], ["\\n", "."]]
      fewshot.k: [0, 1]
"""
    path.write_text(text + block)
    outcome, spec = _search(path, KeywordBackend())
    assert set(outcome.settings) == {"system", "max_new_tokens", "temperature", "stop", "fewshot.k"}
    assert outcome.settings["stop"] in (["\n"], ["\n", "."]) and 2 <= outcome.settings["max_new_tokens"] <= 8
    task_spec, candidate = apply_settings(spec, spec.candidates["tuned"], outcome.settings)
    assert task_spec.task.max_new_tokens == outcome.settings["max_new_tokens"]
    assert task_spec.task.stop == outcome.settings["stop"] and candidate.system == outcome.settings["system"]
    assert spec.task.max_new_tokens == 32  # the suite itself is unchanged
    path.write_text(text + block.replace("    chat: true\n", ""))
    with pytest.raises(SuiteError, match=r":12: search: system messages apply only with `chat: true`"):
        load_suite(path)


class GenerationCalls(KeywordBackend):
    """The keyword model, keeping how many rows each generation call held."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def generate(self, requests):
        self.calls.append(len(requests))
        return super().generate(requests)


class ScriptedTrial:
    """An Optuna trial stand-in: keeps what is reported and prunes when told to."""

    def __init__(self, prune: bool) -> None:
        self.prune, self.reported = prune, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.prune


@pytest.mark.parametrize("prune", [False, True])
def test_a_generate_trial_decodes_its_first_chunk_alone_and_the_rest_in_one_call(searched, prune):
    from evalkit.prompt_search import _Search

    path = searched(search="")
    text = path.read_text().replace(
        "{kind: classify, choices: [billing, technical, account], target: label}", "{kind: generate, target: label}"
    )
    path.write_text(text + "    search: {trials: 2, dev: {fraction: 0.4}, chunks: 4, fewshot.k: [1]}\n")
    spec = load_suite(path)
    backend = GenerationCalls()
    search = _Search(spec, spec.candidates["tuned"], backend, load_dataset(spec.candidates["tuned"].fewshot_path), None)
    search.split()
    trial = ScriptedTrial(prune)
    value, steps, scored, pruned = search.evaluate({"fewshot.k": 1}, trial)
    assert len(search.dev) == 12
    if prune:  # the pruner looked after the first chunk, and nothing more was decoded
        assert (backend.calls, len(steps), scored, pruned) == ([3], 1, 3, True)
    else:  # the other three chunks in one call, each still a step of the record
        assert (backend.calls, len(steps), scored, pruned) == ([3, 9], 4, 12, False)
        assert [step for step, _ in trial.reported] == [1, 2, 3, 4] and steps[-1] == value
    backend.calls.clear()
    search.evaluate({"fewshot.k": 1}, chunks=1)
    assert backend.calls == [12]


def test_pytest_suites_searches_under_the_train_policy(pytester, tiny_model):
    write_jsonl(pytester.path / "data" / "pool.jsonl", ticket_rows(30, 1, "p"))
    write_jsonl(pytester.path / "data" / "test.jsonl", ticket_rows(12, 2, "t"))
    (pytester.path / "few_shot.j2").write_text(FEW_SHOT)
    (pytester.path / "zero_shot.j2").write_text(ZERO_SHOT)
    suite = textwrap.dedent(
        f"""\
        suite: tickets
        model: {tiny_model}
        dataset: {{path: data/test.jsonl}}
        task: {{kind: classify, choices: [billing, technical, account], target: label}}
        candidates:
          tuned:
            prompt: few_shot.j2
            fewshot: {{path: data/pool.jsonl, k: 1}}
        """
    )
    (pytester.path / "tickets.eval.yaml").write_text(suite + SEARCH.format(trials=3, seed=0))
    refused = pytester.runpytest("tickets.eval.yaml", "--evalkit-train=never", "-p", "no:cacheprovider")
    refused.assert_outcomes(failed=1)
    refused.stdout.fnmatch_lines(["*tickets.eval.yaml:6: the prompt search of candidate 'tuned' is missing: *"])
    artifact = pytester.path / "prompts" / ".search" / "tickets" / "tuned.json"
    assert not artifact.exists()
    pytester.runpytest("tickets.eval.yaml", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    written = artifact.read_text()
    pytester.runpytest("tickets.eval.yaml", "--evalkit-train=never", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert artifact.read_text() == written  # used as it is
