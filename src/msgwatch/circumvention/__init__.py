"""Circumvention: whether the routes people turn to (Tor, bridges, VPNs, Shadowsocks, proxies) are
open, stage by stage, and whether a blocked messenger works through them.

- :mod:`~msgwatch.circumvention.model`: what every transport shares — an :class:`Entry` (one
  endpoint to test, from the catalogue or the user's ``--circumvention`` file), the
  :class:`Context` of a run, the :class:`Run` that records the stages, and the :class:`Tunnel`
  the rest of the test talks through once a transport is up.
- :mod:`~msgwatch.circumvention.registry`: entry type → the transport module that brings it up.
- :mod:`~msgwatch.circumvention.transports`: one module per transport family.
"""
