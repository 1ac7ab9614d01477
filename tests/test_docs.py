"""The documentation cannot drift from what evalkit does.

Every page (README.md, BENCHMARKS.md and docs/*.md) is checked for: the pytest options it names, the
`evalkit` subcommands and their options, the scripts it runs, the links between pages (anchors included),
and its code: each ```yaml suite or suite fragment is read by evalkit's own suite loader, each ```toml
cost table by evalkit's price reader, and the worked examples marked ``<!-- docs-check: run -->`` run.

A block may be marked on the line before its fence, sparingly:

- ``<!-- docs-check: run -->``: a Python block that is run (it may register parts the page then uses);
- ``<!-- docs-check: paths-elsewhere -->``: a suite whose files belong to another project (the one a test
  builds); it is read with its paths left unchecked;
- ``<!-- docs-check: not-a-suite -->``: YAML that is no suite at all.

A page that builds a small project marks each of its files with ``<!-- file: PATH -->``; its suites are
read inside that project, built from every such block of the page.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted(DOCS.glob("*.md"))]
# A suite fragment is checked inside this suite, on the demo's data and prompts (paths from suites/).
BASE_SUITE = """\
suite: docs-fragment
model: smollm2-135m-instruct
dataset: {path: data/tickets_test.jsonl}
task: {kind: classify, choices: [billing, technical, account, shipping, other], target: label}
train:
  tickets-lora: {output: ../adapters/tickets-lora, data: data/tickets_train.jsonl, prompt: ../prompts/tickets/plain.j2}
candidates:
  zero_shot: {prompt: ../prompts/tickets/zero_shot.j2}
  few_shot: {prompt: ../prompts/tickets/few_shot.j2, fewshot: {path: data/tickets_train.jsonl, k: 4, seed: 0}}
  inline: {template: "Ticket: {{ text }}\\nCategory:"}
  lora: {prompt: ../prompts/tickets/plain.j2, adapter: tickets-lora}
thresholds: {accuracy: ">= 0.5"}
"""
MARKERS = {"run", "paths-elsewhere", "not-a-suite"}


def _ids(pages):
    return [str(p.relative_to(ROOT)) for p in pages]


# --------------------------------------------------------------------------- reading pages


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence
    lang: str
    body: str
    marker: str | None
    file: str | None = None  # the project file it is (<!-- file: PATH -->)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


FENCE = re.compile(r"^(\s*)(`{3,})(\w*)\s*$")


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page`` (indented ones in lists too), each with the marker before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, ticks, lang = opening.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks)
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end])
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = re.fullmatch(r"<!-- docs-check: ([a-z-]+) -->", before)
        file = re.fullmatch(r"<!-- file: (\S+) -->", before)
        found.append(Block(page, i + 1, lang, body, marker.group(1) if marker else None, file and file.group(1)))
        i = end + 1
    return found


def prose(page: Path) -> str:
    """``page`` without its fenced blocks (links and headings live here)."""
    text = page.read_text(encoding="utf-8")
    return re.sub(r"^([ \t]*)(`{3,})\w*[ \t]*\n.*?^\1\2[ \t]*$", "", text, flags=re.S | re.M)


def code_spans(page: Path) -> list[str]:
    """Everything ``page`` shows as code: inline spans, and the blocks of commands (not outputs)."""
    spans = re.findall(r"`([^`\n]+)`", prose(page))
    return spans + [b.body for b in blocks(page) if b.lang in ("bash", "sh", "console", "")]


def _hook():
    spec = importlib.util.spec_from_file_location("evalkit_docs_hook", DOCS / "hooks" / "evalkit_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def slug(heading: str) -> str:
    """An anchor as MkDocs (Python-Markdown's toc) and GitHub make it from a heading."""
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = prose(page)
    if "<!-- run-record-fields -->" in text:  # the field reference the site's hook generates
        text = text.replace("<!-- run-record-fields -->", _hook().record_tables())
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M)}


# --------------------------------------------------------------------------- the pages are all there


