"""TURN's fallback over TCP and TLS, as a real exchange with the lab's coturn (a 401 challenge).

The shipped catalogue lists Teams' relay on TCP 443; this test adds the same relay over TLS on the
same port, which the lab serves with one coturn that tells TLS from plain TCP by the first bytes.
The probe's chains run from ISP 1's probe host, with no censor rules loaded.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from msgwatch.catalogue import Catalogue, load_catalogue
from msgwatch.lab.topology import Lab
from msgwatch.probe.chains import ChainConfig, run_chain
from msgwatch.steps.trace import Trace
from tests.lab.conftest import lab_unavailable

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

RELAY = "worldaz.tr.teams.microsoft.com"
DATA = Path(str(resources.files("msgwatch.catalogue") / "data"))


def _with_turn_over_tls(directory: Path) -> Catalogue:
    """The shipped catalogue, copied to ``directory``, with Teams' voice relay also over TLS."""
    shutil.copytree(DATA, directory, dirs_exist_ok=True)
    teams = directory / "teams.toml"
    text = teams.read_text()
    block = 'id = "relay-turn-tcp443"'
    assert text.count(block) == 2  # voice and video
    addition = (
        '[[functions.voice.endpoints]]\nid = "relay-turn-tls443"\n'
        f'host = "{RELAY}"\nport = 443\ntransport = "tls"\nprotocol = "turn"\n'
        'source = "m365-split-tunnel"\nchecked = 2026-11-24\n'
    )
    # After the voice function's TCP endpoint, before the video function.
    text = text.replace("[functions.video]", addition + "\n[functions.video]", 1)
    teams.write_text(text)
    return load_catalogue(directory)


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    with Lab(_with_turn_over_tls(tmp_path_factory.mktemp("catalogue"))) as up:
        yield up


def _chains(lab: Lab) -> list[tuple[str, str | None, str | None, list[dict[str, Any]]]]:
    teams = next(s for s in lab.mapping.catalogue.services if s.id == "teams")
    voice = next(f for f in teams.functions if f.function == "voice")
    wanted = [e for e in voice.endpoints if e.id in ("relay-turn-tcp443", "relay-turn-tls443")]
    address = lab.mapping.hosts[RELAY]

    def run() -> list[tuple[str, str | None, str | None, list[dict[str, Any]]]]:
        async def all_of() -> list[tuple[str, str | None, str | None, list[dict[str, Any]]]]:
            out: list[tuple[str, str | None, str | None, list[dict[str, Any]]]] = []
            for e in wanted:
                trace = Trace()
                config = ChainConfig(ca_bundle=str(lab.ca_bundle))
                endpoint = e.model_copy(update={"address": address})
                deadline = asyncio.get_running_loop().time() + 5
                outcome = await run_chain(trace, "voice", endpoint, config, deadline)
                out.append((e.transport, outcome.failure, outcome.failed_step,
                            trace.udp_exchanges))  # fmt: skip
            return out

        return asyncio.run(all_of())

    return lab.run_in("probe1", run)


def test_turn_allocate_over_tcp_and_tls_gets_the_challenge(tls_lab: Lab) -> None:
    results = _chains(tls_lab)
    assert [r[0] for r in results] == ["tcp", "tls"]
    for transport, failure, step, exchanges in results:
        assert (failure, step) == (None, None), (transport, exchanges)
        (exchange,) = exchanges
        assert exchange["transport"] == transport
        (response,) = exchange["responses"]
        assert (response["error_code"], response["realm"], response["nonce_present"]) == (
            401, "lab", True,
        )  # fmt: skip
