"""Every mistake in docs/errors.md, made in a real project and run through pytest.

Each case breaks one suite of a two-suite project and runs ``pytest suites/``. The message the table
documents must appear, pytest must end normally (exit code 0 or 1, never an internal error or a
traceback), and the unbroken suite must still run and pass.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import TICKET_ROWS, build_tiny_model, write_jsonl

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "errors.md"

GOOD = """\
suite: support
model: ../models/tiny
dataset: {path: data/support.jsonl}
task: {kind: classify, choices: [billing, technical, account, shipping, other], target: label}
candidates:
  plain: {template: "Ticket: {{ text }}\\nCategory:"}
"""

BROKEN = """\
suite: tickets
model: ../models/tiny
dataset:
  path: data/tickets.jsonl
task:
  kind: classify
  choices: [billing, technical, account, shipping, other]
  target: label
candidates:
  plain:
    prompt: ../prompts/plain.j2
thresholds:
  accuracy: ">= 0"
"""

WITH_ADAPTER = BROKEN.replace(
    "candidates:\n",
    """\
train:
  tickets-lora:
    output: ../adapters/tickets-lora
    data: data/train.jsonl
    prompt: ../prompts/plain.j2
    epochs: 1
    batch_size: 4
    lora: {r: 4, alpha: 8, target_modules: [q_proj, v_proj]}
    validation: {fraction: 0.25}
