"""evalkit.testing: the scripted backend answers from tables and functions, records what reached it, keys
the result cache by its answers, runs suites from YAML and from Python; docs/testing.md runs as written;
registries refuse taken names and parts of the wrong type."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import yaml

from evalkit import registry
from evalkit.backends import backend_class, backend_names
from evalkit.backends.base import BACKENDS, Backend, ChoiceRequest, ChoiceResult, GenerateRequest, GenerateResult
from evalkit.errors import EvalkitError, ModelError, ScorerError, SuiteError
from evalkit.registry import Registry
from evalkit.scoring import SCORERS, ScorerFactory
from evalkit.suite import load_suite
from evalkit.testing import RecordingBackend, Rule, ScriptedBackend, evaluate
from tests.conftest import write_jsonl

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "testing.md"
CHOICES = (" billing", " technical", " other")


def ask(backend, context: str, origin: str | None = None, choices=CHOICES) -> ChoiceResult:
    return backend.score_choices([ChoiceRequest(context, choices, origin=origin)])[0]


# --------------------------------------------------------------------------- answers


def test_classify_from_a_mapping_gives_the_first_matching_label_the_highest_logprob():
    model = ScriptedBackend({"refund": "billing", "crash": "technical"}, default="other")
    assert ask(model, "Ticket: refund after a crash") == ChoiceResult(
        (-0.1, -3.0, -3.0), (True, False, False), 5, (1, 1, 1)
    )
    assert ask(model, "Ticket: it crashed, crash").logprobs == (-3.0, -0.1, -3.0)
    assert ask(model, "Ticket: hello").logprobs == (-3.0, -3.0, -0.1)  # the default
    custom = ScriptedBackend({"refund": "billing"}, hit=-0.5, miss=-1.25)
    assert ask(custom, "refund").logprobs == (-0.5, -1.25, -1.25)


def test_rules_match_on_a_text_the_whole_prompt_or_the_row_id_all_conditions_at_once():
    model = ScriptedBackend(
        [
            {"id": "t3", "contains": "ship", "answer": "other"},
            Rule(prompt="Ticket: ship it", answer="technical"),
            {"contains": "ship", "answer": "billing"},
        ]
    )
    assert ask(model, "Ticket: ship it", origin="tickets::plain::t3::0").logprobs == (-3.0, -3.0, -0.1)
    assert ask(model, "Ticket: ship it", origin="tickets::plain::t4::0").logprobs == (-3.0, -0.1, -3.0)
    assert ask(model, "Ticket: ship it now").logprobs == (-0.1, -3.0, -3.0)
    with pytest.raises(ModelError) as info:
        ask(model, "Ticket: hello", origin="tickets::plain::t9::0")
    assert str(info.value) == (
        "the scripted backend has no answer for classify prompt 'Ticket: hello' (row t9)\n"
        "  fix: add a rule that matches it, or a `default:` answer"
    )


def test_generate_from_a_table_and_from_a_function_cut_at_the_stop_strings():
    table = ScriptedBackend({"order": "A-1042\nand more"})
    [result] = table.generate([GenerateRequest("Your order number?", 8, ("\n",))])
    assert result == GenerateResult("A-1042", 3, 1)

    def echo_last_word(request):
        return request.prompt.split()[-1] if request.kind == "generate" else None

    function = ScriptedBackend(echo_last_word, default="billing")
    assert [r.text for r in function.generate([GenerateRequest("say hello", 4), GenerateRequest("a b c", 4)])] == [
        "hello",
        "c",
    ]
    assert ask(function, "Ticket: x").logprobs == (-0.1, -3.0, -3.0)  # None: the default


def test_a_label_outside_the_choices_or_a_non_text_answer_is_refused():
    with pytest.raises(ModelError) as info:
        ask(ScriptedBackend(default="refund"), "Ticket: x")
    assert str(info.value) == (
        "the scripted answer 'refund' to prompt 'Ticket: x' is not one of its choices ['billing', 'technical', 'other']\n"
        "  fix: script one of the task's choices for a classify request"
    )
    with pytest.raises(ModelError) as info:
        ScriptedBackend(lambda request: 3).generate([GenerateRequest("p", 4)])
    assert str(info.value) == (
        "the scripted backend's answer function returned 3 for prompt 'p'\n"
        "  fix: return the answer as a text (or None for the default)"
    )
    with pytest.raises(ValueError, match=r"miss \(-0.1\) must be below hit \(-0.1\)"):
        ScriptedBackend(default="x", miss=-0.1)
    with pytest.raises(ValueError, match="needs answers or a default answer"):
        ScriptedBackend()


def test_every_request_is_recorded_with_its_kind_prompt_choices_and_row():
    model = ScriptedBackend({"refund": "billing"}, default="other")
    ask(model, "Ticket: refund\nCategory:", origin="tickets::plain::t1::0")
    model.generate([GenerateRequest("Reply:", 8, messages=(("user", "Reply:"),))])
    first, second = model.received
    assert (first.kind, first.prompt, first.choices, first.row_id) == (
        "classify",
        "Ticket: refund\nCategory:",
        ("billing", "technical", "other"),
        "t1",
    )
    assert first.request.continuations == CHOICES
    assert (second.kind, second.prompt, second.choices, second.row_id, second.messages) == (
        "generate",
        "Reply:",
        (),
        None,
        (("user", "Reply:"),),
    )
    assert model.prompts == ["Ticket: refund\nCategory:", "Reply:"] and model.calls == 2


def test_the_identity_changes_with_the_answers_and_only_with_them():
    def fingerprint(*args, **kwargs) -> str:
        return ScriptedBackend(*args, **kwargs).fingerprint

    same = fingerprint({"refund": "billing"}, default="other")
    assert same == fingerprint({"refund": "billing"}, default="other")
    assert re.fullmatch(r"scripted-[0-9a-f]{16}:none", same)
    others = {
        fingerprint({"refund": "technical"}, default="other"),
        fingerprint({"refund": "billing", "crash": "technical"}, default="other"),
        fingerprint({"refund": "billing"}, default="billing"),
        fingerprint({"refund": "billing"}, default="other", miss=-2.0),
        fingerprint([{"prompt": "refund", "answer": "billing"}], default="other"),
        fingerprint({"refund": "billing"}, default="other", identity="v2"),
    }
    assert same not in others and len(others) == 6

    def knows(words):
        return lambda request: "billing" if any(w in request.prompt for w in words) else "other"

    assert fingerprint(knows(["refund"])) == fingerprint(knows(["refund"]))
    assert fingerprint(knows(["refund"])) != fingerprint(knows(["invoice"]))  # what it closes over counts


FINGERPRINT_IN_A_PROCESS = """
from evalkit.testing import ScriptedBackend
from tests.fake_backend import keyword
def answer(request):
    return keyword(request)
