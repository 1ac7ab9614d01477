"""Model-graded scoring: a judge model grades each output with a rubric, and is trusted only as far as its
agreement with human verdicts has been measured.

A suite asks for it as its task's scorer (``scorer: {name: judge, ...}``). The rubric is a Jinja2 template
(sandboxed, like every prompt) that sees the row's fields, the ``output`` and the ``target``; the judge is
any model block, run by any backend, and its requests go through the run's result cache like the
candidate's own. It is read in one of two ways:

- ``likelihood``: each grade is scored as a continuation of the rendered rubric (one forward pass, no
  sampling); the most likely grade is the verdict and the grades' probabilities, normalised over the
  grades, give the score (the pass grades' probability, or on a numeric scale the probability-weighted
  mean grade: G-Eval's weighted score, computed exactly);
- ``generate``: the judge writes its reasoning and the *last* ``GRADE: X`` it writes is the verdict, so a
  grade planted in the judged answer, and quoted back, cannot win.

``mode: pairwise`` compares the candidate's output with another candidate's (or the baseline's) on each
row, in both orders; a verdict that follows the position rather than the answer is a tie. With
``calibration:`` the judge first grades human-labelled outputs, and its accuracy and Cohen's kappa against
those verdicts are reported; below ``min_agreement`` the candidate fails instead of being gated by a judge
nobody measured. Several judges (``models:``) vote.

The package: the options (:mod:`~evalkit.judge.settings`) and the files they name (:mod:`~evalkit.judge.files`);
the two readings (:mod:`~evalkit.judge.readers`); rubric and pairwise judging (:mod:`~evalkit.judge.modes`);
the panel that votes (:mod:`~evalkit.judge.panel`); calibration (:mod:`~evalkit.judge.calibration`); and the
scorer that puts them together (:mod:`~evalkit.judge.scorer`).
"""

from evalkit.judge.calibration import Agreement, agreement, calibrate
from evalkit.judge.modes import JudgingMode, PairwiseJudging, RubricJudging
from evalkit.judge.panel import PROMPT_TAIL, Panel
from evalkit.judge.readers import GenerateReader, LikelihoodReader, Reader, Reading, grade_probabilities, last_grade
from evalkit.judge.scorer import JUDGE, Judge, judge_scorer
from evalkit.judge.settings import JudgeSettings, Scale

__all__ = [
    "JUDGE",
    "PROMPT_TAIL",
    "Agreement",
    "GenerateReader",
    "Judge",
    "JudgeSettings",
    "JudgingMode",
    "LikelihoodReader",
    "PairwiseJudging",
    "Panel",
    "Reader",
    "Reading",
    "RubricJudging",
    "Scale",
    "agreement",
    "calibrate",
    "grade_probabilities",
    "judge_scorer",
    "last_grade",
]
