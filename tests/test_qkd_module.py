"""The simulated QKD module (:mod:`qkdn_sdk.roles.qkd_module`) over ``memory://``.

Time is trio's :class:`~trio.testing.MockClock` with autojump (the ``autojump_clock`` fixture of
pytest-trio): a ``trio.sleep`` in a test lets virtual time pass at once, and the module's wall
clock (:class:`WallClock`) follows it, so keys become ready at the configured rate without a real
wait. The KM is a small fake that records what it is supplied.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import math
import os
import uuid
from datetime import datetime
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import FailureResponse, TransportError
from qkdn_sdk.messages import KeyId, Message, Role, kq1, received_by
from qkdn_sdk.roles.qkd_module import (
    Kq1Mode,
    LinkKey,
    QKDModule,
    QKDModuleConfig,
    hash_of,
    link_key,
    max_keys_per_response,
)
from qkdn_sdk.transport import Connection, connect, serve

EPOCH = 1_700_000_000.0
SECRET = bytes(range(32))
RATE = 1024.0  # bits/s: with 256-bit keys, one key every 0.25 s
KEY_SIZE = 256
KM_URL = "memory://km-a"
MODULE_URL = "memory://qkd-a"
LOGGER = "qkdn_sdk.roles.qkd_module"


class WallClock:
    """Unix time that starts at ``start`` and advances with trio's clock."""

    def __init__(self, start: float = EPOCH) -> None:
        self._start = start
        self._base = trio.current_time()

    def __call__(self) -> float:
        return self._start + trio.current_time() - self._base

    async def reach(self, seconds: float) -> None:
        """Sleep until ``seconds`` after :data:`EPOCH`."""
        await trio.sleep(EPOCH + seconds - self())


def make_config(mode: Kq1Mode = Kq1Mode.ON_REQUEST, **changes: Any) -> QKDModuleConfig:
    values: dict[str, Any] = {
        "module_id": "qkd-a",
        "matching_module_id": "qkd-b",
        "link_secret": SECRET,
        "epoch": EPOCH,
        "secret_key_rate": RATE,
        "mode": mode,
        "key_size": KEY_SIZE,
        "km_url": KM_URL if mode is Kq1Mode.PROACTIVE else None,
        "listen_url": MODULE_URL if mode is Kq1Mode.ON_REQUEST else None,
    }
    values.update(changes)
    return QKDModuleConfig(**values)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= 30]


def key_material_in(text: str, keys: list[LinkKey]) -> list[int]:
    """The indices of ``keys`` whose bytes appear in ``text`` (hex or base64)."""
    return [
        key.index
        for key in keys
        if key.key.hex() in text or base64.b64encode(key.key).decode() in text
    ]


# --- a fake KM ---------------------------------------------------------------------------------


