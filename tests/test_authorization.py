"""Who may send what (qkdn_sdk.roles._authorization): every port of a KM and the controller's
admit only the roles that belong on it, and a refused message changes nothing.

The matrix is generated from the tables the code keeps, so a new message cannot be added
without its rows: every message a KM handles (:data:`~qkdn_sdk.roles.km.HANDLERS`), on the
interface that accepts it, from every kind of peer identity; then an application's certificate on
every Ck and KM link port, and on the controller's, over the TLS transports.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from qkdn_sdk.errors import FailureResponse, QkdnError, TransportError
from qkdn_sdk.messages import KeyId, Message, Role, ak, example, kx, received_by
from qkdn_sdk.roles._peer import Dialer
from qkdn_sdk.roles.keystore import MemoryKeyStore
from qkdn_sdk.roles.km import HANDLERS, INTERFACES, KeyManager, KMConfig, KMLink
from qkdn_sdk.roles.km.manager import accepted
from qkdn_sdk.transport import connect, serve
from tests.test_network import km, ready, relay_bits, running

WAIT = 10.0
PEERS = {
    "alice": Role.APPLICATION,
    "controller": Role.CONTROLLER,
    "km-b": Role.KM,
    "km-a.km-b": Role.QKD_MODULE,
    "mallory": None,  # a certificate of the network's CA that names no one the KM knows
    "km-x": None,
}
"""The identities that reach km-a, and the role its configuration gives each."""


def state(manager: KeyManager) -> dict[str, Any]:
    """What a request could change at a KM: its store, its link key, its relays."""
    return {
        "pools": manager.store.counts(),
        "spent": dict(manager.spent_bits),
        "generated": dict(manager.generated_bits),
        "relays": dict(manager.relays),
        "pending": manager.pending_key_ids,
        "link sessions": dict(manager.link_sessions),
        "pushed": dict(manager.pushed),
    }


@asynccontextmanager
async def km_a() -> AsyncIterator[KeyManager]:
    config = KMConfig(
        km_id="km-a",
        listen={interface: f"memory://authz/km-a/{interface}" for interface in INTERFACES},
        controller_id="controller",
        links=(KMLink(neighbour="km-b", module_id="km-a.km-b"),),
        applications=frozenset({"alice"}),
        relay_timeout=1.0,
        report_interval=60.0,
        hello_interval=60.0,
    )
    manager = KeyManager(config, MemoryKeyStore())
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        yield manager
        nursery.cancel_scope.cancel()


def matrix(*, authorized: bool) -> Any:
    """``(interface, message class, peer)`` for every message a KM handles, on the interface
    that accepts it, from every peer whose role sends it (``authorized``) or does not, as
    pytest parameters."""
    cases = [
        (interface, cls, peer)
        for interface in INTERFACES
        for cls in sorted(accepted(interface) & HANDLERS.keys(), key=lambda cls: cls.code)
        for peer in PEERS
        if (PEERS[peer] is cls.sender) is authorized
        and (not authorized or cls.response_type() is not None)
    ]
    return pytest.mark.parametrize(
        ("interface", "cls", "peer"),
        cases,
        ids=[f"{interface}-0x{cls.code:04X}-{peer}" for interface, cls, peer in cases],
    )


@matrix(authorized=False)
async def test_a_km_refuses_what_a_peer_of_another_role_sends(
    interface: str, cls: type[Message], peer: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with km_a() as manager:
        before = state(manager)
        message = example(cls, sender=peer)
        async with connect(manager.config.listen[interface], identity=peer) as connection:
            if cls.response_type() is None:
                await connection.send(message)  # dropped: nothing to answer, nothing done
            else:
                with pytest.raises(FailureResponse) as caught:
                    await connection.request(message, timeout=WAIT)
                reason = caught.value.reason
                if not reason.startswith("failure: response code"):  # a table with a reason
                    assert f"'{peer}'" in reason
                    assert "km-a" in reason
        assert state(manager) == before
    refusals = [record.getMessage() for record in caplog.records]
    assert any(f"refused 0x{cls.code:04X}" in text and f"'{peer}'" in text for text in refusals)


@matrix(authorized=True)
async def test_a_km_hands_what_a_peer_of_the_right_role_sends_to_its_handler(
    interface: str, cls: type[Message], peer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The same peers, each sending what its role sends: the role check lets it through (the
    handler may still refuse it, for its own reasons)."""
    async with km_a() as manager:
        message = example(cls, sender=peer)
        async with connect(manager.config.listen[interface], identity=peer) as connection:
            with suppress(QkdnError), trio.fail_after(3 * WAIT):
                await connection.request(message, timeout=WAIT)
    assert not [record for record in caplog.records if "refused 0x" in record.getMessage()]


