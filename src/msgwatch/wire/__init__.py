"""Pure wire formats for the call path and the text path: bytes in, bytes out, no sockets, no clock.

- :mod:`~msgwatch.wire.packets`: STUN (RFC 5389), RTP and RTCP (RFC 3550) builders and readers.
- :mod:`~msgwatch.wire.calltraffic`: deterministic call-like packet schedules (voice, video, the
  service markers a DPI engine keys on) and their controls (bit-inverted, random payload).
- :mod:`~msgwatch.wire.mtproto`: Telegram's unauthenticated first exchange (``req_pq_multi`` →
  ``resPQ``) over the intermediate and abridged TCP transports.
- :mod:`~msgwatch.wire.whatsapp`: the opening of WhatsApp's chat connection (edge routing
  pre-intro, ``WA`` prologue, the framed Noise XX first message) and a framing-level answer check.

Every parser here takes hostile bytes: it is bounded, never raises, and returns either a typed
result or one of the module's stable failure strings. Builders raise ``ValueError`` only when the
caller passes impossible arguments (a programming error, never the network's doing).
"""
