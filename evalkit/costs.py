"""What each candidate costs, and when an adapter pays back its training: the prompt-or-fine-tune trade.

Prices come from ``[tool.evalkit.costs]`` in the project's pyproject.toml (every key optional)::

    [tool.evalkit.costs]
    currency = "USD"
    machine_hour = 0.10        # an hour of the machine that runs an in-process model (default 0.10)
    training_hour = 0.10       # an hour of the training machine (default: machine_hour)

    [tool.evalkit.costs.models."gpt-4o-mini"]   # a served or hosted model, priced by its tokens
    prompt_per_1k_tokens = 0.00015
    output_per_1k_tokens = 0.0006

    [tool.evalkit.costs.models."qwen2.5-7b-instruct"]   # a model on a machine of its own, priced by its time
    machine_hour = 2.50

A candidate's cost per 1,000 requests is its measured tokens at its model's token prices, when the model
has them, else its measured model time at its model's own ``machine_hour`` (or the default one). A suite
whose runs are on several models (`models:`, a candidate's own `model:`) is priced run by run, so the
frontier and the break-even lines span models: a tuned small model against a prompted large one. An adapter's one-time cost is its measured
training time at ``training_hour``. Both are pure functions of a run's results and these prices.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError

from evalkit.backends.base import StrictModel
from evalkit.errors import EvalkitError
from evalkit.record import BreakEven, CandidatePrice, RunCosts, SuiteCosts

if TYPE_CHECKING:
    from evalkit.record import CandidateEntry

REQUESTS = 1000  # costs are per this many requests


class ModelPrice(StrictModel):
    """A model priced by its tokens (a hosted API, or a served model billed that way), or by the hour of
    the machine it runs on (``machine_hour``: a larger model on a larger machine)."""

    prompt_per_1k_tokens: float = Field(0.0, ge=0, description="price of 1,000 prompt tokens")
    output_per_1k_tokens: float = Field(0.0, ge=0, description="price of 1,000 generated tokens")
    machine_hour: float | None = Field(
        None, ge=0, description="an hour of this model's machine: priced by its measured time, not its tokens"
    )


class CostModel(StrictModel):
    """The prices of ``[tool.evalkit.costs]``."""

    currency: str = "USD"
    machine_hour: float = Field(0.10, ge=0, description="an hour of the machine running an in-process model")
    training_hour: float | None = Field(
        None, ge=0, description="an hour of the training machine (default: machine_hour)"
    )
    models: dict[str, ModelPrice] = Field(default_factory=dict, description="token prices by model name")

    @property
    def training_price(self) -> float:
        return self.machine_hour if self.training_hour is None else self.training_hour

    def hour_of(self, model: str | None) -> float:
        """An hour of the machine ``model`` runs on: its own ``machine_hour``, else the default one."""
        price = self.models.get(model or "")
        return self.machine_hour if price is None or price.machine_hour is None else price.machine_hour


def read_cost_model(pyproject: Path) -> CostModel:
    """The prices in ``pyproject``'s ``[tool.evalkit.costs]`` (the defaults without a file or table)."""
    if not pyproject.is_file():
        return CostModel()
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EvalkitError(f"cannot read [tool.evalkit.costs]: {exc}", path=pyproject) from None
    costs = table.get("tool", {}).get("evalkit", {}).get("costs", {})
    try:
        return CostModel.model_validate(costs)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        raise EvalkitError(
            f"[tool.evalkit.costs] {key}: {error['msg']}",
            path=pyproject,
            fix='prices are numbers of at least 0; token prices go under [tool.evalkit.costs.models."<model>"]',
        ) from None


