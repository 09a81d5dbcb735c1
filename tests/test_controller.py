"""The QKDN controller of a distributed QKDN (qkdn_sdk.roles.controller): next hops over Ck
(Q.4164 Tables 1, 2) from the key amounts KMs report (FG QIT4N D2.3 Table 8-2).

Most tests run the controller on ``memory://`` and talk to it as KMs do; the routing itself is
also tested through :meth:`Controller.route`, and the handler alone with a stand-in connection.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
import trustme

from qkdn_sdk.errors import FailureResponse, QkdnError, TransportError
from qkdn_sdk.messages import JSONObject, Message, check_response, ck, failure_reason, mgmt
from qkdn_sdk.roles.controller import (
    SCALE,
    Controller,
    ControllerConfig,
    NoRoute,
    link_cost,
)
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Connection, connect, transport_registry

_names = itertools.count()

Topology = tuple[list[str], list[tuple[str, str]]]
LINE: Topology = (["km-a", "km-b", "km-c"], [("km-a", "km-b"), ("km-b", "km-c")])
DIAMOND: Topology = (
    ["km-a", "km-b", "km-c", "km-d"],
    [("km-a", "km-b"), ("km-b", "km-d"), ("km-a", "km-c"), ("km-c", "km-d")],
)
WAIT = 5.0  # seconds a test may wait for an event before it fails (it never needs them)


def make_config(
    kms: Iterable[str],
    links: Iterable[Iterable[str]],
    applications: Mapping[str, str] | None = None,
    *,
    listen_url: str | None = None,
) -> ControllerConfig:
    return ControllerConfig(
        controller_id="controller",
        listen_url=listen_url or f"memory://controller-{next(_names)}",
        kms=kms,
        links=links,
        applications=applications or {},
    )


def status_report(sender: str, table: list[JSONObject]) -> mgmt.StatusInformationSupplyResponse:
    return mgmt.StatusInformationSupplyResponse(
        sender_id=sender, status_table=table, response_code=mgmt.ResultCode.SUCCESS
    )


def amounts(**bits: int) -> list[JSONObject]:
    """A status table: ``amounts(km_b=2048)`` -> ``[{"km_link": "km-b", "key_amount": 2048}]``."""
    return [
        {"km_link": name.replace("_", "-"), "key_amount": value} for name, value in bits.items()
    ]


@asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[str]:
    """Run ``controller`` while the block runs; yields the URL it serves."""
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(controller.run)
        yield url
        nursery.cancel_scope.cancel()


async def report(controller: Controller, url: str, sender: str, table: list[JSONObject]) -> None:
    """Send a status report as ``sender`` over a connection of its own, and wait until the
    controller has handled it."""
    done = controller.report_count(sender) + 1
    async with connect(url, identity=sender) as km:
        await km.send(status_report(sender, table))
        with trio.fail_after(WAIT):
            await controller.wait_for_report(sender, done)


async def next_hop(
    url: str, identity: str, **request: object
) -> ck.ResponseToKeyRelayNextHopRequest:
    """Ask the controller at ``url`` for a next hop, as the KM ``identity``."""
    message = ck.KeyRelayNextHopRequest(**request)  # type: ignore[arg-type]
    async with connect(url, identity=identity) as km:
        response = await km.request(message, timeout=WAIT)
    assert isinstance(response, ck.ResponseToKeyRelayNextHopRequest)
    check_response(message, response)
    return response


class StandIn(Connection):
    """A connection that is only a peer ID: for calling :meth:`Controller.handle` directly."""

    def __init__(self, peer_id: str | None) -> None:
        self._peer_id = peer_id

    @property
    def peer_id(self) -> str | None:
        return self._peer_id

    @property
    def local_id(self) -> str | None:
        return "controller"

    @property
    def closed(self) -> bool:
        return False

    async def request(self, message: Message, *, timeout: float | None = None) -> Message:
        raise AssertionError("the controller sends nothing")

    async def send(self, message: Message) -> None:
        raise AssertionError("the controller sends nothing")

    async def aclose(self) -> None:
        pass


# --- next hop over Ck (Q.4164 Tables 1, 2) -----------------------------------------------------


async def test_line_next_hops() -> None:
    """On km-a - km-b - km-c each KM on the way gets its own next hop: km-a (asking without a
    source: its authenticated ID is taken) gets km-b, km-b gets km-c."""
    controller = Controller(make_config(*LINE))
    async with running(controller) as url:
        first = await next_hop(url, "km-a", destination_kma_id="km-c")
        second = await next_hop(url, "km-b", source_kma_id="km-b", destination_kma_id="km-c")
    assert (first.source_kma_id, first.destination_kma_id, first.next_kma_ids) == (
        "km-a",
        "km-c",
        ["km-b"],
    )
    assert (second.source_kma_id, second.next_kma_ids) == ("km-b", ["km-c"])


async def test_a_transit_km_names_the_source_of_the_whole_route() -> None:
    """Q.4164 Table 1: Source KMA ID is the source of the entire relay route. km-b, relaying
    km-a's keys, says so and gets its own next hop, km-c (the hop is the asker's, from its
    certificate); the response names the route's source."""
    controller = Controller(make_config(*LINE))
    async with running(controller) as url:
        response = await next_hop(url, "km-b", source_kma_id="km-a", destination_kma_id="km-c")
    assert (response.source_kma_id, response.next_kma_ids) == ("km-a", ["km-c"])


