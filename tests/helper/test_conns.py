"""Connection slots: bounded in all and per client, released exactly."""

from __future__ import annotations

from msgwatch.helper.conns import Slots


def test_slots_bound_per_client_and_in_all() -> None:
    slots = Slots()
    assert slots.take("a", total=3, per_client=2) and slots.take("a", total=3, per_client=2)
    assert not slots.take("a", total=3, per_client=2)  # per client
    assert slots.take("b", total=3, per_client=2)
    assert not slots.take("c", total=3, per_client=2)  # in all
    slots.give_back("a")
    assert slots.active == 2
    assert slots.take("c", total=3, per_client=2)
    for client in ("a", "b", "c"):
        slots.give_back(client)
    assert slots.active == 0 and not slots._open
