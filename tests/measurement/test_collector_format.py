"""The collector refuses msgwatch measurements that do not follow the format, and only those."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from msgwatch.collector import models
from msgwatch.collector.models import BatchItem, BatchRefusal, Rejection
from tests.measurement.samples import current, demo, ooni


def _batch(*measurements: Any) -> list[BatchItem | BatchRefusal]:
    items = [{"idempotency_key": f"k{i}", "measurement": m} for i, m in enumerate(measurements)]
    return models.parse_batch(orjson.dumps({"measurements": items}))


def test_what_probes_write_is_accepted() -> None:
    results = _batch(current(), *demo(), *ooni(skip=False))
    refused = [r.rejection.detail for r in results if isinstance(r, BatchRefusal)]
    assert refused == []


def test_a_msgwatch_measurement_off_the_format_is_refused_with_the_reason() -> None:
    good, bad = current(), current()
    bad["test_keys"]["msgwatch_replays"][0]["role"] = "replay_sideways"
    ok, refused = _batch(good, bad)
    assert isinstance(ok, BatchItem)
    assert isinstance(refused, BatchRefusal)
    assert refused.rejection.reason == "invalid_measurement"
    assert refused.rejection.status == 400
    assert "msgwatch_replays[0].role" in refused.rejection.detail
    assert refused.idempotency_key == "k1"


def test_the_single_measurement_route_checks_too() -> None:
    bad = current()
    bad["test_keys"]["msgwatch_targets"] = "everything"
    with pytest.raises(Rejection) as info:
        models.parse_measurement(orjson.dumps(bad))
    assert info.value.reason == "invalid_measurement"


def test_ooni_tests_are_not_checked_beyond_the_envelope() -> None:
    sample = next(m for m in ooni() if m["test_name"] == "whatsapp")
    sample["test_keys"]["whatsapp_endpoints_status"] = ["not", "a", "status"]
    (item,) = _batch(sample)
    assert isinstance(item, BatchItem)


def test_the_refusal_is_bounded_whatever_the_measurement() -> None:
    bad = current()
    bad["test_keys"]["network_events"] = [{"operation": "x" * 1000, "t": "y" * 1000}] * 5000
    (refused,) = _batch(bad)
    assert isinstance(refused, BatchRefusal)
    assert len(refused.rejection.detail) < 1200
