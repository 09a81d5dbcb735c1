"""Key acquisition: how a KM gets the QKD-keys of its links (Q.4162).

A QKD module pushes them (clause 7.1, :meth:`Acquisition.on_key_supply` on the KM's Kq-1 URL),
or the KM asks for them (clause 7.2, :meth:`Acquisition.run` per on-request link); a link whose
keys come from a pair of ETSI GS QKD 014 KMEs (Q.4162 Appendix II) is asked with Get key at the
end whose ID sorts first, and with Get key with key IDs at the other
(:meth:`Acquisition.fetch_from_kme`, when a key ID synchronisation names keys it lacks). Every
QKD-key waits in the ``qkd:<neighbour>`` pool until the key ID synchronisation cuts it
(:mod:`qkdn_sdk.roles.km.links`).

Acquisition is paced by the cap on the key a link end holds
(:attr:`~qkdn_sdk.roles.km.config.KMConfig.max_link_key_bits`,
:mod:`~qkdn_sdk.roles.km.link_table`), never a busy loop: a full link end answers a pushed
QKD-key with a failure (the module keeps it and tries again later, its buffer filling and
dropping as a device's does), and asks for no key until link key is spent (it waits on the link
table's change event). A KME pair's Get status (ETSI GS QKD 014 clause 6.1) is read before the
first Get key: the KM asks for the ``size`` its link is configured with, within the KME's
``min_key_size`` and ``max_key_size``, and never more keys than its ``max_key_per_request``.
"""

from __future__ import annotations

import logging

import attrs
import trio

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import FailureResponse, QkdnError, quoted
from qkdn_sdk.messages import Key, KeyId, kq1
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import DuplicateKey, KeyStore, StoredKey
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig, KMLink
from qkdn_sdk.roles.km.keys import qkd_pool
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.peers import Peers
from qkdn_sdk.roles.qkd_module import hash_of
from qkdn_sdk.transport import Connection

__all__ = ["Acquisition"]

logger = logging.getLogger("qkdn_sdk.roles.km")

_ACQUIRE_BATCH = 64
"""QKD-keys asked of a module in one Kq-1 key request."""
_KME_BATCH = 32
"""QKD-keys asked by ID of an ETSI 014 KME in one Get key with key IDs."""


@attrs.frozen
class _Limits:
    """What one Get key (Kq-1 key request) of a link asks for."""

    size: int | None
    """``size`` (bits per key); ``None``: the source's default."""
    number: int
    """The most keys asked in one request."""


class _Unstored:
    """QKD-key bits received from a module and not stored yet, and an event set whenever some
    are stored."""

    def __init__(self) -> None:
        self.bits = 0
        self.stored = trio.Event()

    def done(self, bits: int) -> None:
        self.bits -= bits
        self.stored.set()
        self.stored = trio.Event()


