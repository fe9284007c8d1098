"""HTTPS to a pinned address, through a real TLS handshake on loopback.

GIVEN a test CA, certificates it signed for `backend.test` and for `other.test`, HTTPS servers on
127.0.0.1 presenting one each (recording the SNI name they were asked for and every request),
and a fake resolver (`backend.test` -> 127.0.0.1, every lookup recorded),
WHEN predict and health calls go to `https://backend.test:<port>/...` through both transports
(urllib3 on Lambda, aiohttp on one machine), each trusting the test CA explicitly (a urllib3
pool's `ssl_context`, an aiohttp connector's `ssl`; taskgate's code is unchanged),
THEN:
- the call succeeds: it connected to the checked address, sent `backend.test` as SNI and in
  `Host`, and verified the certificate against `backend.test`;
- a certificate for another name, or from a CA the client does not trust, fails the handshake:
  no request reaches the server (verification is never skipped to make the call work);
- the name is resolved once per call, by the guard: the client never resolves it again.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.domain.models import Endpoints, Server, ServerStatus
from core.domain.protocol import BackendRequest, Kind
from core.http import aio, blocking

NAME = "backend.test"


# -- a CA and its certificates ----------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: Any
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:  # the CA
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
            )
        )
    return builder.sign(signer, hashes.SHA256())


class Pki:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_key = _key()
        self.ca = _certificate("taskgate test CA", self.ca_key, None, self.ca_key)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))

    def server_context(self, name: str) -> ssl.SSLContext:
        """A server context presenting a certificate for `name`, signed by the CA."""
        key = _key()
        certificate = _certificate(name, key, self.ca, self.ca_key)
        chain, key_file = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verification as by default (CERT_REQUIRED, hostnames checked), trusting the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


# -- HTTPS servers on loopback ------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server: TlsServer

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append((self.command, self.path, self.headers.get("Host")))
        body = b'{"status": "completed", "result": 1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class TlsServer(ThreadingHTTPServer):
    """An HTTPS server: the handshake in each connection's thread, the SNI name recorded."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.server_names: list[str | None] = []
        self.requests: list[tuple[str, str, str | None]] = []
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused the certificate
            return
        Handler(tls, client_address, self)

    def reset(self) -> None:
        self.server_names.clear()
        self.requests.clear()


def _serve(context: ssl.SSLContext) -> Iterator[TlsServer]:
    server = TlsServer(context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def backend(pki: Pki) -> Iterator[TlsServer]:
    """Presents a certificate for backend.test."""
    yield from _serve(pki.server_context(NAME))


@pytest.fixture(scope="module")
def impostor(pki: Pki) -> Iterator[TlsServer]:
    """Presents a certificate, signed by the same CA, for other.test."""
    yield from _serve(pki.server_context("other.test"))


# -- the two transports, as taskgate calls them -------------------------------------------------


def backend_server(url: str) -> Server:
    return Server(
        id="gpu-1",
        name="gpu-1",
        endpoints=Endpoints(predict=url, health=url),
        status=ServerStatus.ONLINE,
        registered_at=0,
    )


def call_blocking(url: str, context: ssl.SSLContext | None) -> tuple[Any, tuple[bool, str | None]]:
    """predict then health through urllib3 (context None: the pool's defaults)."""
    pool = urllib3.PoolManager() if context is None else urllib3.PoolManager(ssl_context=context)
    outcome = blocking.predict_sync(pool, BackendRequest(url, {}, b"{}", 5.0, "gpu-1"))
    return outcome, blocking.health_sync(pool, backend_server(url), 5.0)


def call_asyncio(url: str, context: ssl.SSLContext | None) -> tuple[Any, tuple[bool, str | None]]:
    """predict then health through aiohttp (context None: the session's defaults)."""

    async def calls() -> tuple[Any, tuple[bool, str | None]]:
        connector = aiohttp.TCPConnector() if context is None else aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as client:
            outcome = await aio.predict_async(client, BackendRequest(url, {}, b"{}", 5.0, "gpu-1"))
            return outcome, await aio.health_async(client, backend_server(url), 5.0)

    return asyncio.run(calls())


TRANSPORTS = {"urllib3": call_blocking, "aiohttp": call_asyncio}


class Resolver:
    """backend.test -> 127.0.0.1, every lookup recorded; IP literals as the system resolves
    them (numeric: no network)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(name)
            return self.real(name, port, *args, **kwargs)
        except ValueError:
            pass
        self.asked.append(name)
        if name != NAME:
            raise socket.gaierror(socket.EAI_NONAME, "not in the test resolver")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 0)))]


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    fake = Resolver()
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_https_reaches_the_pinned_address_verifying_the_certificate_for_the_name(
    resolver: Resolver, backend: TlsServer, pki: Pki, transport: str
) -> None:
    backend.reset()
    url = f"https://{NAME}:{backend.port}/predict"

    outcome, health = TRANSPORTS[transport](url, pki.client_context())

    assert outcome.kind is Kind.COMPLETED, outcome
    assert health == (True, None)
    # Each connection asked for the name (SNI) and got the certificate it verified.
    assert backend.server_names and set(backend.server_names) == {NAME}
    assert backend.requests == [
        ("POST", "/predict", f"{NAME}:{backend.port}"),
        ("GET", "/predict", f"{NAME}:{backend.port}"),
    ]
    # Resolved once per call, by the guard: the client never looked the name up again (a
    # second lookup, as DNS rebinding needs, would show here).
    assert resolver.asked == [NAME, NAME]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", ["certificate for another name", "CA not trusted"])
def test_a_certificate_that_does_not_verify_fails_the_call_and_sends_nothing(
    resolver: Resolver, backend: TlsServer, impostor: TlsServer, pki: Pki, transport: str, case: str
) -> None:
    server = impostor if case == "certificate for another name" else backend
    context = pki.client_context() if case == "certificate for another name" else None
    server.reset()
    url = f"https://{NAME}:{server.port}/predict"

    outcome, health = TRANSPORTS[transport](url, context)

    assert (outcome.kind, outcome.error) == (Kind.RETRY, "Server gpu-1 unreachable (TLS failed)")
    assert health == (False, "health check failed (TLS failed)")
    assert set(server.server_names) == {NAME}  # the handshake was made, for the name...
    assert server.requests == []  # ...and refused: no request was sent
    assert resolver.asked == [NAME, NAME]
