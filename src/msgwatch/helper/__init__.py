"""The msgwatch test helper: the observatory's vantage point outside the censored network.

It answers STUN Binding requests and echoes UDP and TCP on the call ports (counting what it
receives and sends per 100 ms, per flow), and runs a probe's steps on request from where it stands
(the control). It must never become an amplifier or an open relay: replies are never larger than
requests, every client has budgets, and the control API measures only allowed targets.

Modules, from the bytes up (the wire contract it shares with the probe, ports and request and
answer shapes, is :mod:`msgwatch.wire.helper_api`; the helper imports :mod:`msgwatch.steps` and
:mod:`msgwatch.wire`, never the probe):

==============  ==================================================================================
``policy``      which targets a client may have measured (production: global unicast only)
``limits``      token buckets: per-client bytes and packets, global bytes, control calls
``flows``       per-flow, per-100 ms counters, bounded
``loops``       the helper's own replies coming back (no loops between two echoes)
``udp``         the decision for each datagram (STUN answer or echo, never larger) + its protocol
``conns``       TCP connection bounds shared by the TCP handlers (:class:`TCPService`)
``tcp``         the TCP echo / replay sink
``responders``  a messenger's server at its protocol's first step, for the lab
``downstream``  ``/v1/udp/send``: call traffic sent by the helper on a flow the client opened
``measure``     ``/v1/measure``: steps run with ``msgwatch.steps`` (``redact`` checks answers)
``control``     the HTTP/1.1 + JSON API (h11)
``server``      binds the sockets (the only module here that does) and runs it all
==============  ==================================================================================

See ``docs/helper.md``.
"""
