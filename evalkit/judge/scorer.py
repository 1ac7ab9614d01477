"""The ``judge`` scorer of one suite: its settings and files, read when the suite is, and on each candidate
the panel's judging, its calibration, and the record results.json keeps of both."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.backends.base import Backend, ModelConfig
from evalkit.errors import did_you_mean, shown_path
from evalkit.judge.calibration import calibrate, calibration_by_folds, model_time
from evalkit.judge.files import existing, read_calibration, read_rubric
from evalkit.judge.modes import Judged, mode_for
from evalkit.judge.panel import Panel, Prompting
from evalkit.judge.readers import Reading, reader_for
from evalkit.judge.settings import JudgeSettings, Placement, parse_settings
from evalkit.record import Calibration, JudgeInfo, ModelInfo
from evalkit.report.judging import refusal_text
from evalkit.scoring import ScorerFactory
from evalkit.tasks import Graded, ModelGradedScorer, PreparedCandidate, ScoringServices

if TYPE_CHECKING:
    from evalkit.train.adapters import TrainedAdapter


class Judge(ModelGradedScorer):
    """The ``judge`` scorer of one suite: its settings, rubric and calibration rows, read when the suite is."""

    def __init__(self, settings: JudgeSettings, base_dir: Path) -> None:
        self.settings = settings
        self.base_dir = base_dir
        self.scale = settings.scale
        self.mode = mode_for(settings.mode, settings.against, settings.grades)
        rubric = existing(base_dir, settings.rubric, "rubric", "judge rubric")
        self.rubric = read_rubric(rubric, self.mode.shown, self.mode.what)
        self.calibration = (
            read_calibration(
                existing(base_dir, settings.calibration_file, "calibration", "calibration file"), self.scale
            )
            if settings.calibration_file
            else None
        )
        self.placement = Placement()
        self.reader = reader_for(settings, self.placement)
        self._calibrated: dict[tuple[str, ...], Calibration] = {}  # by the judges' fingerprints

    @classmethod
    def from_options(cls, options: dict[str, Any], *, base_dir: Path) -> Judge:
        """The judge a suite's scorer options describe; TaskProblem at the option's key when they are wrong."""
        return cls(parse_settings(options), base_dir)

    def place(self, suite_path: Path, line: Callable[..., int | None]) -> None:
        """Where the suite writes this scorer: errors found while judging name the suite's lines."""
        self.placement.suite_path, self.placement.line = suite_path, line

    def model_blocks(self) -> list[tuple[tuple[str | int, ...], ModelConfig]]:
        """Each judge's model block and its key path under ``task.scorer`` (checked like the suite's model)."""
        if self.settings.models is not None:
            return [(("models", i), m) for i, m in enumerate(self.settings.models)]
        return [(("model",), self.settings.model)] if self.settings.model is not None else []

    def check_candidates(self, names: Sequence[str]) -> None:
        """Pairwise against a candidate: it is one of the suite's."""
        against = self.settings.against
        if against not in (None, "baseline") and against not in names:
            raise ValueError(
                f"pairwise `against: {against}` is not a candidate of this suite{did_you_mean(str(against), names)}; "
                f"candidates are: {', '.join(names)}, or write `baseline`"
            )

    def passes(self, grade: str | None) -> bool:
        return self.scale.passes(grade)

    def read(self, backend: Backend, prompts: Sequence[str], origins: Sequence[str]) -> list[Reading]:
        """One judge's reading of each prompt."""
        return self.reader.read(backend, prompts, origins)

    def identity(self, backends: Sequence[Backend]) -> str:
        """What every verdict depends on: rubric, grades, the way the judge is read, and each judge model."""
        described = {
            # the adapter is in each judge's entry below (its content hash), so a judge without one keeps its identity
            **self.settings.model_dump(
                exclude={"model", "models", "rubric", "calibration", "min_agreement", "adapter"}
            ),
            "rubric_sha256": self.rubric.sha256,
            "judges": [_judged_by(b) for b in backends],
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    def panel(self, prepared: PreparedCandidate, *, adapted: bool = True) -> Panel:
        """The judge models, each behind the run's result cache (through the judge adapter unless not
        ``adapted``: the prompted judge the trained one is compared with)."""
        services = _services(prepared)
        judges, adapter = self.settings.judges, self.settings.adapter if adapted else None
        backends = [
            services.backend(model) if adapter is None else services.adapted(model, adapter) for model in judges
        ]
        prompting = Prompting(self.rubric, self.settings.chat, self.settings.system)
        return Panel([m.name for m in judges], backends, prompting, self.reader, self.scale)

    def grade(self, prepared: PreparedCandidate, rows: Sequence[int], outputs: Sequence[str]) -> Graded:
        panel = self.panel(prepared)
        with model_time(panel) as judging:
            judged = self.mode.judge(prepared, panel, rows, outputs)
        calibration = self.calibrated(prepared, panel)
        if calibration is not None and calibration.ms_per_judgement is None and rows:
            # a judge calibrated by folds judged no calibration rows itself: its time on this candidate's rows
            calibration.ms_per_judgement = round(1000 * judging.seconds / len(rows), 2)
        failures = [refusal_text(calibration)] if calibration is not None and not calibration.trusted else []
        return Graded(judged.scores, self.info(panel, judged, calibration), failures)

    def calibrated(self, prepared: PreparedCandidate, panel: Panel) -> Calibration | None:
        """The panel's measured agreement with the human verdicts (measured once per set of judges); a
        trained judge's beside the same model's prompted, without its adapter."""
        settings = self.settings
        if self.calibration is None and settings.folds is None:
            return None
        key = tuple(_judged_by(b) for b in panel.backends)
        if key in self._calibrated:
            return self._calibrated[key]
        if settings.adapter is None:
            assert self.calibration is not None
            measured = calibrate(prepared, panel, self.calibration, settings.min_agreement)
        else:
            trained = _services(prepared).judge_adapter(settings.adapter)
            labelled = self.calibration
            if settings.folds is not None:
                measured = calibration_by_folds(trained, settings.min_agreement)
                labelled = read_calibration(prepared.spec.train[settings.adapter].data_path, self.scale)
            else:
                assert labelled is not None
                measured = calibrate(prepared, panel, labelled, settings.min_agreement)
            prompted = calibrate(prepared, self.panel(prepared, adapted=False), labelled, settings.min_agreement)
            measured = measured.model_copy(
                update={"adapter": settings.adapter, "training_s": _training_s(trained), "prompted": prompted}
            )
        self._calibrated[key] = measured
        return measured

    def info(self, panel: Panel, judged: Judged, calibration: Calibration | None) -> JudgeInfo:
        """The judge's entry in a candidate's record: who judged, how, and how far it can be trusted."""
        settings = self.settings
        optional = {
            "judges_agreement": judged.judges_agreement or None,
            "pairwise": asdict(judged.pairwise) if judged.pairwise is not None else None,
            "calibration": calibration,
        }
        return JudgeInfo(
            mode=settings.mode,
            read=settings.reading,
            grades=settings.grades,
            rubric=shown_path(self.rubric.path) if self.rubric.path else None,
            rubric_sha256=self.rubric.sha256,
            judges=[ModelInfo(name=m.name, fingerprint=b.fingerprint) for m, b in zip(settings.judges, panel.backends)],
            sha256=self.identity(panel.backends),
            **{"pass": settings.pass_at if settings.numeric else settings.grades[0]},
            **{key: value for key, value in optional.items() if value is not None},
        )


def judge_scorer(*, base_dir: Path | None = None, **options: Any) -> Judge:
    """The ``judge`` scorer's factory: the suite's options, its folder for the rubric and calibration files."""
    return Judge.from_options(options, base_dir=base_dir or Path.cwd())


JUDGE = ScorerFactory(
    judge_scorer, needs_target=False, model_graded=True
)  # published under the evalkit.scorers entry points


def _training_s(trained: TrainedAdapter) -> float | None:
    """All the training a judge adapter took: its folds' judges, its search and the judge that gates."""
    record = trained.training
    if record is None:
        return None
    search = record.search.seconds if record.search is not None else 0.0
    return round((record.wall_seconds or record.train_seconds) + search, 1)


def _services(prepared: PreparedCandidate) -> ScoringServices:
    if prepared.services is None:
        raise TypeError("a judge needs the run's scoring services")
    return prepared.services


def _judged_by(backend: Backend) -> str:
    """A judge's model fingerprint, and its adapter's content hash when it has one."""
    adapter = getattr(backend, "adapter", "")
    return f"{backend.fingerprint}+{adapter}" if adapter else backend.fingerprint
