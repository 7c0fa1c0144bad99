"""nginx in the lab: every web and TLS endpoint abroad, and each ISP's block page server."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from msgwatch.lab import plan as P
from msgwatch.lab.procs.proc import Server
from msgwatch.lab.servers.base import DEFAULT_CERT, Context, IssueFn, hostport
from msgwatch.lab.servers.table import ServicePlan

BLOCKPAGE_CERT = "blocked.lab.invalid"
BLOCKPAGE_HTML = (
    "<!DOCTYPE html><html><head><title>Access restricted</title></head><body>"
    "<h1>Access restricted</h1><p>Access to this resource has been blocked by order of the "
    "Ministry of Digital Development (msgwatch lab).</p></body></html>"
)
BULK_PATH = "/msgwatch/bulk"
BULK_BYTES = 1 << 20


def _server_block(listen: str, names: Sequence[str], cert: tuple[Path, Path] | None,
                  body: str, status: int = 200, html: bool = False,
                  bulk: Path | None = None) -> str:  # fmt: skip
    default = not names
    lines = [f"listen {listen}{' ssl' if cert else ''}{' default_server' if default else ''};",
             f"server_name {' '.join(names) or '_'};"]  # fmt: skip
    if cert is not None:
        lines += [f"ssl_certificate {cert[0]};", f"ssl_certificate_key {cert[1]};"]
    if html:
        lines.append("default_type text/html;")
    lines.append(f'location / {{ return {status} "{body}"; }}')
    if bulk is not None:  # the object the probe's throughput test downloads
        lines.append(f"location = {BULK_PATH} {{ alias {bulk}; }}")
    return "    server {\n" + "".join(f"        {line}\n" for line in lines) + "    }\n"


def _nginx_conf(run: Path, name: str, blocks: Sequence[str]) -> Path:
    tmp = run / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    temps = "".join(f"    {kind}_temp_path {tmp / kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    conf = (
        f"# msgwatch lab: {name}\n"
        f"daemon off;\nmaster_process off;\npid {run / f'{name}.pid'};\n"
        f"lock_file {run / f'{name}.lock'};\nerror_log {run / f'{name}.log'} notice;\n"
        "worker_rlimit_nofile 8192;\nevents { worker_connections 4096; }\nhttp {\n"
        f"    access_log {run / f'{name}-access.log'};\n{temps}"
        "    default_type text/plain;\n    server_tokens off;\n"
        "    server_names_hash_bucket_size 256;\n    server_names_hash_max_size 8192;\n"
        + "".join(blocks)
        + "}\n"
    )
    path = run / f"{name}.conf"
    path.write_text(conf)
    return path


def _nginx_argv(ctx: Context, name: str, conf: Path) -> list[str]:
    return [
        ctx.exe["nginx"],
        "-e",
        str(ctx.run / f"{name}.log"),
        "-p",
        str(ctx.run),
        "-c",
        str(conf),
    ]


def web(ctx: Context, plan: ServicePlan, issue: IssueFn) -> Server:
    name, blocks, binds = "abroad-web", [], []
    bulk = ctx.run / "bulk.bin"
    bulk.write_bytes(os.urandom(BULK_BYTES))
    for (address, port, tls), names in sorted(plan.web.items()):
        listen = hostport(address, port)
        binds.append(("tcp", address, port))
        for host in sorted(names):
            blocks.append(_server_block(listen, [host], issue(host) if tls else None,
                                        f"msgwatch lab: {host}\\n", bulk=bulk))  # fmt: skip
        blocks.append(_server_block(listen, [], issue(DEFAULT_CERT) if tls else None,
                                    f"msgwatch lab: {address}\\n", bulk=bulk))  # fmt: skip
    conf = _nginx_conf(ctx.run, name, blocks)
    return ctx.server(name, "abroad", _nginx_argv(ctx, name, conf), binds)


def blockpage(ctx: Context, isp: str, issue: IssueFn) -> Server:
    role = f"censor{P.isp_number(isp)}"
    name, address = f"{role}-blockpage", P.blockpage_ip(isp)
    blocks = [
        _server_block(hostport(address, 80), [], None, BLOCKPAGE_HTML, 403, html=True),
        _server_block(hostport(address, 443), [], issue(BLOCKPAGE_CERT), BLOCKPAGE_HTML, 403,
                      html=True),
    ]  # fmt: skip
    conf = _nginx_conf(ctx.run, name, blocks)
    binds = [("tcp", address, 80), ("tcp", address, 443)]
    return ctx.server(name, role, _nginx_argv(ctx, name, conf), binds)
