"""The suite against a KM: literal applications
(:class:`~qkdn_sdk.testing.literal.LiteralApplication`) on its Ak URL, a literal QKDN
controller (:class:`~qkdn_sdk.testing.literal.LiteralController`) on its Ck URL, a literal
neighbouring KM (:class:`~qkdn_sdk.testing.literal.LiteralNeighbour`) on its KM link URL and a
literal QKD module (:class:`~qkdn_sdk.testing.literal.LiteralQKDModule`) on its Kq-1 URL.

The two applications are the source and the destination of every procedure, both served by the
KM, each on one connection for the whole run: the destination application connects first, so
the KM knows where it is before anything is notified to it (it then sends its key request with
ID before any session is opened). A KM asks the controller it is configured with, never the
suite: the procedures in which the KM asks (next hop, whole route, session creation towards
another KM) are listed as skipped, and the SDK's tests run them with the literal controller in
the controller's place. The D2.3 procedures come after those of the Recommendations: a Q.4161
application does not authenticate, and once the applications have (``d23-authentication``) they
stay authenticated for the D2.3 key supply and deletion.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import attrs

from qkdn_sdk.conformance._suite import Arrow, Procedure, Result, Skip, play
from qkdn_sdk.conformance._target import KMTarget
from qkdn_sdk.messages import Key
from qkdn_sdk.testing.literal import (
    LiteralApplication,
    LiteralController,
    LiteralNeighbour,
    LiteralQKDModule,
    NonConformance,
    Trace,
)

__all__ = ["KM_PROCEDURES", "run_km_suite"]

SOURCE = "source application"
DESTINATION = "destination application"
CONTROLLER = "controller"
NEIGHBOUR = "neighbour KM"
MODULE = "QKD module"
REMOTE_APPLICATION = "conformance-remote-application"
REMOTE_KM = "conformance-remote-km"
"""The session source a literal controller names in its session creation notification (Table
8): an application of another KM, which the controller vouches for."""
_NUMBER, _SIZE = 2, 256
_STATUS_ASKED = ("key_amount", "status")
"""What the literal controller asks a KM's status for (D2.3 Table 8-1 lists "key amount of a KM
link ... status of a KM link"; the names are the SDK's)."""
_LINK_SESSION_TIMER = 60
"""Seconds of the link session the literal neighbour opens (D2.3 Table 7-9): the KM's own
session with that neighbour, which it replaces, comes back soon after."""


@attrs.define
class _Peers:
    target: KMTarget
    source: LiteralApplication
    destination: LiteralApplication
    controller: LiteralController | None
    neighbour: LiteralNeighbour | None
    module: LiteralQKDModule | None

    def ck(self) -> LiteralController:
        if self.controller is None:
            raise Skip("needs the KM's Ck URL (--ck) and its controller's certificate")
        return self.controller

    def kx(self) -> LiteralNeighbour:
        if self.neighbour is None:
            raise Skip("needs the KM's KM link URL (--kx) and a neighbour's certificate")
        return self.neighbour

    def kq1(self) -> LiteralQKDModule:
        if self.module is None:
            raise Skip("needs the KM's Kq-1 URL (--kq1) and its QKD module's certificate")
        return self.module


def _traced(peers: _Peers, trace: Trace) -> None:
    for literal in (
        peers.source,
        peers.destination,
        peers.controller,
        peers.neighbour,
        peers.module,
    ):
        if literal is not None:
            literal.trace = trace


def _ids(peers: _Peers) -> tuple[str, str]:
    return peers.source.own_id(), peers.destination.own_id()


def _same_keys(what: str, got: list[Key], expected: list[Key]) -> None:
    if [(key.key_id, key.key) for key in got] != [(key.key_id, key.key) for key in expected]:
        raise NonConformance(
            f"{what}: key IDs {[key.key_id for key in got]} are not the source application's "
            f"{[key.key_id for key in expected]}, or their key data differ"
        )


