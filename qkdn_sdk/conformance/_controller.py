"""The suite against a QKDN controller: literal KMs (:class:`~qkdn_sdk.testing.literal.LiteralKM`)
ask it what Q.4164 lets a KM ask.

The suite plays the KMs whose certificates it is given, in route order: the first is the
source KM, the last the destination KM, any between are KMs it may play when the controller
routes through them. Each literal KM keeps one connection to the controller for the whole run,
as a KM keeps its Ck connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import attrs

from qkdn_sdk.conformance._suite import Arrow, Procedure, Result, Skip, play
from qkdn_sdk.conformance._target import ControllerTarget
from qkdn_sdk.messages import Message
from qkdn_sdk.testing.literal import STATUS_LINK, LiteralKM, NonConformance, Trace, quote

__all__ = ["CONTROLLER_PROCEDURES", "run_controller_suite"]

SOURCE = "source KM"
TRANSIT = "transit KM"
DESTINATION = "destination KM"
SESSION_SOURCE_APPLICATION = "conformance-source-application"
"""The source application a literal source KM names in its session creation request: Table 6 is
the source KM's word for it, which a controller has no means to check."""


@attrs.define
class _KMs:
    target: ControllerTarget
    by_id: dict[str, LiteralKM]

    @property
    def source(self) -> LiteralKM:
        return self.by_id[self.target.kms[0].id]

    @property
    def destination(self) -> LiteralKM:
        return self.by_id[self.target.kms[-1].id]

    def application(self) -> str:
        if self.target.application is None:
            raise Skip("needs an application the destination KM serves (--application)")
        return self.target.application


def _traced(kms: _KMs, trace: Trace) -> None:
    for literal in kms.by_id.values():
        literal.trace = trace


async def _next_hops(kms: _KMs, trace: Trace) -> None:
    """Q.4164 clause 7.1: the source KM asks, then each KM it is sent to, until the destination;
    every hop is asked from the KM that is there, with the route's source as Source KMA ID."""
    source, destination = kms.target.kms[0].id, kms.target.kms[-1].id
    asker, visited = kms.source, [source]
    while True:
        response = await asker.next_hop(source, destination=destination)
        _same(asker, response.destination_kma_id, destination, "Destination KMA ID", response)
        hop = response.next_kma_ids[0]
        if hop == destination:
            return
        if hop in visited:
            raise NonConformance(
                f"the route loops: {' -> '.join([*visited, hop])}; the last answer: "
                f"{quote(response)}"
            )
        visited.append(hop)
        following = kms.by_id.get(hop)
        if following is None:
            raise Skip(f"the route crosses {hop}, whose certificate was not given")
        asker = following


async def _next_hop_by_application(kms: _KMs, trace: Trace) -> None:
    """Table 1 with the destination application only: Table 2 then names the destination KM."""
    source = kms.target.kms[0].id
    response = await kms.source.next_hop(source, application=kms.application())
    _same(
        kms.source,
        response.destination_kma_id,
        kms.target.kms[-1].id,
        "Destination KMA ID",
        response,
    )


async def _centralized(kms: _KMs, trace: Trace) -> None:
    """Q.4164 clause 7.2 (Figure 2), from each end towards the other."""
    for here, there in ((kms.source, kms.destination), (kms.destination, kms.source)):
        assert there.identity is not None
        request = await here.relay_route(destination=there.identity)
        _same(here, request.destination_kma_id, there.identity, "Destination KMA ID", request)
        _same(here, request.source_kma_id, here.identity, "Source KMA ID", request)


async def _centralized_by_application(kms: _KMs, trace: Trace) -> None:
    request = await kms.source.relay_route(application=kms.application())
    _same(
        kms.source, request.destination_kma_id, kms.target.kms[-1].id, "Destination KMA ID", request
    )