@attrs.define
class FakeKM:
    """Records every key supply; answers with ``answers`` in turn, then "success".

    An answer of ``None`` makes the KM crash instead: its server stops before answering."""

    answers: list[str | None] = attrs.Factory(list)
    supplies: list[kq1.KeySupply] = attrs.Factory(list)
    connections: list[Connection] = attrs.Factory(list)
    scope: trio.CancelScope | None = None
    supplied: trio.Event = attrs.Factory(trio.Event)

    async def handle(self, message: Message, connection: Connection) -> Message | None:
        assert isinstance(message, kq1.KeySupply)
        self.connections.append(connection)
        self.supplies.append(message)
        self.supplied.set()
        answer = self.answers.pop(0) if self.answers else "success"
        if answer is None:
            assert self.scope is not None
            self.scope.cancel()
            await trio.sleep_forever()
        return kq1.ResponseToKeySupply(
            key_id=message.key_id, qkd_module_id=message.qkd_module_id, response=answer
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve :data:`KM_URL` until :attr:`scope` is cancelled (or the KM crashes)."""
        with trio.CancelScope() as self.scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(
                        serve,
                        KM_URL,
                        self.handle,
                        identity="km-a",
                        accepts=received_by(Role.KM),
                    )
                )
                task_status.started()

    @property
    def key_ids(self) -> list[str]:
        return [supply.key_id for supply in self.supplies]


async def start_module(nursery: trio.Nursery, module: QKDModule) -> str | None:
    url: str | None = await nursery.start(module.run)
    return url


# --- the keys of a link ------------------------------------------------------------------------


def test_both_modules_of_a_link_make_the_same_keys() -> None:
    alice = QKDModule(make_config(), clock=lambda: EPOCH)
    bob = QKDModule(
        make_config(module_id="qkd-b", matching_module_id="qkd-a", listen_url="memory://qkd-b"),
        clock=lambda: EPOCH + 100,
    )
    other_link = QKDModule(make_config(link_secret=bytes(32)), clock=lambda: EPOCH)
    ours = [alice.key(i) for i in range(50)]
    assert ours == [bob.key(i) for i in range(50)]
    theirs = [other_link.key(i) for i in range(50)]
    assert not {k.key_id for k in ours} & {k.key_id for k in theirs}
    assert not {k.key for k in ours} & {k.key for k in theirs}
    assert len({k.key_id for k in ours}) == len({k.key for k in ours}) == 50
    for key in ours:
        assert len(key.key) == KEY_SIZE // 8
        parsed = uuid.UUID(key.key_id)
        assert str(parsed) == key.key_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("index", [0, 1, 2**32, 2**96 - 1])
@pytest.mark.parametrize("key_size", [256, 4096])
def test_link_key_is_the_chacha20_stream_of_the_index(index: int, key_size: int) -> None:
    """Key ``i`` is the ChaCha20 stream with nonce ``i``: 16 bytes of ID, then the key."""
    nonce = bytes(4) + index.to_bytes(12, "little")
    cipher = Cipher(algorithms.ChaCha20(SECRET, nonce), mode=None).encryptor()
    stream = cipher.update(bytes(16 + key_size // 8))
    key_id, key = link_key(SECRET, index, key_size)
    assert key == stream[16:]
    id_bytes = uuid.UUID(key_id).bytes
    assert id_bytes[:6] + id_bytes[7:8] + id_bytes[9:] == stream[:6] + stream[7:8] + stream[9:16]
    assert id_bytes[6] & 0x0F == stream[6] & 0x0F
    assert id_bytes[6] >> 4 == 4  # version 4
    assert id_bytes[8] & 0x3F == stream[8] & 0x3F
    assert id_bytes[8] >> 6 == 0b10  # RFC 4122 variant


@pytest.mark.parametrize(
    ("secret", "index", "key_size", "complaint"),
    [
        (bytes(31), 0, 256, "link_secret must be 32 bytes"),
        (SECRET, -1, 256, "key index must be in"),
        (SECRET, 2**96, 256, "key index must be in"),
        (SECRET, 0, 12, "key_size must be a positive multiple of 8"),
    ],
)
def test_link_key_refuses_bad_arguments(
    secret: bytes, index: int, key_size: int, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        link_key(secret, index, key_size)


def test_key_metadata() -> None:
    module = QKDModule(make_config(), clock=lambda: EPOCH)
    key = module.key(7)
    assert key.ready_at == EPOCH + 8 * KEY_SIZE / RATE
    assert key.generation_time_stamp == "2023-11-14T22:13:22.000000Z"
    assert datetime.fromisoformat(key.generation_time_stamp).timestamp() == key.ready_at
    assert hash_of("sha256", key.key) == hashlib.sha256(key.key).hexdigest()
    assert key.key.hex() not in repr(key)


# --- the configuration -------------------------------------------------------------------------


def test_the_link_secret_is_not_in_the_repr_of_the_config() -> None:
    secret = os.urandom(32)
    config = make_config(link_secret=secret)
    for form in (secret.hex(), repr(secret), base64.b64encode(secret).decode()):
        assert form not in repr(config)
    assert "link_secret" not in repr(config)


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"link_secret": bytes(16)}, "link_secret must be 32 bytes"),
        ({"link_secret": "x" * 32}, "link_secret must be 32 bytes"),
        ({"secret_key_rate": 0.0}, "secret_key_rate must be > 0"),
        ({"secret_key_rate": math.inf}, "secret_key_rate must be > 0"),
        ({"epoch": math.nan}, "epoch must be a finite number"),
        ({"key_size": 100}, "positive multiple of 256"),
        ({"key_size": 0}, "positive multiple of 256"),
        ({"buffer_keys": 0}, "buffer_keys must be > 0"),
        ({"module_id": ""}, "module_id must not be empty"),
        ({"matching_module_id": "qkd-a"}, "must differ"),
        ({"listen_url": None}, "needs listen_url"),
        ({"mode": Kq1Mode.PROACTIVE, "km_url": None}, "needs km_url"),
    ],
)
def test_the_config_refuses_bad_values(changes: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        make_config(**changes)


def test_a_key_size_too_large_for_a_frame_is_refused() -> None:
    config = make_config(key_size=256 * 2000)
    assert max_keys_per_response(config) == 0
    with pytest.raises(ValueError, match="does not fit one Kq-1 frame"):
        QKDModule(config)


# --- when keys are ready -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "key_size", "elapsed"),
    [(1024.0, 256, 0.2), (1024.0, 256, 2.6), (1000.0, 256, 10.0), (3.0e5, 4096, 7.3)],
)
async def test_keys_become_ready_at_the_secret_key_rate(
    autojump_clock: trio.testing.MockClock, rate: float, key_size: int, elapsed: float
) -> None:
    """After T seconds, exactly floor(T * rate / key_size) keys are ready."""
    config = make_config(secret_key_rate=rate, key_size=key_size, buffer_keys=10**6)
    module = QKDModule(config, clock=WallClock())
    await trio.sleep(elapsed)
    stats = module.stats
    assert stats.produced == stats.buffered == math.floor(elapsed * rate / key_size)
    assert stats.delivered == stats.dropped == 0


async def test_a_key_is_ready_at_its_ready_time(autojump_clock: trio.testing.MockClock) -> None:
    clock = WallClock()
    module = QKDModule(make_config(), clock=clock)
    for index in range(5):
        await clock.reach(module.ready_time(index) - EPOCH - 0.01)
        assert module.stats.produced == index
        await clock.reach(module.ready_time(index) - EPOCH + 0.01)
        assert module.stats.produced == index + 1


async def test_a_full_buffer_drops_the_oldest_keys_and_warns_once_a_minute(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = WallClock()
    module = QKDModule(make_config(buffer_keys=4), clock=clock)
    async with trio.open_nursery() as nursery:
        await start_module(nursery, module)
        await trio.sleep(1.3)  # key 4 ready at 1.25 s: the first one dropped, said at once
        assert module.stats.dropped == 1
        assert len(warnings_logged(caplog)) == 1
        assert "dropped 1 keys" in warnings_logged(caplog)[0]
        await trio.sleep(1.8)  # 12 keys ready, 8 of them dropped
        assert module.stats == attrs.evolve(
            module.stats, produced=12, dropped=8, buffered=4, delivered=0
        )
        async with connect(MODULE_URL, identity="km-a") as km:
            response = await km.request(kq1.KeyRequest(number_of_keys=10))
        assert isinstance(response, kq1.ResponseToKeyRequest)
        assert [k.key_id for k in response.keys] == [module.key(i).key_id for i in range(8, 12)]
        await clock.reach(61.2)  # keys still dropped, but no new warning within a minute
        assert module.stats.dropped == 236
        assert len(warnings_logged(caplog)) == 1
        await clock.reach(61.3)  # a minute after the first warning, at the next key
        assert module.stats.dropped == 237
        assert len(warnings_logged(caplog)) == 2
        assert "dropped 236 keys (237 dropped in all)" in warnings_logged(caplog)[1]
        assert "KM takes keys slower than the link makes them" in warnings_logged(caplog)[1]
        nursery.cancel_scope.cancel()
    stats = module.stats
    assert stats.produced == stats.delivered + stats.dropped + stats.buffered


# --- ON_REQUEST (Q.4162 clause 7.2) ------------------------------------------------------------


async def test_key_requests_get_the_oldest_keys_each_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    module = QKDModule(make_config(), clock=WallClock())
    async with trio.open_nursery() as nursery:
        assert await start_module(nursery, module) == MODULE_URL
        await trio.sleep(2.1)  # keys 0..7 ready
        got: list[str] = []
        async with connect(MODULE_URL, identity="km-a", accepts=received_by(Role.KM)) as km:
            for number, expected in [(3, 3), (None, 1), (10, 4)]:
                response = await km.request(kq1.KeyRequest(number_of_keys=number))
                assert isinstance(response, kq1.ResponseToKeyRequest)
                assert response.response == "success"
                assert len(response.keys) == expected
                got += [k.key_id for k in response.keys]
                for key in response.keys:
                    ours = module.key(len(got) - len(response.keys) + response.keys.index(key))
                    assert key.key == ours.key
                    assert key.key_extension == {
                        "qkd_module_id": "qkd-a",
                        "matching_qkd_module_id": "qkd-b",
                        "generation_time_stamp": ours.generation_time_stamp,
                        "hash_value": hashlib.sha256(ours.key).hexdigest(),
                    }
            with pytest.raises(FailureResponse) as failure:
                await km.request(kq1.KeyRequest(number_of_keys=2))
            assert failure.value.reason == "failure: insufficient keys (0 ready)"
            refusal = failure.value.response
            assert isinstance(refusal, kq1.ResponseToKeyRequest)
            assert refusal.keys == []
            await trio.sleep(0.3)  # key 8
            with pytest.raises(FailureResponse, match="this module makes keys of 256 bits"):
                await km.request(kq1.KeyRequest(size_of_key=512))
            response = await km.request(kq1.KeyRequest(size_of_key=256))
            assert isinstance(response, kq1.ResponseToKeyRequest)
            got += [k.key_id for k in response.keys]
        assert got == [module.key(i).key_id for i in range(9)]
        assert module.stats == attrs.evolve(
            module.stats, produced=9, delivered=9, dropped=0, buffered=0
        )
        nursery.cancel_scope.cancel()


async def test_concurrent_key_requests_never_get_the_same_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    module = QKDModule(make_config(buffer_keys=1000), clock=WallClock())
    got: list[str] = []

    async def km(name: str) -> None:
        async with connect(MODULE_URL, identity=name) as connection:
            for _ in range(20):
                try:
                    response = await connection.request(kq1.KeyRequest(number_of_keys=3))
                except FailureResponse:
                    await trio.sleep(0.1)
                    continue
                assert isinstance(response, kq1.ResponseToKeyRequest)
                got.extend(k.key_id for k in response.keys)

    async with trio.open_nursery() as nursery:
        await start_module(nursery, module)
        await trio.sleep(5.1)
        async with trio.open_nursery() as kms:
            for name in ("km-a", "km-a2", "km-a3"):
                kms.start_soon(km, name)
        nursery.cancel_scope.cancel()
    assert len(got) == len(set(got)) == module.stats.delivered
    assert set(got) <= {module.key(i).key_id for i in range(module.stats.produced)}


async def test_a_key_request_gets_at_most_what_fits_a_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config(key_size=65536, secret_key_rate=65536.0 * 4)
    module = QKDModule(config, clock=WallClock())
    assert module.max_keys_per_response == max_keys_per_response(config) == 5
    async with trio.open_nursery() as nursery:
        await start_module(nursery, module)
        await trio.sleep(10.1)
        async with connect(MODULE_URL, identity="km-a") as km:
            response = await km.request(kq1.KeyRequest(number_of_keys=100))
        assert isinstance(response, kq1.ResponseToKeyRequest)
        assert [k.key for k in response.keys] == [module.key(i).key for i in range(5)]
        nursery.cancel_scope.cancel()


async def test_a_restarted_module_never_issues_a_key_of_the_past(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = WallClock()
    first = QKDModule(make_config(), clock=clock)
    async with trio.open_nursery() as nursery:
        await start_module(nursery, first)
        await trio.sleep(1.0)  # keys 0..3 ready, the last one just now
        async with connect(MODULE_URL, identity="km-a") as km:
            response = await km.request(kq1.KeyRequest(number_of_keys=2))
        assert isinstance(response, kq1.ResponseToKeyRequest)
        before = [k.key_id for k in response.keys]
        nursery.cancel_scope.cancel()  # the module crashes with keys 2 and 3 in its buffer

    restarted = QKDModule(make_config(), clock=clock)
    assert restarted.stats.produced == 0
    async with trio.open_nursery() as nursery:
        await start_module(nursery, restarted)
        await trio.sleep(1.1)
        async with connect(MODULE_URL, identity="km-a") as km:
            response = await km.request(kq1.KeyRequest(number_of_keys=10))
        assert isinstance(response, kq1.ResponseToKeyRequest)
        after = [k.key_id for k in response.keys]
        nursery.cancel_scope.cancel()
    assert before == [restarted.key(i).key_id for i in range(2)]
    assert after == [restarted.key(i).key_id for i in range(4, 8)]


async def test_only_the_configured_km_may_request_keys(
    autojump_clock: trio.testing.MockClock,
) -> None:
    module = QKDModule(make_config(km_id="km-a"), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await start_module(nursery, module)
        await trio.sleep(1.1)
        async with connect(MODULE_URL, identity="km-x") as intruder:
            with pytest.raises(FailureResponse, match="only the KM 'km-a' may request keys"):
                await intruder.request(kq1.KeyRequest())
        async with connect(MODULE_URL, identity="km-a") as km:
            response = await km.request(kq1.KeyRequest(number_of_keys=4))
        assert isinstance(response, kq1.ResponseToKeyRequest)
        assert len(response.keys) == 4
        nursery.cancel_scope.cancel()


# --- the ETSI GS QKD 014 methods (Q.4162 Appendix II: the KMs are the SAEs) --------------------

B_URL = "memory://qkd-b"


def b_config(**changes: Any) -> QKDModuleConfig:
    """The module at the other end of :func:`make_config`'s link, serving km-b."""
    values: dict[str, Any] = {
        "module_id": "qkd-b",
        "matching_module_id": "qkd-a",
        "listen_url": B_URL,
        "km_id": "km-b",
        "peer_km_id": "km-a",
    }
    return make_config(**(values | changes))


def same(got: Message, expected: Message) -> bool:
    assert isinstance(got, kq1.ResponseToKeyRequest)
    assert isinstance(expected, kq1.ResponseToKeyRequest)
    return [(k.key_id, k.key) for k in got.keys] == [(k.key_id, k.key) for k in expected.keys]


async def test_get_key_with_key_ids_fetches_the_keys_the_other_end_got(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """km-a gets keys from qkd-a by Get key naming km-b as slave; km-b takes the same keys from
    qkd-b by their IDs, each once; qkd-b's next Get key skips them."""
    clock = WallClock()
    qkd_a = QKDModule(make_config(km_id="km-a", peer_km_id="km-b"), clock=clock)
    qkd_b = QKDModule(b_config(), clock=clock)
    async with trio.open_nursery() as nursery:
        await start_module(nursery, qkd_a)
        await start_module(nursery, qkd_b)
        await trio.sleep(2.1)  # keys 0..7 ready at both ends
        async with (
            connect(MODULE_URL, identity="km-a") as km_a,
            connect(B_URL, identity="km-b") as km_b,
        ):
            skip = await km_a.request(kq1.KeyRequest(extension=[{etsi014.SLAVE: "km-b"}]))
            got = await km_a.request(
                kq1.KeyRequest(number_of_keys=2, extension=[{etsi014.SLAVE: "km-b"}])
            )
            assert isinstance(got, kq1.ResponseToKeyRequest)
            ids = [KeyId(key_id=key.key_id) for key in got.keys]
            assert [key.key_id for key in got.keys] == [qkd_a.key(i).key_id for i in (1, 2)]
            unknown = [*ids, KeyId(key_id=str(uuid.uuid4()))]
            with pytest.raises(FailureResponse, match="key IDs are not buffered by QKD module"):
                await km_b.request(kq1.KeyRequestWithKeyIds(master_sae_id="km-a", key_ids=unknown))
            with pytest.raises(FailureResponse, match="master SAE 'km-c' is not the KM at the"):
                await km_b.request(kq1.KeyRequestWithKeyIds(master_sae_id="km-c", key_ids=ids))
            fetched = await km_b.request(
                kq1.KeyRequestWithKeyIds(master_sae_id="km-a", key_ids=ids[::-1])
            )
            assert isinstance(fetched, kq1.ResponseToKeyRequest)
            assert [key.key_id for key in fetched.keys] == [key.key_id for key in got.keys[::-1]]
            assert same(fetched, attrs.evolve(got, keys=got.keys[::-1]))
            with pytest.raises(FailureResponse, match="2 of the 2 key IDs are not buffered"):
                await km_b.request(kq1.KeyRequestWithKeyIds(master_sae_id="km-a", key_ids=ids))
            # qkd-b still holds key 0 (km-a got it, km-b did not ask) and 3..7, not 1 and 2
            rest = await km_b.request(
                kq1.KeyRequest(number_of_keys=10, extension=[{etsi014.SLAVE: "km-a"}])
            )
            assert isinstance(rest, kq1.ResponseToKeyRequest)
            assert [key.key_id for key in rest.keys] == [
                qkd_b.key(i).key_id for i in (0, 3, 4, 5, 6, 7)
            ]
            assert same(skip, attrs.evolve(rest, keys=rest.keys[:1]))
        for module in (qkd_a, qkd_b):
            stats = module.stats
            assert stats.produced == stats.delivered + stats.dropped + stats.buffered
        assert qkd_b.stats.delivered == 8
        nursery.cancel_scope.cancel()


async def test_keys_taken_by_id_are_not_counted_as_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = WallClock()
    qkd_b = QKDModule(b_config(buffer_keys=4), clock=clock)
    async with trio.open_nursery() as nursery:
        await start_module(nursery, qkd_b)
        await trio.sleep(1.1)  # keys 0..3: the buffer is full
        async with connect(B_URL, identity="km-b") as km_b:
            ids = [KeyId(key_id=qkd_b.key(i).key_id) for i in (1, 2)]
            await km_b.request(kq1.KeyRequestWithKeyIds(master_sae_id="km-a", key_ids=ids))
            await trio.sleep(1.0)  # keys 4..7: 0, 3 and 4 go (2 slots were free)
        assert qkd_b.stats == attrs.evolve(
            qkd_b.stats, produced=8, delivered=2, dropped=2, buffered=4
        )
        nursery.cancel_scope.cancel()


async def test_status_and_the_014_refusals_of_a_module(
    autojump_clock: trio.testing.MockClock,
) -> None:
    module = QKDModule(make_config(km_id="km-a", peer_km_id="km-b"), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await start_module(nursery, module)
        await trio.sleep(1.1)
        async with connect(MODULE_URL, identity="km-a") as km:
            status = await km.request(kq1.StatusRequest(slave_sae_id="km-b"))
            assert status == kq1.Status(
                source_kme_id="qkd-a",
                target_kme_id="qkd-b",
                master_sae_id="km-a",
                slave_sae_id="km-b",
                key_size=KEY_SIZE,
                stored_key_count=4,
                max_key_count=256,
                max_key_per_request=module.max_keys_per_response,
                max_key_size=KEY_SIZE,
                min_key_size=KEY_SIZE,
                max_sae_id_count=0,
            )
            refusals = [
                (
                    kq1.StatusRequest(slave_sae_id="km-c"),
                    "slave SAE 'km-c' is not the KM at the other end of this link",
                ),
                (
                    kq1.KeyRequest(extension=[{etsi014.SLAVE: "km-c"}]),
                    "slave SAE 'km-c' is not the KM at the other end",
                ),
                (
                    kq1.KeyRequest(extension=[{etsi014.MANDATORY: [{"abc_route": "x"}]}]),
                    "supports no extension_mandatory parameter",
                ),
                (
                    kq1.KeyRequest(extension=[{etsi014.ADDITIONAL_SLAVES: ["km-c"]}]),
                    "max_SAE_ID_count is 0",
                ),
            ]
            for request, reason in refusals:
                with pytest.raises(FailureResponse, match=reason):
                    await km.request(request)
        assert module.stats.buffered == 4  # no refusal took a key
        nursery.cancel_scope.cancel()


async def test_a_module_runs_once_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    module = QKDModule(make_config(), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await start_module(nursery, module)
        with pytest.raises(RuntimeError, match="already running"):
            await module.run()
        nursery.cancel_scope.cancel()


async def test_a_url_that_cannot_be_served_is_a_transport_error() -> None:
    first = QKDModule(make_config())
    second = QKDModule(make_config(module_id="qkd-c"))
    async with trio.open_nursery() as nursery:
        await start_module(nursery, first)
        with pytest.raises(TransportError, match="already served"):
            await second.run()
        nursery.cancel_scope.cancel()


# --- PROACTIVE (Q.4162 clause 7.1) -------------------------------------------------------------


async def test_keys_are_supplied_with_their_table_1_metadata(
    autojump_clock: trio.testing.MockClock,
) -> None:
    km = FakeKM()
    module = QKDModule(make_config(Kq1Mode.PROACTIVE), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(km.run)
        assert await start_module(nursery, module) is None
        await trio.sleep(2.1)
        nursery.cancel_scope.cancel()
    assert len(km.supplies) == 8
    for index, supply in enumerate(km.supplies):
        key = module.key(index)
        assert supply == kq1.KeySupply(
            key=key.key,
            key_id=key.key_id,
            qkd_module_id="qkd-a",
            matching_qkd_module_id="qkd-b",
            key_length=KEY_SIZE,
            generation_time_stamp=key.generation_time_stamp,
            hash_value=hashlib.sha256(key.key).hexdigest(),
        )
    assert module.stats == attrs.evolve(
        module.stats, produced=8, delivered=8, dropped=0, buffered=0
    )


async def test_keys_wait_for_a_km_that_comes_up_later(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    km = FakeKM()
    module = QKDModule(make_config(Kq1Mode.PROACTIVE, buffer_keys=100), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await start_module(nursery, module)
        await trio.sleep(5.1)  # 20 keys wait; the module tries again and again
        assert module.stats.buffered == 20
        await nursery.start(km.run)
        await trio.sleep(3.0)  # within one back-off (2 s) and the 12 keys made meanwhile
        nursery.cancel_scope.cancel()
    assert km.key_ids == [module.key(i).key_id for i in range(32)]
    warnings = warnings_logged(caplog)
    assert len(warnings) == 1
    assert "cannot supply keys to its KM at memory://km-a" in warnings[0]
    assert any("reached its KM at memory://km-a again" in r.getMessage() for r in caplog.records)


async def test_a_key_the_km_had_before_counts_as_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    km = FakeKM(answers=["success", "failure: key ID of key 1 was supplied before"])
    module = QKDModule(make_config(Kq1Mode.PROACTIVE), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(km.run)
        await start_module(nursery, module)
        await trio.sleep(1.1)
        nursery.cancel_scope.cancel()
    assert km.key_ids == [module.key(i).key_id for i in range(4)]
    assert module.stats.delivered == 4


async def test_a_refused_key_is_kept_and_supplied_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    km = FakeKM(answers=["success", "failure: store full", "failure: store full"])
    module = QKDModule(make_config(Kq1Mode.PROACTIVE, buffer_keys=100), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(km.run)
        await start_module(nursery, module)
        await trio.sleep(2.1)
        nursery.cancel_scope.cancel()
    ids = [module.key(i).key_id for i in range(8)]
    assert km.key_ids == ids[:1] + ids[1:2] * 3 + ids[2:]
    assert module.stats.delivered == 8
    warnings = warnings_logged(caplog)
    assert len(warnings) == 1
    assert "store full" in warnings[0]
    assert ids[1] in warnings[0]
    assert not key_material_in(caplog.text, [module.key(i) for i in range(8)])


async def test_a_key_unacknowledged_when_the_km_crashed_is_supplied_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    km = FakeKM(answers=["success", "success", None])  # crashes on key 2
    module = QKDModule(make_config(Kq1Mode.PROACTIVE, buffer_keys=100), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(km.run)
        await start_module(nursery, module)
        await trio.sleep(1.1)
        assert km.key_ids == [module.key(i).key_id for i in range(3)]
        await trio.sleep(3.0)
        await nursery.start(km.run)  # the KM restarts
        await trio.sleep(3.0)
        nursery.cancel_scope.cancel()
    ids = [module.key(i).key_id for i in range(28)]  # 28 keys ready in 7.1 s
    assert km.key_ids == ids[:3] + ids[2:]
    assert module.stats.delivered == 28
    assert len(warnings_logged(caplog)) == 1
    assert not key_material_in(caplog.text, [module.key(i) for i in range(28)])


async def test_a_proactive_module_refuses_key_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    km = FakeKM()
    module = QKDModule(make_config(Kq1Mode.PROACTIVE), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(km.run)
        await start_module(nursery, module)
        await km.supplied.wait()
        with pytest.raises(FailureResponse, match="supplies keys proactively"):
            await km.connections[0].request(kq1.KeyRequest())
        nursery.cancel_scope.cancel()


async def test_no_key_goes_to_a_server_that_is_not_the_km(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    km = FakeKM()  # serves as "km-a"
    module = QKDModule(make_config(Kq1Mode.PROACTIVE, km_id="km-b"), clock=WallClock())
    async with trio.open_nursery() as nursery:
        await nursery.start(km.run)
        await start_module(nursery, module)
        await trio.sleep(5.1)
        nursery.cancel_scope.cancel()
    assert km.supplies == []
    warnings = warnings_logged(caplog)
    assert len(warnings) == 1
    assert "the server is 'km-a', not the KM 'km-b'" in warnings[0]