def test_every_docs_page_is_in_the_nav_and_starts_with_what_it_teaches():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r":\s*([\w-]+\.md)\s*$", config, flags=re.M))
    assert {"index.md", "getting-started.md", "testing.md", "BENCHMARKS.md"} <= nav
    ours = {p.name for p in DOCS.glob("*.md")} - {"getting-started.md", "testing.md"}
    assert sorted(ours - nav) == []
    for name in ours:
        paragraphs = [p for p in (DOCS / name).read_text().split("\n\n") if p.strip()]
        assert paragraphs[0].startswith("# "), name
        assert re.match(r"After reading this page you (can|know)", paragraphs[1]), name


# --------------------------------------------------------------------------- suites and fragments


def _suite_keys() -> set[str]:
    from evalkit.spec import SuiteConfig

    return {field.alias or name for name, field in SuiteConfig.model_fields.items()}


def _merged(base: dict, fragment: dict) -> dict:
    """``fragment`` written into ``base``: mappings merge key by key, except a task of another kind and a
    model of another backend, which replace the base's whole section."""
    out = dict(base)
    for key, value in fragment.items():
        here = out.get(key)
        replaces = (
            key == "task" and isinstance(here, dict) and value.get("kind", here.get("kind")) != here["kind"]
        ) or (key == "model" and not isinstance(here, dict))
        if isinstance(value, dict) and isinstance(here, dict) and not replaces:
            out[key] = _merged(here, value)
        else:
            out[key] = value
    return out


def _demo_project(tmp_path: Path) -> Path:
    """A project beside the demo's data and prompts: a suite written to ``suites/`` resolves them as the demo's."""
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "data").symlink_to(ROOT / "suites" / "data")
    (tmp_path / "prompts").symlink_to(ROOT / "prompts")
    return tmp_path / "suites" / "doc.eval.yaml"


def _yaml_blocks(pages):
    return [b for page in pages for b in blocks(page) if b.lang == "yaml"]


YAML_BLOCKS = _yaml_blocks(PAGES)


def test_the_docs_show_suites():
    assert len(YAML_BLOCKS) >= 15
    assert all(b.marker in (None, *MARKERS) for page in PAGES for b in blocks(page))


def _registries() -> list:
    import evalkit.backends  # noqa: F401  (registers the built-in backends)
    import evalkit.suite  # noqa: F401  (and the built-in task kinds and scorers)
    from evalkit.backends.base import BACKENDS
    from evalkit.robustness import PERTURBATIONS
    from evalkit.scoring import SCORERS
    from evalkit.tasks import TASK_KINDS

    return [BACKENDS, SCORERS, TASK_KINDS, PERTURBATIONS]


@pytest.fixture
def registries():
    """Runs a page's worked examples; the parts they register are forgotten after the test."""
    added: list[tuple] = []

    def run(page: Path) -> None:
        before = {registry: set(registry.names()) for registry in _registries()}
        for block in blocks(page):
            if block.marker == "run":
                exec(compile(block.body, block.where, "exec"), {"__name__": f"docs_{page.stem}"})
        added.extend((registry, name) for registry, names in before.items() for name in set(registry.names()) - names)

    yield run
    for registry, name in added:
        registry.remove(name)


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[b.where for b in YAML_BLOCKS])
def test_every_yaml_snippet_is_a_suite_evalkit_reads(block: Block, tmp_path, monkeypatch, registries):
    from evalkit.suite import _Reader, load_suite

    if block.marker == "not-a-suite":
        yaml.safe_load(block.body)
        return
    registries(block.page)
    if block.file is not None:  # a file of the project the page builds
        for part in blocks(block.page):
            if part.file is not None:
                (tmp_path / part.file).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / part.file).write_text(part.body + "\n")
        load_suite(tmp_path / block.file)
        return
    document = yaml.safe_load(block.body)
    assert isinstance(document, dict), f"{block.where}: not a mapping; mark it <!-- docs-check: not-a-suite -->"
    if "suite" not in document:
        unknown = set(document) - _suite_keys()
        assert not unknown, f"{block.where}: {sorted(unknown)} are not suite keys: not a suite fragment"
        document = _merged(yaml.safe_load(BASE_SUITE), document)
    if block.marker == "paths-elsewhere":
        monkeypatch.setattr(_Reader, "existing", lambda self, relative, *loc, what: (self.base / relative).resolve())
    suite = _demo_project(tmp_path)
    suite.write_text(yaml.safe_dump(document, sort_keys=False))
    load_suite(suite)  # raises SuiteError naming the line of the snippet's mistake