candidates:
""",
).replace("thresholds:", "  tuned:\n    prompt: ../prompts/plain.j2\n    adapter: tickets-lora\nthresholds:")

CLASSIFY_TASK = "  kind: classify\n  choices: [billing, technical, account, shipping, other]\n"
JUDGE_TASK = (
    "  kind: generate\n  scorer: {{name: judge, model: ../models/tiny, rubric: ../prompts/judge.j2{options}}}\n"
)
RUBRIC = "Ticket: {{ text }}\nCategory given: {{ output }}\nIs it right? Grade:"

TRAIN_ROWS = [
    {"id": f"t{i}-{label}", "text": f"{text} ({i})", "label": label}
    for i in range(4)
    for text, label in [
        ("My card was charged", "billing"),
        ("The page is blank", "technical"),
        ("Reset my login", "account"),
        ("The box is lost", "shipping"),
        ("Are you hiring?", "other"),  # every golden label has training rows (the trainer checks)
    ]
]


@dataclass
class Case:
    """One row of docs/errors.md: how to make the mistake, and what evalkit must say."""

    name: str
    suite: str = BROKEN
    replace: tuple[tuple[str, str], ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None
    adapter: bool = False  # copy the trained adapter into the project
    fails: str = "suite"  # the item of suites/tickets.eval.yaml that fails: "suite" (the file cannot be used), a
    # candidate, "*" (every candidate of both suites), or "" (every item passes)
    exit_code: pytest.ExitCode = pytest.ExitCode.TESTS_FAILED

    def suite_text(self) -> str:
        text = self.suite
        for old, new in self.replace:
            assert old in text, f"{self.name}: {old!r} is not in the suite"
            text = text.replace(old, new, 1)
        return text


def _rows(*changes: tuple[int, dict]) -> str:
    rows = [dict(r) for r in TICKET_ROWS]
    for index, row in changes:
        rows[index] = row
    return "".join(json.dumps(r) + "\n" for r in rows)


def _pickled_model(root: Path) -> None:
    folder = root / "models" / "pickled"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04.")


def _incomplete_adapter(root: Path) -> None:
    (root / "adapters" / "tickets-lora" / "training.json").unlink()


def _corrupt_adapter(root: Path) -> None:
    weights = root / "adapters" / "tickets-lora" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)
    weights.write_bytes(bytes(data))


def _adapter_for_another_model(root: Path) -> None:
    shutil.rmtree(root / "models" / "tiny")
    build_tiny_model(root / "models" / "tiny", seed=1)


def _foreign_baseline(root: Path) -> None:
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "baseline.json").write_text(
        json.dumps({"kind": "evalkit-baseline", "version": 99, "suites": {}})
    )


CASES = [
    Case(
        "yaml-syntax",
        replace=(("choices: [billing, technical, account, shipping, other]", "choices: [billing, technical, account"),),
    ),
    Case("unknown-key", replace=(("thresholds:", "tresholds:"),)),
    Case(
        "missing-key",
        replace=(
            (
                "task:\n  kind: classify\n  choices: [billing, technical, account, shipping, other]\n  target: label\n",
                "",
            ),
        ),
    ),
    Case("wrong-type", replace=(("  path: data/tickets.jsonl\n", "  path: data/tickets.jsonl\n  limit: all\n"),)),
    Case("unknown-backend", replace=(("model: ../models/tiny", "model: {name: ../models/tiny, backend: hff}"),)),
    Case("unknown-kind", replace=(("  kind: classify", "  kind: clasify"),)),
    Case("dataset-missing", replace=(("data/tickets.jsonl", "data/tickest.jsonl"),)),
    Case(
        "jsonl-line",
        fails="plain",
        files={"suites/data/tickets.jsonl": _rows()[:-1].replace("\n", "\n{oops\n", 1) + "\n"},
    ),
    Case("empty-dataset", fails="plain", files={"suites/data/tickets.jsonl": ""}),
    Case(
        "row-lacks-field",
        fails="plain",
        files={"suites/data/tickets.jsonl": _rows((3, {"id": "d", "body": "x", "label": "shipping"}))},
    ),
    Case("row-lacks-target", fails="plain", files={"suites/data/tickets.jsonl": _rows((2, {"id": "c", "text": "x"}))}),
    Case("template-syntax", fails="plain", files={"prompts/plain.j2": "Ticket: {{ text }}\n{% if %}\nCategory:"}),
    Case("undefined-variable", fails="plain", files={"prompts/plain.j2": "Ticket: {{ txt }}\nCategory:"}),
    Case(
        "target-not-a-choice",
        fails="plain",
        files={"suites/data/tickets.jsonl": _rows((4, {"id": "e", "text": "x", "label": "refund"}))},
    ),
    Case(
        "unknown-scorer",
        replace=(
            (
                "  kind: classify\n  choices: [billing, technical, account, shipping, other]\n",
                "  kind: generate\n  scorer: exact_mach\n",
            ),
        ),
    ),
    Case(
        "judge-rubric-output",
        replace=((CLASSIFY_TASK, JUDGE_TASK.format(options="")),),
        files={"prompts/judge.j2": "Ticket: {{ text }}\nIs the category right? Grade:"},
    ),
    Case(
        "judge-calibration-verdict",
        replace=((CLASSIFY_TASK, JUDGE_TASK.format(options=", calibration: data/judged.jsonl")),),
        files={
            "prompts/judge.j2": RUBRIC,
            "suites/data/judged.jsonl": '{"text": "I was charged twice", "output": "billing", "verdict": "C"}\n'
            '{"text": "Where is my parcel?", "output": "billing"}\n',
        },
    ),
    Case(
        "judge-grades-token",
        replace=((CLASSIFY_TASK, JUDGE_TASK.format(options=", grades: [Good, Great]")),),
        files={"prompts/judge.j2": RUBRIC},
        fails="plain",
    ),
    Case("unknown-metric", replace=(('  accuracy: ">= 0"', '  acuracy: ">= 0"'),)),
    Case("threshold-syntax", replace=(('">= 0"', '"=> 0.6"'),)),
    Case("max-reads", replace=(('  accuracy: ">= 0"\n', '  accuracy: ">= 0"\nmax_reads: 0\n'),)),
    Case("duplicate-candidate", replace=(("thresholds:", '  plain:\n    template: "{{ text }}"\nthresholds:'),)),
    Case("duplicate-suite", replace=(("suite: tickets", "suite: support"),)),
    Case("unknown-candidate", replace=(('  accuracy: ">= 0"', '  plian: {accuracy: ">= 0"}'),)),
    Case("prompt-missing", replace=(("prompts/plain.j2", "prompts/plian.j2"),)),
    Case("path-nul-byte", replace=(("  path: data/tickets.jsonl", '  path: "data/tick\\0ets.jsonl"'),)),
    Case("path-too-long", replace=(("prompts/plain.j2", "prompts/" + "p" * 5000 + ".j2"),)),
    Case(
        "template-injection",
        fails="plain",
        files={"prompts/plain.j2": "{{ text.__class__.__mro__[1].__subclasses__() }}"},
    ),
    Case("model-missing", fails="plain", replace=(("model: ../models/tiny", "model: ../models/tiy"),)),
    Case("model-offline", fails="plain", replace=(("model: ../models/tiny", "model: acme/tiny-llama"),)),
    Case(
        "model-pickle",
        fails="plain",
        replace=(("model: ../models/tiny", "model: ../models/pickled"),),
        prepare=_pickled_model,
    ),
    Case("adapter-undefined", suite=WITH_ADAPTER, replace=(("adapter: tickets-lora", "adapter: ticket-lora"),)),
    Case("adapter-missing", fails="tuned", suite=WITH_ADAPTER, args=("--evalkit-train=never",)),
    Case(
        "search-parameter",
        suite=WITH_ADAPTER,
        replace=(
            (
                "    validation: {fraction: 0.25}\n",
                "    validation: {fraction: 0.25}\n    search:\n      trials: 8\n      lora.rank: [4, 8]\n",
            ),
        ),
    ),
    Case(
        "adapter-incomplete",
        fails="tuned",
        suite=WITH_ADAPTER,
        adapter=True,
        prepare=_incomplete_adapter,
        args=("--evalkit-train=never",),
    ),
    Case(
        "adapter-corrupt",
        fails="tuned",
        suite=WITH_ADAPTER,
        adapter=True,
        prepare=_corrupt_adapter,
        args=("--evalkit-train=never",),
    ),
    Case(
        "adapter-other-model",
        fails="tuned",
        suite=WITH_ADAPTER,
        adapter=True,
        prepare=_adapter_for_another_model,
        args=("--evalkit-train=never",),
    ),
    Case("baseline-corrupt", fails="*", files={"reports/baseline.json": '{"kind": "evalkit-baseline",'}),
    Case("baseline-version", fails="*", prepare=_foreign_baseline),
    Case(
        "cache-corrupt",
        files={".evalkit_cache/results.sqlite": "not a database"},
        fails="",
        exit_code=pytest.ExitCode.OK,
    ),
    Case(
        "reports-unwritable",
        fails="",
        files={"reports": "a file where the reports folder should be"},
        args=("--evalkit-baseline", "baseline.json"),
    ),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The unbroken project, with the tiny model copied in and the adapter trained once."""
    root = tmp_path_factory.mktemp("errors-project")
    shutil.copytree(tiny_model, root / "models" / "tiny")
    write_jsonl(root / "suites" / "data" / "support.jsonl", TICKET_ROWS)
    write_jsonl(root / "suites" / "data" / "tickets.jsonl", TICKET_ROWS)
    write_jsonl(root / "suites" / "data" / "train.jsonl", TRAIN_ROWS)
    (root / "prompts").mkdir()
    (root / "prompts" / "plain.j2").write_text("Ticket: {{ text }}\nCategory:")
    (root / "suites" / "support.eval.yaml").write_text(GOOD)
    (root / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n"
    )
    from evalkit.train import ensure_adapter

    (root / "suites" / "tickets.eval.yaml").write_text(WITH_ADAPTER)
    ensure_adapter(root / "suites" / "tickets.eval.yaml", "tickets-lora")
    shutil.rmtree(root / "adapters" / ".tickets-lora.partial", ignore_errors=True)
    return root


