"""What a robustness search found: each row's outcome (held, or the smallest change that flipped its
answer), the search's counts, and the ``robustness`` entry of ``results.json`` they become."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evalkit.record import RobustFlip, Robustness


@dataclass
class RowOutcome:
    """One searched row: whether its answer held under every try, else the smallest change that flipped it."""

    id: str
    held: bool
    flip: RobustFlip | None = None

    def stored(self) -> dict[str, Any]:
        flip = self.flip.model_dump(mode="json", exclude_unset=True) if self.flip is not None else None
        return {"id": self.id, "held": self.held, "flip": flip}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> RowOutcome:
        flip = data.get("flip")
        return cls(data["id"], data["held"], RobustFlip.model_validate(flip) if flip is not None else None)


@dataclass
class RobustnessReport:
    perturbations: list[str]
    tries: int
    seed: int
    rows: list[RowOutcome] = field(default_factory=list)
    calls: int = 0
    wall_s: float = 0.0
    batches: list[int] = field(default_factory=list)  # sizes of the pooled shrinking calls
    cached: bool = False  # answered from the result cache: the search did not run again

    @property
    def invariance(self) -> float:
        return sum(r.held for r in self.rows) / len(self.rows) if self.rows else 1.0

    def stored(self) -> dict[str, Any]:
        """The report as the result cache keeps it (read back by :meth:`from_stored`)."""
        return {
            "perturbations": self.perturbations,
            "tries": self.tries,
            "seed": self.seed,
            "rows": [row.stored() for row in self.rows],
            "calls": self.calls,
            "wall_s": self.wall_s,
            "batches": self.batches,
        }

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> RobustnessReport:
        """A report kept by :meth:`stored` (in the result cache): marked as cached."""
        fields = {k: v for k, v in data.items() if k not in ("rows", "cached")}
        return cls(**fields, rows=[RowOutcome.from_stored(row) for row in data["rows"]], cached=True)

    def record(self) -> Robustness:
        """The ``robustness`` entry of a candidate in ``results.json``."""
        return Robustness(
            cached=self.cached,
            perturbations=self.perturbations,
            tries=self.tries,
            seed=self.seed,
            examples=len(self.rows),
            held=sum(r.held for r in self.rows),
            invariance=self.invariance,
            model_calls=self.calls,
            shrink_batches=len(self.batches),
            wall_s=round(self.wall_s, 3),
            flipped=[r.flip for r in self.rows if r.flip is not None],
        )

    def as_dict(self) -> dict[str, Any]:
        """:meth:`record` as plain JSON values (what the run record and the reports read)."""
        return self.record().model_dump(mode="json", exclude_unset=True)
