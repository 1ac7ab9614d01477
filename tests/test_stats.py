import pytest

from evalkit.stats import bootstrap_interval, macro_f1, macro_f1_interval, mean_interval, wilson_interval


def test_wilson_matches_the_closed_form():
    # 8 of 10: the textbook Wilson 95% interval is (0.4902, 0.9433).
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.0713, abs=1e-4)
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-4)


def test_macro_f1_by_hand():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    # a: tp1 fp1 fn1 -> 0.5; b: tp2 fp1 fn0 -> 0.8; c: tp0 -> 0
    assert macro_f1(gold, pred) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert macro_f1(["x"], ["x"]) == 1.0


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    gold = ["a", "b"] * 30
    pred = ["a", "b"] * 20 + ["b", "a"] * 10
    first = macro_f1_interval(gold, pred)
    assert first == macro_f1_interval(gold, pred)
    assert first[0] < macro_f1(gold, pred) < first[1]


def test_mean_interval_uses_wilson_for_binary_values():
    assert mean_interval([1, 0, 1, 1]) == wilson_interval(3, 4)
    lo, hi = mean_interval([0.5, 0.25, 0.75, 1.0])
    assert 0.25 <= lo < 0.625 < hi <= 1.0


def test_bootstrap_interval_of_a_constant():
    assert bootstrap_interval(lambda idx: 0.3, 10) == (0.3, 0.3)
