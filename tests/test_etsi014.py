"""ETSI GS QKD 014 served by the roles of a running line3 network.

::

    alice -- km-a ==== km-b ==== km-c -- bob, carol
                        |
                       dave

The KMs serve Ak as ETSI 014 too (Q.4161 Appendix II: the applications are the SAEs, the KMs the
KMEs); the QKD modules of the km-b/km-c link serve Kq-1 as ETSI 014 (Q.4162 Appendix II: the KMs
are the SAEs). Every 014 status code and message a KM answers is asserted here, with our typed
client and with a third-party 014 client from PyPI (``etsi-qkd-014-client``, synchronous, run in
a thread).
"""

from __future__ import annotations

import base64
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from etsi_qkd_014_client import QKD014Client
from qkdn_https import Etsi014Client

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.network import Network
from qkdn_sdk.pki import dev_tls_config, write_dev_pki
from qkdn_sdk.roles.km import ROUTE_TYPE_EXTENSION
from qkdn_sdk.roles.qkd_module import LINK_SECRET_SIZE, Kq1Mode, QKDModule, QKDModuleConfig
from tests.test_network import (
    BOTH_WAYS,
    after_refetch_window,
    ak_url,
    ready,
    relay_bits,
    running,
)

APPLICATIONS = (
    '\n[[application]]\nid = "carol"\nkm = "km-c"\n'
    '\n[[application]]\nid = "dave"\nkm = "km-b"\n'
    '\n[[application]]\nid = "erin"\nkm = "km-a"\n'
)
MODULES_OVER_014 = (
    'kms = ["km-b", "km-c"]\nsecret_key_rate = 256_000\nmode = "on-request"',
    'kms = ["km-b", "km-c"]\nsecret_key_rate = 256_000\nmode = "on-request"\netsi014 = true',
)


@asynccontextmanager
async def line3(tmp_path: Path, **options: Any) -> AsyncIterator[Network]:
    """line3 with ETSI 014 at the KMs and on the km-b/km-c link, link key both ways."""
    async with running(
        tmp_path, "https", extra=APPLICATIONS, replace=[MODULES_OVER_014], **options
    ) as network:
        await ready(network, 4 * relay_bits(4, 256), BOTH_WAYS)
        yield network


def kme(network: Network, app: str) -> Etsi014Client:
    """``app``'s 014 client of its KM."""
    return Etsi014Client(ak_url(network, app), network.tls(app))


def third_party(network: Network, app: str) -> QKD014Client:
    """``app``'s client of its KM from ``etsi-qkd-014-client``: HOST:PORT, certificate, key, CA."""
    tls = network.tls(app)
    assert tls is not None
    assert tls.cert is not None
    assert tls.key is not None
    address = urllib.parse.urlsplit(ak_url(network, app)).netloc
    return QKD014Client(address, str(tls.cert), str(tls.key), str(tls.ca))


async def refused(request: Any, status: int, message: str | None = None) -> etsi014.Etsi014Error:
    """The 014 error that awaiting ``request`` raises: ``status``, and ``message`` exactly."""
    with pytest.raises(etsi014.Etsi014Error) as caught:
        await request
    assert caught.value.http_status == status, caught.value
    if message is not None:
        assert caught.value.message == message, caught.value
    return caught.value


# --- interoperation ------------------------------------------------------------------------------


