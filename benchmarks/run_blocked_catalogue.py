"""Benchmark: the full catalogue, every endpoint silently dropped, one deadline.

Targets (issue 2): the run completes in at most 1.3 × the step timeout; peak memory ≤ 150 MB.
Printed: that ratio, the ratio of a one-at-a-time run of the same chains to the concurrent run, and
peak memory.

Set-up (needs root; everything is torn down at the end, also on error or Ctrl-C):

    netns mwb-<pid>-probe  ── veth ──  netns mwb-<pid>-censor
      lo: dnsmasq on 127.0.0.1:53         nftables: drop every packet to 198.18.0.0/15
      (answers every catalogue name        and 2001:db8::/32 that is not for the link itself
       with its lab address)               (silently: no reset, no ICMP)

The catalogue is the shipped one mapped into the lab's range (``msgwatch.lab.mapping``): no real
address is ever used. The probe runs in the probe namespace as a child process of this script
(``--inner``), so that its peak memory is its own.

    python benchmarks/run_blocked_catalogue.py [--timeout 5] [--seq-timeout 1] [--skip-sequential]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def inner(timeout: float, sequential: bool) -> None:
    """In the probe namespace: run the mapped catalogue, print timing and memory as JSON."""
    from msgwatch.catalogue import load_catalogue
    from msgwatch.lab.mapping import map_catalogue
    from msgwatch.probe.chains import ChainConfig
    from msgwatch.probe.runner import RunConfig, count_chains, run

    mapped = map_catalogue(load_catalogue()).catalogue
    services = list(mapped.services)
    config = RunConfig(
        chain=ChainConfig(resolver=("127.0.0.1", 53)), timeout=timeout, sequential=sequential
    )
    start = time.monotonic()
    results = asyncio.run(run(mapped, services, config))
    elapsed = time.monotonic() - start
    verdicts = [v for r in results for v in r.verdicts]
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "chains": count_chains(services),
                "services": len(services),
                "verdicts": {
                    k: sum(1 for v in verdicts if v["verdict"] == k)
                    for k in ("ok", "blocked", "inconclusive")
                },
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def measure(ns: Namespaces, timeout: float, sequential: bool) -> dict[str, float]:
    command = ["ip", "netns", "exec", ns.probe, sys.executable, __file__, "--inner",
               "--timeout", str(timeout)] + (["--sequential"] if sequential else [])  # fmt: skip
    env = dict(os.environ, MSGWATCH_ALLOWED_NETWORKS=FENCE)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=5.0, help="step timeout of the main run")
    parser.add_argument("--seq-timeout", type=float, default=1.0,
                        help="step timeout of the concurrent/sequential comparison")  # fmt: skip
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sequential", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.timeout, args.sequential)
        return
    if os.geteuid() != 0:
        sys.exit("this benchmark makes network namespaces: run it as root")
    from msgwatch.catalogue import load_catalogue
    from msgwatch.lab.mapping import map_catalogue

    hosts = map_catalogue(load_catalogue()).hosts
    ns = Namespaces()
    try:
        ns.up(hosts)
        main_run = measure(ns, args.timeout, sequential=False)
        ratio = main_run["elapsed"] / args.timeout
        print(f"catalogue: {main_run['services']} services, {main_run['chains']} endpoint chains, "
              f"all silently dropped; verdicts {main_run['verdicts']}")  # fmt: skip
        print(f"concurrent run, step timeout {args.timeout:g} s: {main_run['elapsed']:.2f} s "
              f"= {ratio:.3f} x the step timeout (target <= 1.3)")  # fmt: skip
        print(f"peak memory: {main_run['peak_rss_mb']:.1f} MB (target <= 150)")
        if not args.skip_sequential:
            fast = measure(ns, args.seq_timeout, sequential=False)
            slow = measure(ns, args.seq_timeout, sequential=True)
            print(f"one-at-a-time vs concurrent, step timeout {args.seq_timeout:g} s: "
                  f"{slow['elapsed']:.1f} s vs {fast['elapsed']:.2f} s "
                  f"= {slow['elapsed'] / fast['elapsed']:.1f} x")  # fmt: skip
    finally:
        ns.down()


if __name__ == "__main__":
    main()