async def test_application_destination_resolves_to_its_km() -> None:
    """A destination named by application is the KM that serves it, and the response says so
    in destination_kma_id, as Table 2 requires (check_response checks it)."""
    controller = Controller(make_config(*LINE, applications={"app-c": "km-c"}))
    async with running(controller) as url:
        response = await next_hop(url, "km-a", application_destination_id="app-c")
    assert response.destination_kma_id == "km-c"
    assert response.next_kma_ids == ["km-b"]


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"application_destination_id": "app-x"}, "unknown destination application 'app-x'"),
        ({"destination_kma_id": "km-x"}, "unknown destination KM 'km-x'"),
        ({"source_kma_id": "km-x", "destination_kma_id": "km-c"}, "unknown source KM 'km-x'"),
        ({"destination_kma_id": "km-a"}, "source and destination are the same KM"),
        (
            {"destination_kma_id": "km-c", "extension": [{"key_bits": "many"}]},
            "extension key_bits must be an integer",
        ),
        (
            {"destination_kma_id": "km-c", "extension": [{"key_bits": -1}]},
            "extension key_bits must be between 0 and",
        ),
    ],
)
async def test_next_hop_failures_say_why(request_fields: dict[str, object], reason: str) -> None:
    """Table 2 has no Response parameter: a refusal is a Table 2 response with no Next KMA IDs
    (no KMA is available as the next hop) whose Extension ``error_message`` names the cause;
    the KM reads it as a failure with that text."""
    controller = Controller(make_config(*LINE, applications={"app-c": "km-c"}))
    async with running(controller) as url:
        with pytest.raises(FailureResponse) as caught:
            await next_hop(url, "km-a", **request_fields)
    assert caught.value.reason.startswith("failure: ")
    assert reason in caught.value.reason
    answer = caught.value.response
    assert isinstance(answer, ck.ResponseToKeyRelayNextHopRequest)
    assert answer.next_kma_ids == []
    assert answer.extension == [{"error_message": caught.value.reason}]


async def test_key_weighted_choice_on_a_diamond() -> None:
    """km-a reaches km-d through km-b or km-c. With no reports both cost the same and the KM
    IDs settle it (km-b); once km-a reports far more key towards km-c, the relay goes there."""
    controller = Controller(make_config(*DIAMOND))
    async with running(controller) as url:
        before = await next_hop(url, "km-a", destination_kma_id="km-d")
        await report(controller, url, "km-a", amounts(km_b=1000, km_c=1_000_000))
        await report(controller, url, "km-b", amounts(km_d=1000))
        await report(controller, url, "km-c", amounts(km_d=1000))
        after = await next_hop(url, "km-a", destination_kma_id="km-d")
    assert before.next_kma_ids == ["km-b"]
    assert after.next_kma_ids == ["km-c"]
    assert controller.key_amount("km-a", "km-c") == 1_000_000
    assert controller.key_amount("km-c", "km-a") is None  # each end reports its own direction


