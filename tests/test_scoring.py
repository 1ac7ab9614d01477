import pytest

from evalkit import scoring
from evalkit.errors import ScorerError
from evalkit.scoring import Score, build_scorer, register_scorer


def score(name, output, target, **options):
    return build_scorer(name, options)(output, target)


@pytest.mark.parametrize(
    ("output", "target", "correct"),
    [
        ("Paris", "paris", True),
        ("  Paris. ", "Paris", True),
        ("#A12345", "A12345", True),
        ("Paris, France", "Paris", False),
        ("", "Paris", False),
        ("blue", ["red", "Blue"], True),
    ],
)
def test_exact_match(output, target, correct):
    assert score("exact_match", output, target).correct is correct


def test_exact_match_case_sensitive_option():
    assert not score("exact_match", "paris", "Paris", ignore_case=False).correct


def test_contains():
    assert score("contains", "The answer is Paris, of course", "paris").correct
    assert not score("contains", "London", "Paris").correct
    assert (
        score("contains", "it was  December 1972", ["14 December 1972", "December 1972"]).extracted == "December 1972"
    )


def test_regex_extracts_the_group_and_compares():
    s = score("regex", "Order: #A-991 shipped", "A-991", pattern=r"#([A-Z]-\d+)")
    assert (s.correct, s.extracted) == (True, "A-991")
    assert not score("regex", "nothing here", "A-991", pattern=r"#([A-Z]-\d+)").correct


TEAMS = ["billing", "technical", "account", "shipping", "other"]


@pytest.mark.parametrize(
    ("output", "letters", "extracted"),
    [
        ("technical", False, "technical"),
        ("It looks like billing at first, but it is a Technical issue.", False, "technical"),  # the last match wins
        ("billing-related", False, "billing"),
        ("otherwise fine", False, None),  # a choice only as a whole word
        ("I cannot tell.", False, None),
        ("B", True, "technical"),
        ("The answer is (D)", True, "shipping"),
        ("A billing problem. Answer: C.", True, "account"),  # the article "A" is not a letter; the last one wins
        ("Answer: B", False, None),  # letters only when asked for
        ("Z)", True, None),  # a letter past the choices
    ],
)
def test_choice_maps_the_output_to_one_of_the_choices(output, letters, extracted):
    result = score("choice", output, "technical", choices=TEAMS, letters=letters)
    assert result.extracted == extracted
    assert result.correct is (extracted == "technical")


def test_choice_takes_the_gold_choice_as_text_or_index_and_checks_its_options():
    assert score("choice", "shipping", 3, choices=TEAMS).correct
    assert score("choice", "shipping", "Shipping", choices=TEAMS).correct
    with pytest.raises(ScorerError, match="scorer 'choice': `choices` must list at least two non-empty choices"):
        build_scorer("choice", {"choices": ["only"]})


def test_regex_bad_pattern_is_a_scorer_error():
    with pytest.raises(ScorerError, match="does not compile"):
        build_scorer("regex", {"pattern": "(unclosed"})


@pytest.mark.parametrize(
    ("output", "target", "options", "correct"),
    [
        ("The total is 1,234.50 dollars", "1234.5", {}, True),
        ("$42", 42, {}, True),
        ("about 3.14159", "3.14", {"tolerance": 0.01}, True),
        ("about 3.2", "3.14", {"tolerance": 0.01}, False),
        ("first 7 then 9", "9", {"pick": "last"}, True),
        ("first 7 then 9", "9", {}, False),
        ("no number", "1", {}, False),
        ("101", "100", {"tolerance": 0.02, "relative": True}, True),
    ],
)
def test_numeric(output, target, options, correct):
    assert score("numeric", output, target, **options).correct is correct


def test_json_validity_schema_and_target():
    schema = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}
    assert score("json", '{"city": "Oslo"}', None).correct
    assert score("json", '```json\n{"city": "Oslo"}\n```', None).correct
    assert not score("json", "{city: Oslo}", None).correct
    assert not score("json", '{"town": "Oslo"}', None, schema=schema).correct
    assert score("json", '{"city": "Oslo"}', None, schema=schema).correct
    assert score("json", '{"city": "Oslo"}', '{"city": "Oslo"}', match_target=True).correct
    assert not score("json", '{"city": "Bergen"}', {"city": "Oslo"}, match_target=True).correct


def test_json_schema_from_file(tmp_path):
    (tmp_path / "schema.json").write_text('{"type": "array"}')
    fn = build_scorer("json", {"schema": "schema.json"}, base_dir=tmp_path)
    assert fn("[1, 2]", None).correct and not fn("{}", None).correct


def test_f1_token_overlap():
    s = score("f1", "the Eiffel tower in Paris", "Eiffel Tower")
    # predicted tokens: eiffel tower in paris (4), gold: eiffel tower (2): P=0.5 R=1 F1=2/3
    assert s.value == pytest.approx(2 / 3)
    assert s.correct  # >= min_f1 0.5
    assert not score("f1", "the Eiffel tower in Paris", "Eiffel Tower", min_f1=0.9).correct
    assert score("f1", "", "").value == 1.0


def test_unknown_scorer_suggests_the_closest():
    with pytest.raises(ScorerError) as err:
        build_scorer("exact_mach")
    assert str(err.value).startswith("unknown scorer 'exact_mach' (did you mean 'exact_match'?)")


def test_unknown_option_is_named():
    with pytest.raises(ScorerError) as err:
        build_scorer("numeric", {"tolerence": 0.1})
    assert "scorer 'numeric' has no option 'tolerence' (did you mean 'tolerance'?)" in str(err.value)


def test_register_scorer_and_result_normalisation():
    @register_scorer("startswith_test")
    def factory(prefix: str = ""):
        return lambda output, target: output.startswith(prefix + str(target))

    try:
        fn = build_scorer("startswith_test", {"prefix": ">"})
        assert fn(">yes", "yes") == Score(1.0, True)
        assert fn("yes", "yes") == Score(0.0, False)
    finally:
        scoring.SCORERS.remove("startswith_test")


def test_scorer_returning_garbage_is_reported():
    register_scorer("bad_test")(lambda: lambda output, target: "yes")
    try:
        with pytest.raises(ScorerError, match="returned 'yes'"):
            build_scorer("bad_test")("x", "y")
    finally:
        scoring.SCORERS.remove("bad_test")


def test_entry_point_scorers_are_discovered(monkeypatch):
    from importlib.metadata import EntryPoint

    ep = EntryPoint(name="length_ratio", value="tests.custom_scorer:length_ratio", group=scoring.ENTRY_POINT_GROUP)
    from evalkit import registry

    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == scoring.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(scoring, "SCORERS", scoring.SCORERS.copy())
    assert "length_ratio" in scoring.available_scorers()
    assert build_scorer("length_ratio")("abcd", "ab").value == 0.5
