"""A private rsyslog receiver for the syslog tests: Debian's rsyslogd in the foreground with
its own config, work directory and pid file (no system paths), listening on loopback:

- TLS (RFC 5425): imtcp with the GnuTLS driver, a server certificate for `localhost` and
  127.0.0.1 signed by a CA generated here (anonymous client auth);
- plain TCP: imptcp; UDP: imudp (both octet-counting aware / one message per datagram);
- every message written by omfile as one JSON line: rawmsg (the bytes as received, without
  the octet count), msg, structured data, msgid, app name, hostname and the input.

`global(maxMessageSize="64k")` (rsyslog's default is 8k); control characters and a trailing LF
are kept as they are (by default rsyslog escapes the first to #012 and drops the second), so
bodies come back byte-exact.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
SERVER_NAME = "localhost"

_TEMPLATE = """
template(name="capture" type="list") {
  constant(value="{\\"raw\\":\\"")          property(name="rawmsg" format="json")
  constant(value="\\",\\"msg\\":\\"")        property(name="msg" format="json")
  constant(value="\\",\\"sd\\":\\"")         property(name="structured-data" format="json")
  constant(value="\\",\\"msgid\\":\\"")      property(name="msgid" format="json")
  constant(value="\\",\\"app\\":\\"")        property(name="app-name" format="json")
  constant(value="\\",\\"host\\":\\"")       property(name="hostname" format="json")
  constant(value="\\",\\"pri\\":\\"")        property(name="pri" format="json")
  constant(value="\\",\\"input\\":\\"")      property(name="inputname" format="json")
  constant(value="\\"}\\n")
}
"""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(
    directory: Path, name: str
) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(
    directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(SERVER_NAME))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = directory / "server.pem"
    key_path = directory / "server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Rsyslog:
    directory: Path
    tls_port: int
    tcp_port: int
    udp_port: int
    ca_file: Path
    wrong_ca_file: Path
    output: Path
    server_name: str = SERVER_NAME

    def received(self) -> list[dict[str, Any]]:
        if not self.output.exists():
            return []
        # Complete lines only: omfile may be half-way through the last one.
        lines = self.output.read_bytes().split(b"\n")[:-1]
        return [json.loads(line.decode("utf-8")) for line in lines]

    def mark(self) -> int:
        return len(self.received())

    def wait_for(
        self, count: int, *, after: int = 0, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """The messages received after `mark()` = `after`, once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()[after:]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


def _config(r: Rsyslog, cert: Path, key: Path) -> str:
    return f"""
global(
  workDirectory="{r.directory}/work"
  maxMessageSize="64k"
  parser.escapeControlCharactersOnReceive="off"
  parser.dropTrailingLFOnReception="off"
  defaultNetstreamDriverCAFile="{r.ca_file}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"
       MaxFrameSize="200000")
module(load="imptcp")
module(load="imudp")
{_TEMPLATE}
input(type="imtcp" address="127.0.0.1" port="{r.tls_port}" name="tls")
input(type="imptcp" address="127.0.0.1" port="{r.tcp_port}" name="tcp")
input(type="imudp" address="127.0.0.1" port="{r.udp_port}" name="udp")
action(type="omfile" file="{r.output}" template="capture" asyncWriting="off"
       flushOnTXEnd="on")
"""


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@contextlib.contextmanager
def running_rsyslog(directory: Path) -> Iterator[Rsyslog]:
    if not os.path.exists(RSYSLOGD):
        pytest.skip("rsyslogd is not installed (scripts/ensure-test-services.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "work").mkdir(exist_ok=True)
    ca_file, ca_key, ca_cert = make_ca(directory, "test-ca")
    wrong_ca_file, _, _ = make_ca(directory, "wrong-ca")
    cert, key = make_server_cert(directory, ca_key, ca_cert)
    r = Rsyslog(
        directory=directory,
        tls_port=free_port(),
        tcp_port=free_port(),
        udp_port=free_port(socket.SOCK_DGRAM),
        ca_file=ca_file,
        wrong_ca_file=wrong_ca_file,
        output=directory / "received.jsonl",
    )
    conf = directory / "rsyslog.conf"
    conf.write_text(_config(r, cert, key))
    check = subprocess.run([RSYSLOGD, "-N1", "-f", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout
    log = (directory / "rsyslogd.out").open("wb")
    process = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(conf), "-i", str(directory / "rsyslogd.pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
    )
    try:
        deadline = time.monotonic() + 15
        while not (_listening(r.tls_port) and _listening(r.tcp_port)):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "rsyslogd did not start: " + (directory / "rsyslogd.out").read_text()
                )
            time.sleep(0.05)
        yield r
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    with running_rsyslog(tmp_path_factory.mktemp("rsyslog")) as r:
        yield r