def test_a_wrong_snippet_is_caught(tmp_path):
    from evalkit.errors import SuiteError
    from evalkit.suite import load_suite

    suite = _demo_project(tmp_path)
    document = _merged(yaml.safe_load(BASE_SUITE), {"candidates": {"inline": {"promt": "x.j2"}}})
    suite.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(SuiteError, match="unknown key 'promt'"):
        load_suite(suite)


def test_cost_tables_are_read_by_the_price_reader(tmp_path):
    from evalkit.costs import read_cost_model

    tables = [b for page in PAGES for b in blocks(page) if b.lang == "toml"]
    assert tables
    for block in tables:
        parsed = tomllib.loads(block.body)
        if "tool" in parsed:
            (tmp_path / "pyproject.toml").write_text(block.body)
            prices = read_cost_model(tmp_path / "pyproject.toml")
            assert prices.models, block.where


def test_the_worked_backend_and_scorer_answer(registries):
    from evalkit.backends import open_backend
    from evalkit.backends.base import ChoiceRequest, GenerateRequest, ModelConfig
    from evalkit.scoring import SCORERS

    registries(DOCS / "extending.md")
    backend = open_backend(ModelConfig(backend="keyword", name="demo", miss=-2.0), ROOT)
    (scored,) = backend.score_choices(
        [ChoiceRequest("My card was charged twice. Billing?", (" technical", " billing"))]
    )
    assert scored.logprobs == (-2.0, -0.5)
    (generated,) = backend.generate([GenerateRequest("Where is order 12345", max_new_tokens=4)])
    assert generated.text == "12345"
    score = SCORERS.get("starts_with").factory(ignore_case=True)
    assert score("Billing department", "billing").correct
    assert score("Bill me", "billing").value == pytest.approx(4 / 7)


def test_the_worked_perturbation_registers(registries):
    from evalkit.robustness import PERTURBATIONS

    registries(DOCS / "robustness.md")
    assert "shout" in PERTURBATIONS.names()


# --------------------------------------------------------------------------- commands, scripts, links


def test_every_documented_option_exists(pytester):
    documented = set()
    for doc in [*PAGES, DOCS / "examples" / "evalkit-gate.yml"]:
        documented |= set(re.findall(r"--evalkit-[a-z-]+", doc.read_text()))
    assert "--evalkit-update-baseline" in documented
    help_text = pytester.runpytest("--help").stdout.str()
    missing = sorted(option for option in documented if option not in help_text)
    assert missing == []


def _cli_help(capsys, *argv: str) -> str:
    from evalkit.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_every_evalkit_command_shown_exists_with_its_options(capsys):
    top = _cli_help(capsys)
    commands = set(re.search(r"\{([a-z,-]+)\}", top).group(1).split(","))
    shown: dict[str, set[str]] = {}
    for page in PAGES:
        for span in code_spans(page):
            for line in span.splitlines():
                # a command begins the span or line, or follows `python -m` or a shell prompt
                for match in re.finditer(r"(?:^|^\$ |-m )evalkit\s+([a-z][a-z-]*)(.*)", line.strip()):
                    options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", match.group(2).split("|")[0].split(";")[0])
                    shown.setdefault(f"{page.name}: {match.group(1)}", set()).update(options)
    assert {"train", "diff", "history", "cache"} <= {k.split(": ")[1] for k in shown}
    unknown = sorted(key for key in shown if key.split(": ")[1] not in commands)
    assert unknown == [], f"not `evalkit` subcommands: {unknown}"
    for key, options in shown.items():
        help_text = _cli_help(capsys, key.split(": ")[1])
        assert sorted(o for o in options if o not in help_text) == [], key


