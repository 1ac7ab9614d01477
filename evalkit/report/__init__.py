"""Reports: summary.md and report.html are pure functions of the run record, while the terminal tables and
the JUnit properties are rendered from each candidate's `CandidateResult`, and writer.py writes a run folder."""