async def test_a_third_party_client_gets_keys_and_its_slave_the_same_keys(tmp_path: Path) -> None:
    async with line3(tmp_path) as network:
        alice, bob = third_party(network, "alice"), third_party(network, "bob")
        code, status = await trio.to_thread.run_sync(alice.get_status, "bob")
        assert code == 200
        assert (status.source_kme_id, status.target_kme_id) == ("km-a", "km-c")
        assert (status.master_sae_id, status.slave_sae_id) == ("alice", "bob")
        assert 0 < status.stored_key_count <= status.max_key_count
        code, container = await trio.to_thread.run_sync(
            lambda: alice.get_key("bob", number=3, size=512)
        )
        assert code == 200
        keys = {key.key_id: base64.b64decode(key.key) for key in container.keys}
        assert len(keys) == 3
        assert all(len(key) == 64 for key in keys.values())
        code, same = await trio.to_thread.run_sync(
            lambda: bob.get_key_with_key_IDs("alice", list(keys))
        )
        assert code == 200
        assert {key.key_id: base64.b64decode(key.key) for key in same.keys} == keys
        # asked again within the re-fetch window (a response lost): the same keys
        code, again = await trio.to_thread.run_sync(
            lambda: bob.get_key_with_key_IDs("alice", list(keys))
        )
        assert code == 200
        assert {key.key_id: base64.b64decode(key.key) for key in again.keys} == keys
        # after it, they are not found (400, the 014 message)
        await after_refetch_window(network.kms["km-c"])
        code, error = await trio.to_thread.run_sync(
            lambda: bob.get_key_with_key_IDs("alice", list(keys))
        )
        assert (code, error.message) == (400, etsi014.KEYS_NOT_FOUND)


async def test_the_default_get_key_is_one_key_of_the_default_size(tmp_path: Path) -> None:
    async with line3(tmp_path) as network:
        alice = third_party(network, "alice")
        code, container = await trio.to_thread.run_sync(alice.get_key, "bob")  # a bare GET
        assert code == 200
        (key,) = container.keys
        assert len(base64.b64decode(key.key)) * 8 == 256
        async with kme(network, "bob") as bob:
            (same,) = (await bob.get_key_with_key_ids("alice", [key.key_id])).keys
        assert base64.b64decode(key.key) == same.key


# --- Get status ----------------------------------------------------------------------------------


async def test_status_says_what_the_km_can_supply(tmp_path: Path) -> None:
    async with line3(tmp_path) as network, kme(network, "alice") as alice:
        before = network.kms["km-a"].link_key_bits("km-b") // 256
        remote = await alice.get_status("bob")
        after = network.kms["km-a"].link_key_bits("km-b") // 256  # link key only grows here
        assert (remote.source_kme_id, remote.target_kme_id) == ("km-a", "km-c")
        assert remote.key_size == 256
        assert (remote.min_key_size, remote.max_key_size) == (8, 8192)
        assert (remote.max_key_per_request, remote.max_sae_id_count) == (128, 4)
        assert 0 < remote.stored_key_count <= remote.max_key_count
        # keys of 256 bits one relay could carry: each 256-bit unit pads one, less two units
        # (the hop's MAC key, and the end-to-end MAC key it carries)
        assert before - 2 <= remote.stored_key_count <= after - 2
        local = await alice.get_status("erin")  # erin is on km-a too: keys made on demand
        assert local.target_kme_id == "km-a"
        assert local.stored_key_count == local.max_key_count


# --- Get key: the 400s ---------------------------------------------------------------------------


