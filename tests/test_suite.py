"""The suite schema: the documented contract parses, and every mistake names its file and line."""

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.errors import SuiteError
from evalkit.suite import load_suite

CONTRACT = """\
suite: ticket-routing
model: smollm2-135m-instruct        # alias of the embedded default, a local HF folder, or a hub id
dataset:
  path: data/tickets_test.jsonl     # .jsonl .json .csv .parquet, or a saved `datasets` folder
  limit: 200                        # optional: the first N rows
task:
  kind: classify                    # score every choice by its log-likelihood after the prompt
  choices: [billing, technical, account, shipping, other]   # or `choices_field: <row field>`
  target: label                     # row field with the gold choice (its text or a 0-based index)
candidates:
  zero_shot:
    prompt: ../prompts/tickets/zero_shot.j2
  few_shot:
    prompt: ../prompts/tickets/few_shot.j2
    fewshot: {path: data/tickets_train.jsonl, k: 4, seed: 0}
  inline:
    template: "Ticket: {{ text }}\\nCategory:"
    chat: false                     # true: render the text as the user turn of the model's chat template
thresholds:
  accuracy: ">= 0.60"               # applies to every candidate
  zero_shot: {accuracy: ">= 0.30"}  # per-candidate override
"""

REPO = Path(__file__).resolve().parent.parent


def test_the_documented_example_parses_against_the_repository_files():
    path = REPO / "suites" / "contract-example.tmp.yaml"
    path.write_text(CONTRACT)
    try:
        spec = load_suite(path)
    finally:
        path.unlink()
    assert spec.name == "ticket-routing"
    assert spec.model.name == "smollm2-135m-instruct"
    assert spec.dataset_limit == 200
    assert list(spec.candidates) == ["zero_shot", "few_shot", "inline"]
    assert spec.candidates["few_shot"].fewshot_k == 4
    assert spec.candidates["inline"].template == "Ticket: {{ text }}\nCategory:"
    assert spec.task.choice_prefix == " "
    assert {c: str(t["accuracy"]) for c, t in spec.thresholds.items()} == {
        "zero_shot": ">= 0.3",
        "few_shot": ">= 0.6",
        "inline": ">= 0.6",
    }


BASE = """\
suite: s
model: TINY_MODEL
dataset: {path: data/tickets.jsonl}
task: {kind: classify, choices: [billing, technical, account, shipping, other], target: label}
candidates:
  plain: {template: "Ticket: {{ text }}\\nCategory:"}
"""


def error_for(suite_dir, text: str) -> str:
    with pytest.raises(SuiteError) as err:
        load_suite(suite_dir(text))
    return str(err.value)


def test_base_suite_is_valid(suite_dir, tiny_model):
    spec = load_suite(suite_dir(BASE))
    assert spec.candidates["plain"].template == "Ticket: {{ text }}\nCategory:"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "suite: s\ndataset: [unclosed\n",
            ":3: YAML syntax error: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence started on line 2)",
        ),
        ("suite: s\n  bad indent: 1\n", ":2: YAML syntax error: mapping values are not allowed here"),
        ("- just\n- a list\n", ":1: a suite file must be a YAML mapping"),
        (BASE + "candidatez: {}\n", ":7: unknown key 'candidatez' (did you mean 'candidates'?)"),
        (BASE.replace("plain: {", "plain: {promt: x.j2, "), ":6: unknown key 'promt' (did you mean 'prompt'?)"),
        (BASE.replace("dataset: {path: data/tickets.jsonl}\n", ""), "missing required key 'dataset'"),
        (BASE.replace("data/tickets.jsonl", "data/nope.jsonl"), ":3: dataset 'data/nope.jsonl' does not exist"),
        (BASE.replace("kind: classify", "kind: clasify"), ":4: task.kind: Input should be 'classify' or 'generate'"),
        (BASE.replace(", target: label", ""), "a classify task needs `target:`"),
        (BASE + "thresholds: {accuracy: '=> 0.6'}\n", ":7: threshold for 'accuracy' does not parse"),
        (
            BASE + "thresholds:\n  acuracy: '>= 0.6'\n",
            ":8: unknown metric 'acuracy' in thresholds (did you mean 'accuracy'?)",
        ),
        (
            BASE + "thresholds:\n  plan: {accuracy: '>= 0.6'}\n",
            ":8: thresholds for 'plan', which is not a candidate (did you mean 'plain'?)",
        ),
        (BASE + "  plain: {template: x}\n", ":7: duplicate key 'plain' (first defined on line 6)"),
        (BASE.replace("plain: {", "plain: {prompt: missing.j2, "), "exactly one of `prompt:`"),
        (
            BASE.replace("candidates:\n  plain", "candidates:\n  'bad name'"),
            ":6: candidate name 'bad name' is not usable as a pytest id",
        ),
        (
            BASE.replace("kind: classify", "kind: generate, scorer: exact_mach"),
            ":4: unknown scorer 'exact_mach' (did you mean 'exact_match'?)",
        ),
        (
            BASE.replace("model: TINY_MODEL", "model: {name: TINY_MODEL, dtpe: float32}"),
            ":2: unknown key 'dtpe' (did you mean 'dtype'?)",
        ),
        (BASE.replace("plain: {", "FewShot: {promt: x, "), ":6: unknown key 'promt' (did you mean 'prompt'?)"),
        (
            BASE.replace("kind: classify", "kind: generate, scorer: {name: numeric, tolerence: 1}"),
            ":4: scorer 'numeric' has no option 'tolerence' (did you mean 'tolerance'?)",
        ),
        (
            BASE.replace("model: TINY_MODEL", "model: {name: TINY_MODEL, dtype: float64}"),
            ":2: model.dtype: Input should be 'float32', 'bfloat16', 'float16' or 'auto'",
        ),
    ],
)
def test_mistakes_name_the_file_line_and_problem(suite_dir, tiny_model, text, expected):
    message = error_for(suite_dir, text)
    assert "tickets.eval.yaml" in message
    assert expected in message


