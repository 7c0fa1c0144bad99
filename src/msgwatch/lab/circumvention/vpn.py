"""The lab's VPN servers abroad: OpenVPN over UDP and over TCP, WireGuard on ``wireguard-go``.

- OpenVPN (Debian's ``openvpn`` 2.6): two processes on :data:`plan.CIRCUMVENTION` ``openvpn``,
  UDP 1194 and TCP 443, each with a TUN device in ``abroad`` holding the pool's ``.1``
  (``topology subnet``, pools :data:`plan.TUNNEL_POOLS` ``openvpn-udp``/``openvpn-tcp``). The lab's
  CA signs the server's certificate (EC keys) and one client certificate (``clientAuth``; the
  server asks for it, ``duplicate-cn`` lets several probes use it at once). No ``tls-auth`` or
  ``tls-crypt``: the opcode stays visible to a fingerprinting censor, as in the USENIX Security
  2022 paper's setting. ``data-ciphers AES-256-GCM``; no route or DNS option is pushed.
- WireGuard (Debian's ``wireguard-go``, user space on TUN: the kernel has no WireGuard module) on
  :data:`plan.CIRCUMVENTION` ``wireguard`` UDP 51820, device address the pool's ``.1``; keys are
  X25519 (``cryptography``), base64 as ``wg genkey`` writes them. ``wireguard-go`` creates its
  device, then a small wrapper configures it (``wg setconf``, ``ip addr``) and the process that
  stays is ``wireguard-go`` itself (``exec``), so the lab's bind check sees its socket. It binds
  the wildcard address (it cannot bind one): the server declares it (``Server.wildcard``); abroad
  holds only lab addresses, which the lab checks before servers start. Its control socket is
  ``/var/run/wireguard/<device>.sock``, a path shared by the whole host: the device is named for
  the lab (``mws`` + the lab id).

The pools' addresses exist only on TUN devices; abroad's services answer a tunnel address through
the connected route of the server's device. What a probe needs (the CA, the client's certificate
and key, the WireGuard client's private key) is written in the run directory and named by absolute
path in the entries.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from msgwatch.lab import netns
from msgwatch.lab import plan as P
from msgwatch.lab.circumvention import Built
from msgwatch.lab.procs.certs import Authority
from msgwatch.lab.procs.proc import Server, which
from msgwatch.lab.servers.base import Context, IssueFn

OPENVPN_UDP_PORT, OPENVPN_TCP_PORT, WIREGUARD_PORT = 1194, 443, 51820
CIPHER = "AES-256-GCM"
SERVER_NAME = "openvpn.lab.invalid"
CLIENT_NAME = "msgwatch-probe"
WG_MTU = 1420
READY_TIMEOUT = 15.0
_PEM = serialization.Encoding.PEM


def build(ctx: Context, authority: Authority, issue: IssueFn) -> Built:
    """The three VPN servers (configured, not started) and their entries."""
    ca = authority.write(ctx.run / "vpn-ca.pem")
    client_cert, client_key = client_certificate(authority, ctx.run)
    server_cert, server_key = issue(SERVER_NAME)
    servers, entries = [], []
    for proto, port in (("udp", OPENVPN_UDP_PORT), ("tcp", OPENVPN_TCP_PORT)):
        servers.append(openvpn_server(ctx, proto, port, ca, server_cert, server_key))
        entries.append({
            "name": f"openvpn-{proto}", "type": "openvpn", "address": P.CIRCUMVENTION["openvpn"],
            "port": port, "protocol": proto, "source": "lab",
            "params": {"ca": str(ca), "cert": str(client_cert), "key": str(client_key),
                       "cipher": CIPHER},
        })  # fmt: skip
    server, entry = wireguard(ctx)
    servers.append(server)
    entries.append(entry)
    return Built(servers=servers, entries=entries, ready_timeout=READY_TIMEOUT)


def client_certificate(authority: Authority, directory: Path) -> tuple[Path, Path]:
    """A client certificate (``clientAuth``) from the lab's CA: ``openvpn-client.crt``/``.key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, authority.organization),
                         x509.NameAttribute(NameOID.COMMON_NAME, CLIENT_NAME)])  # fmt: skip
    ski = authority.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False)  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(authority.key, hashes.SHA256())
    )
    cert_path, key_path = directory / "openvpn-client.crt", directory / "openvpn-client.key"
    cert_path.write_bytes(cert.public_bytes(_PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def openvpn_config(
    proto: str, port: int, ca: Path, cert: Path, key: Path, log: Path, device: str
) -> str:
    """An OpenVPN server's configuration (one per transport protocol)."""
    pool = ipaddress.ip_network(P.TUNNEL_POOLS[f"openvpn-{proto}"])
    lines = [
        f"dev {device}", "dev-type tun", f"proto {'udp4' if proto == 'udp' else 'tcp4-server'}",
        f"local {P.CIRCUMVENTION['openvpn']}", f"port {port}",
        "topology subnet", f"server {pool.network_address} {pool.netmask}",
        f"ca {ca}", f"cert {cert}", f"key {key}", "dh none", "remote-cert-tls client",
        f"data-ciphers {CIPHER}", "duplicate-cn", "keepalive 10 60",
        f"log {log}", "verb 3", "script-security 1",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def openvpn_server(ctx: Context, proto: str, port: int, ca: Path, cert: Path, key: Path) -> Server:
    name = f"abroad-openvpn-{proto}"
    log, config = ctx.run / f"{name}.log", ctx.run / f"{name}.conf"
    config.write_text(openvpn_config(proto, port, ca, cert, key, log, f"mwovpn{proto[0]}"))
    server = ctx.server(
        name, "abroad", [which("openvpn"), "--config", str(config)],
        [(proto, P.CIRCUMVENTION["openvpn"], port)],
    )  # fmt: skip
    server.answers = lambda: _logged(log, "Initialization Sequence Completed")
    return server


def _logged(log: Path, text: str, limit: int = 256 * 1024) -> bool:
    try:
        with log.open("rb") as handle:
            return text.encode() in handle.read(limit)
    except OSError:
        return False


def wg_keypair() -> tuple[str, str]:
    """(private, public) X25519 keys, base64 as ``wg genkey``/``wg pubkey`` write them."""
    private = x25519.X25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    secret = private.private_bytes(
        raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return base64.b64encode(secret).decode(), base64.b64encode(public).decode()


def wireguard(ctx: Context) -> tuple[Server, dict[str, Any]]:
    """The WireGuard server (a wrapper that ends as ``wireguard-go -f``) and its entry."""
    name = "abroad-wireguard"
    pool = ipaddress.ip_network(P.TUNNEL_POOLS["wireguard"])
    server_ip, client_ip = pool.network_address + 1, pool.network_address + 2
    device = f"mws{ctx.topology.lab_id}"[:15]
    server_private, server_public = wg_keypair()
    client_private, client_public = wg_keypair()
    config, client_key = ctx.run / f"{name}.conf", ctx.run / "wireguard-client.key"
    for path, text in (
        (config, f"[Interface]\nPrivateKey = {server_private}\nListenPort = {WIREGUARD_PORT}\n\n"
                 f"[Peer]\nPublicKey = {client_public}\nAllowedIPs = {client_ip}/32\n"),
        (client_key, client_private + "\n"),
    ):  # fmt: skip
        path.touch(mode=0o600)
        path.write_text(text)
    script = ctx.run / f"{name}.sh"
    script.write_text(
        wrapper(device, config, f"{server_ip}/{pool.prefixlen}", which("wg"), which("ip"))
    )
    argv = ["/bin/sh", str(script), which("wireguard-go")]
    server = ctx.server(name, "abroad", argv, [("udp", "0.0.0.0", WIREGUARD_PORT)])
    server.wildcard = True
    ns = ctx.topology.ns("abroad")
    server.answers = lambda: any(
        ifname == device and str(iface.ip) == str(server_ip)
        for ifname, iface in netns.addresses(ns)
    )
    entry = {
        "name": "wireguard", "type": "wireguard", "address": P.CIRCUMVENTION["wireguard"],
        "port": WIREGUARD_PORT, "protocol": "udp", "source": "lab",
        "params": {"private_key": str(client_key), "public_key": server_public,
                   "tunnel_address": str(client_ip), "allowed_ips": ["198.18.0.0/15"]},
    }  # fmt: skip
    return server, entry


def wrapper(device: str, config: Path, address: str, wg: str, ip: str) -> str:
    """The shell script that starts ``wireguard-go`` (its path is ``$1``) and configures its
    device once the device's control socket exists (at most 10 s); a configuration that fails
    stops ``wireguard-go``, so the lab reports the server as exited."""
    sock = f"/var/run/wireguard/{device}.sock"
    return f"""#!/bin/sh
# The lab's WireGuard server (msgwatch.lab.circumvention.vpn): wireguard-go in the foreground,
# configured by a background subshell once its device exists.
(
  i=0
  while [ ! -S {sock} ]; do
    i=$((i + 1))
    if [ $i -gt 200 ]; then echo "no control socket {sock}"; kill $$; exit 1; fi
    sleep 0.05
  done
  {wg} setconf {device} {config} && {ip} addr add {address} dev {device} \\
    && {ip} link set dev {device} mtu {WG_MTU} up || {{ echo "configuring {device} failed"; kill $$; }}
) &
exec "$1" -f {device}
"""
