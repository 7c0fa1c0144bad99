"""The measuring layer: one socket module, the trace, and the steps built on them.

The probe and the test helper both measure with these (the helper repeats a probe's steps from
outside the network as its control), so they live below both: nothing here imports the probe, the
helper, the analysis or the CLI.

- :mod:`~msgwatch.steps.net`: the one module that opens sockets, behind the fence
  (:mod:`msgwatch.fence`); every connect, read and write is recorded.
- :mod:`~msgwatch.steps.trace`: the archival record of a measurement as it happens (bounded).
- :mod:`~msgwatch.steps.lag`: the event loop's own lateness, so the probe's slowness is never read
  as the network's.
- steps, each one network operation recorded into the trace: :mod:`~msgwatch.steps.dns`,
  :mod:`~msgwatch.steps.tls`, :mod:`~msgwatch.steps.http`, :mod:`~msgwatch.steps.stun`,
  :mod:`~msgwatch.steps.app` (messenger handshakes), :mod:`~msgwatch.steps.replay` and
  :mod:`~msgwatch.steps.downstream` (call-traffic replays), :mod:`~msgwatch.steps.control` (the
  test helper's control API, client side).
"""