async def test_links_short_of_key_bits_are_skipped() -> None:
    """A relay that needs 1024 bits per link cannot cross km-b -> km-c (512 bits): the failure
    names that link. One that needs 512 bits can."""
    controller = Controller(make_config(*LINE))
    async with running(controller) as url:
        await report(controller, url, "km-a", amounts(km_b=2048))
        await report(controller, url, "km-b", amounts(km_c=512))
        with pytest.raises(FailureResponse) as caught:
            await next_hop(url, "km-a", destination_kma_id="km-c", extension=[{"key_bits": 1024}])
        enough = await next_hop(
            url, "km-a", destination_kma_id="km-c", extension=[{"key_bits": 512}]
        )
    assert caught.value.reason == (
        "failure: no route from km-a to km-c with 1024 bits of key per link: "
        "km-b->km-c has 512 bits"
    )
    assert enough.next_kma_ids == ["km-b"]


async def test_key_bits_reroute_on_a_diamond() -> None:
    """With key to spare everywhere but km-b -> km-d, a relay needing more than that link holds
    goes through km-c, though the route through km-b is cheaper."""
    controller = Controller(make_config(*DIAMOND))
    async with running(controller) as url:
        await report(controller, url, "km-a", amounts(km_b=100_000, km_c=5000))
        await report(controller, url, "km-b", amounts(km_d=3000))
        await report(controller, url, "km-c", amounts(km_d=5000))
        cheapest = await next_hop(url, "km-a", destination_kma_id="km-d")
        needing = await next_hop(
            url, "km-a", destination_kma_id="km-d", extension=[{"key_bits": 4096}]
        )
    assert cheapest.next_kma_ids == ["km-b"]
    assert needing.next_kma_ids == ["km-c"]


async def test_report_for_a_link_not_in_the_topology_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """km-a has no KM link to km-c: that entry (and malformed ones) is ignored and logged, the
    rest of the report applies, and the route stays as the topology allows."""
    controller = Controller(make_config(*LINE))
    table: list[JSONObject] = [
        {"km_link": "km-c", "key_amount": 10**6},
        {"km_link": "km-b", "key_amount": "lots"},
        {"km_link": 7, "key_amount": 1},
        {"km_link": "km-b", "key_amount": 4096},
    ]
    with caplog.at_level(logging.WARNING, logger="qkdn_sdk.roles.controller"):
        async with running(controller) as url:
            await report(controller, url, "km-a", table)
            response = await next_hop(url, "km-a", destination_kma_id="km-c")
    assert controller.key_amount("km-a", "km-c") is None
    assert controller.key_amount("km-a", "km-b") == 4096
    assert response.next_kma_ids == ["km-b"]
    assert len(caplog.records) == 1
    text = caplog.records[0].getMessage()
    assert "ignored 3 entries of km-a's status report" in text
    assert "'km-c' is not a neighbour of km-a" in text


async def test_kms_of_the_network_authenticate() -> None:
    """D2.3 clause 8.1.1 a): a KM of the topology is accepted; any other ID is refused."""
    controller = Controller(make_config(*LINE))
    async with running(controller) as url:
        async with connect(url, identity="km-a") as km:
            response = await km.request(
                mgmt.CkAuthenticationCommand(sender_id="km-a", authentication_info="mtls"),
                timeout=WAIT,
            )
        assert isinstance(response, mgmt.CkAuthenticationResponse)
        assert response.sender_id == "controller"
        async with connect(url, identity="km-x") as stranger:
            with pytest.raises(FailureResponse):
                await stranger.request(
                    mgmt.CkAuthenticationCommand(sender_id="km-x", authentication_info="mtls"),
                    timeout=WAIT,
                )
    assert controller.authenticated == {"km-a"}


# --- sessions (Q.4164 clauses 7.3, 7.4) ------------------------------------------------------


