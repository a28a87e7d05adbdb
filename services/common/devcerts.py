"""A throwaway certificate authority for development, tests and first deployments.

``python -m services.common.devcerts OUT_DIR`` writes a CA, a server certificate (for
the names given with --hosts), client certificates for edge devices (--clients) and
an API key. Production certificates come from your own PKI (cert-manager, Vault, ...);
this exists so that TLS can be switched on, and tested, without one.

Needs the ``cryptography`` package (a dev dependency; the services never import this).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "analytics", "encoder")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TransTIC"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: CertificatePublicKeyTypes, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little: a peer whose clock runs behind still accepts it.
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def make_ca(common_name: str = "TransTIC dev CA", *, days: int = 365) -> Issued:
    # P-256 keys: fast to make (tests make several), and every TLS stack takes them.
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: Issued,
    common_name: str,
    *,
    hosts: Sequence[str] = (),
    client: bool = False,
    days: int = 90,
) -> Issued:
    """A leaf certificate signed by ``ca``: a server one for ``hosts`` (DNS names or IP
    addresses), or with ``client`` a client one identified by ``common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, ca_key = ca.certificate, ca.private_key()
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _write(path: Path, data: bytes, mode: int) -> Path:
    # Created with the final mode: a private key is never readable by others, not even
    # for the moment between writing and chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)
    return path


def write_dev_pki(
    out: Path, *, hosts: Sequence[str] = DEFAULT_HOSTS, clients: Sequence[str] = ("edge-1",)
) -> dict[str, Path]:
    """Write ca.crt/ca.key, server.crt/server.key, <client>.crt/.key and api-keys into
    ``out``. The directory is private (0700); the files the containers mount are 0644,
    because a non-root container user cannot read a host user's 0600 file and the
    directory already keeps other host users out. The CA key stays 0600."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    ca = make_ca()
    server = issue(ca, "transtic-server", hosts=hosts)
    written = {
        "ca.crt": _write(out / "ca.crt", ca.cert_pem, 0o644),
        "ca.key": _write(out / "ca.key", ca.key_pem, 0o600),
        "server.crt": _write(out / "server.crt", server.cert_pem, 0o644),
        "server.key": _write(out / "server.key", server.key_pem, 0o644),
    }
    for name in clients:
        device = issue(ca, name, client=True)
        written[f"{name}.crt"] = _write(out / f"{name}.crt", device.cert_pem, 0o644)
        written[f"{name}.key"] = _write(out / f"{name}.key", device.key_pem, 0o644)
    key = secrets.token_urlsafe(32)
    written["api-keys"] = _write(out / "api-keys", f"{key}\n".encode(), 0o644)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.common.devcerts", description=__doc__)
    parser.add_argument("out", type=Path, help="directory to write (e.g. deploy/secrets)")
    parser.add_argument(
        "--hosts", default=",".join(DEFAULT_HOSTS), help="server names and IPs, comma-separated"
    )
    parser.add_argument("--clients", default="edge-1", help="client certificate names")
    args = parser.parse_args(argv)
    split = [h.strip() for h in args.hosts.split(",") if h.strip()]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for name, path in write_dev_pki(args.out, hosts=split, clients=clients).items():
        print(f"{name:14s} {path}")


if __name__ == "__main__":
    main()