async def test_refusals_are_logged_once_per_peer(caplog: pytest.LogCaptureFixture) -> None:
    cls = min(  # a request (a set's order is the classes' ids': not the same every run)
        (cls for cls in accepted("ck") & HANDLERS.keys() if cls.response_type() is not None),
        key=lambda cls: cls.code,
    )
    async with (
        km_a() as manager,
        connect(manager.config.listen["ck"], identity="alice") as connection,
    ):
        for _ in range(5):
            with pytest.raises(FailureResponse):
                await connection.request(example(cls, sender="alice"), timeout=WAIT)
    refusals = [record for record in caplog.records if "refused 0x" in record.getMessage()]
    assert len(refusals) == 1
    assert "'alice'" in refusals[0].getMessage()


@pytest.mark.parametrize("transport", ["tcp+tls", "grpcs"])
async def test_an_applications_certificate_opens_no_ck_or_km_link_port(
    tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """alice's own certificate, on every Ck and KM link port of the network and on the
    controller's, for every message those ports accept: refused, nothing changed (the
    reservation that drained a link in the attack is among them)."""
    async with running(tmp_path, transport) as network:
        await ready(network, relay_bits(1, 256))
        endpoints = network.endpoints()
        ports = [
            (km_id, interface, urls[interface][transport], accepted(interface))
            for km_id, urls in endpoints["kms"].items()
            for interface in ("ck", "kx", "kq1")
            if interface in urls
        ]
        ports.append(
            (
                "controller",
                "ck",
                endpoints["controller"]["ck"][transport],
                received_by(Role.CONTROLLER),
            )
        )
        kms = {km_id: km(network, km_id) for km_id in endpoints["kms"]}
        before = {km_id: state(manager) for km_id, manager in kms.items()}
        refused = 0
        for owner, _interface, url, messages in ports:
            async with connect(url, tls=network.tls("alice")) as connection:
                for cls in sorted(messages, key=lambda cls: cls.code):
                    if cls.response_type() is None:
                        continue
                    with pytest.raises(FailureResponse) as caught:
                        await connection.request(example(cls, sender="alice"), timeout=WAIT)
                    reason = caught.value.reason
                    if not reason.startswith("failure: response code"):  # a table with a reason
                        assert "'alice'" in reason, (owner, cls)
                    refused += 1
        assert refused > 30
        refusers = {
            record.getMessage().split(":", 1)[0]
            for record in caplog.records
            if "refused 0x" in record.getMessage() and "'alice'" in record.getMessage()
        }
        assert refusers == {owner for owner, *_ in ports}
        after = {km_id: state(manager) for km_id, manager in kms.items()}
        for km_id in kms:  # link key keeps coming: only what alice could have changed is compared
            for name in ("relays", "pending", "link sessions", "pushed"):
                assert after[km_id][name] == before[km_id][name], (km_id, name)
            assert after[km_id]["spent"] == before[km_id]["spent"], km_id
            reserved = {
                p for p in after[km_id]["pools"] if p.startswith(("reserved:", "allocated:"))
            }
            assert reserved == set(), km_id


SECURITY = Path(__file__).resolve().parent.parent / "docs" / "security.md"
WHO = {
    Role.APPLICATION: "an application the KM serves (`applications`)",
    Role.KM: "a neighbouring KM (a link's `neighbour`)",
    Role.QKD_MODULE: "the QKD module of a link (its `module_id`)",
    Role.CONTROLLER: "its QKDN controller (`controller_id`)",
}


def km_authorization_table() -> str:
    """The table of docs/security.md: whose certificate may send each message a KM handles."""
    interface_of = {
        cls: interface for interface in INTERFACES for cls in accepted(interface) & HANDLERS.keys()
    }
    rows = ["| code | message | port | whose certificate |", "|---|---|---|---|"]
    for cls in sorted(HANDLERS, key=lambda cls: cls.code):
        rows.append(
            f"| 0x{cls.code:04X} | {cls.spec_name} | {interface_of[cls]} | {WHO[cls.sender]} |"
        )
    return "\n".join(rows) + "\n"


def test_the_security_page_says_whose_certificate_may_send_each_message() -> None:
    begin, end = "<!-- km-authorization -->\n", "<!-- /km-authorization -->"
    text = SECURITY.read_text(encoding="utf-8")
    assert begin in text, f"{SECURITY.name} has no authorization table"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    expected = km_authorization_table()
    assert table == expected, f"the table of {SECURITY.name} is stale; it is:\n{expected}"


async def test_a_km_talks_only_to_the_peer_it_dials() -> None:
    """The server at a neighbour's (or the controller's, or a module's) address must
    authenticate as that peer: anyone else gets no request of the KM's answered."""

    async def answer(message: Message, connection: Any) -> Message:
        return kx.Hello(sender_id="impostor")

    async with trio.open_nursery() as nursery:
        info = await nursery.start(
            partial(serve, "memory://authz/impostor", answer, identity="impostor")
        )
        hello = kx.Hello(sender_id="km-a")
        for peer, expected in (("km-b", False), ("impostor", True), (None, True)):
            dialer = Dialer(nursery, url=info.url, tls=None, identity="km-a", peer=peer)
            if expected:
                assert isinstance(await dialer.request(hello, timeout=WAIT), kx.Hello)
            else:
                with pytest.raises(TransportError) as caught:
                    await dialer.request(hello, timeout=WAIT)
                assert "is 'impostor', not 'km-b': refused" in str(caught.value)
            dialer.close()
        nursery.cancel_scope.cancel()


async def test_only_its_applications_get_anything_from_a_kms_etsi_014_port(
    tmp_path: Path,
) -> None:
    """km-a's ETSI GS QKD 014 port, with the certificate of every other role of the network
    (its controller, its neighbour, a QKD module, an application of another KM): every 014
    method is refused as 401 before anything is looked up, and nothing changes."""
    async with running(tmp_path, "https") as network:
        await ready(network, relay_bits(4, 256))
        url = network.endpoints()["kms"]["km-a"]["ak"]["https"]
        manager = km(network, "km-a")
        before = state(manager)
        requests = [
            ak.KeyRequest(application_destination_id="bob", number_of_keys=2, size_of_key=256),
            ak.KeyRequestWithId(
                application_source_id="bob", key_ids=[KeyId(key_id=str(uuid.uuid4()))]
            ),
            ak.StatusRequest(application_destination_id="bob"),
        ]
        for identity in ("controller", "km-b", "km-a.km-b", "bob"):
            async with connect(url, tls=network.tls(identity)) as connection:
                for request in requests:
                    with pytest.raises(FailureResponse) as caught:
                        await connection.request(request, timeout=WAIT)
                    assert caught.value.reason == "401 Unauthorized.", (identity, request)
        after = state(manager)
        for name in ("relays", "pending", "spent", "pushed"):
            assert after[name] == before[name], name
        assert {p for p in after["pools"] if p.startswith("app:")} == set()