@dataclass(frozen=True)
class CandidateCost:
    """One candidate's accuracy and what it costs."""

    candidate: str
    accuracy: float
    ci95: tuple[float, float]
    per_1k: float  # the cost of 1,000 requests
    priced_by: str  # "tokens" or "time"
    training: float | None  # an adapter's one-time training cost
    train_s: float | None
    prompt_only: bool
    pareto: bool = False
    search: float | None = None  # a searched prompt's one-time search cost
    search_s: float | None = None
    model: str | None = None  # the model it runs on

    def price(self) -> CandidatePrice:
        """As the run record keeps it."""
        return CandidatePrice(
            accuracy=self.accuracy,
            ci95=self.ci95,
            per_1k_requests=self.per_1k,
            priced_by=self.priced_by,
            training=self.training,
            train_s=self.train_s,
            pareto_optimal=self.pareto,
            **({"search": self.search, "search_s": self.search_s} if self.search_s is not None else {}),
        )


def candidate_cost(entry: CandidateEntry, name: str, prices: CostModel, metric: str = "accuracy") -> CandidateCost:
    """``entry`` (a candidate's entry in the run record) priced: per 1,000 requests, and its training."""
    cost = entry.cost
    price = prices.models.get(entry.model or "")
    if price is not None and price.machine_hour is None:
        per_request = (
            cost.get("prompt_tokens_per_example", 0.0) * price.prompt_per_1k_tokens
            + cost.get("output_tokens_per_example", 0.0) * price.output_per_1k_tokens
        ) / 1000
        priced_by = "tokens"
    else:
        per_request = cost.get("ms_per_example", 0.0) / 1000 / 3600 * prices.hour_of(entry.model)
        priced_by = "time"
    train_s = entry.adapter.train_s if entry.adapter is not None else None
    training = None if train_s is None else train_s / 3600 * prices.training_price
    search_s = entry.prompt_search.search_s if entry.prompt_search is not None else None  # one-time, like training
    search = None if search_s is None else search_s / 3600 * prices.training_price
    lo, hi = entry.ci95[metric]
    return CandidateCost(
        name,
        entry.metrics[metric],
        (lo, hi),
        per_request * REQUESTS,
        priced_by,
        training,
        train_s,
        train_s is None,
        search=search,
        search_s=search_s,
        model=entry.model,
    )


def with_frontier(costs: Sequence[CandidateCost]) -> list[CandidateCost]:
    """``costs`` with the Pareto-optimal ones marked: no other candidate is at least as accurate and at
    most as costly per request, and better in one of the two."""
    marked = []
    for c in costs:
        beaten = any(
            o.accuracy >= c.accuracy and o.per_1k <= c.per_1k and (o.accuracy > c.accuracy or o.per_1k < c.per_1k)
            for o in costs
            if o is not c
        )
        marked.append(CandidateCost(**{**c.__dict__, "pareto": not beaten}))
    return marked


def break_even(adapter: CandidateCost, prompt: CandidateCost) -> BreakEven:
    """When ``adapter``'s training is paid back by its cheaper requests against ``prompt``, and what its
    accuracy buys: ``requests`` is None when it never pays back."""
    saving = (prompt.per_1k - adapter.per_1k) / REQUESTS  # per request
    training = adapter.training or 0.0
    # what the adapter costs once beyond the prompt: its training (and its own prompt's search), less the
    # prompt's search, a one-time cost of the prompt side
    extra = training + (adapter.search or 0.0) - (prompt.search or 0.0)
    requests = None if saving <= 0 else math.ceil(round(extra / saving, 9)) if extra > 0 else 0
    searched = adapter.search_s is not None or prompt.search_s is not None
    models = {"adapter_model": adapter.model, "against_model": prompt.model} if adapter.model != prompt.model else {}
    return BreakEven(
        **models,
        adapter=adapter.candidate,
        against=prompt.candidate,
        requests=requests,
        accuracy_gain=adapter.accuracy - prompt.accuracy,
        training=training,
        train_s=adapter.train_s,
        saving_per_1k=prompt.per_1k - adapter.per_1k,
        **(
            {"one_time": extra, "adapter_search_s": adapter.search_s, "prompt_search_s": prompt.search_s}
            if searched
            else {}
        ),
    )


