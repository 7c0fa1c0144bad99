"""The censorship lab: an emulated Internet with real servers, censors as rules, and ground truth.

The lab configures the probe from outside and never reaches into it: it runs the real
``msgwatch run`` as a subprocess and reads what it wrote, judging it as any reader would
(:mod:`msgwatch.analysis.verdicts`).

Two back-ends share one lifecycle (:mod:`~msgwatch.lab.lifecycle`: a registry of running labs,
down on SIGINT/SIGTERM and at exit, gc after a crash) and one process management
(:mod:`~msgwatch.lab.procs`):

- the namespace lab (``lab run``, ``demo``): :mod:`~msgwatch.lab.topology` (:class:`Lab`, up and
  down), :mod:`~msgwatch.lab.plan` (namespaces, links, addresses), :mod:`~msgwatch.lab.netns`
  (``ip`` commands), :mod:`~msgwatch.lab.runtime` (ids, namespaces, teardown),
  :mod:`~msgwatch.lab.mapping` and :mod:`~msgwatch.lab.catalogue_files` (the catalogue moved onto
  lab addresses), :mod:`~msgwatch.lab.servers` (its servers), :mod:`~msgwatch.lab.censor` (censor
  rules), :mod:`~msgwatch.lab.scenario` and ``scenarios/*.toml`` (scenarios with their ground truth),
  :mod:`~msgwatch.lab.run` (a scenario, phase by phase), :mod:`~msgwatch.lab.observatory` (a
  collector and scheduled probes), :mod:`~msgwatch.lab.geoip` (each ISP's network) and
  :mod:`~msgwatch.lab.matrix` (the call-blocking scenarios as a table);
- the loopback mini-Internet without namespaces (``demo --mini``): :mod:`~msgwatch.lab.loopback`.

Both compare the verdicts with their ground truth in one way: :mod:`~msgwatch.lab.truth`.
"""
