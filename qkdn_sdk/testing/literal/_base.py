"""What every literal peer shares: the :class:`Trace` it writes to, the checks it makes of what
it receives (:func:`check`), and :class:`LiteralPeer`, its one connection (or its server)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs
import orjson
import trio

from qkdn_sdk.codecs.payload import message_to_dict
from qkdn_sdk.errors import FailureResponse, QkdnError, shorten
from qkdn_sdk.messages import Message, Role, ck, failure_reason, received_by
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, ServerInfo, connect, serve

__all__ = [
    "AUTHENTICATION_INFO",
    "SDK_EXTENSION_MEMBERS",
    "LiteralPeer",
    "NonConformance",
    "Step",
    "Trace",
    "check",
    "check_sender",
    "hash_value",
    "quote",
]

SDK_EXTENSION_MEMBERS = frozenset(
    {
        ck.KEY_BITS_EXTENSION,
        ck.AVOID_EXTENSION,
        ck.RELAY_ID_EXTENSION,
        "next_kma_id",  # the SDK's key reservation terms (with key_bits and lifetime)
        "lifetime",
        "error_message",  # the SDK's failure reason where a table has no Response
    }
)
"""Members of an Extension object that only the SDK gives a meaning: a literal peer refuses a
message that carries one, since a peer written from the tables could not read it."""

AUTHENTICATION_INFO = "mtls"
"""The Authentication info a literal peer gives in a D2.3 authentication (Table 7-2), whose
format D2.3 leaves open: it names how the peer authenticated, by its connection's mutual TLS."""

_QUOTE_LIMIT = 400
_M = TypeVar("_M", bound=Message)


def hash_value(algorithm: str, data: bytes) -> str:
    """A "Hash value" as the SDK reads Q.4162 Table 1 and D2.3 Table 7-9: ``algorithm`` (a
    :mod:`hashlib` name) of ``data``, in hex. Neither text fixes an algorithm."""
    return hashlib.new(algorithm, data).hexdigest()


class NonConformance(QkdnError):
    """A peer did something the tables do not allow: the text names what and quotes the message
    (``0x4104 Key relay request {...}``)."""


def quote(message: Message) -> str:
    """``message`` as its command code, spec name and JSON payload, key data left out,
    shortened: how a non-conformance quotes it."""
    payload = message_to_dict(message)
    for key in payload.get("keys", ()):
        if isinstance(key, dict) and "key" in key:
            key["key"] = "..."
    text = orjson.dumps(payload).decode()
    return shorten(f"0x{message.code:04X} {message.spec_name} {text}", _QUOTE_LIMIT)


@attrs.frozen
class Step:
    """One message of a procedure as a literal peer saw it: ``peer`` sent it, or received it."""

    peer: str
    sent: bool
    message: Message

    def describe(self) -> str:
        return f"{self.peer} {'sent' if self.sent else 'received'} {quote(self.message)}"


class Trace:
    """The messages the literal peers of one procedure sent and received, in order, and the
    non-conformances they found while answering (:attr:`violations`)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.violations: list[NonConformance] = []
        self._changed = trio.Event()

    def record(self, peer: str, message: Message, *, sent: bool) -> None:
        self.steps.append(Step(peer, sent, message))
        self._wake()

    def violation(self, error: NonConformance) -> None:
        self.violations.append(error)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Return at the next message or violation recorded."""
        await self._changed.wait()


def check(
    peer: str,
    message: Message,
    expected: type[_M] | tuple[type[Message], ...],
    *,
    success: bool,
    members: bool,
) -> None:
    """Raise :class:`NonConformance` unless ``message`` is one of ``expected``, (``success``)
    reporting no failure, and (``members``) with no SDK member in its Extension. An SDK
    extension code is expected only where a D2.3 table gives the message and the SDK its code
    (the key supply, KM link and routing control protocols'); any other is named as one no
    Recommendation defines."""
    wanted = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(message, wanted):
        if type(message).is_extension:
            raise NonConformance(
                f"{peer} received {quote(message)}: an SDK extension message, which no "
                "Recommendation defines"
            )
        names = " or ".join(f"0x{cls.code:04X} {cls.spec_name}" for cls in wanted)
        raise NonConformance(f"{peer} expected {names}, received {quote(message)}")
    if success and failure_reason(message) is not None:  # its reason may be the SDK's
        raise NonConformance(
            f"{peer} received a failure where the figure draws success: {quote(message)}"
        )
    for item in getattr(message, "extension", None) or () if members else ():
        sdk = sorted(SDK_EXTENSION_MEMBERS & set(item)) if isinstance(item, dict) else []
        if sdk:
            raise NonConformance(
                f"{peer} received {quote(message)}: its extension carries the SDK's "
                f"{', '.join(sdk)}, which no table defines"
            )


def check_sender(peer: str, message: Message, expected: str | None) -> None:
    """Raise :class:`NonConformance` unless the Sender ID of ``message`` (a D2.3 table's) is
    ``expected``, the other side's certificate ID (not checked when it is unknown)."""
    sender = getattr(message, "sender_id", None)
    if expected is not None and sender != expected:
        raise NonConformance(f"{peer}: Sender ID is not {expected}: {quote(message)}")


