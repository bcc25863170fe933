"""Certificates for one run: a throw-away CA and a server certificate it signs.

Why generate per run: a device under test must verify the server exactly like
it verifies the cloud, so the harness needs a CA whose PEM it can hand to the
device (or to a test client) and a server certificate with the names and IP
addresses the device will connect to.  A lab whose firmware has its CA baked
in passes its own certificate, key and CA instead (:class:`CertPaths`).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

KEY_TYPES = ("ec", "rsa")


@dataclass(frozen=True)
class CertPaths:
    """PEM files the server loads: its chain, its key and the CA clients trust."""

    cert: Path
    key: Path
    ca: Path
    client_cert: Path | None = None  # a device certificate signed by the same CA
    client_key: Path | None = None


def _new_key(key_type: str):
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate(
    workdir: Path,
    names: tuple[str, ...] = ("server.test", "localhost"),
    ips: tuple[str, ...] = ("127.0.0.1", "::1"),
    key_type: str = "ec",
    prefix: str = "server",
    days: int = 30,
) -> CertPaths:
    """Write ``ca.pem``, ``<prefix>-cert.pem`` (leaf + CA) and ``<prefix>-key.pem``.

    The CA key is never written: nothing else may sign with it after the run.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(hours=1)  # tolerate device clocks a bit behind
    end = now + datetime.timedelta(days=days)
    ca_key = _new_key(key_type)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"harness test CA {now:%Y%m%dT%H%M%S}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = _new_key(key_type)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "server")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    client_key = _new_key(key_type)
    client_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "harness device")]))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = CertPaths(
        cert=workdir / f"{prefix}-cert.pem",
        key=workdir / f"{prefix}-key.pem",
        ca=workdir / "ca.pem",
        client_cert=workdir / "device-cert.pem",
        client_key=workdir / "device-key.pem",
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    paths.ca.write_bytes(ca_pem)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    paths.key.touch(mode=0o600)
    paths.key.write_bytes(_pem_key(key))
    paths.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    paths.client_key.touch(mode=0o600)
    paths.client_key.write_bytes(_pem_key(client_key))
    log.info("generated %s CA and server certificate for %s in %s", key_type, list(names) + list(ips), workdir)
    return paths