def make_project(template: Path, target: Path, case: Case) -> None:
    for entry in template.iterdir():
        if entry.name == "adapters" and not case.adapter:
            continue
        (shutil.copytree if entry.is_dir() else shutil.copy)(entry, target / entry.name)
    (target / "suites" / "tickets.eval.yaml").write_text(case.suite_text())
    for name, text in case.files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if case.prepare is not None:
        case.prepare(target)


@dataclass
class CliCase:
    """A row of the `evalkit diff` table in docs/errors.md: what to damage in run B of a pair of runs."""

    name: str
    damage: Callable[[Path], None]
    run_b: str = "20261121T100000Z"


def _write(relative: str, text: str) -> Callable[[Path], None]:
    return lambda run: (run / relative).write_text(text)


def _edit_record(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        record = json.loads((run / "results.json").read_text())
        change(record)
        (run / "results.json").write_text(json.dumps(record))

    return damage


CLI_CASES = [
    CliCase("run-missing", lambda run: None, run_b="20261121T10000Z"),
    CliCase("run-record-corrupt", _write("results.json", '{"schema_version": 2, "run": {')),
    CliCase("run-record-version", _edit_record(lambda r: r.update(schema_version=9))),
    CliCase(
        "run-record-shape",
        _edit_record(lambda r: r["suites"]["tickets"]["few_shot"]["metrics"].update(accuracy="high")),
    ),
    CliCase(
        "run-record-row", _write("examples.jsonl", '{"suite": "tickets", "candidate": "few_shot", "id": "t-000"}\n')
    ),
]


def documented_messages() -> dict[str, list[str]]:
    """The table in docs/errors.md: case name -> the ``double-backtick`` texts its message column holds."""
    table = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `([a-z0-9-]+)` \|.*\| (.*) \|$", line)
        if match:
            table[match.group(1)] = [text.strip() for text in re.findall(r"``(.+?)``(?!`)", match.group(2))]
    return table


def test_the_table_documents_exactly_the_tested_cases():
    documented = documented_messages()
    assert list(documented) == [case.name for case in CASES] + [case.name for case in CLI_CASES]
    assert all(documented.values())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_documented_mistake(case: Case, template: Path, pytester: pytest.Pytester):
    make_project(template, pytester.path, case)
    result = pytester.runpytest("suites", "-v", *case.args)
    out = result.stdout.str() + result.stderr.str()
    for text in documented_messages()[case.name]:
        assert text in out, f"{case.name}: docs/errors.md says {text!r}"
    assert "Traceback" not in out
    assert result.ret == case.exit_code
    failed = {line.split(" ")[0] for line in out.splitlines() if " FAILED" in line and "::" in line}
    if case.fails == "*":
        assert failed == {"suites/support.eval.yaml::plain", "suites/tickets.eval.yaml::plain"}
    elif case.fails:
        assert failed == {f"suites/tickets.eval.yaml::{case.fails}"}, out
    else:
        assert failed == set()
    if case.fails != "*":  # the unbroken suite ran and passed
        assert "suites/support.eval.yaml::plain PASSED" in out


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_each_documented_run_record_mistake(case: CliCase, tmp_path, monkeypatch, capsys):
    from evalkit.cli import main
    from tests.reports_helpers import candidate_result, write_record

    monkeypatch.chdir(tmp_path)
    results = [candidate_result([i % 3 != 0 for i in range(30)], candidate=name) for name in ("few_shot", "zero_shot")]
    write_record(Path("reports"), "20261120T100000Z", results)
    case.damage(write_record(Path("reports"), "20261121T100000Z", results))
    assert main(["diff", "20261120T100000Z", case.run_b]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in documented_messages()[case.name]:
        assert text in err, f"{case.name}: docs/errors.md says {text!r}"


@pytest.mark.parametrize("selection", [("-k", "support"), ("-m", "not evalkit")])
def test_a_broken_suite_is_reported_whatever_the_selection(selection, template: Path, pytester: pytest.Pytester):
    """`-k` and `-m` choose among candidates; a suite file that cannot be read is an error either way."""
    make_project(template, pytester.path, next(case for case in CASES if case.name == "unknown-key"))
    result = pytester.runpytest("suites", *selection)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "suites/tickets.eval.yaml:12: unknown key 'tresholds' (did you mean 'thresholds'?)",
            "FAILED suites/tickets.eval.yaml::suite*",
        ]
    )
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 1 and outcomes.get("passed", 0) == (1 if selection[0] == "-k" else 0)