async def test_session_creation_failures() -> None:
    """Both get Table 7's own failure, with a session ID: an unknown destination application
    with an empty Destination KM ID (there is no KM to name), a destination KM that never
    connected with the session ID made and the KM named."""
    controller = Controller(make_config(*LINE, {"app-a": "km-a", "app-c": "km-c"}))
    request = {"application_source_id": "app-a", "application_destination_id": "app-c"}
    async with running(controller) as url, connect(url, identity="km-a") as km:
        with pytest.raises(FailureResponse) as caught:
            await km.request(
                ck.SessionCreationRequest(**{**request, "application_destination_id": "nobody"}),
                timeout=WAIT,
            )
        assert caught.value.reason == "failure: unknown destination application 'nobody'"
        unknown = caught.value.response
        assert isinstance(unknown, ck.ResponseToSessionCreationRequest)
        assert unknown.destination_km_id == ""
        assert len(unknown.session_id) == 36
        with pytest.raises(FailureResponse) as caught:
            await km.request(ck.SessionCreationRequest(**request), timeout=WAIT)
    response = caught.value.response
    assert isinstance(response, ck.ResponseToSessionCreationRequest)
    assert response.response == "failure: the destination KM km-c is not connected"
    assert response.destination_km_id == "km-c"
    assert len(response.session_id) == 36


# --- centralized QKDN: the whole route (Q.4164 clause 7.2, Figure 2) -----------------------


@asynccontextmanager
async def whole_route(
    url: str, identity: str, **notification: object
) -> AsyncIterator[ck.KeyRelayRequest]:
    """Send a key relay request notification as the KM ``identity`` and yield the key relay
    request the controller then sends over the same connection, which stays open (and answers
    it with success) while the block runs."""
    send, receive = trio.open_memory_channel[ck.KeyRelayRequest](1)

    async def handler(message: Message, connection: Connection) -> Message | None:
        assert isinstance(message, ck.KeyRelayRequest)
        await send.send(message)
        return ck.ResponseToKeyRelayRequest(
            response="success", key_relay_request_id=message.key_relay_request_id
        )

    async with connect(url, identity=identity, handler=handler) as km:
        await km.send(ck.KeyRelayRequestNotification(**notification))  # type: ignore[arg-type]
        with trio.fail_after(WAIT):
            yield await receive.receive()


async def test_centralized_route_is_sent_as_a_key_relay_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "qkdn_sdk.roles.controller")
    controller = Controller(make_config(*LINE, {"app-c": "km-c"}))
    async with running(controller) as url:
        await report(controller, url, "km-a", amounts(km_b=4096))
        await report(controller, url, "km-b", amounts(km_a=4096, km_c=4096))
        async with whole_route(
            url,
            "km-a",
            source_kma_id="km-a",
            application_destination_id="app-c",
            extension=[{"key_bits": 1024, "key_relay_request_id": "relay-1"}],
        ) as request:
            await trio.testing.wait_all_tasks_blocked()  # the controller got our response
    # Table 4: the transition nodes (between source and destination), the destination apart
    assert request.transit_kma_ids == ["km-b"]
    assert (request.source_kma_id, request.destination_kma_id) == ("km-a", "km-c")
    # a request ID of the controller's own; the KM's relay ID echoed in the extension
    assert request.key_relay_request_id not in (None, "relay-1")
    assert request.extension == [{"key_relay_request_id": "relay-1"}]
    assert caplog.records[-1].getMessage() == (
        f"key relay {request.key_relay_request_id} of km-a along ['km-b'] completed"
    )


@pytest.mark.parametrize(
    ("notification", "reason"),
    [
        ({"application_destination_id": "nobody"}, "unknown destination application 'nobody'"),
        (
            {"destination_kma_id": "km-c", "extension": [{"key_bits": 8192}]},
            "no route from km-a to km-c with 8192 bits of key per link: km-a->km-b has 4096 bits",
        ),
        (
            {"destination_kma_id": "km-c", "extension": [{"key_relay_request_id": ""}]},
            None,  # an unusable relay ID is not echoed; the route is still given
        ),
    ],
)
async def test_centralized_refusals_say_why_in_the_extension(
    notification: dict[str, object], reason: str | None
) -> None:
    controller = Controller(make_config(*LINE, {"app-c": "km-c"}))
    async with running(controller) as url:
        await report(controller, url, "km-a", amounts(km_b=4096))
        await report(controller, url, "km-b", amounts(km_c=4096))
        async with whole_route(url, "km-a", **notification) as request:
            pass
    assert request.key_relay_request_id is not None  # the controller's own
    if reason is None:
        assert request.transit_kma_ids == ["km-b"]
        assert request.extension is None  # nothing usable to echo
    else:
        assert request.transit_kma_ids == []
        assert request.extension == [{"error_message": f"failure: {reason}"}]