async def _upon_request(peers: _Peers, trace: Trace) -> None:
    """Q.4161 clause 7.1 (Figures 1, 2): keys for the destination, then the same keys by ID."""
    source, destination = _ids(peers)
    keys = await peers.source.key_request(destination, _NUMBER, _SIZE)
    if len(keys) != _NUMBER:
        raise NonConformance(f"{SOURCE} asked for {_NUMBER} keys and got {len(keys)}")
    got = await peers.destination.key_request_with_id(source, [key.key_id for key in keys])
    _same_keys(f"{DESTINATION}'s key request with ID", got, keys)


async def _proactive(peers: _Peers, trace: Trace) -> None:
    """Q.4161 clause 7.2 (Figures 3-6): a session, its notification at the destination, keys by
    session ID, and the same keys pushed to the destination."""
    _, destination = _ids(peers)
    session_id = await peers.source.create_session(destination, 2 * _NUMBER)
    while session_id not in peers.destination.notified and not trace.violations:
        await trace.changed()
    keys = await peers.source.key_request_with_session_id(session_id, _NUMBER, _SIZE)
    pushed = await peers.destination.wait_pushed(_NUMBER)
    wrong = [pushed_id for pushed_id, _ in pushed if pushed_id != session_id]
    if wrong:
        raise NonConformance(
            f"{DESTINATION} was pushed keys of session {wrong[0]}, not {session_id}"
        )
    _same_keys(f"the keys pushed to {DESTINATION}", [key for _, key in pushed], keys)


async def _notification(peers: _Peers, trace: Trace) -> None:
    """Q.4164 clause 7.4 (Figure 4) with Q.4161 clause 7.2.2: the controller tells the KM of a
    session for the destination application, whom the KM tells before it answers."""
    controller = peers.ck()
    _, destination = _ids(peers)
    response = await controller.notify_session(
        source=REMOTE_APPLICATION, destination=destination, source_km=REMOTE_KM, number=_NUMBER
    )
    notified = peers.destination.notified.get(response.session_id)
    if notified is None:
        raise NonConformance(
            f"the KM answered the session creation notification before {DESTINATION} was told "
            "of the session"
        )
    if {notified.application_source_id, notified.application_destination_id} != {
        REMOTE_APPLICATION,
        destination,
    }:
        raise NonConformance(f"{DESTINATION} was told of a session between other applications")


async def _reservation(peers: _Peers, trace: Trace) -> None:
    """Q.4164 clauses 7.5, 7.6 (Figures 5, 6): key reserved towards a neighbour as Table 10
    writes it, then the key IDs answered allocated."""
    controller = peers.ck()
    if peers.target.peer_km is None:
        raise Skip("needs a neighbouring KM of the KM (--peer-km)")
    km = controller.peer_id
    if km is None:
        raise Skip("the KM's ID comes from its certificate: needs a TLS scheme")
    reserved = await controller.reserve(km, peers.target.peer_km)
    await controller.allocate(km, peers.target.peer_km, reserved.key_ids)


async def _key_supply(peers: _Peers, trace: Trace) -> None:
    """Q.4162 clause 7.1 (Figure 1): the KM's QKD module supplies keys, each answered by Table 2
    with its Key ID (:meth:`~qkdn_sdk.testing.literal.LiteralQKDModule.supply` checks it)."""
    module = peers.kq1()
    for _ in range(_NUMBER):
        await module.supply()


async def _wrong_hash(peers: _Peers, trace: Trace) -> None:
    """Q.4162 Tables 1, 2: a key whose Hash value is not that of its data is refused."""
    await peers.kq1().supply(wrong_hash=True)


async def _hello(peers: _Peers, trace: Trace) -> None:
    """D2.3 Table 7-8: a neighbour's HELLO, answered by the KM's, which names the KM."""
    await peers.kx().hello()


async def _link_session(peers: _Peers, trace: Trace) -> None:
    """D2.3 Tables 7-9, 7-10: a link session opened and agreed, then its KMA-key ID
    distributed."""
    neighbour = peers.kx()
    agreed = await neighbour.open_session(_LINK_SESSION_TIMER)
    await neighbour.update(agreed.session_id)


async def _another_community(peers: _Peers, trace: Trace) -> None:
    """D2.3 Table 7-8: a HELLO of another community is refused."""
    neighbour = peers.kx()
    await neighbour.hello_refused(f"not-{neighbour.community}")


