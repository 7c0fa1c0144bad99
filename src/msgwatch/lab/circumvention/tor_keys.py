"""Keys of the lab's private Tor network, made before anything starts.

- A directory authority's v3 keys come from ``tor-gencert --create-identity-key -m 12 -a IP:DirPort``
  (an empty passphrase on stdin), as chutney makes them; its ``v3ident`` is the ``fingerprint``
  line of ``keys/authority_certificate``.
- Every relay's (and the bridge's) identity key is made by ``tor --list-fingerprint`` in its data
  directory; the fingerprint is read from its output (``<nickname> <40 hex in groups>``).
- The obfs4 bridge's state (``pt_state/obfs4_state.json``: node id, Curve25519 identity key pair,
  DRBG seed, IAT mode) is written here, so the bridge line (``cert=`` is base64 of node id and
  public key, unpadded) is known before the bridge starts; ``obfs4proxy`` loads that state and
  writes the same line to ``pt_state/obfs4_bridgeline.txt``, which the lab checks once it is up.

Every command runs with a time limit; a failure raises :class:`~msgwatch.lab.procs.proc.ServerError`
quoting the tool's output.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from msgwatch.lab.procs.proc import ServerError

KEY_TIMEOUT = 30.0
"""Seconds for one key tool (a loaded 2-core machine makes ``tor-gencert`` slow)."""
_FINGERPRINT = re.compile(r"^\S+ ((?:[0-9A-F]{4} ?){10})$", re.MULTILINE)
_V3IDENT = re.compile(r"^fingerprint ([0-9A-F]{40})$", re.MULTILINE)


@dataclass(frozen=True)
class Obfs4State:
    """An obfs4 bridge's identity: what ``cert=`` is made of."""

    node_id: bytes
    public_key: bytes

    @property
    def cert(self) -> str:
        return base64.b64encode(self.node_id + self.public_key).decode().rstrip("=")


def _run(name: str, argv: list[str], stdin: str = "") -> str:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=KEY_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(name, f"key generation failed ({argv[0]}: {exc})") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-400:]
        raise ServerError(name, f"key generation failed ({argv[0]} status {done.returncode})",
                          tail=f"\n    {tail}")  # fmt: skip
    return done.stdout


def authority_keys(name: str, gencert: str, datadir: Path, address: str, dirport: int) -> str:
    """Make an authority's v3 identity, signing key and certificate; returns its ``v3ident``."""
    keys = datadir / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    _run(name, [gencert, "--create-identity-key", "--passphrase-fd", "0", "-m", "12",
                "-a", f"{address}:{dirport}", "-i", str(keys / "authority_identity_key"),
                "-s", str(keys / "authority_signing_key"),
                "-c", str(keys / "authority_certificate")], stdin="\n")  # fmt: skip
    found = _V3IDENT.search((keys / "authority_certificate").read_text())
    if not found:
        raise ServerError(name, "tor-gencert wrote a certificate without a fingerprint line")
    return found.group(1)


def fingerprints(tor: str, datadirs: Mapping[str, Path]) -> dict[str, str]:
    """Make each relay's identity keys (in parallel) and return name → fingerprint (40 hex)."""
    procs = {}
    for name, datadir in datadirs.items():
        datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv = [tor, "--ignore-missing-torrc", "-f", os.devnull, "--quiet", "--list-fingerprint",
                "--orport", "1", "--datadirectory", str(datadir),
                "--dirserver", "x 127.0.0.1:1 ffffffffffffffffffffffffffffffffffffffff"]  # fmt: skip
        procs[name] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    out: dict[str, str] = {}
    problems = []
    for name, proc in procs.items():
        try:
            text, _ = proc.communicate(timeout=KEY_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            problems.append(f"{name}: tor --list-fingerprint took over {KEY_TIMEOUT:.0f} s")
            continue
        found = _FINGERPRINT.search(text or "")
        if proc.returncode != 0 or not found:
            problems.append(f"{name}: tor --list-fingerprint said {(text or '').strip()[-300:]!r}")
            continue
        out[name] = found.group(1).replace(" ", "")
    if problems:
        raise ServerError("tor", "key generation failed", tail="\n    " + "\n    ".join(problems))
    return out


def obfs4_state(datadir: Path) -> Obfs4State:
    """Write the bridge's ``pt_state/obfs4_state.json`` (a fresh identity) and return it."""
    state_dir = datadir / "pt_state"
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    state = Obfs4State(os.urandom(20), public)
    document = {"node-id": state.node_id.hex(), "private-key": private.hex(),
                "public-key": public.hex(), "drbg-seed": os.urandom(24).hex(), "iat-mode": 0}  # fmt: skip
    path = state_dir / "obfs4_state.json"
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return state
