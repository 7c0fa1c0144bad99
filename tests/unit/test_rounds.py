"""The rounds of a call's replays as pure statistics (msgwatch.analysis.rounds): the one home of
what the probe's confirmation step and the call judge both need, so the probe never loads the
verdict engine."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from msgwatch import _native
from msgwatch.analysis import rounds as R
from msgwatch.analysis.verdicts import calls as C
from msgwatch.measurement import vocab


def _loaded(module: str) -> set[str]:
    """The msgwatch modules that importing ``module`` loads (in a fresh interpreter)."""
    code = (
        f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('msgwatch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_probe_loads_statistics_never_the_verdict_engine() -> None:
    loaded = _loaded("msgwatch.probe.calls")
    assert "msgwatch.analysis.rounds" in loaded
    assert not {m for m in loaded if m.startswith("msgwatch.analysis.verdicts")}


def test_rounds_import_only_statistics() -> None:
    machinery = {"msgwatch._native", f"{_native.GROUP}__mypyc"}  # the compiled modules' (setup.py)
    assert _loaded("msgwatch.analysis.rounds") - machinery == {
        "msgwatch",
        "msgwatch.analysis",
        "msgwatch.analysis.stats",
        "msgwatch.analysis.rounds",
    }


def test_the_probe_and_the_judge_share_one_loss_threshold_and_one_set_of_roles() -> None:
    from msgwatch.probe import calls as P

    mine = vars(P)  # imported there, not defined again
    assert mine["LOST"] is R.LOST
    assert mine["DOWN_ROLES"] is vars(C)["DOWN_ROLES"] is vocab.DOWN_ROLES


def _replay(role: str, sent: int, got: int, **extra: Any) -> dict[str, Any]:
    return {"role": role, "sent_packets": sent, "received_packets": got, **extra}


def test_a_replay_fails_beyond_the_loss_threshold() -> None:
    half = int(100 * (1 - R.LOST))
    assert R.state([_replay("o", 100, half)]) == "pass"
    assert R.state([_replay("o", 100, half - 1)]) == "fail"
    assert R.state([]) == "none"


def test_what_the_probe_dropped_itself_arrived() -> None:
    record = _replay("o", 100, 40, probe={"socket_drops": 30, "queue_drops": 5})
    assert R.credit(record) == 35
    assert R.total_received([record]) == 75
    assert R.state([record]) == "pass"
    assert R.probe_stalled(record)  # arrived, but in no interval


def test_a_cut_round_is_left_out_with_its_pair() -> None:
    originals = [_replay("o", 10, 10, round=n) for n in (1, 2, 3)]
    controls = [_replay("c", 10, 10, round=n) for n in (1, 2, 3)]
    originals[1]["probe"] = {"cut": True}
    kept_o, kept_c, left_out = R.clean(originals, controls)
    assert [r["round"] for r in kept_o] == [r["round"] for r in kept_c] == [1, 3]
    assert left_out == 2
