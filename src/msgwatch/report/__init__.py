"""Reports: a self-contained HTML page of a run."""
