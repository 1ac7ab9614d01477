"""The documented CI workflow and options match what the plugin provides."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent


def test_ci_workflow_example_runs_the_suites_without_training_and_keeps_the_reports(pytester):
    workflow = yaml.safe_load((ROOT / "docs" / "examples" / "evalkit-gate.yml").read_text())
    steps = workflow["jobs"]["evalkit"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert re.search(r"pytest suites/ .*--evalkit-train=never .*--junitxml=reports/junit.xml", commands)
    assert "reports/latest/summary.md" in commands and "$GITHUB_STEP_SUMMARY" in commands
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact"))
    assert "reports/latest/" in upload["with"]["path"] and upload["if"] == "always()"
    assert workflow["permissions"]["pull-requests"] == "write"


def test_every_documented_option_exists(pytester):
    documented = set()
    for doc in [ROOT / "README.md", ROOT / "docs" / "ci.md", ROOT / "docs" / "examples" / "evalkit-gate.yml"]:
        documented |= set(re.findall(r"--evalkit-[a-z-]+", doc.read_text()))
    assert "--evalkit-update-baseline" in documented
    help_text = pytester.runpytest("--help").stdout.str()
    missing = sorted(option for option in documented if option not in help_text)
    assert missing == []
