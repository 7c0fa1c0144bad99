"""The layering of docs/design/003-layout.md, as the import-linter contracts in pyproject.toml.

`make lint` runs ``lint-imports``; these tests show that each contract checks what its name says:
the package keeps it, and the same graph with one import that breaks the rule (a direct one, or a
chain through a package the source may import) breaks it. A contract that names a wrong module
or is too permissive fails here instead of passing silently.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grimp
import pytest
from importlinter import configuration
from importlinter.application.app_config import settings
from importlinter.application.use_cases import create_report, read_user_options
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract
from importlinter.contracts.protected import ProtectedContract
from importlinter.domain.contract import registry

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# contract id → an import (importer, imported) that the rule forbids
BREACHES: dict[str, list[tuple[str, str]]] = {
    "wire-pure": [("msgwatch.wire", "msgwatch.failures")],
    "root-contracts": [("msgwatch.fence", "msgwatch.catalogue")],
    "root-order": [("msgwatch.failures", "msgwatch.fence")],
    "steps-measuring-layer": [("msgwatch.steps", "msgwatch.probe")],
    "probe-records": [("msgwatch.probe", "msgwatch.analysis.verdicts")],
    "helper-standalone": [("msgwatch.helper", "msgwatch.probe")],
    "analysis-reader": [("msgwatch.analysis", "msgwatch.steps")],
    "collector-closed": [("msgwatch.collector", "msgwatch.fence")],
    "lab-outside-probe": [("msgwatch.lab", "msgwatch.probe")],
    "report-renders": [("msgwatch.report", "msgwatch.lab")],
    "cli-top": [("msgwatch.session", "msgwatch.cli")],
    "dashboard-reader": [("msgwatch.dashboard", "msgwatch.collector")],
    "circumvention-records": [("msgwatch.circumvention.run", "msgwatch.analysis.verdicts")],
    "no-package-cycles": [("msgwatch.catalogue", "msgwatch.lab")],
}

# Indirect: the probe imports the catalogue, so a catalogue reaching the verdict engine would
# bring the judge into the probe; the steps import the failure vocabulary, likewise.
INDIRECT = [
    ("probe-records", ("msgwatch.catalogue", "msgwatch.analysis.verdicts")),
    ("steps-measuring-layer", ("msgwatch.failures", "msgwatch.helper")),
]
CONTRACT_TYPES = (ForbiddenContract, LayersContract, ProtectedContract, AcyclicSiblingsContract)


class _Graphs:
    """import-linter's graph builder, building the package's graph once and adding imports."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.graph: grimp.ImportGraph | None = None
        self.extra: list[tuple[str, str]] = []

    def build(self, **options: Any) -> grimp.ImportGraph:
        if self.graph is None:
            self.graph = self.real.build(**options)
        graph = copy.deepcopy(self.graph)
        for importer, imported in self.extra:
            graph.add_import(importer=importer, imported=imported)
        return graph


@pytest.fixture(scope="module")
def graphs() -> Iterator[_Graphs]:
    configuration.configure()
    for contract_type in CONTRACT_TYPES:
        registry.register(contract_type, contract_type.type_name)
    builder = _Graphs(settings.GRAPH_BUILDER)
    settings.configure(GRAPH_BUILDER=builder)
    try:
        yield builder
    finally:
        settings.configure(GRAPH_BUILDER=builder.real)


def _kept(graphs: _Graphs, extra: list[tuple[str, str]]) -> dict[str, bool]:
    """Contract id → kept, on the package's graph plus ``extra`` imports."""
    graphs.extra = extra
    report = create_report(read_user_options(str(PYPROJECT)), cache_dir=None)
    assert not report.could_not_run, report.invalid_contract_options
    return {c.contract_options["id"]: check.kept for c, check in report.get_contracts_and_checks()}


def test_every_contract_is_kept_and_has_a_breach_below(graphs: _Graphs) -> None:
    kept = _kept(graphs, [])
    assert kept == dict.fromkeys(BREACHES, True)


@pytest.mark.parametrize("contract", sorted(BREACHES))
def test_a_forbidden_import_breaks_its_contract(graphs: _Graphs, contract: str) -> None:
    kept = _kept(graphs, BREACHES[contract])
    assert kept[contract] is False


@pytest.mark.parametrize(("contract", "link"), INDIRECT)
def test_a_chain_through_an_allowed_package_breaks_it_too(
    graphs: _Graphs, contract: str, link: tuple[str, str]
) -> None:
    assert _kept(graphs, [link])[contract] is False
