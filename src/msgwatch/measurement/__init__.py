"""The measurement format's one home (``docs/spec/ts-msgwatch-service.md``).

- ``vocab``: every name a measurement is written and read with (keys, roles, verdicts, functions,
  the failure strings' list);
- ``model``: the format as typed models (``TypedDict``: the probe needs no pydantic);
- ``registry``: test names to models, msgwatch's and the OONI tests msgwatch reads;
- ``validate``: the one validator, used by the collector and the tests;
- ``envelope``: building a measurement (df-000, ``TEST_VERSION``); ``scrub``: the probe's own
  addresses out of it.

Nothing here opens a socket or imports the probe, the helper, the analysis or the collector.
"""
