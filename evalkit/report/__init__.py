"""Reports, each a pure function of the run record: the terminal tables, summary.md, report.html, and the
writer of a run folder."""
