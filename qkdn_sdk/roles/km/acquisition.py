"""Key acquisition: how a KM gets the QKD-keys of its links (Q.4162).

A QKD module pushes them (clause 7.1, :meth:`Acquisition.on_key_supply` on the KM's Kq-1 URL),
or the KM asks for them (clause 7.2, :meth:`Acquisition.run` per on-request link); a link whose
keys come from a pair of ETSI GS QKD 014 KMEs (Q.4162 Appendix II) is asked with Get key at the
end whose ID sorts first, and with Get key with key IDs at the other
(:meth:`Acquisition.fetch_from_kme`, when a key ID synchronisation names keys it lacks). Every
QKD-key waits in the ``qkd:<neighbour>`` pool until the key ID synchronisation cuts it
(:mod:`qkdn_sdk.roles.km.links`).
"""

from __future__ import annotations

import logging

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


class Acquisition:
    """The QKD-keys of one KM's links, from its QKD modules (or KMEs) into its key store."""

    def __init__(self, config: KMConfig, store: KeyStore, links: LinkTable, peers: Peers) -> None:
        self._config = config
        self._km_id = config.km_id
        self._store = store
        self._links = links
        self._peers = peers
        self._links_by_module = {link.module_id: link for link in config.links}

    async def on_key_supply(
        self, supply: kq1.KeySupply, connection: Connection
    ) -> kq1.ResponseToKeySupply:
        """Q.4162 clause 7.1: a QKD module pushes one QKD-key."""
        module = connection.peer_id or supply.qkd_module_id
        link = self._links_by_module.get(module or "")
        if link is None:
            raise KeyManagerError(f"QKD module {quoted(module or '')} has no link at {self._km_id}")
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
        """Q.4162 clause 7.2: ask the module for its keys, again and again: at once after a
        response of several keys (more may be ready), else after ``acquire_interval`` (a
        response of one key is all a module that makes keys slower than it is asked had).

        The keys of a response are stored while the next request is on its way: a task of
        their own stores them, all that arrived meanwhile in one transaction. At most two
        responses wait for it; the requests wait while they do."""
        dialer = self._peers.module(link.neighbour)
        # the slave SAE of an ETSI 014 Get key (Q.4162 Appendix II): the KM at the other end
        request = kq1.KeyRequest(
            number_of_keys=_ACQUIRE_BATCH, extension=[{etsi014.SLAVE: link.sae_of_neighbour}]
        )
        send, receive = trio.open_memory_channel[list[Key]](1)
        async with trio.open_nursery() as nursery, send:
            nursery.start_soon(self._store_acquired, link, receive)
            failing = False
            while True:
                try:
                    response = await dialer.request(request)
                    assert isinstance(response, kq1.ResponseToKeyRequest)
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
                await trio.sleep(self._config.acquire_interval)

    async def _store_acquired(
        self, link: KMLink, responses: trio.MemoryReceiveChannel[list[Key]]
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
