"""A link fed by a third-party-style ETSI GS QKD 014 KME pair (qkdn_sdk.roles.km.acquisition).

::

    alice -- km-a ==== km-b ---- km-c -- bob
                       qkd-b ~~~~ qkd-c      (two 014 KMEs sharing their keys)

The KMEs here behave like other vendors' (a-v-popov/etsi-qkd-rest): keys of 256 bits unless the
Get key asks for a ``size`` (any multiple of 8 from 64 to 2048 bits), random UUID key IDs, and
Get status saying so. They are served by the SDK's own https transport (real TLS, a PKI of
their own) with a handler that plays the devices: what qkd-b hands out by Get key, qkd-c hands
out by ID. Every key request is recorded, so the tests see what the KMs asked.
"""

from __future__ import annotations

import functools
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import RequestRefused
from qkdn_sdk.messages import Interface, Key, Message, Role, kq1, received_by
from qkdn_sdk.network import Network
from qkdn_sdk.pki import dev_tls_config, write_dev_pki
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.transport import Connection, serve
from tests.test_link_key_cap import reports, until_full
from tests.test_link_key_split import keys_both_ways
from tests.test_network import (
    BOTH_WAYS,
    km,
    ready,
    relay_bits,
    running,
)

DEFAULT_SIZE, MIN_SIZE, MAX_SIZE = 256, 64, 2048
MAX_PER_REQUEST = 16
KMES = ("qkd-b", "qkd-c")


