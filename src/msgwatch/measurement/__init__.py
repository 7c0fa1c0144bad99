"""Measurements in OONI's format: the envelope, msgwatch's keys, scrubbing."""
