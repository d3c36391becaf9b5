"""A request cancelled mid-flight must not leave its TLS socket open after the client closes.

The server here accepts TLS and then never answers anything — not the request, not the
TLS close_notify — like an overloaded or partitioned apiserver. A graceful close of such
a connection never completes on CPython < 3.12.8 (python/cpython#118960): the socket would
stay open until garbage collection (a ResourceWarning, which fails any test that happens
to be running then). The server sees its peer go away only if the client aborts it.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from konductor_sdk import Client, Identity
from konductor_sdk._kernel.objects import NAMESPACE
from konductor_sdk.testing._certs import CertificateAuthority
from konductor_sdk.testing._kubeconfig import write_kubeconfig

pytestmark = pytest.mark.anyio


class SilentTLSServer:
    """Accepts TLS connections on loopback, reads and ignores everything; records when
    each connection's peer is gone (EOF or reset)."""

    def __init__(self, tmp: Path, ca: CertificateAuthority) -> None:
        pair = ca.issue_serving_cert()
        pair.write(tmp / "tls.crt", tmp / "tls.key")
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = threading.Semaphore(0)
        self.gone = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._stop = False

    def start(self) -> None:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, raw: socket.socket) -> None:
        with raw:
            raw.settimeout(30)
            try:
                if not self._handshake(raw):
                    return
                self.accepted.release()
                # From here on, raw bytes below TLS: the request and the client's
                # close_notify are just bytes, never answered. Only EOF or a reset end this
                # loop: the client's socket is really closed.
                while raw.recv(65536):
                    pass
            except OSError:
                pass
            self.gone.release()

    def _handshake(self, raw: socket.socket) -> bool:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self._context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    raw.sendall(outgoing.read())
                data = raw.recv(65536)
                if not data:
                    return False
                incoming.write(data)
        if outgoing.pending:
            raw.sendall(outgoing.read())
        return True

    def stop(self) -> None:
        self._stop = True
        self._listener.close()


@pytest.fixture
def silent(tmp_path: Path) -> Iterator[tuple[SilentTLSServer, Path]]:
    ca = CertificateAuthority.generate()
    server = SilentTLSServer(tmp_path, ca)
    server.start()
    client_pair = ca.issue_client_cert("tester")
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        server=f"https://127.0.0.1:{server.port}",
        ca_pem=ca.cert_pem,
        user="tester",
        cert_pem=client_pair.cert_pem,
        key_pem=client_pair.key_pem,
    )
    yield server, kubeconfig
    server.stop()


async def test_a_cancelled_request_leaves_no_socket_behind(
    silent: tuple[SilentTLSServer, Path],
) -> None:
    server, kubeconfig = silent
    client = Client(kubeconfig=str(kubeconfig), namespace="ns", identity=Identity("t"))
    await client.connect()
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.store.get, NAMESPACE, None, "ns")
        # The request is on the wire once the server has accepted the TLS connection.
        await anyio.to_thread.run_sync(server.accepted.acquire, True, 10.0)
        tg.cancel_scope.cancel()
    await client.aclose()
    # The server sees the client's end go away (it never answers close_notify).
    assert await anyio.to_thread.run_sync(server.gone.acquire, True, 10.0)
