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
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

KEY_TYPES = ("ec", "rsa")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertPaths:
    """PEM files the server loads: its chain, its key and the CA clients trust."""

    cert: Path
    key: Path
    ca: Path
    client_cert: Path | None = None  # a device certificate signed by the same CA
    client_key: Path | None = None


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")


def _pem_key(key: PrivateKey) -> bytes:
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
    validity = _Validity(
        start=now - datetime.timedelta(hours=1),  # tolerate device clocks a bit behind
        end=now + datetime.timedelta(days=days),
    )
    ca_key = _new_key(key_type)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"harness test CA {now:%Y%m%dT%H%M%S}")])
    ca_cert = _ca_cert(ca_key, ca_name, validity)
    key = _new_key(key_type)
    cert = _server_cert(key, names, ips, ca_key, ca_name, validity)
    client_key = _new_key(key_type)
    client_cert = _client_cert(client_key, ca_key, ca_name, validity)
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


@dataclass(frozen=True)
class _Validity:
    """One window for the whole chain: a device accepts all of it or none."""

    start: datetime.datetime
    end: datetime.datetime


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: Any, validity: _Validity
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity.start)
        .not_valid_after(validity.end)
    )


def _ca_cert(ca_key: PrivateKey, ca_name: x509.Name, validity: _Validity) -> x509.Certificate:
    """Self-signed, may sign leaves only (path length 0)."""
    return (
        _builder(ca_name, ca_name, ca_key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _server_cert(
    key: PrivateKey,
    names: tuple[str, ...],
    ips: tuple[str, ...],
    ca_key: PrivateKey,
    ca_name: x509.Name,
    validity: _Validity,
) -> x509.Certificate:
    """The leaf a device verifies: every name and IP address it may connect to."""
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "server")])
    return (
        _builder(subject, ca_name, key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _client_cert(
    client_key: PrivateKey, ca_key: PrivateKey, ca_name: x509.Name, validity: _Validity
) -> x509.Certificate:
    """A device certificate, for the server's ``client_cert`` knob."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "harness device")])
    return (
        _builder(subject, ca_name, client_key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
