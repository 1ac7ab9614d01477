import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalkit.errors import TemplateError
from evalkit.prompts import PromptTemplate, select_fewshot


def test_renders_fields_choices_and_examples():
    t = PromptTemplate(
        "{% for ex in examples %}Q: {{ ex.q }} A: {{ ex.gold }}\n{% endfor %}Q: {{ q }} ({{ choices | join('/') }})"
    )
    text = t.render({"q": "2+2", "choices": ["3", "4"], "examples": [{"q": "1+1", "gold": "2"}]}, row_label="d.jsonl:1")
    assert text == "Q: 1+1 A: 2\nQ: 2+2 (3/4)"


def test_file_template_drops_one_trailing_newline(tmp_path):
    path = tmp_path / "p.j2"
    path.write_text("Ticket: {{ text }}\nCategory:\n")
    assert PromptTemplate.from_file(path).render({"text": "hi"}, row_label="r") == "Ticket: hi\nCategory:"


def test_undefined_variable_names_template_row_and_fields(tmp_path):
    path = tmp_path / "p.j2"
    path.write_text("Line one\nTicket: {{ txt }}\n")
    with pytest.raises(TemplateError) as err:
        PromptTemplate.from_file(path).render({"text": "hi", "label": "x"}, row_label="tickets.jsonl:17")
    message = str(err.value)
    assert message.startswith(f"{path}:2: 'txt' is undefined (did you mean 'text'?) while rendering tickets.jsonl:17")
    assert "use a field the row has (label, text)" in message


def test_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "p.j2"
    path.write_text("ok\n{% for x in y %}\nno end\n")
    with pytest.raises(TemplateError) as err:
        PromptTemplate.from_file(path)
    assert str(err.value).startswith(f"{path}:2: template syntax error: Unexpected end of template")


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ text.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ self._TemplateReference__context }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{{ lipsum.__globals__['os'].listdir('/') }}",
        "{{ namespace.__init__.__globals__.__builtins__.open('/etc/passwd').read() }}",
        "{{ text.format.__self__.__class__ }}",
        "{{ 'x' * 10 ** 10 }}",
        "{{ 'ab' * 900000 }}",
        "{{ 9 ** 999999 }}",
    ],
)
def test_sandbox_blocks_known_injection_payloads(payload):
    with pytest.raises(TemplateError) as err:
        PromptTemplate(payload).render({"text": "x"}, row_label="row 1")
    assert "while rendering row 1" in str(err.value)


def test_a_file_template_cannot_include_files_outside_its_folder(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "secret.txt").write_text("token")
    (tmp_path / "prompts" / "part.j2").write_text("shared part")
    template = tmp_path / "prompts" / "t.j2"
    template.write_text('{% include "part.j2" %}')
    assert PromptTemplate.from_file(template).render({}, row_label="row 1") == "shared part"
    for target in ("../secret.txt", "/etc/passwd"):
        template.write_text('{% include "' + target + '" %}')
        with pytest.raises(TemplateError) as err:
            PromptTemplate.from_file(template).render({}, row_label="row 1")
        assert str(err.value) == (
            f"{template}:1: template includes '{target}', which is not a file in the "
            "template's folder prompts/ (while rendering row 1)\n"
            "  fix: include, import or extend only templates beside this one"
        )


def test_template_hash_follows_the_source():
    assert PromptTemplate("a").sha256 == PromptTemplate("a").sha256 != PromptTemplate("b").sha256


def test_fewshot_selection_is_seeded():
    rows = list(range(20))
    assert select_fewshot(rows, 4, 0) == select_fewshot(rows, 4, 0)
    assert select_fewshot(rows, 4, 0) != select_fewshot(rows, 4, 1)
    assert len(set(select_fewshot(rows, 4, 0))) == 4
    assert select_fewshot(rows[:3], 5, 0) == [0, 1, 2]


@given(st.text(max_size=80))
def test_arbitrary_templates_render_or_raise_template_error(source):
    try:
        out = PromptTemplate(source).render({"text": "x", "choices": ["a", "b"], "examples": []}, row_label="row 1")
    except TemplateError:
        return
    assert isinstance(out, str)


JINJA_PIECES = [
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    " ",
    "text",
    "choices",
    "examples",
    "loop",
    "x",
    "|",
    "upper",
    "join",
    "length",
    "for",
    "in",
    "endfor",
    "if",
    "endif",
    "else",
    "set",
    "=",
    "(",
    ")",
    "[",
    "]",
    ".",
    ",",
    "'",
    '"',
    "0",
    "1",
    "-1",
    "*",
    "**",
    "~",
    "+",
    "%",
    "__class__",
    "__globals__",
    "range",
    "include",
    "import",
    "macro",
    "endmacro",
    "\n",
    "é",
    "\x00",
]


@given(st.lists(st.sampled_from(JINJA_PIECES), max_size=30).map("".join))
def test_template_fragments_render_or_raise_template_error(source):
    """Sequences of Jinja tokens reach the parser's and the sandbox's error paths far more often than random text."""
    try:
        out = PromptTemplate(source).render(
            {"text": "x", "choices": ["a", "b"], "examples": [{"text": "y"}]}, row_label="row 1"
        )
    except TemplateError as error:
        assert "row 1" in str(error) or "syntax error" in str(error)
        return
    assert isinstance(out, str)
