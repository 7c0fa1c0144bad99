"""Benchmark: the full catalogue, every endpoint silently dropped, each chain with its own time.

Targets: the run completes in about one step timeout per attempt (issue 2: ≤ 1.3 × the step timeout
for one attempt; a failed chain is tried once more, so a wholly blocked run takes about twice
that), also at 2×, 4× and 8× the catalogue (issue 9: no chain waits for a slot into a false
timeout); **0 false failures**; peak memory ≤ 150 MB for the catalogue.
Printed, for 1×, 2×, 4× and 8× the catalogue: the run's time over the step timeout, the slots the
run had, the false failures (a DNS failure, when the local dnsmasq answers every name, or a chain
that failed having had less than 90 % of its timeout), the chains not run (no time before the
run's deadline: not failures), and peak memory; then a one-at-a-time run against a concurrent one.

Set-up (needs root; everything is torn down at the end, also on error or Ctrl-C):

    netns mwb-<pid>-probe  ── veth ──  netns mwb-<pid>-censor
      lo: dnsmasq on 127.0.0.1:53         nftables: drop every packet to 198.18.0.0/15
      (answers every catalogue name        and 2001:db8::/32 that is not for the link itself
       with its lab address)               (silently: no reset, no ICMP)

The catalogue is the shipped one mapped into the lab's range (``msgwatch.lab.mapping``): no real
address is ever used; N× repeats every service N times under other ids (same endpoints). The probe
runs in the probe namespace as a child process of this script (``--inner``), so that its peak
memory is its own. ``--nofile`` lowers the child's file-descriptor limit (fewer slots: the chains
then run in waves, each with its whole time, and the ratio grows with the waves instead of turning
into false timeouts).

    python benchmarks/run_blocked_catalogue.py [--timeout 5] [--scales 1,2,4,8] [--nofile N]
        [--no-retry] [--seq-timeout 1] [--skip-sequential]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

FENCE = "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"
NFT_RULES = """
table inet mwbench {
    chain drop_lab {
        type filter hook prerouting priority -150; policy accept;
        ip daddr 198.18.0.0/15 ip daddr != 198.18.255.1 drop
        ip6 daddr 2001:db8::/32 ip6 daddr != 2001:db8:ffff::1 drop
    }
}
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class Namespaces:
    def __init__(self) -> None:
        tag = f"mwb-{os.getpid()}"
        self.probe, self.censor = f"{tag}-probe", f"{tag}-censor"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
        self.dnsmasq: subprocess.Popen[bytes] | None = None

    def up(self, hosts: dict[str, str]) -> None:
        sh("ip", "netns", "add", self.probe)
        sh("ip", "netns", "add", self.censor)
        sh("ip", "link", "add", "mwb-p0", "netns", self.probe, "type", "veth",
           "peer", "name", "mwb-c0", "netns", self.censor)  # fmt: skip
        for ns, dev, v4, v6 in (
            (self.probe, "mwb-p0", "198.18.255.2/30", "2001:db8:ffff::2/64"),
            (self.censor, "mwb-c0", "198.18.255.1/30", "2001:db8:ffff::1/64"),
        ):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            sh("ip", "-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad")
        sh("ip", "-n", self.probe, "route", "add", "198.18.0.0/15", "via", "198.18.255.1")
        sh("ip", "-n", self.probe, "-6", "route", "add", "2001:db8::/32", "via", "2001:db8:ffff::1")
        rules = self.workdir / "censor.nft"
        rules.write_text(NFT_RULES)
        sh("ip", "netns", "exec", self.censor, "nft", "-f", str(rules))
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text("".join(f"address=/{h}/{ip}\n" for h, ip in sorted(hosts.items())))
        self.dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", self.probe, "dnsmasq", "--keep-in-foreground", "--no-resolv",
             "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", "--port=53",
             f"--conf-file={conf}", f"--pid-file={self.workdir / 'dnsmasq.pid'}",
             "--user=root", "--log-facility=-"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)
        if self.dnsmasq.poll() is not None:
            raise RuntimeError("dnsmasq did not start in the probe namespace")

    def down(self) -> None:
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            self.dnsmasq.terminate()
            try:
                self.dnsmasq.wait(5)
            except subprocess.TimeoutExpired:
                self.dnsmasq.kill()
        for ns in (self.probe, self.censor):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def false_failures(measurement: dict[str, Any], timeout: float) -> list[str]:
    """Failures that are not the network's: DNS (the local dnsmasq answers every name) or a chain
    that failed having had less than 90 % of its time."""
    keys = measurement["test_keys"]
    spans: dict[int, list[float]] = {}
    for name in ("network_events", "queries"):
        for e in keys.get(name) or []:
            span = spans.setdefault(e["transaction_id"], [e.get("t0") or 0.0, e["t"]])
            span[0], span[1] = min(span[0], e.get("t0") or 0.0), max(span[1], e["t"])
    false: list[str] = []
    for target in keys["msgwatch_targets"]:
        if target.get("failure") is None or target.get("role") != "endpoint":
            continue
        ids = target.get("transaction_ids") or []
        seen = spans.get(ids[0]) if ids else None
        short = seen is not None and seen[1] - seen[0] < 0.9 * timeout
        if target.get("failed_step") == "dns" or (
            target.get("failure") == "generic_timeout_error" and short
        ):
            false.append(f"{target.get('failed_step')} {target.get('failure')}")
    return false


