"""Per-application quotas and fair shares of link key (qkdn_sdk.roles.km.quotas), on running KMs.

::

    alice, carol, erin -- km-a ==== km-b -- dave
                                      ====
                                     km-c -- bob

A flood of one application leaves another its share of the link; an application over its rate
or held-keys quota is refused saying which, and nothing is made, stored or spent; Get status
says what each may still get. Everything is counted (refusals, bits, keys), never timed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from qkdn_https import Etsi014Client

from qkdn_sdk.client import KeysRefused
from qkdn_sdk.codecs.etsi014 import Etsi014Error
from qkdn_sdk.messages import ak
from qkdn_sdk.network import Network
from qkdn_sdk.roles.km import KMConfig
from qkdn_sdk.roles.km.quotas import _Window
from qkdn_sdk.transport import connect
from tests.test_network import (
    WAIT,
    ak_url,
    client,
    ids,
    ready,
    refused,
    relay_bits,
    running,
    same_keys,
)

APPLICATIONS = "".join(
    f'\n[[application]]\nid = "{app}"\nkm = "{km}"\n'
    for app, km in (("carol", "km-a"), ("erin", "km-a"), ("dave", "km-b"))
)
FLOOD = relay_bits(128, 256)
"""Link key one flood request spends: the most keys of 256 bits one request may ask."""
SMALL = relay_bits(4, 256)
"""Link key one of the other application's requests spends."""


@asynccontextmanager
async def line3(tmp_path: Path, **options: Any) -> AsyncIterator[Network]:
    async with running(tmp_path, "memory", extra=APPLICATIONS, km_options=options) as network:
        yield network


async def status(network: Network, master: str, slave: str) -> ak.Status:
    async with connect(ak_url(network, master), identity=master) as connection:
        answer = await connection.request(ak.StatusRequest(application_destination_id=slave))
    assert isinstance(answer, ak.Status)
    return answer


# --- the fair share of a link --------------------------------------------------------------------


