"""The probe: orchestration of the measuring steps (:mod:`msgwatch.steps`) into measurements.

Bottom to top (each imports only those above it in this list):

- :mod:`~msgwatch.probe.chain`: one chain's configuration, context and outcome;
- :mod:`~msgwatch.probe.protocols`: the table of protocols (``CHAINS``), each protocol's part of a
  chain;
- :mod:`~msgwatch.probe.chains`: one endpoint measured (resolve, the protocol's part, throughput);
- :mod:`~msgwatch.probe.calls`: the call path measured with call-shaped traffic (replays);
- :mod:`~msgwatch.probe.config`: the run's configuration;
- :mod:`~msgwatch.probe.nettests`: the registry of test kinds (``msgwatch_service``, ...);
- :mod:`~msgwatch.probe.network`: the probe's network (ASN, country) from local databases;
- :mod:`~msgwatch.probe.runner`: a run — the fence, the tests scheduled in shared slots under one
  deadline and one byte budget, the envelopes built and scrubbed.

The probe records; it never judges (the verdicts are the reader side's,
:mod:`msgwatch.analysis.verdicts`), serves, stores, spools or runs a lab.
"""
