"""The live progress line: what it says, and that it is drawn on a terminal only (not under -q, not when
the output is piped)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap

from evalkit.progress import Progress

from .conftest import TICKET_ROWS, write_jsonl


def test_the_line_counts_requests_the_cache_and_the_rate():
    now = [100.0]
    shown: list[str | None] = []
    progress = Progress("tickets::plain", shown.append, clock=lambda: now[0], every=0.0)
    progress.asked(40, cached=10)
    now[0] += 2.0
    progress.answered(10)
    assert shown == [
        "tickets::plain 10/40 requests, 10 cached",
        "tickets::plain 20/40 requests, 10 cached, 5.0/s, ~4s left",
    ]
    progress.close()
    assert shown[-1] is None


def test_the_line_is_redrawn_at_most_every_quarter_second_and_at_the_end():
    now = [0.0]
    shown: list[str | None] = []
    progress = Progress("s::c", shown.append, clock=lambda: now[0])
    progress.asked(3, cached=0)
    progress.answered(1)  # too soon: not drawn
    now[0] += 0.1
    progress.answered(2)  # the last one is always drawn
    assert shown == ["s::c 0/3 requests, 0 cached", "s::c 3/3 requests, 0 cached, 30.0/s, ~0s left"]


def _project(root, tiny_model) -> None:
    write_jsonl(root / "suites" / "data" / "tickets.jsonl", TICKET_ROWS)
    (root / "suites" / "tickets.eval.yaml").write_text(
        textwrap.dedent(
            f"""\
            suite: tickets
            model: {tiny_model}
            dataset: {{path: data/tickets.jsonl}}
            task: {{kind: classify, choices: [billing, technical, account, shipping, other], target: label}}
            candidates:
              plain: {{template: "Ticket: {{{{ text }}}}\\nCategory:"}}
            """
        )
    )


def _on_a_terminal(args: list[str], cwd) -> str:
    master, slave = pty.openpty()
    process = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=120)
    os.close(master)
    return output.decode(errors="replace")


def test_the_line_shows_on_a_terminal_and_not_under_q_or_when_piped(tmp_path, tiny_model):
    _project(tmp_path, tiny_model)
    run = [sys.executable, "-m", "pytest", "suites", "-p", "no:cacheprovider", "--evalkit-no-cache"]
    shown = _on_a_terminal(run, tmp_path)
    assert "\r\x1b[Ktickets::plain 6/6 requests, 0 cached" in shown
    assert "1 passed" in shown
    assert "requests, 0 cached" not in _on_a_terminal([*run, "-q"], tmp_path)
    piped = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "requests, 0 cached" not in piped.stdout + piped.stderr
