import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalkit.errors import ThresholdError
from evalkit.gate import parse_threshold


@pytest.mark.parametrize(
    ("expression", "op", "value"),
    [
        (">= 0.60", ">=", 0.60),
        (">0.5", ">", 0.5),
        ("<= 1", "<=", 1.0),
        ("< .25", "<", 0.25),
        ("== 1.0", "==", 1.0),
        (">= 75%", ">=", 0.75),
        ("  >=  1e-1 ", ">=", 0.1),
        (0.7, ">=", 0.7),
        (1, ">=", 1.0),
    ],
)
def test_parses_comparisons(expression, op, value):
    t = parse_threshold("accuracy", expression)
    assert (t.op, t.value) == (op, pytest.approx(value))


def test_check_applies_the_operator():
    assert parse_threshold("accuracy", ">= 0.6").check(0.6)
    assert not parse_threshold("accuracy", ">= 0.6").check(0.5999)
    assert not parse_threshold("accuracy", "> 0.6").check(0.6)
    assert parse_threshold("accuracy", "< 0.6").check(0.1)


@pytest.mark.parametrize(
    "expression", ["0.6 <=", "=> 0.6", ">= abc", "", ">= 0.6 and 1", "__import__('os')", ">= nan", True, [1]]
)
def test_rejects_what_does_not_parse(expression):
    with pytest.raises(ThresholdError) as err:
        parse_threshold("accuracy", expression)
    assert "threshold for 'accuracy'" in str(err.value)
    assert "fix:" in str(err.value)


def test_error_message_is_exact():
    with pytest.raises(ThresholdError) as err:
        parse_threshold("accuracy", "=> 0.6")
    assert str(err.value) == (
        "threshold for 'accuracy' does not parse: '=> 0.6'\n"
        '  fix: write a comparison and a number, e.g. ">= 0.60", "> 0.5" or ">= 75%"'
    )


@given(st.one_of(st.text(), st.floats(), st.integers(), st.none(), st.lists(st.integers())))
def test_any_input_parses_or_raises_threshold_error(expression):
    try:
        t = parse_threshold("accuracy", expression)
    except ThresholdError:
        return
    assert t.op in (">=", ">", "<=", "<", "==")
