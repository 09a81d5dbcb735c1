"""The transport plugin system: entry-point discovery, isolation of broken plugins, the CLI."""

from __future__ import annotations

import subprocess
import sys
import types
import urllib.parse
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from qkdn_sdk.errors import NotCarried, TransportError
from qkdn_sdk.messages import Message, ak, example
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import (
    Connection,
    Handler,
    Limits,
    ServerInfo,
    Transport,
    TransportRegistry,
    connect,
    hookimpl,
    transport_registry,
)

QKDN = str(Path(sys.executable).with_name("qkdn"))


class _Dummy(Transport):
    name = "dummy"
    schemes = ("dummy",)

    def connect(
        self,
        url: urllib.parse.SplitResult,
        *,
        tls: TLSConfig | None,
        identity: str | None,
        handler: Handler | None,
        limits: Limits,
        accepts: Collection[type[Message]] | None,
    ) -> AsyncIterator[Connection]:  # type: ignore[override]
        raise NotImplementedError

    async def serve(
        self,
        url: urllib.parse.SplitResult,
        handler: Handler,
        *,
        tls: TLSConfig | None,
        identity: str | None,
        limits: Limits,
        accepts: Collection[type[Message]] | None,
        task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        raise NotImplementedError


def _plugin(**hooks: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(**hooks)


def test_installed_plugins_are_found_by_entry_point() -> None:
    registry = transport_registry()
    by_plugin = {entry.plugin: entry for entry in registry.entries()}
    assert by_plugin["memory"].distribution == "qkdn-sdk"
    assert by_plugin["tcp"].distribution == "qkdn-tcp"  # installed from plugins/, never imported
    assert type(registry.lookup("tcp+tls")).__module__ == "qkdn_tcp"
    assert registry.failures == []


def test_a_failing_plugin_is_reported_and_the_others_still_work() -> None:
    registry = TransportRegistry()

    @hookimpl
    def broken_hook(registry: TransportRegistry) -> None:
        raise RuntimeError("cannot find libfoo")

    @hookimpl
    def good_hook(registry: TransportRegistry) -> None:
        registry.add(_Dummy)

    registry.register_plugin(_plugin(qkdn_register_transports=broken_hook), "broken", "qkdn-broken")
    registry.register_plugin(_plugin(qkdn_register_transports=good_hook), "good", "qkdn-good")
    assert [(f.plugin, f.distribution) for f in registry.failures] == [("broken", "qkdn-broken")]
    assert "RuntimeError: cannot find libfoo" in registry.failures[0].error
    assert isinstance(registry.lookup("dummy"), _Dummy)
    assert [entry.plugin for entry in registry.entries()] == ["good"]


def test_async_and_misspelt_hooks_are_refused() -> None:
    registry = TransportRegistry()

    @hookimpl
    async def qkdn_register_transports(registry: TransportRegistry) -> None:
        registry.add(_Dummy)

    @hookimpl
    def qkdn_register_transport(registry: TransportRegistry) -> None:  # a letter short
        registry.add(_Dummy)

    registry.register_plugin(_plugin(qkdn_register_transports=qkdn_register_transports), "a", None)
    registry.register_plugin(_plugin(qkdn_register_transport=qkdn_register_transport), "b", None)
    errors = [failure.error for failure in registry.failures]
    assert "must not be async" in errors[0]
    assert "qkdn_register_transport" in errors[1]
    assert registry.entries() == []


def test_a_scheme_belongs_to_one_transport() -> None:
    registry = TransportRegistry()
    registry.add(_Dummy)
    with pytest.raises(TransportError, match=r"dummy:// of _Dummy is already served"):
        registry.add(_Dummy)
    with pytest.raises(
        TransportError, match=r"no transport for ftp:// is installed \(installed: dummy://\)"
    ):
        registry.lookup("ftp")


async def test_unknown_scheme_and_missing_tls_are_clear_errors() -> None:
    with pytest.raises(TransportError, match=r"no transport for ftp:// is installed"):
        async with connect("ftp://127.0.0.1:21"):
            pass
    with pytest.raises(TransportError, match=r"tcp\+tls:// needs TLS settings"):
        async with connect("tcp+tls://127.0.0.1:5000"):
            pass
    with pytest.raises(TransportError, match=r"not a URL"):
        async with connect("127.0.0.1:5000"):
            pass
    with pytest.raises(TransportError, match=r"nothing serves memory://nobody"):
        async with connect("memory://nobody"):
            pass


class _NoPush(Transport):
    """A transport that, like HTTPS, cannot carry anything from the serving side."""

    name = "nopush"
    schemes = ("nopush",)

    def carries(self, message_type: type[Message], *, from_client: bool) -> bool:
        return from_client

    connect = _Dummy.connect
    serve = _Dummy.serve


async def test_messages_a_transport_cannot_carry_are_refused_before_sending() -> None:
    from qkdn_sdk.transport import FramedConnection

    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = FramedConnection(
        server_stream, transport=_NoPush(), is_client=False, handler=None, limits=Limits()
    )
    with pytest.raises(
        NotCarried,
        match=(
            r"nopush cannot carry Proactive key supply from the serving side; "
            r"transports that can: grpc://, grpcs://, memory://, tcp://, tcp\+tls://"
        ),
    ):
        await server.request(example(ak.ProactiveKeySupply))
    with pytest.raises(NotCarried):
        await server.send(example(ak.ResponseToKeyRequest))
    await client_stream.aclose()


def test_qkdn_transports_lists_the_installed_plugins() -> None:
    result = subprocess.run([QKDN, "transports", "--json"], capture_output=True, check=True)
    entries = orjson.loads(result.stdout)
    by_plugin = {entry["plugin"]: entry for entry in entries}
    assert by_plugin["tcp"]["schemes"] == ["tcp", "tcp+tls"]
    assert by_plugin["tcp"]["distribution"] == "qkdn-tcp"
    assert by_plugin["memory"]["schemes"] == ["memory"]
    text = subprocess.run([QKDN, "transports"], capture_output=True, check=True, text=True).stdout
    assert "tcp://, tcp+tls://" in text