class Acquisition:
    """The QKD-keys of one KM's links, from its QKD modules (or KMEs) into its key store."""

    def __init__(self, config: KMConfig, store: KeyStore, links: LinkTable, peers: Peers) -> None:
        self._config = config
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._peers = peers
        self._links_by_module = {link.module_id: link for link in config.links}
        self._last_refused: dict[str, str] = {}
        """The last QKD-key refused on each link (a module supplies it again and again)."""

    async def on_key_supply(
        self, supply: kq1.KeySupply, connection: Connection
    ) -> kq1.ResponseToKeySupply:
        """Q.4162 clause 7.1: a QKD module pushes one QKD-key."""
        module = connection.peer_id or supply.qkd_module_id
        link = self._links_by_module.get(module or "")
        if link is None:
            raise KeyManagerError(f"QKD module {quoted(module or '')} has no link at {self._km_id}")
        if not self._links.room_bits(link.neighbour):
            if self._last_refused.get(link.neighbour) != supply.key_id:  # not a retry
                self._last_refused[link.neighbour] = supply.key_id
                self._links.refused_keys[link.neighbour] += 1
            raise KeyManagerError(
                f"the key store of {self._km_id} for the link to {link.neighbour} is full "
                f"(max_link_key_bits {self._config.max_link_key_bits}): supply the key again "
                "once link key is spent"
            )
        await self.store_qkd_keys(link, [(supply.key_id, supply.key, supply.hash_value)])
        return kq1.ResponseToKeySupply(
            key_id=supply.key_id,
            qkd_module_id=link.module_id,
            matching_qkd_module_id=supply.matching_qkd_module_id,
            response="success",
        )

    async def store_qkd_keys(
        self,
        link: KMLink,
        keys: list[tuple[str, bytes, str | None]],
        *,
        drop_duplicates: bool = False,
    ) -> None:
        """Store QKD-keys ``(key ID, key, hash value or None)`` of ``link`` in one transaction.
        A key ID supplied before (or twice) fails them all, or with ``drop_duplicates`` is
        logged and left out."""
        stored = []
        for key_id, key, hash_value in keys:
            if hash_value is not None and hash_value != hash_of(link.hash_algorithm, key):
                raise KeyManagerError(
                    f"QKD-key {quoted(key_id)}: the hash value does not match "
                    f"(the {link.hash_algorithm} of the key)"
                )
            if len(key) > otp.MAX_UNITS * otp.UNIT_BYTES:
                raise KeyManagerError(
                    f"QKD-key {quoted(key_id)}: {8 * len(key)} bits, over the "
                    f"{otp.MAX_UNITS * otp.UNIT_BITS} this KM cuts into link units"
                )
            stored.append(
                StoredKey(
                    key_id=key_id,
                    pool=qkd_pool(link.neighbour),
                    key=key,
                    metadata={"qkd_module_id": link.module_id, "key_length": 8 * len(key)},
                )
            )
        while stored:
            try:
                await self._store.put(stored)
            except DuplicateKey as exc:
                if not drop_duplicates:
                    raise KeyManagerError(
                        f"key ID {quoted(exc.key_id)} was supplied before"
                    ) from None
                stored = await self._without_duplicates(stored)
            else:
                if stored:
                    self._links.qkd_key_bits[link.neighbour] = 8 * len(stored[-1].key)
                self._links.sync_wanted[link.neighbour].set()
                return

    async def _without_duplicates(self, keys: list[StoredKey]) -> list[StoredKey]:
        """``keys`` without those stored before and the repeats of one given twice, each logged
        as a key supplied before."""
        before = await self._store.seen([key.key_id for key in keys])
        kept: dict[str, StoredKey] = {}
        for key in keys:
            if key.key_id in before or key.key_id in kept:
                logger.warning(
                    "%s: %s",
                    self._km_id,
                    KeyManagerError(f"key ID {quoted(key.key_id)} was supplied before"),
                )
            else:
                kept[key.key_id] = key
        return list(kept.values())

    async def run(self, link: KMLink) -> None:
        """Q.4162 clause 7.2: ask the module for its keys, again and again, while the link end
        is not full (:meth:`~qkdn_sdk.roles.km.link_table.LinkTable.keys_to_ask`): at once
        after a response of several keys (more may be ready), else after
        ``acquire_interval`` (a response of one key is all a module that makes keys slower
        than it is asked had). A full link end waits for link key to be spent, then counts
        the keys its source held meanwhile (Get status, when the source answers it).

        The keys of a response are stored while the next request is on its way: a task of
        their own stores them, all that arrived meanwhile in one transaction. At most two
        responses wait for it; the requests wait while they do, and ask only for what fits
        under the cap with those stored."""
        dialer = self._peers.module(link.neighbour)
        unstored = _Unstored()
        limits: _Limits | None = None
        send, receive = trio.open_memory_channel[list[Key]](1)
        async with trio.open_nursery() as nursery, send:
            nursery.start_soon(self._store_acquired, link, receive, unstored)
            failing = False
            while True:
                if limits is None:
                    limits = await self._limits(link)
                number = self._links.keys_to_ask(link.neighbour, limits.number, unstored.bits)
                if not number:
                    if unstored.bits:  # what is on its way to the store may fill the link
                        await unstored.stored.wait()
                    else:
                        await self._links.wait_room(link.neighbour)
                        await self._count_left(link)
                    continue
                # the slave SAE of an ETSI 014 Get key (Q.4162 Appendix II): the KM at the other
                # end
                request = kq1.KeyRequest(
                    number_of_keys=number,
                    size_of_key=limits.size,
                    extension=[{etsi014.SLAVE: link.sae_of_neighbour}],
                )
                try:
                    response = await dialer.request(request)
                    assert isinstance(response, kq1.ResponseToKeyRequest)
                    unstored.bits += sum(8 * len(key.key) for key in response.keys)
                    await send.send(response.keys)
                    failing = False
                    if len(response.keys) > 1:  # more may be ready: ask again at once
                        continue
                except FailureResponse:
                    pass  # no key ready yet
                except QkdnError as exc:
                    if not failing:
                        logger.warning(
                            "%s: QKD module %s: %s (retrying)", self._km_id, link.module_id, exc
                        )
                    failing = True
                    limits = None  # read again once it answers: it may have restarted
                await trio.sleep(self._config.acquire_interval)

    async def _limits(self, link: KMLink) -> _Limits:
        """What to ask of ``link``'s source: the link's ``key_size`` and up to
        :data:`_ACQUIRE_BATCH` keys, within what a KME's Get status allows (``min_key_size``
        to ``max_key_size``, ``max_key_per_request``); a configured size outside its range is
        logged as an error and the nearest allowed asked. A module (not a KME) or a KME whose
        status cannot be read is asked as configured."""
        if not link.kme_pair:
            return _Limits(link.key_size, _ACQUIRE_BATCH)
        status = await self._status(link)
        if status is None:
            return _Limits(link.key_size, _ACQUIRE_BATCH)
        size = link.key_size
        if size is not None and not status.min_key_size <= size <= status.max_key_size:
            allowed = min(max(size, status.min_key_size), status.max_key_size)
            logger.error(
                "%s: KME %s serves keys of %d to %d bits, not the %d bits the link to %s is "
                "configured with (key_size): asking for %d",
                self._km_id,
                link.module_id,
                status.min_key_size,
                status.max_key_size,
                size,
                link.neighbour,
                allowed,
            )
            size = allowed
        self._links.qkd_key_bits[link.neighbour] = size or status.key_size
        return _Limits(size, min(_ACQUIRE_BATCH, status.max_key_per_request))

    async def _status(self, link: KMLink) -> kq1.Status | None:
        """The Get status of ``link``'s source (ETSI 014; a Kq-1 extension), or ``None`` when
        it does not answer it (logged)."""
        try:
            status = await self._peers.module(link.neighbour).request(
                kq1.StatusRequest(slave_sae_id=link.sae_of_neighbour),
                timeout=self._config.relay_timeout,
            )
        except QkdnError as exc:
            logger.debug("%s: no Get status from %s: %s", self._km_id, link.module_id, exc)
            return None
        assert isinstance(status, kq1.Status)
        return status

    async def _count_left(self, link: KMLink) -> None:
        """Once a full link end has room again: count the keys its source held for it
        meanwhile (its Get status ``stored_key_count``) as keys not asked for at the cap."""
        status = await self._status(link)
        if status is not None:
            self._links.refused_keys[link.neighbour] += status.stored_key_count

    async def _store_acquired(
        self, link: KMLink, responses: trio.MemoryReceiveChannel[list[Key]], unstored: _Unstored
    ) -> None:
        """Store the keys of the module's responses to :meth:`run`, those of every response
        waiting in ``responses`` in one transaction."""
        async for keys in responses:
            while True:
                try:
                    keys = keys + responses.receive_nowait()
                except trio.WouldBlock:
                    break
            try:
                await self.store_qkd_keys(
                    link, [(key.key_id, key.key, None) for key in keys], drop_duplicates=True
                )
            except QkdnError as exc:
                logger.warning(
                    "%s: QKD module %s: %d QKD-keys not stored: %s",
                    self._km_id,
                    link.module_id,
                    len(keys),
                    exc,
                )
            finally:
                unstored.done(sum(8 * len(key.key) for key in keys))

    async def fetch_from_kme(self, link: KMLink, key_ids: list[str]) -> None:
        """Get the QKD-keys ``key_ids``, which the neighbour got from its KME, from ours (ETSI
        014 Get key with key IDs, in batches). A batch with a key our KME lacks (it dropped it)
        fails whole (014): then each of its keys is asked alone, and those it lacks are left
        out, as the synchronisation expects."""
        dialer = self._peers.module(link.neighbour)

        async def fetch(batch: list[str]) -> bool:
            request = kq1.KeyRequestWithKeyIds(
                master_sae_id=link.sae_of_neighbour,
                key_ids=[KeyId(key_id=key_id) for key_id in batch],
            )
            try:
                response = await dialer.request(request, timeout=self._config.relay_timeout)
            except FailureResponse:
                return False
            except QkdnError as exc:
                logger.warning("%s: KME %s: %s", self._km_id, link.module_id, exc)
                return True  # nothing to try key by key: the KME is out of reach
            assert isinstance(response, kq1.ResponseToKeyRequest)
            await self.store_qkd_keys(link, [(key.key_id, key.key, None) for key in response.keys])
            return True

        for start in range(0, len(key_ids), _KME_BATCH):
            batch = key_ids[start : start + _KME_BATCH]
            if not await fetch(batch) and len(batch) > 1:
                for key_id in batch:
                    await fetch([key_id])