def inner(timeout: float, sequential: bool, scale: int, nofile: int | None, retry: bool) -> None:
    """In the probe namespace: run the mapped catalogue, print timing and memory as JSON."""
    import dataclasses

    from msgwatch.catalogue import load_catalogue
    from msgwatch.lab.mapping import map_catalogue
    from msgwatch.probe.chain import ChainConfig
    from msgwatch.probe.runner import RunConfig, count_chains, default_slots
    from msgwatch.session.run import judged, measure

    if nofile is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, min(hard, nofile)))
    mapped = map_catalogue(load_catalogue()).catalogue
    services = [
        dataclasses.replace(s, id=f"{s.id}-x{k}" if k else s.id, successor=None)
        for k in range(scale)
        for s in mapped.services
    ]
    config = RunConfig(
        chain=ChainConfig(resolver=("127.0.0.1", 53)), timeout=timeout, sequential=sequential,
        retry=retry,
    )  # fmt: skip
    slots = 1 if sequential else default_slots()
    start = time.monotonic()
    results = measure(mapped, services, config)
    false = [f for r in results for f in false_failures(r.measurement, timeout)]
    elapsed = time.monotonic() - start
    verdicts = judged(r.measurement for r in results)  # the reader side's, as `run` shows
    targets = [t for r in results for t in r.measurement["test_keys"]["msgwatch_targets"]]
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "chains": count_chains(services),
                "services": len(services),
                "slots": slots,
                "verdicts": {
                    k: sum(1 for v in verdicts if v["verdict"] == k)
                    for k in ("ok", "blocked", "inconclusive", "degraded", "not_measured")
                },
                "false_failures": len(false),
                "false_kinds": dict(Counter(false)),
                "not_run": sum(1 for t in targets if t.get("not_measured") == "no_time"),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def measure(
    ns: Namespaces, timeout: float, sequential: bool, scale: int = 1,
    nofile: int | None = None, retry: bool = True,
) -> dict[str, Any]:  # fmt: skip
    command = ["ip", "netns", "exec", ns.probe, sys.executable, __file__, "--inner",
               "--timeout", str(timeout), "--scale", str(scale)]  # fmt: skip
    command += ["--sequential"] if sequential else []
    command += ["--nofile", str(nofile)] if nofile is not None else []
    command += [] if retry else ["--no-retry"]
    env = dict(os.environ, MSGWATCH_ALLOWED_NETWORKS=FENCE)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=5.0, help="step timeout of the main run")
    parser.add_argument("--scales", default="1,2,4,8", help="catalogue multiples to run")
    parser.add_argument("--nofile", type=int, help="the probe's file-descriptor limit")
    parser.add_argument("--no-retry", action="store_true", help="one attempt per chain")
    parser.add_argument("--seq-timeout", type=float, default=1.0,
                        help="step timeout of the concurrent/sequential comparison")  # fmt: skip
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sequential", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    retry = not args.no_retry
    if args.inner:
        inner(args.timeout, args.sequential, args.scale, args.nofile, retry)
        return
    if os.geteuid() != 0:
        sys.exit("this benchmark makes network namespaces: run it as root")
    from msgwatch.catalogue import load_catalogue
    from msgwatch.lab.mapping import map_catalogue

    hosts = map_catalogue(load_catalogue()).hosts
    ns = Namespaces()
    attempts = "retry once" if retry else "one attempt"
    try:
        ns.up(hosts)
        for scale in (int(x) for x in args.scales.split(",")):
            r = measure(ns, args.timeout, False, scale, args.nofile, retry)
            ratio = r["elapsed"] / args.timeout
            print(f"{scale}x catalogue: {r['services']} services, {r['chains']} chains, "
                  f"{r['slots']} slots, all silently dropped ({attempts}): "
                  f"{r['elapsed']:.2f} s = {ratio:.3f} x the step timeout "
                  f"{args.timeout:g} s; false failures {r['false_failures']} (target 0) "
                  f"{r['false_kinds'] or ''}; "
                  f"not run {r['not_run']}; verdicts {r['verdicts']}; "
                  f"peak memory {r['peak_rss_mb']:.1f} MB")  # fmt: skip
        if not args.skip_sequential:
            fast = measure(ns, args.seq_timeout, False, retry=retry)
            slow = measure(ns, args.seq_timeout, True, retry=retry)
            print(f"one-at-a-time vs concurrent, step timeout {args.seq_timeout:g} s: "
                  f"{slow['elapsed']:.1f} s vs {fast['elapsed']:.2f} s "
                  f"= {slow['elapsed'] / fast['elapsed']:.1f} x")  # fmt: skip
    finally:
        ns.down()


if __name__ == "__main__":
    main()