def _tls_available() -> bool:
    try:
        transport_registry().lookup("tcp+tls")
    except TransportError:
        return False
    return True


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, TLSConfig]:
    """TLS settings of the controller, km-a and km-b, from one trustme CA."""
    if not _tls_available():
        pytest.skip("no tcp+tls transport installed")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = {}
    kms = (("km-a", ("km-a",)), ("km-b", ("km-b",)))
    for name, hosts in (("controller", ("controller", "127.0.0.1")), *kms):
        issued = ca.issue_cert(*hosts, common_name=name)
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        settings[name] = TLSConfig(ca=ca_file, cert=cert, key=key)
    return settings


async def test_over_tls_the_requester_is_its_certificate(pki: dict[str, TLSConfig]) -> None:
    """On tcp+tls with port 0, run() reports the real URL, and a KM that names no source is
    the ID of its certificate."""
    config = make_config(*LINE, listen_url="tcp+tls://127.0.0.1:0")
    controller = Controller(config, tls=pki["controller"])
    async with running(controller) as url:
        assert not url.endswith(":0")
        async with connect(url, tls=pki["km-a"]) as km:
            response = await km.request(
                ck.KeyRelayNextHopRequest(destination_kma_id="km-c"), timeout=WAIT
            )
    assert isinstance(response, ck.ResponseToKeyRelayNextHopRequest)
    assert (response.source_kma_id, response.next_kma_ids) == ("km-a", ["km-b"])


async def answer_over_tls(url: str, tls: TLSConfig, request: Message) -> Message:
    """What the controller at ``url`` answers ``request`` with, success or failure, to the KM
    whose certificate ``tls`` holds."""
    async with connect(url, tls=tls) as km:
        try:
            response: object = await km.request(request, timeout=WAIT)
        except FailureResponse as exc:
            response = exc.response
    assert isinstance(response, Message)
    check_response(request, response)
    return response


async def test_plain_q4164_requests_get_their_own_tables_over_tls(
    pki: dict[str, TLSConfig],
) -> None:
    """A KM that sends Q.4164 messages as the tables write them (no SDK extension), over TLS
    with its certificate, gets every answer in the table's own response type: Table 2 for a
    next hop (a transit KM's own next hop on the route's way; no Next KMA IDs and the reason
    in the Extension when there is none, with the source and destination KMs it knows) and
    Table 7 for a session (Response "failure: ...", a session ID, an empty Destination KM ID
    for an application nobody serves)."""
    kms, links = ["km-a", "km-b", "km-c", "km-d"], [("km-a", "km-b"), ("km-b", "km-c")]
    applications = {"app-a": "km-a", "app-d": "km-d"}
    config = make_config(kms, links, applications, listen_url="tcp+tls://127.0.0.1:0")
    controller = Controller(config, tls=pki["controller"])
    async with running(controller) as url:
        transit = await answer_over_tls(
            url,
            pki["km-b"],
            ck.KeyRelayNextHopRequest(source_kma_id="km-a", destination_kma_id="km-c"),
        )
        unknown_km = await answer_over_tls(
            url, pki["km-a"], ck.KeyRelayNextHopRequest(destination_kma_id="km-x")
        )
        unknown_app = await answer_over_tls(
            url, pki["km-a"], ck.KeyRelayNextHopRequest(application_destination_id="app-x")
        )
        unreachable_app = await answer_over_tls(
            url, pki["km-a"], ck.KeyRelayNextHopRequest(application_destination_id="app-d")
        )
        session = await answer_over_tls(
            url,
            pki["km-a"],
            ck.SessionCreationRequest(
                application_source_id="app-a", application_destination_id="app-x"
            ),
        )
    assert transit == ck.ResponseToKeyRelayNextHopRequest(
        source_kma_id="km-a", destination_kma_id="km-c", next_kma_ids=["km-c"]
    )
    assert unknown_km == ck.ResponseToKeyRelayNextHopRequest(
        source_kma_id="km-a",
        destination_kma_id="km-x",
        next_kma_ids=[],
        extension=[{"error_message": "failure: unknown destination KM 'km-x'"}],
    )
    assert unknown_app == ck.ResponseToKeyRelayNextHopRequest(
        source_kma_id="km-a",
        next_kma_ids=[],
        extension=[{"error_message": "failure: unknown destination application 'app-x'"}],
    )
    assert unreachable_app == ck.ResponseToKeyRelayNextHopRequest(
        source_kma_id="km-a",
        destination_kma_id="km-d",
        next_kma_ids=[],
        extension=[{"error_message": "failure: km-a and km-d are not connected"}],
    )
    assert isinstance(session, ck.ResponseToSessionCreationRequest)
    assert session.response == "failure: unknown destination application 'app-x'"
    assert session.destination_km_id == ""
    assert str(uuid.UUID(session.session_id)) == session.session_id


