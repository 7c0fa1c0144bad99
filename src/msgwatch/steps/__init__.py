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
- :mod:`~msgwatch.steps.exec`: the one module that starts client programs (tor, openvpn), behind
  the fence like ``net``; a seam, not a step: the test that runs a program records what it said.

The step convention (every step here follows it; a new one must):

- **Inputs.** What the step works on (the open stream, or the trace and its transaction id and the
  target), then the one ``deadline`` (event-loop time, computed once by the caller and passed
  down), then what varies in a parameter object or keyword-only arguments
  (:class:`~msgwatch.steps.replay.ReplayOptions`, :class:`~msgwatch.wire.helper_api.Schedule`);
  never more than eight positional parameters.
- **Two kinds of steps, two ways to fail.**

  - *Opening steps* (:func:`~msgwatch.steps.net.tcp_connect`, :func:`~msgwatch.steps.net.udp_open`,
    :func:`~msgwatch.steps.tls.tls_handshake`) return the open connection, **or raise**: there is
    no connection to carry a failure. A failed connect or handshake is already recorded in the
    trace when they raise (opening a UDP socket sends nothing: the exchange that opened it
    records its failure); the caller turns the exception into the stable failure string with
    :func:`msgwatch.failures.classify` (``ProbeFailure`` carries one already).
  - *Exchanges* (:func:`~msgwatch.steps.dns.resolve`, :func:`~msgwatch.steps.http.http_get`,
    :func:`~msgwatch.steps.stun.stun_exchange` and ``stun_stream_exchange``, the handshakes of
    :mod:`~msgwatch.steps.app`, :func:`~msgwatch.steps.replay.replay`,
    :func:`~msgwatch.steps.downstream.downstream`, the ``helper_*`` calls of
    :mod:`~msgwatch.steps.control`) **never raise**: they return a result whose ``failure`` is
    None or a stable failure string (``helper_flows`` and ``helper_send``: a ``(value, failure)``
    pair), with what arrived kept as evidence (bounded).

- **Recorded as it happens.** Every step writes its own records and events into the
  :class:`~msgwatch.steps.trace.Trace` (times relative to the measurement's start, under its
  transaction id), whatever the outcome; the caller never has to record a step's failure for it.
"""