def test_unknown_key_lists_the_allowed_keys(suite_dir, tiny_model):
    message = error_for(suite_dir, BASE.replace("dataset: {", "dataset: {limt: 3, "))
    assert "unknown key 'limt' (did you mean 'limit'?)" in message
    assert "fix: allowed keys here: path, limit, id_field" in message


KEYS = [
    "suite",
    "model",
    "dataset",
    "task",
    "candidates",
    "thresholds",
    "train",
    "baseline",
    "robustness",
    "markers",
    "path",
    "limit",
    "kind",
    "choices",
    "target",
    "scorer",
    "prompt",
    "template",
    "fewshot",
    "adapter",
    "chat",
    "name",
    "dtype",
    "accuracy",
    "k",
    "seed",
    "plain",
    "perturbations",
    "examples",
    "max_drop",
    "stop",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "classify",
            "generate",
            ">= 0.5",
            "=> x",
            "data/tickets.jsonl",
            "{{ text }}",
            "exact_match",
            "billing",
            "TINY_MODEL",
            "x.j2",
            "../../etc/passwd",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)


def _parses_or_raises_suite_error(suite_dir, text: str) -> None:
    try:
        spec = load_suite(suite_dir(text, name="fuzz.eval.yaml"))
    except SuiteError as error:
        assert "fuzz.eval.yaml" in str(error)
        return
    assert spec.candidates


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8))
def test_arbitrary_suite_documents_parse_or_raise_suite_error(suite_dir, tiny_model, document):
    _parses_or_raises_suite_error(suite_dir, yaml.safe_dump(document))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_valid_suite_with_one_value_replaced_parses_or_raises_suite_error(suite_dir, tiny_model, data):
    document = yaml.safe_load(BASE)
    section = data.draw(st.sampled_from(sorted(document)))
    if isinstance(document[section], dict) and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(document[section])))
        document[section][key] = data.draw(VALUES)
    else:
        document[section] = data.draw(VALUES)
    _parses_or_raises_suite_error(suite_dir, yaml.safe_dump(document))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(max_size=200)
    | st.lists(
        st.sampled_from(
            BASE.splitlines(keepends=True)
            + ["  - x\n", "&a [*a]\n", "!!python/object:os.system 'id'\n", "? x\n", "\t", ": ", "{", "}", "'"]
        ),
        max_size=12,
    ).map("".join)
)
def test_arbitrary_suite_text_parses_or_raises_suite_error(suite_dir, tiny_model, text):
    _parses_or_raises_suite_error(suite_dir, text)


