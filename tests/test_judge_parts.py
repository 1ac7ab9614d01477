"""The judge's parts on their own: calibrate() builds the record's typed Calibration, the refusal is said
from it, and the judge's record is a JudgeInfo written with the keys, in the order, results.json holds."""

from __future__ import annotations

from evalkit.data import load_dataset
from evalkit.judge import calibrate
from evalkit.record import Calibration, JudgeInfo
from evalkit.report.judging import refusal_text
from evalkit.suite import load_suite
from evalkit.tasks import prepare

from .test_judge import CALIBRATION, FakeJudge, Services, _suite, knows_the_reference

CALIBRATED = "name: judge\nmodels: [keyword, always-c]\nrubric: rubric.j2\ncalibration: data/judged.jsonl\n"


def _judged(tmp_path, scorer: str):
    spec = load_suite(_suite(tmp_path, scorer, calibration=CALIBRATION))
    services = Services({"keyword": FakeJudge("k", knows_the_reference), "always-c": FakeJudge("c", lambda p, c: 0)})
    prepared = prepare(spec, spec.candidates["plain"], load_dataset(spec.dataset_path), services=services)
    return spec.scorer(), prepared


def test_calibrate_returns_the_typed_calibration_of_the_panel(tmp_path):
    judge, prepared = _judged(tmp_path, CALIBRATED + "min_agreement: 0.7")
    panel = judge.panel(prepared)
    assert judge.calibration is not None
    calibration = calibrate(prepared, panel, judge.calibration, 0.7)
    assert isinstance(calibration, Calibration)
    # the panel: keyword and always-c; a tie (one pass, one fail) is not a majority, so it fails
    assert (calibration.n, calibration.agree, calibration.trusted) == (5, 3, False)
    assert calibration.wrong == [
        {"row": "judged.jsonl:3", "human": "C", "judge": "I/C"},
        {"row": "judged.jsonl:4", "human": "I", "judge": "C/C"},
    ]
    assert [one["judge"] for one in calibration.per_judge] == ["keyword", "always-c"]
    assert [one["agree"] for one in calibration.per_judge] == [3, 3]
    graded = judge.grade(prepared, [0, 1, 2, 3], ["Paris", "six", "blue", "cold"])
    assert graded.failures == [refusal_text(calibration)]


def test_the_record_is_a_judge_info_with_the_keys_results_json_holds(tmp_path):
    judge, prepared = _judged(tmp_path, CALIBRATED)
    info = judge.grade(prepared, [0, 1, 2, 3], ["Paris", "six", "blue", "cold"]).record
    assert isinstance(info, JudgeInfo)
    record = info.as_json()  # as results.json holds it
    assert list(record) == [
        *("mode", "read", "grades", "pass", "rubric", "rubric_sha256", "judges", "sha256"),
        *("judges_agreement", "calibration"),
    ]
    assert list(record["calibration"]) == [
        *("file", "n", "agree", "accuracy", "accuracy_ci", "kappa", "kappa_ci", "min_agreement", "wrong"),
        *("per_judge", "trusted", "ms_per_judgement"),
    ]
    assert record["calibration"]["ms_per_judgement"] >= 0  # the judges' model time on the calibration rows
    assert record["calibration"]["min_agreement"] is None and record["calibration"]["trusted"] is True
    assert isinstance(record["calibration"]["accuracy_ci"], list)  # as JSON has it, not a tuple
    info = JudgeInfo.model_validate(record)
    assert info.calibration is not None and info.calibration.n == 5
    assert info.model_extra == {}  # every key results.json holds is a field of the record
    assert (info.read, info.pass_grade, info.rubric_sha256, info.judges_agreement) == (
        "likelihood",
        "C",
        judge.rubric.sha256,
        [{"judges": ["keyword", "always-c"], "agreement": 0.75, "kappa": 0.0}],
    )
