"""The conformance kit: one behaviour suite every transport plugin runs on itself.

A plugin subclasses :class:`TransportConformance` in its tests and provides the ``target``
fixture, as trio's ``check_two_way_stream`` is given stream makers::

    from qkdn_sdk.testing import ConformanceTarget, TransportConformance

    class TestMyTransport(TransportConformance):
        @pytest.fixture(params=["my://127.0.0.1:0", "my+tls://127.0.0.1:0"])
        def target(self, request):
            return ConformanceTarget(url=request.param, tls=request.param.startswith("my+tls"))

The kit serves ``target.url`` (port 0 is fine: it reads the real URL from ``ServerInfo``), and for
TLS targets makes its own CA and certificates with trustme: the server is ``km-a``, the client
``app-a``. Needs the test extra: from a checkout, ``python3 -m pip install '.[test]'``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from qkdn_sdk.codecs.frame import MAX_PAYLOAD_SIZE
from qkdn_sdk.codecs.payload import encode_payload
from qkdn_sdk.errors import (
    FailureResponse,
    NotCarried,
    PayloadTooLarge,
    QkdnError,
    RequestTimeout,
    TransportError,
)
from qkdn_sdk.messages import Key, Message, ak, all_messages, example
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import (
    ConnectHook,
    Connection,
    Handler,
    Limits,
    ServerInfo,
    connect,
    serve,
)
from qkdn_sdk.transport import transport_registry as _registry

__all__ = ["ConformanceTarget", "TransportConformance", "conformance_pki"]

SERVER_ID = "km-a"
CLIENT_ID = "app-a"
_GUARD = 20  # seconds: no conformance test may hang longer than this


@attrs.frozen
class ConformanceTarget:
    """What the kit tests: a URL to serve (port 0 allowed) and whether it is a TLS scheme.

    ``accepts``: the messages the served side receives, passed to ``serve`` (``None``: all);
    the kit sends only those. ``framed``: the transport carries the Q.416x Appendix I frames,
    whose payload limit (65,535 bytes) the kit checks.
    """

    url: str
    tls: bool = False
    accepts: frozenset[type[Message]] | None = None
    framed: bool = True


@attrs.frozen
class ConformancePKI:
    """TLS settings made by the kit: server ``km-a``, client ``app-a``, and two bad clients."""

    server: TLSConfig
    client: TLSConfig
    client_of_other_ca: TLSConfig
    client_without_certificate: TLSConfig


def conformance_pki(directory: Path) -> ConformancePKI:
    """Write a trustme CA, server and client certificates to ``directory``."""
    import trustme

    def write(ca: trustme.CA, name: str, *hosts: str) -> tuple[Path, Path]:
        issued = ca.issue_cert(*hosts, common_name=name)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        for extra in issued.cert_chain_pems[1:]:
            extra.write_to_path(str(cert), append=True)
        issued.private_key_pem.write_to_path(str(key))
        return cert, key

    ca, other_ca = trustme.CA(), trustme.CA()
    ca_file, other_ca_file = directory / "ca.pem", directory / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other_ca.cert_pem.write_to_path(str(other_ca_file))
    server_cert, server_key = write(ca, SERVER_ID, SERVER_ID, "localhost", "127.0.0.1", "::1")
    client_cert, client_key = write(ca, CLIENT_ID, CLIENT_ID)
    rogue_cert, rogue_key = write(other_ca, "rogue", "rogue")
    return ConformancePKI(
        server=TLSConfig(ca=ca_file, cert=server_cert, key=server_key),
        client=TLSConfig(ca=ca_file, cert=client_cert, key=client_key),
        client_of_other_ca=TLSConfig(ca=ca_file, cert=rogue_cert, key=rogue_key),
        client_without_certificate=TLSConfig(ca=ca_file),
    )


def _requests(from_client: bool, target: ConformanceTarget) -> list[type[Message]]:
    transport = _registry().lookup(_scheme(target))
    return [
        cls
        for cls in all_messages()
        if cls.response_type() is not None
        and transport.carries(cls, from_client=from_client)
        and (not from_client or target.accepts is None or cls in target.accepts)
    ]


def _one_way(target: ConformanceTarget) -> list[type[Message]]:
    transport = _registry().lookup(_scheme(target))
    return [
        cls
        for cls in all_messages()
        if cls.response_type() is None
        and cls is not ErrorIndication
        and transport.carries(cls, from_client=True)
        and (target.accepts is None or cls in target.accepts)
    ]


def _scheme(target: ConformanceTarget) -> str:
    return target.url.split("://", 1)[0]


def _response_of(cls: type[Message]) -> type[Message]:
    response_type = cls.response_type()
    assert response_type is not None, f"{cls.__name__} is not a request"
    return response_type


async def _answer_examples(message: Message, _connection: Connection) -> Message | None:
    """A handler that answers every request with the full example of its response."""
    response_type = type(message).response_type()
    return None if response_type is None else example(response_type, sender=SERVER_ID)


_STALL = ak.KeyRequest(application_destination_id="stall")
"""(The kit tells its requests apart by ``application_destination_id``: every transport carries
it, where ETSI 014 carries no application name.)"""


def _stalling(arrived: trio.Event) -> Handler:
    """A handler that never answers the request ``_STALL`` (and sets ``arrived`` when it comes),
    and answers every other request with its example."""

    async def handler(message: Message, connection: Connection) -> Message | None:
        if message == _STALL:
            arrived.set()
            await trio.sleep_forever()
        return await _answer_examples(message, connection)

    return handler


class TransportConformance:
    """The behaviour every transport must show. Subclass it and provide ``target``."""

    @pytest.fixture
    def target(self) -> ConformanceTarget:
        raise NotImplementedError("provide a `target` fixture returning a ConformanceTarget")

    @pytest.fixture
    def pki(self, tmp_path: Path) -> ConformancePKI:
        return conformance_pki(tmp_path)

    @pytest.fixture
    def tls_target(self, target: ConformanceTarget) -> ConformanceTarget:
        """``target``, for the tests of TLS only. (A skip from inside a trio test loses its
        reason in pytest's summary; a skip from a fixture keeps it.)"""
        if not target.tls:
            pytest.skip(f"{target.url} is not a TLS target")
        return target

    # --- helpers ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _server(
        self,
        target: ConformanceTarget,
        pki: ConformancePKI,
        handler: Handler,
        limits: Limits | None = None,
        accepts: Collection[type[Message]] | None = None,
        on_connect: ConnectHook | None = None,
    ) -> AsyncIterator[str]:
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                lambda task_status: serve(
                    target.url,
                    handler,
                    tls=pki.server if target.tls else None,
                    identity=SERVER_ID,
                    limits=limits,
                    accepts=accepts if accepts is not None else target.accepts,
                    on_connect=on_connect,
                    task_status=task_status,
                )
            )
            try:
                yield info.url
            finally:
                nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def _client(
        self,
        target: ConformanceTarget,
        pki: ConformancePKI,
        url: str,
        handler: Handler | None = None,
        tls: TLSConfig | None = None,
    ) -> AsyncIterator[Connection]:
        async with connect(
            url,
            tls=(tls or pki.client) if target.tls else None,
            identity=CLIENT_ID,
            handler=handler,
        ) as connection:
            yield connection

    # --- the suite --------------------------------------------------------------------------

    @pytest.mark.trio
    async def test_round_trip_of_every_request(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """Every request it carries, full and with mandatory parameters only, arrives intact
        (as the transport carries it: ``Transport.as_carried``); the full example of its
        response comes back intact."""
        received: list[Message] = []

        async def handler(message: Message, connection: Connection) -> Message | None:
            received.append(message)
            return await _answer_examples(message, connection)

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, handler) as url,
                self._client(target, pki, url) as client,
            ):
                sent = []
                for cls in _requests(True, target):
                    for full in (True, False):
                        message = example(cls, full=full, sender=CLIENT_ID)
                        sent.append(message)
                        response = await client.request(message)
                        assert response == example(_response_of(cls), sender=SERVER_ID)
        transport = _registry().lookup(_scheme(target))
        assert received == [transport.as_carried(message) for message in sent]

    @pytest.mark.trio
    async def test_one_way_messages(self, target: ConformanceTarget, pki: ConformancePKI) -> None:
        """Messages that expect no response arrive, in order, with nothing sent back."""
        expected = [example(cls, sender=CLIENT_ID) for cls in _one_way(target)]
        received: list[Message] = []
        all_in = trio.Event()

        async def handler(message: Message, _connection: Connection) -> None:
            received.append(message)
            if len(received) == len(expected):
                all_in.set()

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, handler) as url,
                self._client(target, pki, url) as client,
            ):
                for message in expected:
                    await client.send(message)
                if expected:
                    await all_in.wait()
        assert received == expected

    @pytest.mark.trio
    async def test_peer_initiated_requests(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """The serving side sends requests to the connected side on the same connection (while
        a request of the client is in flight) and gets their responses."""
        answered: list[Message] = []

        async def server_handler(message: Message, connection: Connection) -> Message | None:
            for cls in _requests(False, target):
                request = example(cls, tag="server", sender=SERVER_ID)
                answered.append(await connection.request(request))
            return await _answer_examples(message, connection)

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, server_handler) as url,
                self._client(target, pki, url, handler=_answer_examples) as client,
            ):
                await client.request(example(ak.KeyRequest, sender=CLIENT_ID))
        expected = [
            example(_response_of(cls), sender=SERVER_ID) for cls in _requests(False, target)
        ]
        assert answered == expected

    @pytest.mark.trio
    async def test_server_reaches_a_silent_client(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """``on_connect`` is told of each new connection (with the client's identity over TLS)
        before any message of it, and the server's own requests sent from there reach a client
        that has sent nothing. A transport that carries no request of the server never calls
        it."""
        server_requests = _requests(False, target)
        told: list[str | None] = []
        answered: list[Message] = []
        all_answered = trio.Event()

        async def ask(connection: Connection) -> None:
            for cls in server_requests:
                request = example(cls, tag="server", sender=SERVER_ID)
                answered.append(await connection.request(request))
            all_answered.set()

        with trio.fail_after(_GUARD):
            async with trio.open_nursery() as nursery:

                def on_connect(connection: Connection) -> None:
                    told.append(connection.peer_id)
                    nursery.start_soon(ask, connection)

                async with (
                    self._server(target, pki, _answer_examples, on_connect=on_connect) as url,
                    self._client(target, pki, url, handler=_answer_examples) as client,
                ):
                    if server_requests:
                        await all_answered.wait()
                    else:  # the connection is up once it answers
                        await client.request(example(ak.KeyRequest, sender=CLIENT_ID))
        if not server_requests:
            assert told == []
            return
        assert len(told) == 1
        if target.tls:
            assert told == [CLIENT_ID]
        assert answered == [example(_response_of(cls), sender=SERVER_ID) for cls in server_requests]

    @pytest.mark.trio
    async def test_pipelined_requests(self, target: ConformanceTarget, pki: ConformancePKI) -> None:
        """Requests sent together on one connection are all in flight at once, and each gets
        its own response, though they are answered in reverse order."""
        count = 32
        arrived: list[str] = []
        all_in = trio.Event()
        release: dict[str, trio.Event] = {}

        async def handler(message: Message, _connection: Connection) -> Message | None:
            assert isinstance(message, ak.KeyRequest)
            name = message.application_destination_id
            release[name] = trio.Event()
            arrived.append(name)
            if len(arrived) == count:
                all_in.set()
            await release[name].wait()
            return ak.ResponseToKeyRequest(
                keys=[Key(key=name.encode(), key_id=f"key-{name}")], response="success"
            )

        results: dict[str, Message] = {}

        async def ask(client: Connection, name: str) -> None:
            results[name] = await client.request(ak.KeyRequest(application_destination_id=name))

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, handler) as url,
                self._client(target, pki, url) as client,
                trio.open_nursery() as nursery,
            ):
                for index in range(count):
                    nursery.start_soon(ask, client, f"r{index}")
                await all_in.wait()
                for name in reversed(arrived):
                    release[name].set()
        for name, response in results.items():
            assert isinstance(response, ak.ResponseToKeyRequest)
            assert response.keys[0].key_id == f"key-{name}"
        assert len(results) == count

    @pytest.fixture
    def framed_target(self, target: ConformanceTarget) -> ConformanceTarget:
        """``target``, for the tests of the Q.416x frame limit only."""
        if not target.framed:
            pytest.skip(f"{target.url} does not carry Q.416x frames")
        return target

    @pytest.mark.trio
    async def test_payload_at_and_over_the_limit(
        self, framed_target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """A payload of exactly 65,535 bytes is carried; one byte more is refused before
        anything is sent, and the connection goes on; an over-long answer becomes a failure."""
        target = framed_target
        base = ak.KeyRequest(application_destination_id="app-b", application_name="")
        padding = MAX_PAYLOAD_SIZE - len(encode_payload(base))
        at_limit = attrs.evolve(base, application_name="x" * padding)
        over = attrs.evolve(base, application_name="x" * (padding + 1))
        assert len(encode_payload(at_limit)) == MAX_PAYLOAD_SIZE
        lengths: list[int] = []

        async def handler(message: Message, _connection: Connection) -> Message | None:
            assert isinstance(message, ak.KeyRequest)
            name = message.application_name or ""
            lengths.append(len(name))
            if name == "huge answer":
                keys = [Key(key=bytes(64), key_id=f"key-{index}") for index in range(1000)]
                return ak.ResponseToKeyRequest(keys=keys, response="success")
            return example(ak.ResponseToKeyRequest)

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, handler) as url,
                self._client(target, pki, url) as client,
            ):
                await client.request(at_limit)
                with pytest.raises(PayloadTooLarge):
                    await client.request(over)
                with pytest.raises(FailureResponse, match="exceeds the frame limit"):
                    await client.request(attrs.evolve(base, application_name="huge answer"))
                await client.request(base)
        assert lengths == [padding, len("huge answer"), 0]

    @pytest.mark.trio
    async def test_timeout_leaves_the_connection_usable(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        stuck = trio.Event()
        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, _stalling(stuck)) as url,
                self._client(target, pki, url) as client,
            ):
                with pytest.raises(RequestTimeout):
                    await client.request(_STALL, timeout=0.2)
                assert stuck.is_set()
                response = await client.request(example(ak.KeyRequest, sender=CLIENT_ID))
                assert response == example(ak.ResponseToKeyRequest)

    @pytest.mark.trio
    async def test_cancelled_request_leaves_the_connection_usable(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        arrived = trio.Event()
        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, _stalling(arrived)) as url,
                self._client(target, pki, url) as client,
            ):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.request, _STALL)
                    await arrived.wait()
                    nursery.cancel_scope.cancel()
                assert not client.closed
                assert await client.request(example(ak.KeyRequest, sender=CLIENT_ID)) == example(
                    ak.ResponseToKeyRequest
                )

    @pytest.mark.trio
    async def test_peer_closing_mid_request(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """When the peer closes the connection while a request waits, the request fails with a
        transport error (not a hang), and so does every later one."""

        async def handler(_message: Message, connection: Connection) -> Message | None:
            await connection.aclose()
            return None

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, handler) as url,
                self._client(target, pki, url) as client,
            ):
                with pytest.raises(TransportError):
                    await client.request(example(ak.KeyRequest, sender=CLIENT_ID))
                with pytest.raises(TransportError):
                    await client.request(example(ak.KeyRequest, sender=CLIENT_ID))
                assert client.closed

    @pytest.mark.trio
    async def test_handler_errors_become_failure_responses(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        async def handler(message: Message, _connection: Connection) -> Message | None:
            name = getattr(message, "application_destination_id", None)
            if name == "qkdn error":
                raise QkdnError("insufficient keys for app-b")
            if name == "bug":
                raise RuntimeError("a bug in the handler")
            return example(ak.ResponseToKeyRequest)

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, handler) as url,
                self._client(target, pki, url) as client,
            ):
                base = ak.KeyRequest(application_destination_id="app-b")
                with pytest.raises(FailureResponse, match="insufficient keys for app-b") as caught:
                    await client.request(
                        attrs.evolve(base, application_destination_id="qkdn error")
                    )
                assert isinstance(caught.value.response, ak.ResponseToKeyRequest)
                with pytest.raises(FailureResponse, match="internal error"):
                    await client.request(attrs.evolve(base, application_destination_id="bug"))
                assert await client.request(base) == example(ak.ResponseToKeyRequest)

    @pytest.mark.trio
    async def test_refuses_what_it_cannot_carry(
        self, target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """Messages the transport declares it cannot carry are refused locally with
        NotCarried; everything else is sent."""
        transport = _registry().lookup(_scheme(target))
        refused = [cls for cls in all_messages() if not transport.carries(cls, from_client=True)]
        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, _answer_examples) as url,
                self._client(target, pki, url) as client,
            ):
                for cls in refused:
                    send: Callable[[Message], Awaitable[Any]] = (
                        client.request if cls.response_type() else client.send
                    )
                    with pytest.raises(NotCarried):
                        await send(example(cls))

    # --- identity (TLS targets) ---------------------------------------------------------------

    @pytest.mark.trio
    async def test_tls_identities(self, tls_target: ConformanceTarget, pki: ConformancePKI) -> None:
        """Each side sees the ID in the other's certificate; a message claiming another ID is
        refused."""
        target = tls_target
        seen: list[str | None] = []

        async def handler(message: Message, connection: Connection) -> Message | None:
            seen.append(connection.peer_id)
            return await _answer_examples(message, connection)

        with trio.fail_after(_GUARD):
            async with (
                self._server(target, pki, handler) as url,
                self._client(target, pki, url) as client,
            ):
                assert client.local_id == CLIENT_ID
                await client.request(ak.KeyRequest(application_destination_id="app-b"))
                assert client.peer_id == SERVER_ID
                honest = ak.KeyRequest(
                    application_source_id=CLIENT_ID, application_destination_id="b"
                )
                await client.request(honest)
                forged = attrs.evolve(honest, application_source_id="app-z")
                # refused by the peer (a failure response), or before it is sent by a transport
                # that cannot carry the claim (ETSI 014 takes the ID from the certificate)
                with pytest.raises(QkdnError, match="not the authenticated peer"):
                    await client.request(forged)
        assert seen == [CLIENT_ID, CLIENT_ID]

    @pytest.mark.trio
    async def test_tls_refuses_unknown_ca_and_missing_certificate(
        self, tls_target: ConformanceTarget, pki: ConformancePKI
    ) -> None:
        """A client certified by another CA, or with no certificate, gets nothing through; the
        server goes on serving good clients."""
        target = tls_target
        handled: list[str | None] = []

        async def handler(message: Message, connection: Connection) -> Message | None:
            handled.append(connection.peer_id)
            return await _answer_examples(message, connection)

        with trio.fail_after(_GUARD):
            async with self._server(target, pki, handler) as url:
                for bad in (pki.client_of_other_ca, pki.client_without_certificate):
                    with pytest.raises(TransportError):  # at connect, or at the first request
                        async with self._client(target, pki, url, tls=bad) as client:
                            await client.request(ak.KeyRequest(application_destination_id="b"))
                async with self._client(target, pki, url) as client:
                    await client.request(example(ak.KeyRequest, sender=CLIENT_ID))
        assert handled == [CLIENT_ID]
