"""The statistics of runs held against each other: the non-inferiority test, agreement and kappa, Holm's
adjustment and the paired table, each against a computation done here by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats

from evalkit.errors import EvalkitError
from evalkit.pairs import check_pair, holm, non_inferiority, paired_tables
from evalkit.spec import CompareCheck
from tests.reports_helpers import candidate_result


def test_non_inferiority_is_the_one_sided_t_test_on_the_paired_differences():
    differences = [0, 0, 1, -1, 0, 1, 0, 0, -1, -1] * 6
    n, max_drop, alpha = len(differences), 0.05, 0.05
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    se = sd / math.sqrt(n)
    t = (mean + max_drop) / se
    expected_p = 1 - stats.t.cdf(t, n - 1)
    expected_lower = mean - stats.t.ppf(1 - alpha, n - 1) * se

    got_mean, lower, p = non_inferiority(differences, max_drop, alpha)
    assert got_mean == pytest.approx(-1 / 10)
    assert lower == pytest.approx(expected_lower, abs=1e-12)
    assert p == pytest.approx(expected_p, abs=1e-12)
    assert (lower > -max_drop) == (p < alpha)  # the bound and the test decide alike


def test_when_no_row_differs_the_exact_bound_on_worse_rows_decides():
    mean, lower, p = non_inferiority([0.0] * 60, 0.1, 0.05)
    assert mean == 0.0
    assert p == pytest.approx(0.9**60)  # the chance of no worse row in 60 if a tenth of them were worse
    assert lower == pytest.approx(-(1 - 0.05 ** (1 / 60)))  # Clopper-Pearson, one-sided 95%, 0 of 60
    assert non_inferiority([0.0] * 6, 0.02, 0.05)[2] == pytest.approx(0.98**6)  # 6 rows cannot show it
    assert non_inferiority([1.0] * 5, 0.02, 0.05) == (1.0, 1.0, 0.0)  # better on every row
    assert non_inferiority([-1.0] * 5, 0.02, 0.05) == (-1.0, -1.0, 1.0)


def test_holm_steps_down_from_the_smallest_p():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to the 0.06 before it
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


def test_agreement_and_kappa_equal_a_hand_computation():
    gold = ["billing", "technical", "account", "shipping", "other"] * 4
    mine = list(gold)
    theirs = list(gold)
    theirs[0], theirs[7] = "other", "billing"  # two rows answered differently
    candidate = candidate_result([m == g for m, g in zip(mine, gold)], candidate="lora@served", outputs=mine)
    reference = candidate_result([t == g for t, g in zip(theirs, gold)], candidate="lora", outputs=theirs)
    check = CompareCheck(candidate="lora@served", reference="lora", min_agreement=0.95, min_kappa=0.5)

    outcome = check_pair(check, candidate, reference, path=Path("s.eval.yaml"), line=3)

    n = 20
    observed = 18 / n
    labels = set(mine) | set(theirs)
    chance = sum(mine.count(label) / n * theirs.count(label) / n for label in labels)
    assert outcome.agree == 18 and outcome.agreement == pytest.approx(0.9)
    assert outcome.kappa == pytest.approx((observed - chance) / (1 - chance))
    assert not outcome.passed and [d.id for d in outcome.disagreeing] == ["t-000", "t-007"]
    assert outcome.failures == [
        "lora@served agrees with lora on 18 of 20 shared rows (0.900 [0.699, 0.972]), below min_agreement 0.95; "
        "differing rows: t-000, t-007"
    ]


def test_a_pair_with_no_shared_rows_is_named_with_the_check_line():
    candidate = candidate_result([True, False], candidate="a", ids=["x1", "x2"])
    reference = candidate_result([True, True], candidate="b", ids=["y1", "y2"])
    check = CompareCheck(candidate="a", reference="b", max_drop=0.02)
    with pytest.raises(EvalkitError) as error:
        check_pair(check, candidate, reference, path=Path("suites/s.eval.yaml"), line=12)
    assert str(error.value).splitlines()[0] == (
        "suites/s.eval.yaml:12: compare: 'a' and 'b' share no rows (2 and 2 rows, no common id)"
    )


def test_the_paired_table_counts_the_rows_only_one_run_got_right_and_adjusts_for_the_family():
    a = candidate_result([True] * 12 + [False] * 8, candidate="a")
    b = candidate_result([True] * 2 + [False] * 18, candidate="b")
    c = candidate_result([True] * 12 + [False] * 8, candidate="c")
    table = paired_tables([a, b, c])["tickets"]
    rows = {(r.first, r.second): r for r in table.pairs}
    ab = rows[("a", "b")]
    assert (ab.first_only, ab.second_only, ab.shared) == (10, 0, 20)
    assert ab.difference == pytest.approx(0.5)
    assert ab.p_value == pytest.approx(2 * 0.5**10)  # exact McNemar: 10 discordant rows, all one way
    assert rows[("a", "c")].p_value == 1.0
    assert [r.p_holm for r in table.pairs] == pytest.approx(holm([r.p_value for r in table.pairs]))
    assert ab.p_holm == pytest.approx(3 * 2 * 0.5**10)