async def test_get_key_rules(tmp_path: Path) -> None:
    async with line3(tmp_path) as network, kme(network, "alice") as alice:
        await refused(alice.get_key("bob", size=100), 400, etsi014.SIZE_NOT_MULTIPLE_OF_8)
        error = await refused(alice.get_key("bob", number=129), 400)
        assert "max_key_per_request (128)" in error.message
        error = await refused(alice.get_key("bob", size=8200), 400)
        assert "outside this KM's 8 to 8192 bits" in error.message
        error = await refused(alice.get_key("alice"), 400)
        assert "the destination application is the source application" in error.message
        await refused(
            alice.get_key("bob", extension_mandatory=[{"abc_route_type": "direct"}]),
            400,
            etsi014.MANDATORY_EXTENSION_UNSUPPORTED,
        )
        await refused(
            alice.get_key("bob", extension_mandatory=[{ROUTE_TYPE_EXTENSION: "quantum"}]),
            400,
            etsi014.MANDATORY_EXTENSION_UNSUPPORTED,
        )
        # bob's KM is two hops away: only a trusted node could relay his keys
        await refused(
            alice.get_key("bob", extension_mandatory=[{ROUTE_TYPE_EXTENSION: "direct"}]),
            400,
            etsi014.MANDATORY_EXTENSION_UNMET,
        )
        # an SAE no KM of the network serves: the caller's mistake (400), never a 503
        for method in (alice.get_key, alice.get_status):
            error = await refused(
                method("mallory"), 400, "the SAE ID 'mallory' is not known to this KME"
            )
            assert error.details == [{"reason": "unknown destination application 'mallory'"}]
        assert network.kms["km-a"].relays["started"] == 0  # nothing was spent on any of it
        # dave's KM is the neighbour: a direct route; an optional parameter we do not handle
        # is ignored (014 allows it)
        direct = await alice.get_key(
            "dave",
            extension_mandatory=[{ROUTE_TYPE_EXTENSION: "direct"}],
            extension_optional=[{"abc_key_type": "aes"}],
        )
        async with kme(network, "dave") as dave:
            same = await dave.get_key_with_key_ids("alice", [key.key_id for key in direct.keys])
        assert same.keys == direct.keys


async def test_503_says_why_when_keys_run_out(tmp_path: Path) -> None:
    slow = (
        'kms = ["km-a", "km-b"]\nsecret_key_rate = 256_000',
        'kms = ["km-a", "km-b"]\nsecret_key_rate = 1',
    )
    async with (
        running(tmp_path, "https", replace=[slow]) as network,
        kme(network, "alice") as alice,
    ):
        error = await refused(alice.get_key("bob"), 503)
        assert "km-a" in error.message, error
        assert "km-b" in error.message, error


# --- Get key with key IDs: 400 and 401 ----------------------------------------------------------


async def test_get_key_with_key_ids_rules(tmp_path: Path) -> None:
    async with line3(tmp_path) as network:
        async with kme(network, "alice") as alice:
            keys = (await alice.get_key("bob", number=2)).keys
        ids = [key.key_id for key in keys]
        async with kme(network, "carol") as carol:  # on bob's KM, but not bob
            # not 014's 401 for a caller that is not the slave: that would tell carol the key
            # IDs exist; she gets what keys that do not exist get
            error = await refused(carol.get_key_with_key_ids("alice", ids), 400)
            assert error.message == etsi014.KEYS_NOT_FOUND
            unknown = [
                "9a7f3c50-6a5e-4a8e-9c1d-1e2f3a4b5c6d",
                "0b7f3c50-6a5e-4a8e-9c1d-1e2f3a4b5c6d",
            ]
            not_there = await refused(carol.get_key_with_key_ids("alice", unknown), 400)
            assert (not_there.message, not_there.details) == (error.message, error.details)
        async with kme(network, "bob") as bob:
            unknown = "9a7f3c50-6a5e-4a8e-9c1d-1e2f3a4b5c6d"
            await refused(
                bob.get_key_with_key_ids("alice", [ids[0], unknown]), 400, etsi014.KEYS_NOT_FOUND
            )
            await refused(  # the keys were made by alice, not by carol
                bob.get_key_with_key_ids("carol", ids), 400, etsi014.KEYS_NOT_FOUND
            )
            assert (await bob.get_key_with_key_ids("alice", ids)).keys == keys  # still there
        async with Etsi014Client(ak_url(network, "alice", "km-c"), network.tls("alice")) as lost:
            # alice at bob's KM: an application km-c does not serve
            await refused(lost.get_key_with_key_ids("alice", ids), 401)


# --- multicast -----------------------------------------------------------------------------------


