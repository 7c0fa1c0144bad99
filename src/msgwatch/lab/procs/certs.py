"""A throw-away certificate authority and its server certificates, made fresh at every start.

Used by the loopback mini-Internet and the namespace lab. Keys are ECDSA P-256 (a dozen certificates
cost milliseconds; a hundred signed for one shared leaf key, a few tens of milliseconds). Certificates carry what strict
verifiers (``X509_V_FLAG_X509_STRICT``, Python ≥3.13's default) ask for: basic constraints, key
usage, key identifiers, SANs on every leaf. They are valid from a day ago for a week.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Authority | None,
    names: list[str],
    organization: str,
) -> x509.Certificate:
    ca = issuer is None
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])  # fmt: skip
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                          crl_sign=ca, encipher_only=False, decipher_only=False)  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        )  # fmt: skip
    return builder.sign(key if issuer is None else issuer.key, hashes.SHA256())


class Authority:
    """A CA: signs one certificate per name; its PEM is the probe's trust anchor."""

    def __init__(self, organization: str = "msgwatch mini-Internet") -> None:
        self.organization = organization
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = _certificate(f"{organization} CA", self.key, None, [], organization)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(_PEM))
        return path

    def issue(
        self, name: str, directory: Path, key: ec.EllipticCurvePrivateKey | None = None
    ) -> tuple[Path, Path]:
        """A server certificate for ``name``, written as ``<name>.crt`` and ``<name>.key``.

        ``key``: the leaf key to certify (several certificates may share one); a new one if None.
        """
        key = key or ec.generate_private_key(ec.SECP256R1())
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert = _certificate(name, key, self, [name], self.organization)
        cert_path.write_bytes(cert.public_bytes(_PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return cert_path, key_path