def test_every_script_shown_exists():
    shown = set()
    for page in PAGES:
        shown |= {
            (page.name, p) for p in re.findall(r"(?:bash|python)\s+((?:scripts|benchmarks)/[\w./-]+)", page.read_text())
        }
    assert ("README.md", "scripts/demo.sh") in shown and ("README.md", "scripts/test.sh") in shown
    assert sorted((page, path) for page, path in shown if not (ROOT / path).is_file()) == []


def test_the_quickstart_is_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "## Quickstart\n\n```bash\nbash scripts/demo.sh\nbash scripts/test.sh\n```\n" in readme


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading '#{anchor}'")
    assert broken == []


# --------------------------------------------------------------------------- the architecture tour


def _definitions() -> tuple[set[str], dict[str, set[str]]]:
    functions: set[str] = set()
    classes: dict[str, set[str]] = {}
    for path in (ROOT / "evalkit").rglob("*.py"):
        module = ast.parse(path.read_text())
        functions |= {
            t.id for n in module.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }
        for node in ast.walk(module):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.add(node.name)
            elif isinstance(node, ast.ClassDef):
                classes[node.name] = {
                    n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                }
    return functions, classes


def test_the_tour_names_real_functions_once_each():
    from pydantic import BaseModel

    text = (DOCS / "architecture.md").read_text()
    tour = text[text.index("## The path of one suite") :]
    names = [s for s in re.findall(r"`([^`\n]+)`", tour) if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)?", s)]
    not_code = {"pytest11", "invariance", "config.stash"}
    names = [n for n in names if n not in not_code and not n.startswith("evalkit.")]
    assert len(names) > 40
    functions, classes = _definitions()
    undefined = []
    for name in names:
        owner, _, attr = name.rpartition(".")
        if owner:
            if owner not in classes or (attr not in classes[owner] and not hasattr(BaseModel, attr)):
                undefined.append(name)
        elif name not in functions and name not in classes:
            undefined.append(name)
    assert undefined == []
    assert sorted(n for n, count in Counter(names).items() if count > 1) == []


def test_the_layout_lists_every_module():
    text = (DOCS / "architecture.md").read_text()
    layout = text[text.index("## Layout") : text.index("## Data flow")]
    missing = []
    for path in sorted((ROOT / "evalkit").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if path.name in ("__init__.py", "version.py") and relative.parent.name != "backends":
            continue
        folder = f"{relative.parent}/"
        if str(relative) not in layout and not (folder in layout and path.name in layout):
            missing.append(str(relative))
    assert missing == []
    listed = re.findall(r"^(evalkit/[\w/]*\.py|[\w/]+/)\s", layout.split("```text")[1], flags=re.M)
    assert len(listed) > 30
    assert sorted(p for p in listed if not (ROOT / p.split()[0]).exists()) == []


# --------------------------------------------------------------------------- the run record's reference


def test_the_field_reference_covers_every_field_of_the_records():
    from pydantic import BaseModel

    from evalkit import record

    tables = _hook().record_tables()
    paths = re.findall(r"^\| `([^`]+)` \|", tables, flags=re.M)
    tails = {re.sub(r"\[\]$", "", p.rsplit(".", 1)[-1]) for p in paths}
    models = [
        v
        for v in vars(record).values()
        if isinstance(v, type) and issubclass(v, BaseModel) and v.__module__ == record.__name__
    ]
    fields = {info.alias or name for model in models for name, info in model.model_fields.items()}  # as written
    assert sorted(fields - tails) == []
    assert "suites.<suite>.<candidate>.metrics" in paths and "run.models[].fingerprint" in paths


def test_the_ci_workflow_example_runs_the_suites_without_training_and_keeps_the_reports(pytester):
    workflow = yaml.safe_load((DOCS / "examples" / "evalkit-gate.yml").read_text())
    steps = workflow["jobs"]["evalkit"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert re.search(r"pytest suites/ .*--evalkit-train=never .*--junitxml=reports/junit.xml", commands)
    assert "reports/latest/summary.md" in commands and "$GITHUB_STEP_SUMMARY" in commands
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact"))
    assert "reports/latest/" in upload["with"]["path"] and upload["if"] == "always()"
    assert workflow["permissions"]["pull-requests"] == "write"