# --- the handler alone -------------------------------------------------------------------------


async def test_status_reports_from_unknown_or_other_kms_are_ignored() -> None:
    """A report from a KM not in the network, or whose sender_id is not the authenticated peer,
    changes nothing; a failed supply (response code 0x02) is counted but not applied."""
    controller = Controller(make_config(*LINE))
    assert await controller.handle(status_report("km-x", amounts(km_a=1)), StandIn("km-x")) is None
    await controller.handle(status_report("km-a", amounts(km_b=1)), StandIn("km-b"))
    failed = mgmt.StatusInformationSupplyResponse(
        sender_id="km-a", status_table=amounts(km_b=5), response_code=mgmt.ResultCode.FAILURE
    )
    await controller.handle(failed, StandIn("km-a"))
    assert controller.report_count("km-x") == 0
    assert controller.report_count("km-a") == 1
    assert controller.key_amount("km-a", "km-b") is None
    await controller.handle(status_report("km-a", amounts(km_b=5)), StandIn(None))
    assert controller.key_amount("km-a", "km-b") == 5
    with trio.fail_after(WAIT):
        await controller.wait_for_report("km-a", 2)  # already there: returns at once


async def test_a_later_report_replaces_the_amount() -> None:
    controller = Controller(make_config(*LINE))
    await controller.handle(status_report("km-b", amounts(km_c=100, km_a=7)), StandIn("km-b"))
    await controller.handle(status_report("km-b", amounts(km_c=50)), StandIn("km-b"))
    assert controller.key_amount("km-b", "km-c") == 50
    assert controller.key_amount("km-b", "km-a") == 7  # not mentioned: kept


async def test_no_source_on_an_unauthenticated_connection() -> None:
    controller = Controller(make_config(*LINE))
    request = ck.KeyRelayNextHopRequest(destination_kma_id="km-c")
    answer = await controller.handle(request, StandIn(None))
    assert isinstance(answer, ck.ResponseToKeyRelayNextHopRequest)
    assert (answer.source_kma_id, answer.destination_kma_id) == (None, "km-c")
    assert answer.next_kma_ids == []
    reason = failure_reason(answer)
    assert reason is not None
    assert "source_kma_id is absent and the peer is not authenticated" in reason


async def test_destination_kma_id_wins_over_the_application() -> None:
    controller = Controller(make_config(*LINE, applications={"app-a": "km-a"}))
    request = ck.KeyRelayNextHopRequest(
        source_kma_id="km-a", destination_kma_id="km-c", application_destination_id="app-a"
    )
    answer = await controller.handle(request, StandIn("km-a"))
    assert isinstance(answer, ck.ResponseToKeyRelayNextHopRequest)
    assert (answer.destination_kma_id, answer.next_kma_ids) == ("km-c", ["km-b"])


async def test_other_one_way_messages_are_ignored() -> None:
    controller = Controller(make_config(*LINE))
    done = ck.ResponseToKeyRelayRequest(response="success")
    assert await controller.handle(done, StandIn("km-a")) is None