async def _d23_authentication(peers: _Peers, trace: Trace) -> None:
    """D2.3 clause 7.2.1.1 a) (Figure 7-9): each application authenticates; the KM may
    authenticate to it in turn before it answers. The applications stay authenticated for the
    D2.3 procedures that follow ("before key supply operations")."""
    await peers.source.authenticate()
    await peers.destination.authenticate()


async def _d23_key_supply(peers: _Peers, trace: Trace) -> None:
    """D2.3 clause 7.2.1.1 b) (Figure 7-10): keys for encryption shared with the destination,
    then each of them, by its Key ID, for decryption at the destination."""
    source, destination = _ids(peers)
    keys = await peers.source.supply_keys(destination, _NUMBER)
    got = [await peers.destination.supply_key_by_id(source, key.key_id) for key in keys]
    _same_keys(f"{DESTINATION}'s key supplies for decryption", got, keys)


async def _d23_key_deletion(peers: _Peers, trace: Trace) -> None:
    """D2.3 clause 7.2.1.1 c) (Figure 7-11): keys of a key supply session (a Q.4161 session:
    D2.3 has no message that opens one) made for the destination, whose deletion of the
    session succeeds; keys asked in it afterwards are refused. Table 7-6 names no key: the
    session is what is deleted."""
    source, destination = _ids(peers)
    session_id = await peers.source.create_session(destination, 2 * _NUMBER)
    while session_id not in peers.destination.notified and not trace.violations:
        await trace.changed()
    pushed_before = len(peers.destination.pushed)
    await peers.source.supply_keys(destination, _NUMBER, session_id=session_id)
    # the KM pushes what it makes for the destination (Q.4161 clause 7.2): all of it first
    await peers.destination.wait_pushed(pushed_before + _NUMBER)
    await peers.destination.delete_keys(source, session_id)
    await peers.source.supply_keys_refused(
        destination, _NUMBER, session_id, f"a key supply in session {session_id}, deleted"
    )


async def _d23_status_supply(peers: _Peers, trace: Trace) -> None:
    """D2.3 clause 8.1.1 b) (Figure 8-2): the controller asks for some parameters; the status
    table carries those and nothing else (:meth:`LiteralController.status` checks it)."""
    await peers.ck().status(_STATUS_ASKED)


_KM_ASKS = (
    "the KM asks the controller it is configured with, not the suite: run it with "
    "qkdn_sdk.testing.literal.LiteralController in that controller's place"
)