@attrs.define
class KMEPair:
    """Two KMEs of one QKD link: the keys qkd-b handed out wait for qkd-c's SAE."""

    waiting: dict[str, bytes] = attrs.Factory(dict)
    requests: list[kq1.KeyRequest] = attrs.Factory(list)
    by_id: list[int] = attrs.Factory(list)
    """How many keys each Get key with key IDs asked (at qkd-c)."""

    async def handle(self, kme: str, message: Message, connection: Connection) -> Message:
        if isinstance(message, kq1.StatusRequest):
            return kq1.Status(
                source_kme_id=kme,
                target_kme_id=KMES[1 - KMES.index(kme)],
                master_sae_id=connection.peer_id or "sae",
                slave_sae_id=message.slave_sae_id,
                key_size=DEFAULT_SIZE,
                stored_key_count=1000,
                max_key_count=1000,
                max_key_per_request=MAX_PER_REQUEST,
                max_key_size=MAX_SIZE,
                min_key_size=MIN_SIZE,
                max_sae_id_count=0,
            )
        if isinstance(message, kq1.KeyRequest):
            self.requests.append(message)
            size = message.size_of_key or DEFAULT_SIZE
            number = message.number_of_keys or 1
            if size % 8:
                raise RequestRefused("bad size", etsi014_message=etsi014.SIZE_NOT_MULTIPLE_OF_8)
            if not MIN_SIZE <= size <= MAX_SIZE or number > MAX_PER_REQUEST:
                raise RequestRefused("outside this KME's limits")
            keys = [
                Key(key=secrets.token_bytes(size // 8), key_id=str(uuid.uuid4()))
                for _ in range(number)
            ]
            self.waiting.update((key.key_id, key.key) for key in keys)
            return kq1.ResponseToKeyRequest(keys=keys, response="success")
        assert isinstance(message, kq1.KeyRequestWithKeyIds)
        asked = [key_id.key_id for key_id in message.key_ids]
        self.by_id.append(len(asked))
        if any(key_id not in self.waiting for key_id in asked):
            raise RequestRefused("not found", etsi014_message=etsi014.KEYS_NOT_FOUND)
        return kq1.ResponseToKeyRequest(
            keys=[Key(key=self.waiting.pop(key_id), key_id=key_id) for key_id in asked],
            response="success",
        )


_ACCEPTS = frozenset(
    cls for cls in received_by(Role.QKD_MODULE) if cls.interface is not Interface.CQ
)


@asynccontextmanager
async def kme_link(
    tmp_path: Path, key_size: int | None, max_link_key_bits: int
) -> AsyncIterator[tuple[KMEPair, Network]]:
    """line3 whose km-b/km-c link takes its keys from a :class:`KMEPair`; ``key_size``: the
    link's (``None``: the topology's default); each link end holds ``max_link_key_bits`` at
    most. Yields the pair and the running network."""
    devices = tmp_path / "devices"
    write_dev_pki(devices, "device-ca", [*KMES, "km-b", "km-c"])
    pair = KMEPair()
    async with trio.open_nursery() as nursery:
        urls = {}
        for kme in KMES:
            info = await nursery.start(
                functools.partial(
                    serve,
                    "https://127.0.0.1:0",
                    functools.partial(pair.handle, kme),
                    tls=dev_tls_config(devices, kme),
                    identity=kme,
                    accepts=_ACCEPTS,
                )
            )
            urls[kme] = info.url

        def entry(km_id: str, kme: str) -> str:
            files = dev_tls_config(devices, km_id)
            return (
                f'kme.{km_id} = {{url = "{urls[kme]}", id = "{kme}", ca = "{files.ca}", '
                f'cert = "{files.cert}", key = "{files.key}"}}'
            )

        size = "" if key_size is None else f"\nkey_size = {key_size}"
        link = (
            'kms = ["km-b", "km-c"]\nsecret_key_rate = 256_000\nmode = "on-request"',
            f'kms = ["km-b", "km-c"]{size}\n{entry("km-b", KMES[0])}\n{entry("km-c", KMES[1])}',
        )
        async with running(
            tmp_path, "https", replace=[link], km_options={"max_link_key_bits": max_link_key_bits}
        ) as network:
            yield pair, network
        nursery.cancel_scope.cancel()


async def test_a_link_fed_256_bit_keys_by_a_014_kme_serves_both_ways(tmp_path: Path) -> None:
    """km-b asks its KME for the link's configured size (256 bits: one link unit per key), no
    more keys than the KME's max_key_per_request; km-c fetches the same keys by ID; each end
    gets units of them, so alice and bob get keys both ways."""
    bits = relay_bits(2, 256)
    async with kme_link(tmp_path, 256, 65_536) as (
        pair,
        network,
    ):
        await ready(network, 2 * bits, BOTH_WAYS)
        # a KME that always has keys is not asked while the link is full: no busy loop (and
        # the network stops quiet: a request cut short warns, in httpx)
        await until_full(network)
        asked = len(pair.requests)
        await reports(network, 4)
        assert len(pair.requests) == asked
        assert not pair.waiting  # km-c took every key km-b got
        await keys_both_ways(network)
        assert pair.requests
        assert {request.size_of_key for request in pair.requests} == {256}
        assert max(request.number_of_keys or 1 for request in pair.requests) <= MAX_PER_REQUEST
        km_b, km_c = km(network, "km-b"), km(network, "km-c")
        assert km_b.generated_bits["km-c"] >= 2 * bits
        assert km_c.generated_bits["km-b"] >= 2 * bits
        assert km_b.link_table.qkd_key_bits["km-c"] == 256


async def test_a_size_outside_the_kmes_range_is_logged_and_the_nearest_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The topology's default key_size (4096 bits) is over what this KME serves (2048): km-b
    says so in one line at error level and asks for 2048."""
    caplog.set_level(logging.ERROR, logger="qkdn_sdk.roles.km")
    async with kme_link(tmp_path, None, 65_536) as (
        pair,
        network,
    ):
        await ready(network, otp.UNIT_BITS, [("km-b", "km-c")])
        await until_full(network)  # quiet, then stopped (a request cut short warns, in httpx)
        assert {request.size_of_key for request in pair.requests} == {MAX_SIZE}
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert errors == [
        "km-b: KME qkd-b serves keys of 64 to 2048 bits, not the 4096 bits the link to km-c is "
        "configured with (key_size): asking for 2048"
    ]