async def test_multicast_every_slave_gets_the_same_keys_from_its_own_km(tmp_path: Path) -> None:
    async with line3(tmp_path) as network:
        async with kme(network, "alice") as alice:
            keys = (
                await alice.get_key("bob", number=2, additional_slave_sae_ids=["dave", "erin"])
            ).keys
            ids = [key.key_id for key in keys]
            await refused(  # bob and carol are both at km-c, which holds a key ID once
                alice.get_key("bob", additional_slave_sae_ids=["carol"]), 400
            )
            await refused(
                alice.get_key("bob", additional_slave_sae_ids=["v", "w", "x", "y", "z"]), 400
            )
        for slave in ("bob", "dave", "erin"):
            async with kme(network, slave) as client:
                assert (await client.get_key_with_key_ids("alice", ids)).keys == keys


# --- Kq-1 over ETSI 014: the QKD modules of km-b/km-c ---------------------------------------------


async def test_kms_take_their_link_keys_from_modules_over_014(tmp_path: Path) -> None:
    """The km-b/km-c link is up (its modules serve 014), so bob gets keys relayed over it."""
    async with line3(tmp_path) as network:
        assert network.kms["km-b"].link_key_bits("km-c") > 0
        async with kme(network, "alice") as alice, kme(network, "bob") as bob:
            keys = (await alice.get_key("bob")).keys
            assert (await bob.get_key_with_key_ids("alice", [keys[0].key_id])).keys == keys


# --- a QKD link whose keys come from a pair of ETSI 014 KMEs ----------------------------------


async def test_a_link_takes_its_keys_from_a_pair_of_014_kmes(tmp_path: Path) -> None:
    """The km-b/km-c link names two external 014 KMEs, with a PKI of their own: our QKD
    modules stand in for the QKD devices. km-b gets keys with Get key and names them in the key
    ID synchronisation; km-c fetches the same keys from its KME by ID; bob gets keys relayed
    over that link."""
    devices = tmp_path / "devices"
    write_dev_pki(devices, "device-ca", ["qkd-b", "qkd-c", "km-b", "km-c"])
    secret, epoch = secrets.token_bytes(LINK_SECRET_SIZE), time.time()

    def device(own: str, other: str, km_id: str, peer_km_id: str) -> QKDModule:
        config = QKDModuleConfig(
            module_id=own,
            matching_module_id=other,
            link_secret=secret,
            epoch=epoch,
            secret_key_rate=256_000,
            mode=Kq1Mode.ON_REQUEST,
            listen_url="https://127.0.0.1:0",
            km_id=km_id,
            peer_km_id=peer_km_id,
        )
        return QKDModule(config, tls=dev_tls_config(devices, own))

    qkd_b, qkd_c = (
        device("qkd-b", "qkd-c", "km-b", "km-c"),
        device("qkd-c", "qkd-b", "km-c", "km-b"),
    )
    async with trio.open_nursery() as nursery:
        url_b, url_c = await nursery.start(qkd_b.run), await nursery.start(qkd_c.run)

        def kme_entry(km: str, url: str, kme_id: str) -> str:
            files = dev_tls_config(devices, km)
            return (
                f'kme.{km} = {{url = "{url}", id = "{kme_id}", ca = "{files.ca}", '
                f'cert = "{files.cert}", key = "{files.key}"}}'
            )

        link = (
            'kms = ["km-b", "km-c"]\nsecret_key_rate = 256_000\nmode = "on-request"',
            'kms = ["km-b", "km-c"]\n'
            + kme_entry("km-b", url_b, "qkd-b")
            + "\n"
            + kme_entry("km-c", url_c, "qkd-c"),
        )
        async with running(tmp_path, "https", replace=[link]) as network:
            assert "km-b.km-c" not in network.modules  # no simulated module on that link
            await ready(network, relay_bits(2, 256))
            async with kme(network, "alice") as alice, kme(network, "bob") as bob:
                keys = (await alice.get_key("bob", number=2)).keys
                same = await bob.get_key_with_key_ids("alice", [key.key_id for key in keys])
            assert same.keys == keys
        # km-b got keys by Get key; km-c the same keys by ID: every key km-c took, km-b took
        assert qkd_b.stats.delivered >= qkd_c.stats.delivered > 0
        nursery.cancel_scope.cancel()
