"""NATS credentials and TLS files for the dev stack and compose, and the provisioner.

``python -m tlr.nats_auth generate DIR`` (compose's one-shot ``nats-auth`` service) writes, once:

    DIR/server/auth.conf          authorization (one user per service + provisioner) and tls
    DIR/server/{ca,server-cert,server-key}.pem
    DIR/<user>/password           that user's password only (mode 600)
    DIR/<user>/ca.pem             the CA that verifies the server

and ``python -m tlr.nats_auth provision`` creates or updates every stream, KV bucket and durable
as the ``provisioner`` user (the ``NATS_*`` settings say how to connect). ``tlr up`` uses
:func:`dev_credentials` for its embedded server (no TLS on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.nats_auth import USERS, authorization_conf

SECRET_MODE = 0o600


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read, never readable in between."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(SECRET_MODE)


def new_password() -> str:
    return secrets.token_urlsafe(24)


def kept_passwords(root: Path, users: Iterable[str] = USERS) -> dict[str, str]:
    """``root/<user>/password`` for each user: read when there, else made (mode 600)."""
    passwords = {}
    for user in users:
        path = root / user / "password"
        if path.exists():
            passwords[user] = path.read_text().strip()
        else:
            passwords[user] = new_password()
            _write_secret(path, passwords[user] + "\n")
    return passwords


@dataclass(frozen=True)
class DevCredentials:
    """The embedded server's config (with users) and each user's password file."""

    server_conf: Path
    password_files: Mapping[str, Path]

    def env_for(self, user: str) -> dict[str, str]:
        """The NATS_* settings of one child: its own user and password file, nothing else."""
        return {
            "NATS_USER": user,
            "NATS_PASSWORD_FILE": str(self.password_files[user]),
            "NATS_PROVISION": "false",
        }


def dev_credentials(root: Path, base_conf: Path | None) -> DevCredentials:
    """Users for ``tlr up``'s embedded server, kept under ``root`` (``var/nats-auth``).

    The server config is ``base_conf`` (nats/server.conf) with the authorization block after
    it, rewritten at every start so a permission change in the code takes effect.
    """
    passwords = kept_passwords(root)
    base = base_conf.read_text() if base_conf is not None and base_conf.exists() else ""
    conf = root / "server.conf"
    _write_secret(
        conf, base + "\n# Users of `tlr up` (tlr/nats_auth.py)\n" + authorization_conf(passwords)
    )
    return DevCredentials(conf, {user: root / user / "password" for user in passwords})


# --- TLS ---------------------------------------------------------------------------------------


def _pem_key(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_tls(root: Path, hosts: Iterable[str], *, days: int = 825) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for ``hosts`` (names or IPs) under ``root``:
    (ca.pem, server-cert.pem, server-key.pem). The CA's key is not kept: nothing else is
    ever signed by it; run again (delete the files) to renew."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlr NATS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlr NATS server")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    root.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = (
        root / "ca.pem",
        root / "server-cert.pem",
        root / "server-key.pem",
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(key_file, _pem_key(key).decode())
    return ca_file, cert_file, key_file


def tls_conf(cert: str, key: str) -> str:
    """nats-server's ``tls`` block: clients must speak TLS (verified by the CA they hold)."""
    return f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n  timeout: 2\n}}\n'


def generate(root: Path, hosts: Iterable[str], server_dir: str = "/etc/nats/auth") -> list[Path]:
    """Compose's files (module docstring); what exists is kept, so a restart changes nothing.
    ``server_dir`` is where the server container sees ``root/server`` (its TLS files)."""
    server = root / "server"
    passwords = kept_passwords(root)
    ca = server / "ca.pem"
    if not ca.exists():
        make_tls(server, hosts)
    conf = authorization_conf(passwords) + tls_conf(
        f"{server_dir}/server-cert.pem", f"{server_dir}/server-key.pem"
    )
    _write_secret(server / "auth.conf", conf)
    written = [server / "auth.conf"]
    for user in passwords:
        (root / user / "ca.pem").write_bytes(ca.read_bytes())
        written.append(root / user / "password")
    return written


async def provision(replicas: int | None = None) -> int:
    """Create or update every stream, bucket and durable, as the ``NATS_*`` settings connect."""
    from shared.bus import Bus
    from shared.config import NatsClientSettings, Settings
    from shared.subjects import DURABLES

    auth = NatsClientSettings()
    settings = Settings()
    bus = await Bus.connect(
        auth.nats_servers,
        service="provisioner",
        replicas=replicas or settings.nats_replicas,
        auth=auth.model_copy(update={"nats_provision": True}),
    )
    assert bus is not None
    try:
        await bus.provision(durables=DURABLES)
    finally:
        await bus.close()
    sys.stdout.write("provisioned: every stream, KV bucket and durable\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlr.nats_auth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="users, passwords and TLS files for compose")
    gen.add_argument("dir", type=Path)
    gen.add_argument(
        "--host",
        action="append",
        default=None,
        help="a name or IP the server certificate is valid for (repeat; default: nats, "
        "localhost, 127.0.0.1)",
    )
    gen.add_argument(
        "--server-dir",
        default="/etc/nats/auth",
        help="where the nats-server container mounts DIR/server (default /etc/nats/auth)",
    )
    prov = sub.add_parser("provision", help="create/update streams, buckets and durables")
    prov.add_argument("--replicas", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "generate":
        hosts = args.host or ["nats", "localhost", "127.0.0.1"]
        for path in generate(args.dir, hosts, args.server_dir):
            sys.stdout.write(f"{path}\n")
        return 0
    return asyncio.run(provision(args.replicas))


if __name__ == "__main__":
    raise SystemExit(main())
