"""The lab: namespaces, links and routes (:mod:`~msgwatch.lab.plan`), its real servers
(:mod:`~msgwatch.lab.servers`), its catalogue, CA and run directory — up and down as one.

::

    with Lab() as lab:                          # the shipped catalogue, a fresh 6-hex id
        lab.exec("probe1", ["msgwatch", "run", "--catalogue", str(lab.catalogue_dir),
                            "--resolver", lab.resolver("isp1"), "--ca-bundle", str(lab.ca_bundle)])

- **Up** writes the run directory (with this process as owner) before anything else, then the lab
  catalogue and CA, the namespaces, links, addresses, routes and forwarding (a few ``ip -batch``
  runs), checks that every address is a lab address and that no namespace has a default route, then
  starts every server at once and waits until all hold their sockets and answer. If anything fails,
  what was made is torn down and :class:`LabError` says what failed; a server that failed is named,
  with its log copied to the temporary directory (the run directory goes with the lab).
- **Down** (idempotent) stops the servers (checked gone), kills anything else left inside the
  namespaces, deletes them (checked gone) and removes the run directory. It also runs on leaving a
  ``with`` block however it is left, on SIGINT/SIGTERM (then the previous handler runs; handlers are
  restored on down) and at interpreter exit. After a ``kill -9``, :func:`msgwatch.lab.runtime.gc`
  removes everything of labs whose owner is gone. This lifecycle is :mod:`msgwatch.lab.lifecycle`,
  shared with the loopback back-end (:mod:`msgwatch.lab.loopback`).
- **Safety**: only 198.18.0.0/15 and 2001:db8::/32 (and loopback, link-local) are ever configured;
  every route names a lab prefix; nothing connects to the host's namespace; every server socket is
  checked to be bound inside the lab's networks.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec

from msgwatch.catalogue import Catalogue, load_catalogue
from msgwatch.lab import netns, runtime
from msgwatch.lab import plan as P
from msgwatch.lab import servers as S
from msgwatch.lab.catalogue_files import write_catalogue
from msgwatch.lab.lifecycle import Guard
from msgwatch.lab.mapping import LabMapping, map_catalogue
from msgwatch.lab.netns import LabError
from msgwatch.lab.plan import Topology
from msgwatch.lab.procs.certs import Authority
from msgwatch.lab.procs.proc import Server, ServerError, stop_all, wait_all_ready
from msgwatch.lab.procs.registry import record

if TYPE_CHECKING:
    from msgwatch.lab.censor.context import CensorContext
    from msgwatch.lab.circumvention import Built

__all__ = ["Lab", "LabError", "Topology"]

T = TypeVar("T")
_ALLOWED = (*P.LAB_NETWORKS, ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"), ipaddress.ip_network("fe80::/10"))  # fmt: skip
READY_TIMEOUT = 10.0


class Lab:
    """A lab of network namespaces with real servers; see the module's notes."""

    def __init__(
        self, catalogue: Catalogue | None = None, lab_id: str | None = None,
        circumvention: Collection[str] = (),
    ) -> None:  # fmt: skip
        from msgwatch.lab.circumvention import check_groups

        try:
            self.circumvention = check_groups(circumvention)
        except ValueError as exc:
            raise LabError(str(exc)) from exc
        self.lab_id = runtime.check_id(lab_id) if lab_id is not None else runtime.new_id()
        self.mapping: LabMapping = map_catalogue(catalogue or load_catalogue())
        self.plan = S.plan_services(self.mapping)
        try:
            self.topology = Topology(self.lab_id, tuple(self.plan.addresses()))
        except ValueError as exc:
            raise LabError(str(exc)) from exc
        self.run_dir = runtime.entry(self.lab_id)
        self.catalogue_dir = self.run_dir / "catalogue"
        self.ca_bundle = self.run_dir / "ca.pem"
        self.circumvention_file = self.run_dir / "circumvention.json"
        """The ``--circumvention`` file for the lab's circumvention servers (when asked for)."""
        self.servers: list[Server] = []
        self.timings: dict[str, float] = {}
        self._resolver_lines: dict[str, list[str]] = {isp: [] for isp in P.ISPS}
        self._procs: list[subprocess.Popen[Any]] = []
        self._guard = Guard(self.down)
        self._context: S.Context | None = None
        self._state = "new"

    # -- names and addresses -------------------------------------------------------------------

    @property
    def isps(self) -> list[str]:
        """The ISPs: ``isp1``, ``isp2``."""
        return list(P.ISPS)

    def ns(self, role: str) -> str:
        """The namespace of ``role`` (``probe1``, ``censor1``, ``transit``, ``abroad``, ...)."""
        try:
            return self.topology.ns(role)
        except ValueError as exc:
            raise LabError(str(exc)) from exc

    def probe_role(self, isp: str) -> str:
        return f"probe{P.isp_number(isp)}"

    def censor_role(self, isp: str) -> str:
        return f"censor{P.isp_number(isp)}"

    def resolver(self, isp: str) -> str:
        """The ISP's recursive resolver, ``address:53``."""
        return f"{P.resolver_ip(isp)}:53"

    def interfaces(self, isp: str) -> dict[str, str]:
        """The censor's interfaces: ``lan`` (towards the probe) and ``wan`` (towards transit)."""
        return self.topology.interfaces(isp)

    def blockpage_ip(self, isp: str) -> str:
        return P.blockpage_ip(isp)

    def helper_address(self, where: str) -> str:
        """The test helper's address ``abroad`` or ``domestic``."""
        if where not in P.HELPERS:
            raise LabError(f"no test helper {where!r} (there are: {', '.join(P.HELPERS)})")
        return P.HELPERS[where]

    def censor_context(self, isp: str) -> CensorContext:
        """What the censor rules of ``isp`` are compiled for (:mod:`msgwatch.lab.censor`).

        Its ``run_dir`` is ``<run dir>/censor<n>/`` (made once the lab is up, removed with it).
        """
        from msgwatch.lab.censor.context import CensorContext

        interfaces = self.interfaces(isp)
        directory = self.run_dir / self.censor_role(isp)
        if self._state == "up":  # before up, the run directory must not exist yet
            directory.mkdir(parents=True, exist_ok=True)
        return CensorContext(
            netns=self.ns(self.censor_role(isp)), lan_if=interfaces["lan"],
            wan_if=interfaces["wan"], lan_prefix=P.lan_prefix(isp),
            lan_prefix6=P.lan_prefix6(isp), resolver_ip=P.resolver_ip(isp),
            blockpage_ip=P.blockpage_ip(isp), run_dir=directory,
        )  # fmt: skip

    # -- running things inside -----------------------------------------------------------------

    def exec(
        self, role: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside ``role``'s namespace (``ip netns exec``) and wait for it."""
        return subprocess.run(netns.exec_argv(self.ns(role), argv), **kwargs)

    def popen(self, role: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``role``'s namespace; it is killed at down if still running."""
        proc: subprocess.Popen[Any] = subprocess.Popen(
            netns.exec_argv(self.ns(role), argv), **kwargs
        )
        self._procs.append(proc)
        return proc

    def run_in(self, role: str, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """Call ``fn(*args)`` in a thread inside ``role``'s namespace (its sockets are there)."""
        return netns.run_in(self.ns(role), fn, *args, timeout=timeout)

    # -- the ISP resolvers ---------------------------------------------------------------------

    def set_resolver_lines(self, isp: str, lines: Sequence[str]) -> None:
        """dnsmasq lines added to ``isp``'s resolver (resolver lies); restarts it if the lab is up."""
        P.isp_number(isp)  # a known ISP
        lines = S.check_resolver_lines(lines)
        if lines == self._resolver_lines[isp]:
            return
        self._resolver_lines[isp] = lines
        if self._state != "up" or self._context is None:
            return
        name = f"{self.censor_role(isp)}-dns"
        old = next(s for s in self.servers if s.name == name)
        if stop_all([old]):
            raise LabError(f"could not stop {name} to reconfigure it")
        new = S.isp_dns(self._context, isp, lines)
        self.servers[self.servers.index(old)] = new
        record(self.run_dir, name, new.start(self.run_dir))
        try:
            new.wait_ready(READY_TIMEOUT)
        except ServerError as exc:
            raise LabError(self._failure(exc)) from exc

    def resolver_lines(self, isp: str) -> list[str]:
        return list(self._resolver_lines[isp])

    # -- up and down ---------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> Lab:
        if self._state != "new":
            raise LabError("a Lab comes up once; make a new one")
        problem = netns.unavailable()
        if problem:
            raise LabError(problem)
        started = time.monotonic()
        runtime.create_entry(self.lab_id)
        self._state = "up"
        try:
            self._guard.arm()
            self._build()
        except BaseException as exc:
            message = self._failure(exc) if isinstance(exc, ServerError) else None
            try:
                self.down()
            except LabError as cleanup:
                raise LabError(f"{message or exc}; and then: {cleanup}") from exc
            if message is not None:
                raise LabError(message) from exc
            raise
        self.timings["up"] = time.monotonic() - started
        return self

    def _build(self) -> None:
        t0 = time.monotonic()
        write_catalogue(self.mapping, self.catalogue_dir)
        authority = Authority("msgwatch lab")
        authority.write(self.ca_bundle)
        t1 = time.monotonic()
        netns.batches({None: self.topology.create_commands()})
        netns.sysctls(self.topology.sysctls())
        netns.batches({ns: lines for ns, lines in self.topology.namespace_commands().items()})
        self._check_safety()
        t2 = time.monotonic()
        self._context = S.Context(self.run_dir, self.topology)
        self.servers = S.build(self._context, self.plan, authority, self._resolver_lines)
        built = self._circumvention(authority)
        for server in self.servers:
            record(self.run_dir, server.name, server.start(self.run_dir))
        wait_all_ready(self.servers, max([READY_TIMEOUT, *(b.ready_timeout for b in built)]))
        for group in built:
            if group.settle is not None:
                group.settle(group.ready_timeout)
        t3 = time.monotonic()
        self.timings |= {"files": t1 - t0, "network": t2 - t1, "servers": t3 - t2}

    def _circumvention(self, authority: Authority) -> list[Built]:
        """The circumvention servers asked for, added to :attr:`servers`, and their entries
        written to :attr:`circumvention_file`."""
        if not self.circumvention:
            return []
        from msgwatch.lab import circumvention as C

        assert self._context is not None
        key = ec.generate_private_key(ec.SECP256R1())
        certs = self.run_dir / "circumvention-certs"
        certs.mkdir(exist_ok=True)

        def issue(name: str) -> tuple[Path, Path]:
            return authority.issue(name, certs, key)

        built = C.build(self._context, authority, issue, self.circumvention)
        for group in built:
            self.servers += group.servers
        C.write_entries(self.circumvention_file, built)
        return built

    def _check_safety(self) -> None:
        """Every address a lab address (or loopback, link-local); no default route anywhere."""
        problems = []
        for role in P.ROLES:
            ns = self.ns(role)
            for ifname, iface in netns.addresses(ns):
                if not any(iface.ip in n for n in _ALLOWED if n.version == iface.version):
                    problems.append(f"{ns} {ifname} has {iface}")
            problems += [f"{ns} has a default route: {r}" for r in netns.default_routes(ns)]
        if problems:
            raise LabError("the lab is not sealed: " + "; ".join(problems))

    def _failure(self, exc: ServerError) -> str:
        """The message for a server that failed; its logs are copied out of the run directory."""
        kept = []
        for log in exc.logs:
            if log.is_file():
                target = Path(tempfile.gettempdir()) / f"msgwatch-lab-{self.lab_id}-{log.name}"
                shutil.copyfile(log, target)
                kept.append(target)
        where = f"; see {' and '.join(map(str, kept))}" if kept else ""
        return f"{exc.server} {exc.what}{where}{exc.tail}"

    def down(self) -> None:
        """Stop everything and remove it all (idempotent); raises if something would not go."""
        if self._state != "up":
            return
        self._state = "down"
        started = time.monotonic()
        try:
            runtime.teardown(self.lab_id, self.servers)
        finally:
            for proc in self._procs:
                proc.poll()  # killed inside the namespace; reaped here
            self._guard.disarm()
            self.timings["down"] = time.monotonic() - started
