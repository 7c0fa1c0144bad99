"""The collector: accepts measurements from many probes, stores them durably, serves them.

Design and wire contract: docs/design/002-collector.md.
"""
