"""Server-side SVG charts of the dashboard and the report: pure functions from the view model
(:mod:`msgwatch.dashboard.model`) to a :class:`Chart`, with no I/O and no script.

- :func:`share_chart` — a series' failing share over time (bars) against the country's other
  networks and its own controls (lines), events shaded;
- :func:`heatmap_chart` — a network's service·function rows × time, one state per cell;
- :func:`timeline_chart` — events as bars from start to end;
- :func:`replay_chart` — a call replay's packets against its bit-inverted control.

Each svg is self-contained (patterns inside, no external reference), accessible (``role="img"``,
title, description), carries its caption and its origin as text, tells states apart by pattern
and word as well as colour, escapes and bounds every value (:mod:`.svg`), and is the same for the
same input. The elements with class ``mark`` are the data; :attr:`Chart.marks` counts them.
"""

from msgwatch.dashboard.charts.heatmap import heatmap_chart
from msgwatch.dashboard.charts.replay import replay_chart
from msgwatch.dashboard.charts.share import share_chart
from msgwatch.dashboard.charts.svg import Chart
from msgwatch.dashboard.charts.timeline import timeline_chart

__all__ = ["Chart", "heatmap_chart", "replay_chart", "share_chart", "timeline_chart"]