KM_PROCEDURES: tuple[Procedure[_Peers], ...] = (
    Procedure(
        name="key-supply-upon-request",
        title="Key request and key request with ID",
        clause="Q.4161 7.1, 8.1.1-8.1.3",
        figure="Q.4161 Figures 1, 2",
        sequence=(
            Arrow(SOURCE, 0x2101),
            Arrow(SOURCE, 0x1203),
            Arrow(DESTINATION, 0x2102),
            Arrow(DESTINATION, 0x1203),
        ),
        play=_upon_request,
    ),
    Procedure(
        name="proactive-key-supply",
        title="Session creation, key request with session ID and proactive key supply",
        clause="Q.4161 7.2, 8.2.1-8.2.8",
        figure="Q.4161 Figures 3-6",
        sequence=(
            Arrow(SOURCE, 0x2104),
            Arrow(SOURCE, 0x1205),
            Arrow(SOURCE, 0x2108),
            Arrow(SOURCE, 0x1209),
            Arrow(DESTINATION, 0x1206),
            Arrow(DESTINATION, 0x2107),
            Arrow(DESTINATION, 0x120A, repeated=True),
            Arrow(DESTINATION, 0x210B, repeated=True),
        ),
        play=_proactive,
    ),
    Procedure(
        name="session-creation-notification",
        title="Session creation notification from the controller",
        clause="Q.4164 7.4, 8.8-8.9; Q.4161 7.2.2",
        figure="Q.4164 Figure 4; Q.4161 Figure 4",
        sequence=(
            Arrow(CONTROLLER, 0x4108),
            Arrow(CONTROLLER, 0x1409),
            Arrow(DESTINATION, 0x1206),
            Arrow(DESTINATION, 0x2107),
        ),
        play=_notification,
    ),
    Procedure(
        name="key-reservation-and-allocation",
        title="Key reservation request, then key allocation request",
        clause="Q.4164 7.5-7.6, 8.10-8.13",
        figure="Q.4164 Figures 5, 6",
        sequence=(
            Arrow(CONTROLLER, 0x410A),
            Arrow(CONTROLLER, 0x140B),
            Arrow(CONTROLLER, 0x410C),
            Arrow(CONTROLLER, 0x140D),
        ),
        play=_reservation,
    ),
    Procedure(
        name="kq1-key-supply",
        title="Key supply from a QKD module, proactive mode",
        clause="Q.4162 7.1, 8.1.1-8.1.2",
        figure="Q.4162 Figure 1",
        sequence=(
            Arrow(MODULE, 0x3101),
            Arrow(MODULE, 0x1302),
            Arrow(MODULE, 0x3101, repeated=True),
            Arrow(MODULE, 0x1302, repeated=True),
        ),
        play=_key_supply,
    ),
    Procedure(
        name="kq1-key-supply-with-a-wrong-hash-value",
        title="Key supply whose Hash value is not the key's, refused",
        clause="Q.4162 8.1.1-8.1.2",
        figure="Q.4162 Figure 1",
        sequence=(Arrow(MODULE, 0x3101), Arrow(MODULE, 0x1302)),
        play=_wrong_hash,
    ),
    Procedure(
        name="km-link-hello",
        title="HELLO from a neighbouring KM",
        clause="D2.3 7.2.2.2, Table 7-8",
        figure="none in D2.3",
        sequence=(Arrow(NEIGHBOUR, 0x1180), Arrow(NEIGHBOUR, 0x1180)),
        play=_hello,
    ),
    Procedure(
        name="km-link-session",
        title="SESSION from a neighbouring KM, then UPDATE",
        clause="D2.3 7.2.2.2, Tables 7-9, 7-10",
        figure="none in D2.3",
        sequence=(Arrow(NEIGHBOUR, 0x1181), Arrow(NEIGHBOUR, 0x1181), Arrow(NEIGHBOUR, 0x1182)),
        play=_link_session,
    ),
    Procedure(
        name="km-link-hello-of-another-community",
        title="HELLO from a KM of another community, refused",
        clause="D2.3 7.2.2.2, Table 7-8",
        figure="none in D2.3",
        sequence=(Arrow(NEIGHBOUR, 0x1180), Arrow(NEIGHBOUR, 0x0080)),
        play=_another_community,
    ),
    Procedure(
        name="d23-authentication",
        title="Authentication of the applications, and of the KM to them",
        clause="D2.3 7.2.1.1 a), Tables 7-2, 7-3",
        figure="D2.3 Figure 7-9",
        sequence=(
            Arrow(SOURCE, 0x2180),
            Arrow(SOURCE, 0x1286, repeated=True),
            Arrow(SOURCE, 0x2187, repeated=True),
            Arrow(SOURCE, 0x1281),
            Arrow(DESTINATION, 0x2180),
            Arrow(DESTINATION, 0x1286, repeated=True),
            Arrow(DESTINATION, 0x2187, repeated=True),
            Arrow(DESTINATION, 0x1281),
        ),
        play=_d23_authentication,
    ),
    Procedure(
        name="d23-key-supply",
        title="Key supply for encryption, then for decryption by Key ID",
        clause="D2.3 7.2.1.1 b), Tables 7-4, 7-5",
        figure="D2.3 Figure 7-10",
        sequence=(
            Arrow(SOURCE, 0x2182),
            Arrow(SOURCE, 0x1283),
            Arrow(DESTINATION, 0x2182),
            Arrow(DESTINATION, 0x1283),
            Arrow(DESTINATION, 0x2182, repeated=True),
            Arrow(DESTINATION, 0x1283, repeated=True),
        ),
        play=_d23_key_supply,
    ),
    Procedure(
        name="d23-key-deletion",
        title="Key deletion of a key supply session, then a key supply in it refused",
        clause="D2.3 7.2.1.1 c), Tables 7-6, 7-7",
        figure="D2.3 Figure 7-11",
        sequence=(
            Arrow(SOURCE, 0x2104),
            Arrow(SOURCE, 0x1205),
            Arrow(SOURCE, 0x2182),
            Arrow(SOURCE, 0x1283),
            Arrow(SOURCE, 0x2182),
            Arrow(SOURCE, 0x1283, or_codes=(0x0080,)),
            Arrow(DESTINATION, 0x1206),
            Arrow(DESTINATION, 0x2107),
            Arrow(DESTINATION, 0x120A, repeated=True),
            Arrow(DESTINATION, 0x210B, repeated=True),
            Arrow(DESTINATION, 0x2184),
            Arrow(DESTINATION, 0x1285),
        ),
        play=_d23_key_deletion,
    ),
    Procedure(
        name="d23-status-supply",
        title="Status information supply for the parameters asked",
        clause="D2.3 8.1.1 b), Tables 8-1, 8-2",
        figure="D2.3 Figure 8-2",
        sequence=(Arrow(CONTROLLER, 0x4182), Arrow(CONTROLLER, 0x1483)),
        play=_d23_status_supply,
    ),
    Procedure(
        name="next-hop-request",
        title="Key relay next hop request, from the KM",
        clause="Q.4164 7.1, 8.1-8.2",
        figure="Q.4164 Figure 1",
        sequence=(Arrow(CONTROLLER, 0x1401), Arrow(CONTROLLER, 0x4102)),
        play=None,
        skip=_KM_ASKS,
    ),
    Procedure(
        name="key-relay-request-notification",
        title="Key relay request notification, from the KM",
        clause="Q.4164 7.2, 8.3-8.5",
        figure="Q.4164 Figure 2",
        sequence=(Arrow(CONTROLLER, 0x1403), Arrow(CONTROLLER, 0x4104), Arrow(CONTROLLER, 0x1405)),
        play=None,
        skip=_KM_ASKS,
    ),
    Procedure(
        name="session-creation-request",
        title="Session creation request, from the KM",
        clause="Q.4164 7.3, 8.6-8.7",
        figure="Q.4164 Figure 3",
        sequence=(Arrow(CONTROLLER, 0x1406), Arrow(CONTROLLER, 0x4107)),
        play=None,
        skip=_KM_ASKS,
    ),
)
"""In the order they run."""


