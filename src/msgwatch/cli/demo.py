"""``msgwatch demo --mini``: the probe against the loopback mini-Internet, against ground truth.

``msgwatch demo`` runs the namespace lab's az-2017 scenario (:func:`msgwatch.cli.lab.lab_demo`);
``--mini`` runs the lab's back-end without namespaces, :mod:`msgwatch.lab.loopback`: real dnsmasq,
nginx and coturn on 127.x addresses, some endpoints broken on purpose. The probe is the same one
``msgwatch run`` uses; only its configuration (catalogue, resolver, CA) points at the mini-Internet.
The analysis judges its measurements and :mod:`msgwatch.lab.truth` compares the verdicts with the
ground truth, as ``lab run`` does. The fence is set to loopback: nothing the demo does can leave
the machine.
"""

from __future__ import annotations

import os

import click
from rich.console import Console
from rich.markup import escape

from msgwatch.catalogue import load_catalogue
from msgwatch.cli.common import (
    EXIT_ENVIRONMENT,
    EXIT_MISMATCH,
    EXIT_OUTPUT,
    _err,
    execute,
    output_path,
    parse_hostport,
    write_jsonl,
)
from msgwatch.cli.envelope import emit
from msgwatch.cli.render import comparison_table
from msgwatch.fence import FENCE_VARIABLE
from msgwatch.lab import truth
from msgwatch.probe.chains import ChainConfig
from msgwatch.probe.runner import RunConfig
from msgwatch.session.output import explain


def run_demo(timeout: float, output: str | None, as_json: bool) -> None:
    # Loopback only, unless a caller already fenced the process (the tests fence it to the lab).
    os.environ.setdefault(FENCE_VARIABLE, "127.0.0.0/8")
    try:
        from msgwatch.lab.loopback import MiniInternet
    except ImportError as exc:  # pragma: no cover - the package ships it
        raise _err(f"the mini-Internet is not available: {exc}", EXIT_ENVIRONMENT) from exc
    console = Console(stderr=as_json)
    try:
        with MiniInternet() as net:
            catalogue = load_catalogue(net.catalogue_dir)
            if not as_json:
                console.print(
                    "A mini-Internet is up on loopback: dnsmasq (DNS), nginx (HTTPS with its own "
                    f"CA) and coturn (STUN/TURN), serving a catalogue of {len(catalogue.services)} "
                    "services. Some of it is broken on purpose, the way censors break things. The "
                    "probe below is the one `msgwatch run` uses; only its catalogue, resolver and "
                    "CA point here."
                )
            config = RunConfig(
                chain=ChainConfig(
                    resolver=parse_hostport(net.resolver), ca_bundle=str(net.ca_bundle)
                ),
                timeout=timeout,
            )
            results = execute(catalogue, None, config, show_progress=not as_json)
            expected = list(net.expected)
    except (RuntimeError, OSError) as exc:
        raise _err(str(exc), EXIT_ENVIRONMENT) from exc
    path = output_path(output, prefix="msgwatch-demo")  # the --output rule: msgwatch.session.output
    try:
        write_jsonl(path, [r.measurement for r in results])
    except OSError as exc:
        where = explain(exc, "choose another --output")
        raise _err(f"cannot write {path}: {where}", EXIT_OUTPUT) from exc
    rows = truth.against(expected, truth.judged(r.measurement for r in results))
    matched = truth.matched(rows)
    status = 0 if matched == len(rows) else EXIT_MISMATCH
    if as_json:
        emit({"results": rows, "matched": matched, "total": len(rows), "output": str(path)},
             status=status)  # fmt: skip
        raise click.exceptions.Exit(status)
    console.print(comparison_table(rows, "msgwatch demo: verdicts against the ground truth"))
    console.print("What was broken on purpose, and what the probe had to see:")
    for r in rows:
        if r["expected"] != "ok":
            console.print(f"  {escape(r['service'])}/{escape(r['function'])}: {escape(r['why'])}")
    console.print(f"{matched} of {len(rows)} verdicts match the ground truth.")
    console.print(f"Measurements (OONI format, one per service): {escape(str(path))}")
    raise click.exceptions.Exit(status)