async def test_a_flood_leaves_another_application_its_share(tmp_path: Path) -> None:
    """alice floods km-a's link to km-b with the largest requests, one after another, while
    carol asks for a few keys now and then: carol is served every time, from the link's
    reserve, and alice is refused for her share below it (never for want of key)."""
    reserve = 2 * FLOOD
    async with line3(
        tmp_path, fair_share_reserve_bits=reserve, fair_share_window_bits=2 * FLOOD
    ) as network:
        await ready(network, reserve + 4 * FLOOD, [("km-a", "km-b")])
        km_a = network.kms["km-a"]
        over_share: list[str] = []
        other: list[str] = []
        served = 0
        refused_once, carol_done = trio.Event(), trio.Event()

        async def flood() -> None:
            nonlocal served
            async with client(network, "alice") as alice:
                for _ in range(2000):  # bounded: the link refills far slower than it drains
                    if carol_done.is_set():
                        return
                    try:
                        await alice.get_keys("dave", 128, 256)
                        served += 1
                    except KeysRefused as exc:
                        if "over its fair share of link km-a-km-b" in exc.reason:
                            over_share.append(exc.reason)
                            refused_once.set()
                        else:
                            other.append(exc.reason)
            raise AssertionError("the flood ended before carol was done")

        got = []

        async def carol_asks() -> None:
            await refused_once.wait()
            async with client(network, "carol") as carol:
                for _ in range(10):
                    got.append(await carol.get_keys("dave", 4, 256))
            carol_done.set()

        with trio.fail_after(10 * WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                nursery.start_soon(carol_asks)
        assert len(got) == 10  # every one of carol's requests was served
        assert other == []  # alice was refused for her share only, never for want of key
        assert over_share[0].startswith(
            "failure: 'alice' is over its fair share of link km-a-km-b for keys to 'dave': the "
            f"link's last {reserve} bits are kept for applications within their share ("
        )
        assert served >= 2
        assert km_a.spent_bits["km-b"] == served * FLOOD + 10 * SMALL
        # what Get status says each may still get: carol the link's key, alice what is above
        # the reserve (keys of 256 bits: a unit each, less the two MAC keys)
        before = km_a.link_key_bits("km-b")
        for_carol = await status(network, "carol", "dave")
        for_alice = await status(network, "alice", "dave")
        after = km_a.link_key_bits("km-b")  # nothing spends meanwhile: the link only grows
        assert before // 256 - 2 <= for_carol.stored_key_count <= after // 256 - 2
        assert (before - reserve) // 256 - 2 <= for_alice.stored_key_count
        assert for_alice.stored_key_count <= max(0, (after - reserve) // 256 - 2)
        async with client(network, "dave") as dave:
            for keys in got:
                assert same_keys(await dave.get_keys_with_ids("carol", ids(keys)), keys)


def test_a_share_is_measured_on_the_last_bits_spent() -> None:
    window = _Window(1000)
    alice, carol = ("alice", "dave"), ("carol", "dave")
    window.add(alice, 600)
    assert window.within_share(alice, 0.1)  # alone, and less than a whole window spent
    window.add(alice, 400)
    assert not window.within_share(alice, 0.1)  # a window's worth: a flood
    assert window.within_share(carol, 0.1)  # a newcomer: an equal split, 500 bits
    window.add(carol, 300)  # alice's oldest 300 bits leave the window
    assert window.by_pair == {alice: 700, carol: 300}
    assert window.within_share(carol, 0.1)
    assert not window.within_share(alice, 0.1)
    window.add(("erin", "dave"), 100)
    window.add(("bob", "alice"), 100)
    assert window.by_pair[alice] == 500
    assert not window.within_share(carol, 0.1)  # four pairs: an equal split is 250 bits
    assert window.within_share(carol, 0.4)  # never less than min_share: 400 bits
    window.add(carol, 1500)  # more than the window: carol's own, cut to the last 1000
    assert window.by_pair == {carol: 1000}


# --- the rate quota ------------------------------------------------------------------------------


async def test_an_application_over_its_rate_is_refused_and_nothing_is_spent(
    tmp_path: Path,
) -> None:
    """A rate so low that nothing refills during the test: each application has a full bucket
    of one request's worth (max_key_per_request, 128 keys) and no more."""
    async with line3(tmp_path, max_keys_per_second=0.001) as network:
        await ready(network, relay_bits(28, 256), [("km-a", "km-b")])
        km_a = network.kms["km-a"]
        async with client(network, "alice") as alice:
            await alice.get_keys("erin", 100, 256)  # erin is on km-a: no link key
            reason = await refused(alice.get_keys("erin", 40, 256))
            assert reason == (
                "failure: 'alice' is over its quota of 0.001 keys per second "
                "(max_keys_per_second): 28 keys now, 40 asked"
            )
            assert km_a.store.counts("app:") == {"app:alice:erin": 100}  # none made
            spent, started = km_a.spent_bits["km-b"], km_a.relays["started"]
            before = km_a.link_key_bits("km-b")
            reason = await refused(alice.get_keys("dave", 40, 256))
            assert "'alice' is over its quota of 0.001 keys per second" in reason
            assert (km_a.spent_bits["km-b"], km_a.relays["started"]) == (spent, started)
            assert km_a.link_key_bits("km-b") >= before  # nothing spent: it only grows
            assert (await status(network, "alice", "dave")).stored_key_count == 28
            await alice.get_keys("dave", 28, 256)  # what is left
            assert km_a.spent_bits["km-b"] == spent + relay_bits(28, 256)
            assert (await status(network, "alice", "erin")).stored_key_count == 0
            await refused(alice.get_keys("erin", 1, 256))
        async with client(network, "carol") as carol:  # each application its own bucket
            assert (await status(network, "carol", "erin")).stored_key_count == 128
            await carol.get_keys("erin", 128, 256)


async def test_keys_asked_in_a_session_count_against_the_rate(tmp_path: Path) -> None:
    """Q.4161 key requests with session ID share the application's bucket with its plain key
    requests; one refused counts nothing against the session."""
    async with line3(tmp_path, max_keys_per_second=0.001) as network:
        await ready(network, relay_bits(28, 256), [("km-a", "km-b")])
        async with client(network, "carol") as carol, client(network, "alice") as alice:
            session = await alice.create_session("carol", 40)
            await alice.get_keys("erin", 100, 256)  # 28 of the bucket's 128 keys are left
            reason = await refused(session.get_keys(40, 256))
            assert "'alice' is over its quota of 0.001 keys per second" in reason
            keys = await session.get_keys(28, 256)  # the session still has its 40
            assert len(keys) == 28
            assert len([await carol.proactive_keys.receive() for _ in keys]) == 28


# --- the quota of keys held ----------------------------------------------------------------------


async def test_an_application_holding_its_quota_gets_more_once_they_are_fetched(
    tmp_path: Path,
) -> None:
    async with line3(tmp_path, max_keys_held=6) as network:
        km_a = network.kms["km-a"]
        async with client(network, "alice") as alice:
            first = await alice.get_keys("erin", 4, 256)
            assert (await status(network, "alice", "erin")).stored_key_count == 2
            reason = await refused(alice.get_keys("erin", 4, 256))
            assert reason == (
                "failure: 'alice' is over its quota of 6 keys held (max_keys_held): 4 keys it "
                "asked for wait at km-a for their peers to fetch them, 4 more asked"
            )
            assert km_a.store.counts("app:") == {"app:alice:erin": 4}  # none made
            second = await alice.get_keys("erin", 2, 256)
            async with client(network, "carol") as carol:  # another application's own quota
                await carol.get_keys("erin", 6, 256)
            async with client(network, "erin") as erin:
                await erin.get_keys_with_ids("alice", ids(first + second))
            assert (await status(network, "alice", "erin")).stored_key_count == 6
            await alice.get_keys("erin", 6, 256)
        assert km_a.store.counts("app:") == {"app:alice:erin": 6, "app:carol:erin": 6}


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ({"max_keys_per_second": 0.0}, "km-a: max_keys_per_second must be > 0, not 0.0"),
        ({"max_keys_held": -1}, "km-a: max_keys_held must be at least 0, not -1"),
        ({"fair_share_window_bits": 0}, "km-a: fair_share_window_bits must be at least 1, not 0"),
        ({"min_share": 1.5}, "km-a: min_share must be 0 to 1, not 1.5"),
    ],
)
def test_quotas_that_make_no_sense_are_refused(setting: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
        KMConfig(km_id="km-a", listen={}, controller_id="controller", **setting)


async def test_over_etsi_014_a_quota_is_a_503_and_the_status_says_it(tmp_path: Path) -> None:
    async with (
        running(
            tmp_path, "https", extra=APPLICATIONS, km_options={"max_keys_per_second": 0.001}
        ) as network,
        Etsi014Client(ak_url(network, "alice"), network.tls("alice")) as alice,
    ):
        assert (await alice.get_status("erin")).stored_key_count == 128
        await alice.get_key("erin", number=128)
        with pytest.raises(Etsi014Error) as caught:
            await alice.get_key("erin")
        assert caught.value.http_status == 503
        assert caught.value.message == (
            "'alice' is over its quota of 0.001 keys per second (max_keys_per_second): "
            "0 keys now, 1 asked"
        )
        assert (await alice.get_status("erin")).stored_key_count == 0
