"""The dashboard: a web app over the analysis's lake, and self-contained reports.

Rules:

- The dashboard only reads. Its data come from the committed lake (:mod:`msgwatch.analysis`) and,
  for a measurement's raw record, a :class:`~.measurements.MeasurementSource`; it never writes the
  lake, never runs a pass and never measures.
- It sits on the reader side of the import layering: it may import ``msgwatch.analysis``,
  ``measurement``, ``catalogue``, ``failures`` and ``durable``, never the probe, the lab, the spool,
  the collector (which mounts the dashboard) or the command line.
- Everything from the lake, a measurement or a request is hostile: query parameters are parsed by
  :mod:`.filters` (a bad one is :class:`~.filters.BadQuery`, a 4xx with its message), values are
  bounded by :mod:`.data` and escaped by the renderers; nothing from the data is ever markup.
- :mod:`.model` holds the views' values, :mod:`.data` computes them (``Observatory``), the
  charts, the app and the report render them.
"""
