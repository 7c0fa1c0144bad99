"""The dashboard mounted in the collector (``msgwatch collector serve --dashboard``): the read-only
web app of :mod:`msgwatch.dashboard` at ``/dashboard``, over the collector's ``--analysis-dir``,
with the measurement pages' raw JSON read from the collector's own store.

Rules:

- :class:`StoreMeasurements` is the dashboard's ``MeasurementSource`` over the open store: the
  lake's uid of a collected measurement is the collector's ``measurement_uid`` (the analysis reads
  the archive with it), so ``get(uid)`` is the store's ``get``. The dashboard calls it from a
  worker thread (its data calls are blocking); the call runs on the server's event loop
  (``anyio.from_thread``). A store that is not open, or fails, gives ``None`` (the page then says
  the raw measurement is not available).
- The dashboard answers with its own security headers (its CSP lets its own CSS and JS load); the
  collector's access log adds its headers only where a response has none of the same name.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.from_thread
from fastapi import FastAPI

from msgwatch.collector.handlers import Collector
from msgwatch.collector.settings import Settings
from msgwatch.collector.store.base import StoreUnavailable

logger = logging.getLogger("msgwatch.collector")

PREFIX = "/dashboard"


class StoreMeasurements:
    """The collector's stored measurements, by uid, for the dashboard's measurement pages."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def get(self, uid: str) -> dict[str, Any] | None:
        store = self.collector.opened
        if store is None:
            return None
        try:
            found: dict[str, Any] | None = anyio.from_thread.run(store.get, uid)
        except (StoreUnavailable, OSError, ValueError) as exc:
            logger.warning("the dashboard could not read measurement %s: %s", uid[:80], exc)
            return None
        return found


def mount(app: FastAPI, settings: Settings, collector: Collector) -> None:
    """Mount the dashboard at :data:`PREFIX` when the settings ask for it."""
    if not settings.dashboard or settings.analysis_dir is None:
        return
    from msgwatch.dashboard.app import DashboardConfig, create_app

    config = DashboardConfig(settings.analysis_dir, StoreMeasurements(collector))
    app.mount(PREFIX, create_app(config), name="dashboard")