async def test_waiting_for_a_report_wakes_when_it_is_applied() -> None:
    controller = Controller(make_config(*LINE))
    woke: list[int | None] = []

    async def waiter() -> None:
        await controller.wait_for_report("km-a")
        woke.append(controller.key_amount("km-a", "km-b"))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await controller.handle(status_report("km-b", amounts(km_a=1)), StandIn("km-b"))
            await trio.testing.wait_all_tasks_blocked()
            assert woke == []  # another KM's report does not count
            await controller.handle(status_report("km-a", amounts(km_b=9)), StandIn("km-a"))
    assert woke == [9]


# --- routing (Controller.route) ---------------------------------------------------------------


def with_amounts(controller: Controller, **bits: int) -> Controller:
    """Set key amounts directly: ``with_amounts(c, a_b=5)`` sets km-a -> km-b to 5 bits."""
    for name, value in bits.items():
        source, destination = name.split("_")
        controller._network._amounts[f"km-{source}", f"km-{destination}"] = value
    return controller


def test_route_on_a_line() -> None:
    controller = Controller(make_config(*LINE))
    assert controller.route("km-a", "km-c") == ["km-a", "km-b", "km-c"]
    assert controller.route("km-c", "km-a") == ["km-c", "km-b", "km-a"]
    assert controller.route("km-b", "km-c") == ["km-b", "km-c"]


def test_route_ties_are_settled_by_km_ids() -> None:
    """Equal costs: the smallest list of KM IDs, whatever order the config listed things in."""
    config = make_config(DIAMOND[0][::-1], DIAMOND[1][::-1])
    assert Controller(config).route("km-a", "km-d") == ["km-a", "km-b", "km-d"]
    assert Controller(config).route("km-d", "km-a") == ["km-d", "km-b", "km-a"]


def test_route_prefers_links_with_key() -> None:
    controller = with_amounts(Controller(make_config(*DIAMOND)), a_c=70_000, c_d=70_000)
    assert controller.route("km-a", "km-d") == ["km-a", "km-c", "km-d"]
    # The key is directed: the other way round nothing was reported, so it is a tie again.
    assert controller.route("km-d", "km-a") == ["km-d", "km-b", "km-a"]


def test_hops_count_when_key_is_plentiful() -> None:
    """A direct link and a detour, all with far more than SCALE bits: the direct link wins; with
    no key on the direct link, the detour does."""
    config = make_config(
        ["km-a", "km-b", "km-c"], [("km-a", "km-c"), ("km-a", "km-b"), ("km-b", "km-c")]
    )
    plenty = 100 * SCALE
    controller = with_amounts(Controller(config), a_c=plenty, a_b=plenty, b_c=plenty)
    assert controller.route("km-a", "km-c") == ["km-a", "km-c"]
    with_amounts(controller, a_c=0)
    assert controller.route("km-a", "km-c") == ["km-a", "km-b", "km-c"]


def test_link_cost() -> None:
    assert link_cost(0) == 1 + SCALE
    assert link_cost(SCALE - 1) == 2
    assert 1 < link_cost(10**9) < 1.001


def test_route_skips_short_links_and_names_the_ones_that_block() -> None:
    """Only the short links leaving what the relay can reach are named (km-c -> km-d is short
    too, but km-c is out of reach anyway); a link never reported is said to have no key."""
    controller = with_amounts(Controller(make_config(*DIAMOND)), a_b=5000, b_d=100, c_d=1)
    assert controller.route("km-a", "km-d", key_bits=100) == ["km-a", "km-b", "km-d"]
    with pytest.raises(NoRoute) as caught:
        controller.route("km-a", "km-d", key_bits=1000)
    assert str(caught.value) == (
        "no route from km-a to km-d with 1000 bits of key per link: "
        "km-a->km-c has no key reported, km-b->km-d has 100 bits"
    )
    assert isinstance(caught.value, QkdnError)


def test_unreported_links_serve_when_no_key_is_asked() -> None:
    controller = Controller(make_config(*LINE))
    assert controller.route("km-a", "km-c", key_bits=0) == ["km-a", "km-b", "km-c"]
    with pytest.raises(NoRoute, match="km-a->km-b has no key reported"):
        controller.route("km-a", "km-c", key_bits=1)