class LiteralPeer:
    """What every literal peer does: its one connection, its trace, the checks."""

    role: Role

    def __init__(
        self, name: str, trace: Trace | None = None, *, ignore_sdk_members: bool = False
    ) -> None:
        self.name = name
        self.refuse_sdk_members = not ignore_sdk_members
        """Whether an SDK member in a received Extension is a :class:`NonConformance` (the
        default), or is ignored, as by a peer that reads the table fields and knows nothing of
        what an Extension may carry."""
        self.trace = trace if trace is not None else Trace()
        """Where the peer writes what it sends and receives; a runner may hand it a new one per
        procedure."""
        self._connection: Connection | None = None
        self._nursery: trio.Nursery | None = None
        """Where a served peer runs what outlives one request, while it serves."""
        self.identity: str | None = None
        """Our ID as the other side knows it (our certificate's), once connected."""

    @asynccontextmanager
    async def connected(
        self, url: str, *, tls: TLSConfig | None = None, identity: str | None = None
    ) -> AsyncIterator[Connection]:
        """Connect to ``url`` (``identity``: our ID where no certificate gives it); the
        connection's requests from the other side are answered by :meth:`answer`."""
        async with connect(
            url, tls=tls, identity=identity, handler=self._handle, accepts=received_by(self.role)
        ) as connection:
            self._connection = connection
            self.identity = connection.local_id or identity
            try:
                yield connection
            finally:
                self._connection = None

    async def serve(
        self,
        url: str,
        *,
        tls: TLSConfig | None = None,
        identity: str | None = None,
        task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``url`` until cancelled, answering with :meth:`answer`. It accepts what
        :meth:`accepted` names: anything else (the SDK's extensions) gets the transport's error
        indication and never reaches it, as with a peer that does not know those codes."""
        accepts = self.accepted()
        self.identity = identity or (tls.identity() if tls is not None else None)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            info: ServerInfo = await nursery.start(
                functools.partial(
                    serve,
                    url,
                    self._handle,
                    tls=tls,
                    identity=identity,
                    accepts=accepts,
                    on_connect=self.on_connect,
                )
            )
            task_status.started(info)

    def accepted(self) -> Collection[type[Message]]:
        """What :meth:`serve` accepts: the messages of the Recommendations its role receives."""
        return {cls for cls in received_by(self.role) if not cls.is_extension}

    def on_connect(self, connection: Connection) -> None:
        """A peer connected to us, while we serve."""

    @property
    def peer_id(self) -> str | None:
        """The other side's verified ID, while connected over TLS."""
        return self._connection.peer_id if self._connection is not None else None

    def own_id(self) -> str:
        if self.identity is None:
            raise NonConformance(f"{self.name} does not know its own ID: give it a certificate")
        return self.identity

    async def _handle(self, message: Message, connection: Connection) -> Message | None:
        self.trace.record(self.name, message, sent=False)
        try:
            answer = await self.answer(message, connection)
        except NonConformance as exc:
            self.trace.violation(exc)
            raise
        if answer is not None:
            self.trace.record(self.name, answer, sent=True)
        return answer

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        """The answer to a message the other side sent; raises :class:`NonConformance` for one
        the peer does not expect."""
        raise NonConformance(f"{self.name} expected nothing, received {quote(message)}")

    async def ask(
        self,
        request: Message,
        expected: type[_M],
        *,
        connection: Connection | None = None,
        success: bool = True,
        timeout: float | None = 30.0,
    ) -> _M:
        """Send ``request``, and return the answer once checked (:func:`check`)."""
        answer = await self._exchange(request, connection, timeout)
        check(self.name, answer, expected, success=success, members=self.refuse_sdk_members)
        assert isinstance(answer, expected)
        return answer

    async def ask_refused(
        self, request: Message, why: str, *, timeout: float | None = 30.0
    ) -> Message:
        """Send ``request``, which the other side must refuse (``why``: what makes it wrong),
        and return the failure it answers: a response that reports one, or an error
        indication where the table cannot."""
        answer = await self._exchange(request, None, timeout)
        if failure_reason(answer) is None:
            raise NonConformance(f"{self.name} sent {why}, and it was accepted: {quote(answer)}")
        return answer

    async def _exchange(
        self, request: Message, connection: Connection | None, timeout: float | None
    ) -> Message:
        """Send ``request`` and return the answer, a failure included, both traced."""
        connection = connection or self._connection
        if connection is None:
            raise NonConformance(f"{self.name} is not connected")
        self.trace.record(self.name, request, sent=True)
        try:
            answer = await connection.request(request, timeout=timeout)
        except FailureResponse as exc:
            if not isinstance(exc.response, Message):
                raise NonConformance(
                    f"{self.name}: {quote(request)} failed: {exc.reason}"
                ) from None
            answer = exc.response
        except QkdnError as exc:
            raise NonConformance(f"{self.name} got no answer to {quote(request)}: {exc}") from None
        self.trace.record(self.name, answer, sent=False)
        return answer

    async def send(self, message: Message, *, connection: Connection | None = None) -> None:
        connection = connection or self._connection
        if connection is None:
            raise NonConformance(f"{self.name} is not connected")
        self.trace.record(self.name, message, sent=True)
        try:
            await connection.send(message)
        except QkdnError as exc:
            raise NonConformance(f"{self.name} could not send {quote(message)}: {exc}") from None