async def _session(kms: _KMs, trace: Trace) -> None:
    """Q.4164 clauses 7.3, 7.4 (Figures 3, 4): the destination KM is notified before the source
    KM gets its answer, with the same session ID."""
    application = kms.application()
    response = await kms.source.create_session(SESSION_SOURCE_APPLICATION, application)
    destination = kms.destination
    _same(
        kms.source, response.destination_km_id, destination.identity, "Destination KM ID", response
    )
    notification = destination.notified.get(response.session_id)
    if notification is None:
        raise NonConformance(
            f"{kms.source.name} got {quote(response)}, and the destination KM was told of no "
            "such session"
        )
    expected = (SESSION_SOURCE_APPLICATION, application, kms.source.identity)
    told = (
        notification.application_source_id,
        notification.application_destination_id,
        notification.source_km_id,
    )
    if told != expected:
        raise NonConformance(
            f"{destination.name} was told of another session than the one asked: "
            f"{quote(notification)}"
        )


async def _d23_authentication(kms: _KMs, trace: Trace) -> None:
    """D2.3 clause 8.1.1 a) (Figure 8-1): every literal KM authenticates; they stay
    authenticated for the D2.3 procedures that follow."""
    for literal in kms.by_id.values():
        await literal.authenticate()


async def _d23_status_report(kms: _KMs, trace: Trace) -> None:
    """D2.3 clause 8.1.1 b) (Figure 8-2, the proactive case): the source KM supplies the status
    of its link towards the next KM given, unsolicited. The controller answers nothing: an
    answer would reach the source KM before the answer of the next procedure, which it sends on
    the same connection, and fail that one."""
    following = kms.target.kms[1].id
    await kms.source.report_status([{STATUS_LINK: following, "status": "up"}])


async def _d23_route_information(kms: _KMs, trace: Trace) -> None:
    """D2.3 clause 8.1.1 c) (Figure 8-3): the source KM asks for a route to the destination KM
    (:meth:`LiteralKM.route_information` checks its ends)."""
    await kms.source.route_information(kms.target.kms[0].id, kms.target.kms[-1].id)


def _same(
    literal: LiteralKM, given: str | None, expected: str | None, field: str, message: Message
) -> None:
    """An optional field, when given, names what it must."""
    if given is not None and expected is not None and given != expected:
        raise NonConformance(
            f"{literal.name} expected {field} {expected}, received {quote(message)}"
        )