@asynccontextmanager
async def _connected(target: KMTarget) -> AsyncIterator[_Peers]:
    source_identity, destination_identity = target.applications
    source = LiteralApplication(SOURCE)
    destination = LiteralApplication(DESTINATION)
    async with AsyncExitStack() as stack:
        for literal, identity in ((destination, destination_identity), (source, source_identity)):
            await stack.enter_async_context(
                literal.connected(target.ak_url, tls=identity.tls, identity=identity.id)
            )
        controller = None
        if target.ck_url is not None and target.controller is not None:
            controller = LiteralController(CONTROLLER)
            await stack.enter_async_context(
                controller.connected(
                    target.ck_url, tls=target.controller.tls, identity=target.controller.id
                )
            )
        neighbour = module = None
        if target.kx_url is not None and target.neighbour is not None:
            neighbour = LiteralNeighbour(NEIGHBOUR, community=target.community)
            await stack.enter_async_context(
                neighbour.connected(
                    target.kx_url, tls=target.neighbour.tls, identity=target.neighbour.id
                )
            )
        if target.kq1_url is not None and target.module is not None:
            module = LiteralQKDModule(MODULE, hash_algorithm=target.hash_algorithm)
            await stack.enter_async_context(
                module.connected(target.kq1_url, tls=target.module.tls, identity=target.module.id)
            )
        yield _Peers(target, source, destination, controller, neighbour, module)


async def run_km_suite(target: KMTarget) -> list[Result]:
    """Every procedure of :data:`KM_PROCEDURES` against ``target``. Raises
    :class:`~qkdn_sdk.errors.QkdnError` when the KM cannot be reached."""
    async with _connected(target) as peers:
        return await play(KM_PROCEDURES, peers, _traced, timeout=target.timeout)
