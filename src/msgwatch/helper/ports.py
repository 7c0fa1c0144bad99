"""The helper's default ports, shared with the probe (which must never send *from* one of them).

The helper answers nothing that comes from one of its own UDP ports (a forged source there would
start a packet loop between two helpers, :mod:`msgwatch.helper.udp`), so a probe whose kernel
happened to pick such an ephemeral source port (40000 lies in Linux's default range) would see a
flow go unanswered and take the helper's silence for loss. :func:`msgwatch.probe.net.udp_open`
therefore refuses these as local ports. No imports: the probe reads this without the helper.
"""

NEUTRAL_PORT = 40000
"""A port no messenger uses for calls (the helper echoes on it by default)."""
CALL_PORTS = (443, 596, 3478, 3479, 3480, 3481, 4244, 5242, 5243, 7985, 7987, 8801, 10000, 19302,
              NEUTRAL_PORT, 50001)  # fmt: skip
"""Default UDP and TCP ports: the catalogue's call ports and the neutral high port."""
