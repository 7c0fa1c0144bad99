"""The helper's wire contract, shared by the probe (the client) and the helper (the server).

Nothing here opens a socket or reads a clock; the probe and the helper both import it, and neither
imports the other.

- the default ports: the control API's TCP port, the neutral echo port, the call ports the helper
  listens on. The helper answers nothing that comes from one of its own UDP ports (a forged source
  there would start a packet loop between two helpers, :mod:`msgwatch.helper.udp`), so a probe whose
  kernel happened to pick such an ephemeral source port (40000 lies in Linux's default range) would
  see a flow go unanswered and take the helper's silence for loss.
  :func:`msgwatch.steps.net.udp_open` therefore refuses these as local ports;
- the downstream send: its longest duration and :func:`schedule`, the datagrams the helper sends
  for a ``POST /v1/udp/send`` (the probe builds the same list to know every payload it should see).
"""

from __future__ import annotations

from msgwatch.wire import calltraffic as C

CONTROL_PORT = 8765
"""The helper's control API (``/v1/measure``, ``/v1/udp/flows``, ``/v1/udp/send``)."""
NEUTRAL_PORT = 40000
"""A port no messenger uses for calls (the helper echoes on it by default)."""
CALL_PORTS = (443, 596, 3478, 3479, 3480, 3481, 4244, 5242, 5243, 7985, 7987, 8801, 10000, 19302,
              NEUTRAL_PORT, 50001)  # fmt: skip
"""Default UDP and TCP ports: the catalogue's call ports and the neutral high port."""
MAX_SECONDS = 10.0
"""The longest downstream send the helper makes."""


def schedule(
    profile: str, variant: str, seconds: float, seed: int, marker: C.Marker | None
) -> list[C.Packet]:
    """The datagrams of a downstream send, as the probe's replays build the same kind."""
    make = C.voice_profile if profile == "voice" else C.video_profile
    packets = make(seconds, seed, None if variant == "plain" else marker)
    if variant == "control":
        return C.control(packets)
    if variant == "plain":
        return C.random_payload(packets, seed)
    return packets
