"""Report writers: the terminal summary (more formats build on the same run record)."""