def suite_economics(entries: Mapping[str, CandidateEntry], prices: CostModel) -> SuiteCosts:
    """A suite's candidates priced, the frontier marked, and every adapter's break-even against every
    prompt-only candidate."""
    costs = with_frontier([candidate_cost(entry, name, prices) for name, entry in entries.items()])
    pairs = [break_even(a, p) for a in costs if not a.prompt_only for p in costs if p.prompt_only]
    return SuiteCosts(candidates={c.candidate: c.price() for c in costs}, break_even=pairs)


def economics(suites: Mapping[str, Mapping[str, CandidateEntry]], prices: CostModel) -> RunCosts:
    """The run's costs (what results.json keeps under ``costs``): the prices, and each suite's economics."""
    return RunCosts(
        prices=prices.model_dump(),
        suites={suite: suite_economics(entries, prices) for suite, entries in suites.items()},
    )


# --------------------------------------------------------------------------- in words


def money(value: float, currency: str) -> str:
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency)
    # a request costs fractions of a cent: three significant digits, never in exponent notation
    amount = f"{Decimal(f'{value:.3g}'):f}" if value < 1 else f"{value:,.2f}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def break_even_text(pair: BreakEven, currency: str) -> str:
    """One break-even in words, e.g. "lora pays back its 41 s of training ($0.0011) after 390 requests
    against few_shot, and is 0.256 more accurate"."""
    gain = pair.accuracy_gain
    accuracy = f"{abs(gain):.3f} {'more' if gain >= 0 else 'less'} accurate"
    trained = f"its {pair.train_s or 0:.0f} s of training ({money(pair.training, currency)})"
    if pair.one_time is not None:  # a prompt search on either side is a one-time cost too
        searched = pair.adapter_search_s
        trained = (
            f"its {pair.train_s or 0:.0f} s of training"
            + (f" and {searched:.0f} s of prompt search" if searched is not None else "")
            + f" ({money(max(0.0, pair.one_time), currency)}"
            + (" net of the prompt's search" if pair.prompt_search_s is not None else "")
            + ")"
        )
    against = pair.against
    adapter = pair.adapter
    if pair.adapter_model is not None and pair.against_model is not None:  # runs on two models: name them
        adapter, against = f"{adapter} (on {pair.adapter_model})", f"{against} (on {pair.against_model})"
    if pair.prompt_search_s is not None:
        against = f"{against} (whose prompt search took {pair.prompt_search_s:.0f} s)"
    if pair.requests is None:
        return (
            f"{adapter} never pays back {trained} against {against}: its requests cost "
            f"{money(-pair.saving_per_1k, currency)} more per 1,000; it is {accuracy}"
        )
    if pair.requests == 0:
        return f"{adapter} is cheaper per request than {against} from the start, and {accuracy}"
    if gain >= 0:
        return (
            f"{adapter} is cheaper per request than {against} and {accuracy}: it pays back "
            f"{trained} after {pair.requests:,} requests"
        )
    return f"{adapter} pays back {trained} after {pair.requests:,} requests against {against}, but is {accuracy}"


def economics_lines(suite: SuiteCosts, currency: str) -> list[str]:
    """A suite's frontier and break-even lines, as the terminal and summary.md show them."""
    cheapest_first = sorted(suite.candidates.items(), key=lambda item: item[1].per_1k_requests)
    frontier = ", ".join(
        f"{name} {c.accuracy:.3f} at {money(c.per_1k_requests, currency)}"
        + (f" + {money(c.training, currency)} once" if c.training else "")
        + (" *" if c.pareto_optimal else "")
        for name, c in cheapest_first
    )
    lines = [f"accuracy and cost per 1,000 requests (* on the accuracy-cost frontier): {frontier}"]
    lines += [break_even_text(pair, currency) for pair in suite.break_even]
    return lines