print(ScriptedBackend(answer, default="x").fingerprint)
"""


def test_a_functions_identity_is_the_same_in_every_process():
    """A function closes over other functions whose reprs hold memory addresses: the identity leaves them out."""
    runs = {
        subprocess.run(
            [sys.executable, "-c", FINGERPRINT_IN_A_PROCESS], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1 and runs.pop().startswith("scripted-")


def test_the_recording_backend_watches_another_backend_unchanged():
    inner = ScriptedBackend({"refund": "billing"}, default="other")
    watched = RecordingBackend(inner)
    assert watched.fingerprint == inner.fingerprint
    assert ask(watched, "refund") == ask(inner, "refund")
    watched.load()
    watched.load()
    assert (len(watched.received), watched.calls, watched.loads) == (1, 1, 2)
    assert watched.load_s is not None and inner.loads == 2


# --------------------------------------------------------------------------- suites


TICKETS = [
    {"id": "t1", "text": "Please refund my last invoice", "label": "billing"},
    {"id": "t2", "text": "The app crashes when I log in", "label": "technical"},
    {"id": "t3", "text": "Do you ship to Norway?", "label": "other"},
]


def _tickets(tmp_path: Path, model: str, extra: str = "") -> Path:
    write_jsonl(tmp_path / "data" / "tickets.jsonl", TICKETS)
    path = tmp_path / "tickets.eval.yaml"
    path.write_text(
        "suite: tickets\n"
        f"model: {model}\n"
        "dataset: {path: data/tickets.jsonl}\n"
        "task: {kind: classify, choices: [billing, technical, other], target: label}\n"
        'candidates:\n  plain: {template: "Ticket: {{ text }}\\nCategory:"}\n' + extra
    )
    return path


def test_scripted_resolves_from_a_suite_without_an_import():
    assert "scripted" in backend_names() and backend_class("scripted") is ScriptedBackend
    code = "from evalkit.backends import backend_class; import sys; print(backend_class('scripted').__module__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["evalkit.testing", "False"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "{backend: scripted, answers: [{contains: refund}]}",
            "tickets.eval.yaml:2: model.answers: rule 1 needs `answer:` (a text), has None",
        ),
        (
            "{backend: scripted, answers: {refund: 3}}",
            "tickets.eval.yaml:2: model.answers: the answer to 'refund' is 3; answers are texts (quote a number)",
        ),
        (
            "{backend: scripted, answers: [{contain: refund, answer: billing}]}",
            "tickets.eval.yaml:2: model.answers: rule 1 has unknown key 'contain'; a rule has contains, prompt, id, answer",
        ),
        (
            "{backend: scripted, answers: answers.txt}",
            "tickets.eval.yaml:2: model.answers: a text names a table file (.jsonl, .yaml, .yml) relative to the "
            "suite; got 'answers.txt'",
        ),
        (
            "{backend: scripted, answers: 3}",
            "tickets.eval.yaml:2: model.answers: answers are a mapping {text in the prompt: answer}, a list of "
            "rules, or a table file (.jsonl, .yaml, .yml); got int",
        ),
        (
            "{backend: scripted}",
            "tickets.eval.yaml:2: model.default: the scripted backend needs `answers:` or a `default:` answer",
        ),
        (
            "{backend: scripted, default: other, hit: -5}",
            "tickets.eval.yaml:2: model.miss: miss (-3.0) must be below hit (-5.0), so the scripted label wins",
        ),
        (
            "{backend: scripted, default: other, answer: x}",
            "tickets.eval.yaml:2: unknown key 'answer' (did you mean 'answers'?)",
        ),
    ],
)
def test_bad_settings_are_suite_errors_at_their_line(tmp_path, model, message):
    with pytest.raises(SuiteError) as info:
        load_suite(_tickets(tmp_path, model))
    assert str(info.value).splitlines()[0].endswith(message)


def test_a_missing_or_bad_table_file_fails_the_run_at_the_suite_or_table_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _tickets(tmp_path, "{backend: scripted, answers: answers.jsonl}")
    with pytest.raises(ModelError) as info:
        evaluate(path, "plain")
    assert str(info.value) == (
        "tickets.eval.yaml:2: scripted answers file 'answers.jsonl' does not exist\n"
        "  fix: paths in a suite are relative to the suite file's folder"
    )
    (tmp_path / "answers.jsonl").write_text('{"contains": "refund", "answer": "billing"}\n{"contains": "crash"}\n')
    with pytest.raises(ModelError) as info:
        evaluate(path, "plain")
    assert (
        str(info.value)
        == "answers.jsonl:2: the rule needs `answer:` (a text), has None\n  fix: each line holds one rule as JSON"
    )
    (tmp_path / "answers.jsonl").write_text(
        '{"contains": "refund", "answer": "billing"}\n\n{"id": "t2", "answer": "technical"}\n'
    )
    table = ScriptedBackend.from_config(load_suite(path).model, tmp_path)
    assert [r.answer for r in table.rules] == ["billing", "technical"]
    with pytest.raises(ModelError, match="no answer for classify prompt 'Ticket: Do you ship to Norway"):
        evaluate(path, "plain")
    (tmp_path / "answers.jsonl").write_text('{"contains": "refund", "answer": "other"}\n')
    assert ScriptedBackend.from_config(load_suite(path).model, tmp_path).fingerprint != table.fingerprint


def test_an_unanswered_request_fails_the_candidate_at_the_suites_model_line(tmp_path):
    path = _tickets(tmp_path, "{backend: scripted, answers: {refund: billing}}")
    with pytest.raises(ModelError) as info:
        evaluate(path, "plain", ScriptedBackend({"refund": "billing"}))
    assert re.fullmatch(
        r".*tickets\.eval\.yaml:2: the scripted backend has no answer for classify prompt "
        r"'Ticket: The app crashes when I log in\\nCategory:' \(row t2\)\n  fix: add a rule that matches it, or a `default:` answer",
        str(info.value),
    )


def test_repeats_ask_each_sample_and_the_gate_uses_their_mean(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"id": f"q{i}", "q": f"question {i}", "a": "yes"} for i in range(4)])
    path = tmp_path / "qa.eval.yaml"
    path.write_text(
        "suite: qa\nmodel: {backend: scripted, default: 'yes'}\ndataset: {path: qa.jsonl}\n"
        "task: {kind: generate, target: a, temperature: 0.7, repeats: 3}\n"
        'candidates:\n  plain: {template: "{{ q }}"}\n'
    )
    model = ScriptedBackend(lambda request: "yes" if request.request.seed % 2 else "no")
    result = evaluate(path, "plain", model)
    assert result.repeats == 3 and len(model.received) == 12
    right = {}
    for asked in model.received:
        right.setdefault(asked.row_id, []).append(asked.request.seed % 2 == 1)
    assert [e.pass_rate for e in result.examples] == [sum(right[e.id]) / 3 for e in result.examples]
    assert result.metrics["accuracy"] == pytest.approx(sum(map(sum, right.values())) / 12)


def test_robustness_on_a_scripted_model_finds_the_flip(tmp_path):
    path = _tickets(
        tmp_path,
        "{backend: scripted, default: other}",
        "robustness: {perturbations: [case], examples: 3, tries: 10, seed: 0}\n",
    )
    model = ScriptedBackend({"refund": "billing", "crash": "technical"}, default="other")  # case-sensitive
    result = evaluate(path, "plain", model)
    flips = {f.id for f in result.robustness.flipped}
    assert result.metrics["accuracy"] == 1.0 and {"t1", "t2"} <= flips
    assert result.metrics["invariance"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- the documentation, as written


def doc_blocks() -> list[tuple[str | None, str, str]]:
    """Each fenced block of docs/testing.md: (the comment above it, its language, its text)."""
    blocks, lines, i = [], DOC.read_text().splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)$", lines[i])
        if not fence:
            i += 1
            continue
        indent, language = len(fence.group(1)), fence.group(2)
        above = lines[i - 1].strip() if i else ""
        comment = re.fullmatch(r"<!-- (.*) -->", above)
        body = []
        i += 1
        while not re.match(r"^\s*```$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        blocks.append((comment.group(1) if comment else None, language, "\n".join(body) + "\n"))
        i += 1
    return blocks


def doc_files() -> dict[str, str]:
    return {c.removeprefix("file: "): text for c, _, text in doc_blocks() if c and c.startswith("file: ")}


def doc_text_blocks() -> list[str]:
    return [text for _, language, text in doc_blocks() if language == "text"]


def test_every_yaml_block_of_the_docs_is_a_suite_file_or_a_fragment_of_one():
    yaml_blocks = [(c, t) for c, language, t in doc_blocks() if language == "yaml"]
    assert len(yaml_blocks) == 6
    for comment, text in yaml_blocks:
        assert comment is not None and comment.startswith(("file: suites/", "fragment of: suites/")), text
        assert isinstance(yaml.safe_load(text), dict)


@pytest.fixture
def doc_project(pytester):
    for name, text in doc_files().items():
        (pytester.path / name).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / name).write_text(text, encoding="utf-8")
    (pytester.path / "tox.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester


def test_the_docs_project_runs_as_written(doc_project, monkeypatch):
    """The suites pass or fail as the page says, with its message; its Python tests pass; a second run is
    answered from the result cache."""
    sources = [t for name, t in doc_files().items() if name.startswith("tests/")]
    tests = sum(len(re.findall(r"^def test_", t, re.MULTILINE)) for t in sources)
    result = doc_project.runpytest("suites", "tests")
    result.assert_outcomes(passed=3 + tests, failed=1)
    assert tests == 6
    failed = doc_text_blocks()[2]
    result.stdout.fnmatch_lines(["*crash-blind::plain*", *failed.splitlines()])
    result.stdout.fnmatch_lines(["FAILED suites/crash-blind.eval.yaml::plain - crash-blind::plain failed*"])
    again = doc_project.runpytest("suites")
    again.assert_outcomes(passed=3, failed=1)
    again.stdout.fnmatch_lines(
        ["result cache *: * requests answered from it (100%), 0 computed; the model was not loaded"]
    )


def test_the_docs_fragments_load_and_answer_every_ticket(doc_project, monkeypatch):
    monkeypatch.chdir(doc_project.path)
    fragments = [
        (c.removeprefix("fragment of: "), t) for c, _, t in doc_blocks() if c and c.startswith("fragment of: ")
    ]
    assert len(fragments) == 2
    for base, text in fragments:
        document = {**yaml.safe_load(doc_files()[base]), **yaml.safe_load(text)}
        path = doc_project.path / base
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        assert evaluate(path, "plain").metrics["accuracy"] == 1.0, text


def test_the_docs_error_messages_are_what_evalkit_says(doc_project, monkeypatch):
    monkeypatch.chdir(doc_project.path)
    suite_message, table_message = doc_text_blocks()[:2]
    path = doc_project.path / "suites" / "tickets.eval.yaml"
    path.write_text(
        path.read_text()
        .replace("    refund: billing\n", "    - {contains: refund}\n", 1)
        .replace("    crash: technical\n", "")
    )
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value).splitlines()[0] == suite_message.strip()
    table = doc_project.path / "suites" / "answers" / "tickets.jsonl"
    table.write_text(table.read_text().replace(', "answer": "technical"', ""))
    path.write_text(doc_files()["suites/tickets.eval.yaml"])
    document = {
        **yaml.safe_load(path.read_text()),
        "model": {"backend": "scripted", "answers": "answers/tickets.jsonl"},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ModelError) as info:
        evaluate(path, "plain")
    assert str(info.value).splitlines()[0] == table_message.strip()


# --------------------------------------------------------------------------- registries


class Widget:
    pass


class OneBackend(ScriptedBackend):
    pass


class OtherBackend(ScriptedBackend):
    pass


def not_a_backend():
    pass


def test_a_taken_name_is_refused_with_both_named_unless_replaced():
    parts: Registry[type[Backend]] = Registry("backend", "evalkit.test-none", error=ModelError, subclass_of=Backend)
    parts.add("double", OneBackend)
    with pytest.raises(ModelError) as info:
        parts.add("double", OtherBackend)
    assert str(info.value) == (
        "backend 'double' is already registered (tests.test_testing.OneBackend); "
        "tests.test_testing.OtherBackend cannot take its name\n"
        "  fix: give it another name, or replace it on purpose: add('double', part, replace=True)"
    )
    assert parts.get("double") is OneBackend
    parts.add("double", OneBackend)  # the same definition again (its module imported a second time)
    parts.add("double", OtherBackend, replace=True)
    assert parts.get("double") is OtherBackend


def test_the_built_in_registries_refuse_a_taken_name():
    with pytest.raises(
        ModelError, match=r"backend 'scripted' is already registered \(evalkit.testing.ScriptedBackend\)"
    ):
        BACKENDS.add("scripted", OneBackend)
    with pytest.raises(ScorerError, match=r"scorer 'exact_match' is already registered"):
        SCORERS.add("exact_match", ScorerFactory(not_a_backend))
    assert BACKENDS.get("scripted") is ScriptedBackend


def test_a_part_of_the_wrong_type_is_refused():
    backends: Registry[type[Backend]] = Registry("backend", "evalkit.test-none", error=ModelError, subclass_of=Backend)
    with pytest.raises(ModelError) as info:
        backends.add("broken", not_a_backend)  # type: ignore[arg-type]
    assert str(info.value) == (
        "backend 'broken' must be a subclass of evalkit.backends.base.Backend; got function "
        "tests.test_testing.not_a_backend\n  fix: register a subclass of Backend"
    )
    with pytest.raises(ModelError, match="got class tests.test_testing.Widget"):
        backends.add("broken", Widget)  # type: ignore[arg-type]
    widgets: Registry[Widget] = Registry("widget", "evalkit.test-none", instance_of=Widget)
    with pytest.raises(EvalkitError) as info:
        widgets.add("w", "a text")  # type: ignore[arg-type]
    assert str(info.value) == (
        "widget 'w' must be an instance of tests.test_testing.Widget; got 'a text' (a builtins.str)\n"
        "  fix: register an instance of Widget"
    )
    with pytest.raises(ScorerError, match="scorer 'x' must be an instance of evalkit.scoring.ScorerFactory"):
        SCORERS.add("x", not_a_backend)  # type: ignore[arg-type]
    assert "x" not in SCORERS and "broken" not in backends


def test_entry_points_of_the_wrong_type_or_a_taken_name_are_refused_when_asked_for(monkeypatch):
    published = [
        EntryPoint("wrong", "tests.test_testing:not_a_backend", "evalkit.test-group"),
        EntryPoint("twice", "tests.test_testing:OneBackend", "evalkit.test-group"),
        EntryPoint("twice", "tests.test_testing:OtherBackend", "evalkit.test-group"),
        EntryPoint("taken", "tests.test_testing:OtherBackend", "evalkit.test-group"),
        EntryPoint("same", "tests.test_testing:OneBackend", "evalkit.test-group"),
        EntryPoint("fine", "tests.test_testing:OneBackend", "evalkit.test-group"),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: published if group == "evalkit.test-group" else [])
    backends: Registry[type[Backend]] = Registry("backend", "evalkit.test-group", error=ModelError, subclass_of=Backend)
    backends.add("taken", OneBackend)
    backends.add("same", OneBackend)
    assert backends.names() == ["fine", "same", "taken", "twice", "wrong"]
    with pytest.raises(ModelError) as info:
        backends.get("wrong")
    assert str(info.value) == (
        "backend 'wrong' from entry point 'tests.test_testing:not_a_backend' must be a subclass of "
        "evalkit.backends.base.Backend; got function tests.test_testing.not_a_backend\n"
        "  fix: point the entry point at a subclass of evalkit.backends.base.Backend"
    )
    with pytest.raises(ModelError) as info:
        backends.get("twice")
    assert str(info.value) == (
        "backend 'twice' is published by two entry points: 'tests.test_testing:OneBackend' and "
        "'tests.test_testing:OtherBackend'\n  fix: uninstall one of the packages, or rename one of the entry points"
    )
    with pytest.raises(ModelError) as info:
        backends.get("taken")
    assert str(info.value) == (
        "backend 'taken' is registered twice: by tests.test_testing.OneBackend and by entry point "
        "'tests.test_testing:OtherBackend'\n  fix: uninstall the package that publishes it, or rename its entry point"
    )
    assert backends.get("same") is OneBackend and backends.get("fine") is OneBackend
