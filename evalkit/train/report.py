"""A search as the terminal shows it: one row per trial, the best one marked."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate


def _value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def search_table(search: dict[str, Any]) -> str:
    """Each trial's settings, its per-epoch validation metric, its result and time; the best marked *."""
    loss = search["objective"] == "validation_loss"
    key = "val_loss" if loss else "val_accuracy"
    best = search["best"]["trial"]
    names = list(search["best"]["params"])
    rows = []
    for trial in search["trials"]:
        curve = " ".join(f"{e[key]:.3f}" for e in trial["epochs"] if key in e)
        if not curve and trial["epochs"] and "fold" in trial["epochs"][0]:  # cross-validated: per fold
            curve = " ".join(f"{f['best_val_accuracy']:.3f}" for f in trial["epochs"])
        state = trial["state"]
        if state == "pruned" and trial.get("pruned_at_epoch") is not None:
            state = f"pruned at {trial['pruned_at_epoch']:g}"
        rows.append(
            [
                f"{trial['number'] + 1}{' *' if trial['number'] == best else ''}",  # counted from 1, as the progress lines
                *(_value(trial["params"].get(n)) for n in names),
                curve,
                state,
                f"{trial['value']:.4f}" if trial.get("value") is not None else "",
                f"{trial['seconds']:.0f}s" if trial.get("seconds") is not None else "",
            ]
        )
    headers = ["trial", *names, ("val loss" if loss else "val accuracy") + " per epoch", "state", "value", "time"]
    table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    lines = [
        f"  search: {search['complete']} complete, {search['pruned']} pruned, {search['seconds']:.0f}s; "
        f"best trial {best + 1} ({search['objective']} {search['best']['value']:.4f})",
        *("  " + line for line in table.splitlines()),
    ]
    return "\n".join(lines)