# Paths the operating system refuses outright: a NUL byte, or a name longer than the file system allows.
NUL_FIX = "\n  fix: remove the NUL byte from the path (in a double-quoted YAML string it is written \\0 or \\x00)"
LONG_NAME = "a" * 5000  # ext4, tmpfs, xfs and btrfs all allow 255 bytes in one name
LONG_FIX = "\n  fix: shorten that name to at most 255 bytes"
PLAIN = 'plain: {template: "Ticket: {{ text }}\\nCategory:"}'
TRAIN = (
    "train:\n  lora:\n    output: OUTPUT\n    data: DATA\n    template: 'Ticket: {{ text }}'\n"
    "    lora: {r: 4, alpha: 8, target_modules: [q_proj]}\n"
)


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (
            ("data/tickets.jsonl", '"data/tick\\0ets.jsonl"'),
            ":3: dataset 'data/tick\\x00ets.jsonl' contains a NUL byte (\\x00), which no file name can hold" + NUL_FIX,
        ),
        (
            ("data/tickets.jsonl", f"data/{LONG_NAME}.jsonl"),
            ":3: dataset 'data/aaaaaaaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaaaa.jsonl' has a file or folder name 5,006 bytes "
            "long; the file system allows at most 255" + LONG_FIX,
        ),
        (
            (PLAIN, 'plain: {prompt: "prompts/pla\\x00in.j2"}'),
            ":6: prompt template 'prompts/pla\\x00in.j2' contains a NUL byte (\\x00), which no file name can hold"
            + NUL_FIX,
        ),
        (
            (PLAIN, f"plain: {{prompt: prompts/{LONG_NAME}.j2}}"),
            ":6: prompt template 'prompts/aaaaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaaaaaaa.j2' has a file or folder name "
            "5,003 bytes long; the file system allows at most 255" + LONG_FIX,
        ),
        (
            (PLAIN, PLAIN[:-1] + ', fewshot: {path: "data/\\0.jsonl", k: 2}}'),
            ":6: few-shot dataset 'data/\\x00.jsonl' contains a NUL byte (\\x00), which no file name can hold"
            + NUL_FIX,
        ),
        (
            (
                "candidates:",
                TRAIN.replace("OUTPUT", "adapters/lora").replace("DATA", '"train\\0.jsonl"') + "candidates:",
            ),
            ":8: training data 'train\\x00.jsonl' contains a NUL byte (\\x00), which no file name can hold" + NUL_FIX,
        ),
        (
            (
                "candidates:",
                TRAIN.replace("OUTPUT", f"adapters/{LONG_NAME}").replace("DATA", "data/tickets.jsonl") + "candidates:",
            ),
            ":7: adapter folder 'adapters/aaaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaaaaaaaaaa' has a file or folder name 5,000 "
            "bytes long; the file system allows at most 255" + LONG_FIX,
        ),
        (
            (
                "task: {kind: classify, choices: [billing, technical, account, shipping, other], target: label}",
                'task: {kind: generate, scorer: {name: judge, model: TINY_MODEL, rubric: "judge\\0.j2"}}',
            ),
            ":4: judge rubric 'judge\\x00.j2' contains a NUL byte (\\x00), which no file name can hold" + NUL_FIX,
        ),
        (
            ("model: TINY_MODEL", f"model: ../models/{LONG_NAME}"),
            ":2: model '../models/aaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaaaaaaaaaa' has a file or folder name 5,000 bytes "
            "long; the file system allows at most 255" + LONG_FIX,
        ),
        (
            ("model: TINY_MODEL", 'model: {name: "../models/ti\\0ny", dtype: float32}'),
            ":2: model '../models/ti\\x00ny' contains a NUL byte (\\x00), which no file name can hold" + NUL_FIX,
        ),
    ],
    ids=[
        "dataset-nul",
        "dataset-long",
        "prompt-nul",
        "prompt-long",
        "fewshot-nul",
        "train-nul",
        "output-long",
        "rubric-nul",
        "model-long",
        "model-nul",
    ],
)
def test_paths_the_operating_system_refuses_name_the_line(suite_dir, replace, expected):
    old, new = replace
    assert old in BASE
    message = error_for(suite_dir, BASE.replace(old, new))
    assert message == f"{suite_dir.root / 'tickets.eval.yaml'}{expected}"


def test_the_loaders_refuse_such_paths_with_the_same_message(tmp_path, monkeypatch):
    from evalkit.data import load_dataset
    from evalkit.errors import DatasetError, TemplateError
    from evalkit.prompts import PromptTemplate

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_dataset("data\x00.jsonl")
    assert str(err.value) == (
        "data\\x00.jsonl: dataset path contains a NUL byte (\\x00), which no file name can hold" + NUL_FIX
    )
    with pytest.raises(DatasetError) as err:
        load_dataset(Path(LONG_NAME + ".csv"))
    assert str(err.value) == (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaaaaaa.csv: dataset path has a file or folder name 5,004 bytes "
        "long; the file system allows at most 255" + LONG_FIX
    )
    with pytest.raises(TemplateError) as err:
        PromptTemplate.from_file(Path("prompts") / f"{LONG_NAME}.j2")
    assert str(err.value) == (
        "prompts/aaaaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaaaaaaa.j2: template path has a file or folder name 5,003 bytes long; the file system allows at most 255"
        + LONG_FIX
    )
    with pytest.raises(TemplateError) as err:
        PromptTemplate.from_file(Path("p\x00.j2"))
    assert (
        str(err.value) == "p\\x00.j2: template path contains a NUL byte (\\x00), which no file name can hold" + NUL_FIX
    )