CONTROLLER_PROCEDURES: tuple[Procedure[_KMs], ...] = (
    Procedure(
        name="next-hop",
        title="Key relay request in a distributed QKDN",
        clause="Q.4164 7.1, 8.1-8.2",
        figure="Q.4164 Figure 1",
        sequence=(
            Arrow(SOURCE, 0x1401),
            Arrow(SOURCE, 0x4102),
            Arrow(TRANSIT, 0x1401, repeated=True),
            Arrow(TRANSIT, 0x4102, repeated=True),
        ),
        play=_next_hops,
    ),
    Procedure(
        name="next-hop-by-application",
        title="Key relay next hop request naming the destination application",
        clause="Q.4164 7.1, 8.1-8.2",
        figure="Q.4164 Figure 1",
        sequence=(Arrow(SOURCE, 0x1401), Arrow(SOURCE, 0x4102)),
        play=_next_hop_by_application,
    ),
    Procedure(
        name="centralized-relay",
        title="Key relay request in a centralized QKDN, from both ends",
        clause="Q.4164 7.2, 8.3-8.5",
        figure="Q.4164 Figure 2",
        sequence=(
            Arrow(SOURCE, 0x1403),
            Arrow(SOURCE, 0x4104),
            Arrow(SOURCE, 0x1405),
            Arrow(DESTINATION, 0x1403),
            Arrow(DESTINATION, 0x4104),
            Arrow(DESTINATION, 0x1405),
        ),
        play=_centralized,
    ),
    Procedure(
        name="centralized-relay-by-application",
        title="Key relay request notification naming the destination application",
        clause="Q.4164 7.2, 8.3-8.5",
        figure="Q.4164 Figure 2",
        sequence=(Arrow(SOURCE, 0x1403), Arrow(SOURCE, 0x4104), Arrow(SOURCE, 0x1405)),
        play=_centralized_by_application,
    ),
    Procedure(
        name="session-creation",
        title="Session creation request and notification",
        clause="Q.4164 7.3-7.4, 8.6-8.9",
        figure="Q.4164 Figures 3, 4",
        sequence=(
            Arrow(SOURCE, 0x1406),
            Arrow(SOURCE, 0x4107),
            Arrow(DESTINATION, 0x4108),
            Arrow(DESTINATION, 0x1409),
        ),
        play=_session,
    ),
    Procedure(
        name="d23-km-authentication",
        title="Authentication of the KMs to the controller",
        clause="D2.3 8.1.1 a), Tables 7-2, 7-3",
        figure="D2.3 Figure 8-1",
        sequence=(
            Arrow(SOURCE, 0x1480),
            Arrow(SOURCE, 0x4181),
            Arrow(TRANSIT, 0x1480, repeated=True),
            Arrow(TRANSIT, 0x4181, repeated=True),
            Arrow(DESTINATION, 0x1480),
            Arrow(DESTINATION, 0x4181),
        ),
        play=_d23_authentication,
    ),
    Procedure(
        name="d23-status-report",
        title="Status information supplied by a KM unsolicited",
        clause="D2.3 8.1.1 b), Table 8-2",
        figure="D2.3 Figure 8-2",
        sequence=(Arrow(SOURCE, 0x1483),),
        play=_d23_status_report,
    ),
    Procedure(
        name="d23-route-information",
        title="Route information supply",
        clause="D2.3 8.1.1 c), Tables 8-3, 8-4",
        figure="D2.3 Figure 8-3",
        sequence=(Arrow(SOURCE, 0x1484), Arrow(SOURCE, 0x4185)),
        play=_d23_route_information,
    ),
    Procedure(
        name="key-reservation",
        title="Key reservation request",
        clause="Q.4164 7.5, 8.10-8.11",
        figure="Q.4164 Figure 5",
        sequence=(Arrow(SOURCE, 0x410A), Arrow(SOURCE, 0x140B)),
        play=None,
        skip="a controller reserves on its own decision: no Q.4164 message of a KM asks it to",
    ),
    Procedure(
        name="key-allocation",
        title="Key allocation request",
        clause="Q.4164 7.6, 8.12-8.13",
        figure="Q.4164 Figure 6",
        sequence=(Arrow(SOURCE, 0x410C), Arrow(SOURCE, 0x140D)),
        play=None,
        skip="a controller allocates on its own decision: no Q.4164 message of a KM asks it to",
    ),
)
"""In the order they run: the session creation comes after the centralized relays, in which
the destination KM sent the controller a message on its connection (see docs/conformance.md);
the D2.3 status report after the KMs' authentication, and right before the route information,
whose answer shows the report was taken without one."""


@asynccontextmanager
async def _connected(target: ControllerTarget) -> AsyncIterator[_KMs]:
    names = {0: SOURCE, len(target.kms) - 1: DESTINATION}
    async with AsyncExitStack() as stack:
        by_id: dict[str, LiteralKM] = {}
        for index, identity in enumerate(target.kms):
            literal = LiteralKM(names.get(index, TRANSIT))
            await stack.enter_async_context(
                literal.connected(target.url, tls=identity.tls, identity=identity.id)
            )
            by_id[identity.id] = literal
        yield _KMs(target, by_id)


async def run_controller_suite(target: ControllerTarget) -> list[Result]:
    """Every procedure of :data:`CONTROLLER_PROCEDURES` against ``target``. Raises
    :class:`~qkdn_sdk.errors.QkdnError` when the controller cannot be reached."""
    async with _connected(target) as kms:
        return await play(CONTROLLER_PROCEDURES, kms, _traced, timeout=target.timeout)