@pytest.mark.parametrize(
    ("source", "destination", "reason"),
    [
        ("km-a", "km-d", "km-a and km-d are not connected"),
        ("km-a", "km-a", "source and destination are the same KM"),
        ("km-a", "km-zz", "unknown destination KM 'km-zz'"),
        ("km-zz", "km-a", "unknown source KM 'km-zz'"),
    ],
)
def test_route_failures(source: str, destination: str, reason: str) -> None:
    config = make_config(["km-a", "km-b", "km-c", "km-d"], [("km-a", "km-b"), ("km-c", "km-d")])
    with pytest.raises(NoRoute) as caught:
        Controller(config).route(source, destination)
    assert str(caught.value) == reason


def test_not_connected_wins_over_short_links() -> None:
    """When the topology has no path, short links are beside the point."""
    config = make_config(["km-a", "km-b", "km-c"], [("km-a", "km-b")])
    with pytest.raises(NoRoute) as caught:
        Controller(config).route("km-a", "km-c", key_bits=10)
    assert str(caught.value) == "km-a and km-c are not connected"


def test_route_refuses_negative_key_bits() -> None:
    with pytest.raises(ValueError, match="key_bits must be >= 0"):
        Controller(make_config(*LINE)).route("km-a", "km-c", key_bits=-1)


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "text"),
    [
        ({"links": [("km-a", "km-a")]}, ValueError, "'km-a' is linked to itself"),
        ({"links": [("km-a", "km-x")]}, ValueError, "names 'km-x', not one of kms"),
        ({"links": [("km-a", "km-b", "km-c")]}, ValueError, "a link joins two KMs"),
        ({"applications": {"app-x": "km-x"}}, ValueError, "'app-x' is served by 'km-x'"),
        ({"kms": "km-a"}, TypeError, "got the string 'km-a'"),
        ({"links": ["km-a"]}, TypeError, "got the string 'km-a'"),
        ({"controller_id": ""}, ValueError, "controller_id"),
    ],
)
def test_config_is_validated(changes: dict[str, object], error: type[Exception], text: str) -> None:
    fields: dict[str, object] = {
        "controller_id": "controller",
        "listen_url": "memory://controller",
        "kms": ["km-a", "km-b"],
        "links": [("km-a", "km-b")],
        "applications": {"app-a": "km-a"},
    }
    fields.update(changes)
    with pytest.raises(error, match=text):
        ControllerConfig(**fields)  # type: ignore[arg-type]


def test_config_freezes_what_it_is_given() -> None:
    applications = {"app-a": "km-a"}
    config = make_config(["km-a", "km-b"], [["km-b", "km-a"]], applications)
    applications["app-b"] = "km-b"
    assert config.links == frozenset({frozenset({"km-a", "km-b"})})
    assert dict(config.applications) == {"app-a": "km-a"}
    same = make_config(["km-b", "km-a"], [("km-a", "km-b")], listen_url=config.listen_url)
    assert hash(config) == hash(same)


async def test_a_controller_that_requires_authentication_serves_only_after_it() -> None:
    """With ``require_authentication`` a KM's messages are refused, saying what to send, until
    it authenticated (D2.3 clause 8.1.1 a)); then they are served."""
    config = attrs.evolve(make_config(*LINE), require_authentication=True)
    controller = Controller(config)
    request = ck.KeyRelayNextHopRequest(source_kma_id="km-a", destination_kma_id="km-b")
    async with running(controller) as url, connect(url, identity="km-a") as km_a:
        with pytest.raises(FailureResponse, match=r"controller requires D2\.3 authentication"):
            await km_a.request(request)
        answer = await km_a.request(
            mgmt.CkAuthenticationCommand(sender_id="km-a", authentication_info="mtls")
        )
        assert isinstance(answer, mgmt.CkAuthenticationResponse)
        hop = await km_a.request(request)
    assert isinstance(hop, ck.ResponseToKeyRelayNextHopRequest)
    assert hop.next_kma_ids == ["km-b"]
