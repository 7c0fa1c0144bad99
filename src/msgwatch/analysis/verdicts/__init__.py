"""Verdicts: rules as data, judged from measurements alone."""
