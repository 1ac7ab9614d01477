"""Where each candidate errs: a classifier's confusion matrix and per-label precision and recall, the labels
that gained or lost since the baseline, and the shapes of a generator's wrong answers."""

from __future__ import annotations

import pytest

from evalkit.compare import Policy, Snapshot, compare
from evalkit.results import ExampleResult
from evalkit.stats import confusion
from evalkit.tasks import failure_shape, failure_shapes
from tests.reports_helpers import candidate_result


def test_the_confusion_matrix_and_each_labels_precision_and_recall():
    gold = ["a", "a", "a", "b", "b", "c"]
    chosen = ["a", "b", "a", "b", "a", "b"]
    result = confusion(gold, chosen, ["a", "b", "c"])
    assert result["matrix"] == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert result["per_label"]["a"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "support": 3}
    assert result["per_label"]["b"] == {"precision": pytest.approx(1 / 3), "recall": 0.5, "support": 2}
    assert result["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "support": 1}  # never chosen


def _example(output: str, target, correct: bool = False, **details) -> ExampleResult:
    return ExampleResult("x", 1, "p", output, target, correct, float(correct), {"output_tokens": 5, **details})


@pytest.mark.parametrize(
    ("example", "shape"),
    [
        (_example("A123", "A123", correct=True), None),
        (_example("  ", "A123", extracted=""), "empty"),
        (_example("A1 A1 A1", "A123", extracted="a1", output_tokens=24), "over_long"),
        (_example("The order is A123.", "A123", extracted="the order is a123"), "wrong_format"),  # right value
        (_example("no number here", "42"), "wrong_format"),  # the scorer read nothing
        (_example("A124", ["A123", "a-123"], extracted="a124"), "wrong_value"),
    ],
)
def test_a_wrong_generated_answer_has_one_shape(example, shape):
    assert failure_shape(example, max_new_tokens=24) == shape


def test_failure_shapes_are_counted():
    examples = [_example("", "1"), _example("2", "1", extracted="2"), _example("3", "1", extracted="3")]
    assert failure_shapes(examples, 24) == {"empty": 1, "over_long": 0, "wrong_format": 0, "wrong_value": 2}


def test_the_labels_that_gained_or_lost_since_the_baseline():
    before = [True] * 10
    after = [i not in (0, 2) for i in range(10)]  # gold labels cycle: 0 is billing (as is 5), 2 account (as is 7)
    comparison = compare(
        Snapshot.from_result(candidate_result(after)), Snapshot.from_result(candidate_result(before)), Policy()
    )
    assert [(c.label, c.baseline, c.current, c.examples) for c in comparison.labels] == [
        ("billing", 1.0, 0.5, 2),
        ("account", 1.0, 0.5, 2),
    ]


def test_report_html_shows_the_confusion_matrix_and_the_failure_shapes():
    from evalkit.report.html import render_html
    from evalkit.results import build_record, example_rows
    from tests.reports_helpers import HEADER

    classifier = candidate_result([True, False, True], candidate="few_shot")
    classifier.errors = {"confusion": confusion(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])}
    generator = candidate_result([False, False], candidate="gen", suite="orders")
    generator.errors = {"failure_shapes": {"empty": 1, "over_long": 0, "wrong_format": 0, "wrong_value": 1}}
    record = build_record({**HEADER, "run_id": "r"}, [classifier, generator])
    html = render_html(record, example_rows([classifier, generator]))
    assert (
        '<tr><th>a</th><td class="num hit">1</td><td class="num miss">1</td><td class="num">1.00</td>'
        '<td class="num">0.50</td><td class="num">2</td></tr>'
    ) in html
    assert (
        '<tr><td>gen</td><td class="num">1</td><td class="num">0</td><td class="num">0</td><td class="num">1</td></tr>'
        in html
    )


def test_a_label_with_markup_stays_text_in_the_confusion_matrix():
    from evalkit.report.html import render_html
    from evalkit.results import build_record, example_rows
    from tests.reports_helpers import HEADER

    planted = "<script>window.__label = 1</script>"
    result = candidate_result([True, False], candidate="few_shot")
    result.errors = {"confusion": confusion(["ok", planted], ["ok", "ok"], ["ok", planted])}
    html = render_html(build_record({**HEADER, "run_id": "r"}, [result]), example_rows([result]))
    assert "<script>" not in html
    assert "<th>&lt;script&gt;window.__label = 1&lt;/script&gt;</th>" in html
