"""Key supply upon request to applications (Q.4161 clause 7.1), as ETSI GS QKD 014 serves it too
(Q.4161 Appendix II: Get key, Get key with key IDs, Get status, key multicast), and the D2.3 key
supply and key deletion commands (Tables 7-4 to 7-6).

A :class:`~qkdn_sdk.messages.ak.KeyRequest` from the source application makes fresh keys. When
the destination application is served here they go to its ``app:`` pool at once; otherwise they
are relayed to its KM (:class:`~qkdn_sdk.roles.km.relays.Relay`), and the source application
gets them only once that KM holds them.

The destination application fetches them with :class:`~qkdn_sdk.messages.ak.KeyRequestWithId`,
exactly once: the fetch moves them, in one transaction, from the ``app:`` pool to the pair's
``delivered:`` pool before the response is sent, and for ``refetch_window`` seconds the same
application asking for the same IDs (a response lost with a connection or a KM that stopped)
gets the same keys again; nobody else ever does. Then they are erased, as are keys never
fetched after ``key_lifetime`` (:mod:`~qkdn_sdk.roles.km.expiry`).

Every key request is admitted by the application's quotas and its pair's fair share of the
link its relay spends (:class:`~qkdn_sdk.roles.km.quotas.Quotas`) before a key is made, and Get
status says what they leave it. No answer tells an application anything of another's keys: keys
asked for or named for deletion that are not held for the caller get one failure, whether they
are unknown, already supplied or another application's.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from qkdn_sdk.codecs import etsi014
from qkdn_sdk.errors import QkdnError, RequestRefused, quoted
from qkdn_sdk.messages import Key, KeyId, ak, mgmt
from qkdn_sdk.messages.mgmt import ErrorIndication
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import KeyStore, StoredKey, UnknownKeys
from qkdn_sdk.roles.km.config import MIN_SIZE_OF_KEY, KeyManagerError, KMConfig
from qkdn_sdk.roles.km.keys import Batch, app_pool, delivered_pool, fresh_keys
from qkdn_sdk.roles.km.proactive import ProactiveSupply
from qkdn_sdk.roles.km.quotas import Quotas
from qkdn_sdk.roles.km.relays import Relay, not_direct
from qkdn_sdk.roles.km.routes import Routes
from qkdn_sdk.roles.sessions import Sessions, session_pool
from qkdn_sdk.transport import Connection

__all__ = ["ROUTE_TYPE_EXTENSION", "KeySupply"]

logger = logging.getLogger("qkdn_sdk.roles.km")

ROUTE_TYPE_EXTENSION = "route_type"
"""The ``extension_mandatory`` parameter of an ETSI 014 Get key a KM supports:
``{"route_type": "direct"}`` asks for keys no trusted node relays (the slave's KM is this KM
or a neighbour); ``"any"`` is the default."""


class KeySupply:
    """Key supply upon request of one KM, for the applications it serves."""

    def __init__(
        self,
        config: KMConfig,
        store: KeyStore,
        routes: Routes,
        relay: Relay,
        proactive: ProactiveSupply,
        sessions: Sessions,
        quotas: Quotas,
    ) -> None:
        self._config = config
        self._km_id = config.km_id
        self._store = store
        self._routes = routes
        self._relay = relay
        self._proactive = proactive
        self._sessions = sessions
        self._quotas = quotas
        self.supplied: dict[tuple[str, str], int] = {}
        """Keys made here at a source application's request since the KM started, by
        ``(source, destination)`` pair (each destination of a key multicast counts them)."""

    async def key_request(
        self, request: ak.KeyRequest, connection: Connection
    ) -> ak.ResponseToKeyRequest:
        """Q.4161 clause 7.1.1: fresh keys for the source application, shared with the
        destination application (relayed to its KM when that is another), once its quotas
        admit them (:class:`~qkdn_sdk.roles.km.quotas.OverQuota` otherwise)."""
        source = self._config.served_application(request.application_source_id, connection.peer_id)
        destination = request.application_destination_id
        number = request.number_of_keys or self._config.default_number_of_keys
        size = request.size_of_key or self._config.default_size_of_key
        self._config.check_amount(number, size)
        options = etsi014.key_request_options(request)
        direct = _route_type(options.mandatory)
        destinations = [destination, *self._additional_slaves(options.additional_slaves)]
        if source in destinations:
            raise RequestRefused("the destination application is the source application")
        if len(destinations) > 1:
            await self._check_multicast(destinations, direct=direct)
        hops = await self._quotas.first_hops(destinations, number, size)
        local = [slave for slave in destinations if slave in self._config.applications]
        with self._quotas.admitted(source, number, local=local, hops=hops):
            key_ids, keys = fresh_keys(number, size)
            for slave in destinations:  # the same keys for every slave (ETSI 014 key multicast)
                batch = Batch(source, slave, key_ids, keys, size, direct=direct)
                if slave in self._config.applications:
                    await self._store.put(batch.stored(app_pool(source, slave)))
                else:
                    await self._relay.relay(batch)
                self.supplied[source, slave] = self.supplied.get((source, slave), 0) + number
        logger.info(
            "%s: %d keys of %d bits for %s -> %s",
            self._km_id,
            number,
            size,
            source,
            ", ".join(destinations),
        )
        return ak.ResponseToKeyRequest(keys=batch.supplied(), response="success")

    def _additional_slaves(self, slaves: list[Any]) -> list[str]:
        """The ``additional_slave_SAE_IDs`` of an ETSI 014 Get key, checked."""
        if len(slaves) > self._config.max_sae_id_count:
            raise RequestRefused(
                f"{len(slaves)} additional_slave_SAE_IDs are over this KM's max_SAE_ID_count "
                f"({self._config.max_sae_id_count})"
            )
        if not all(isinstance(slave, str) and slave for slave in slaves):
            raise RequestRefused("additional_slave_SAE_IDs must be application IDs")
        return slaves

    async def _check_multicast(self, slaves: list[str], *, direct: bool) -> None:
        """Refuse a key multicast this KM cannot make, before any key is made: a slave named
        twice, or two slaves served by one KM (a KM holds a key ID once). Asks the controller
        where each remote slave is (nothing is spent)."""
        if len(set(slaves)) != len(slaves):
            raise RequestRefused("a slave application is named twice")
        at: dict[str, str] = {}
        for slave in slaves:
            if slave in self._config.applications:
                km = self._km_id
            else:
                km, next_km = await self._routes.next_hop(application=slave, bits=otp.UNIT_BITS)
                if direct and km != next_km:
                    raise not_direct(slave, km)
            if km in at:
                raise RequestRefused(
                    f"slaves {quoted(at[km])} and {quoted(slave)} are both served by {km}: one "
                    "KM holds a key ID once, so they cannot share keys by multicast"
                )
            at[km] = slave

    async def key_request_with_id(
        self, request: ak.KeyRequestWithId, connection: Connection
    ) -> ak.ResponseToKeyRequest:
        """Q.4161 clause 7.1.2: the destination application fetches the keys the source
        application got; only keys meant for it, exactly once (:meth:`_deliver`: asked again
        within ``refetch_window``, the same keys). Keys not held for it from that source get one
        failure (ETSI 014: 400, keys not found), whether unknown, expired, already supplied or
        made for another application: ETSI 014 asks 401 for a caller that is not the keys'
        slave, but that answer would tell an application which key IDs exist
        (docs/etsi014.md)."""
        destination = self._config.served_application(
            request.application_destination_id, connection.peer_id
        )
        key_ids = [key_id.key_id for key_id in request.key_ids]
        if len(key_ids) > self._config.max_key_per_request:
            raise RequestRefused(
                f"{len(key_ids)} key IDs are over this KM's max_key_per_request "
                f"({self._config.max_key_per_request})"
            )
        source = request.application_source_id
        stored, again = await self._deliver(source, destination, key_ids)
        logger.info(
            "%s: %d keys supplied to %s from %s%s",
            self._km_id,
            len(stored),
            destination,
            source,
            f" ({again} of them again)" if again else "",
        )
        return ak.ResponseToKeyRequest(
            keys=[Key(key=key.key, key_id=key.key_id) for key in stored], response="success"
        )

    async def _deliver(
        self, source: str, destination: str, key_ids: list[str]
    ) -> tuple[list[StoredKey], int]:
        """The keys ``key_ids`` held for ``destination`` from ``source``, moved to their
        ``delivered:`` pool in the transaction that reads them (before any response leaves),
        and how many of them were delivered before (within ``refetch_window``). Raises the one
        failure of keys not held, changing nothing, unless every ID is in one of the two pools,
        once."""
        delivered = delivered_pool(source, destination)
        try:
            keys = await self._store.deliver(app_pool(source, destination), delivered, key_ids)
        except UnknownKeys as exc:
            raise _not_held(len(exc.missing), len(key_ids), destination, source) from None
        return keys, sum(key.pool == delivered for key in keys)

    async def status(self, request: ak.StatusRequest, connection: Connection) -> ak.Status:
        """ETSI 014 Get status (Q.4161 Appendix II): what the caller may still get now for keys
        shared with ``application_destination_id``. For an application of this KM keys are made
        on demand, as many as its quotas of keys per second and keys held (by the master, and
        by the pair: what the slave has not fetched yet) leave it; for another, as many keys of
        ``key_size`` as the link key towards the first hop pays for (the controller names the
        hop and the slave's KM), less the link's reserve when the pair is over its fair share,
        and no more than its rate quota leaves it. ``max_key_count`` is the cap of keys held
        per pair (``max_keys_held_per_pair``), and never below the count; nothing is spent."""
        master = self._config.served_application(request.application_source_id, connection.peer_id)
        slave = request.application_destination_id
        size = self._config.default_size_of_key
        local = slave in self._config.applications
        cap = self._config.max_keys_held_per_pair
        count = min(self._quotas.keys_allowed(master, slave, local=local), cap)
        if local:
            target_km = self._km_id
        else:
            target_km, next_km = await self._routes.next_hop(application=slave, bits=otp.UNIT_BITS)
            units = self._quotas.link_bits_allowed((master, slave), next_km) // otp.UNIT_BITS
            count = min(count, (units - 2) * otp.UNIT_BYTES // (size // 8))
        return ak.Status(
            source_kme_id=self._km_id,
            target_kme_id=target_km,
            master_sae_id=master,
            slave_sae_id=slave,
            key_size=size,
            stored_key_count=max(0, math.floor(count)),
            max_key_count=cap,
            max_key_per_request=self._config.max_key_per_request,
            max_key_size=self._config.max_size_of_key,
            min_key_size=MIN_SIZE_OF_KEY,
            max_sae_id_count=self._config.max_sae_id_count,
        )

    async def key_supply_command(
        self, command: mgmt.KeySupplyCommand, connection: Connection
    ) -> mgmt.KeySupplyResponse | ErrorIndication:
        """D2.3 Tables 7-4, 7-5, on the same keys as Q.4161: for encryption (the default), new
        keys shared with the application ``target_id`` (in ``session_id`` when given, as a key
        request with session ID; otherwise as a key request); for decryption, the key
        ``key_id`` that ``target_id`` got for us (as a key request with ID). The response's
        ``key_id`` is the command's, as Table 7-5 says; ``key_data`` names the keys returned.

        Table 7-5 can say one failure, 0x03 *insufficient*: it answers what keeps the KM from
        supplying keys now (too little link key, no route, a quota, the controller or a KM
        unreachable: what ETSI 014 answers with 503). Any other refusal (a bad command, an
        unknown target, keys not held for the sender) is no shortage of keys: it is answered
        with an error indication saying what was wrong, as where a table cannot say it."""
        try:
            return await self._key_supply(command, connection)
        except QkdnError as exc:
            if exc.http_status == 503:
                raise  # the transport answers Table 7-5 with 0x03 insufficient
            return ErrorIndication(reason=exc.response_text, command_code=command.code)

    async def _key_supply(
        self, command: mgmt.KeySupplyCommand, connection: Connection
    ) -> mgmt.KeySupplyResponse:
        application = self._config.served_application(command.sender_id, connection.peer_id)
        if command.application_code is mgmt.ApplicationCode.DECRYPTION:
            if command.key_id is None:
                raise KeyManagerError("a key supply for decryption names its key: key_id")
            supplied = await self.key_request_with_id(
                ak.KeyRequestWithId(
                    application_source_id=command.target_id,
                    application_destination_id=application,
                    key_ids=[KeyId(key_id=command.key_id)],
                ),
                connection,
            )
            keys = supplied.keys
        elif command.session_id is not None:
            in_session = await self._proactive.key_request_with_session_id(
                ak.KeyRequestWithSessionId(
                    session_id=command.session_id,
                    number_of_keys=command.key_amount,
                    size_of_key=command.key_size,
                ),
                connection,
            )
            keys = in_session.keys
        else:
            fresh = await self.key_request(
                ak.KeyRequest(
                    application_source_id=application,
                    application_destination_id=command.target_id,
                    number_of_keys=command.key_amount,
                    size_of_key=command.key_size,
                ),
                connection,
            )
            keys = fresh.keys
        return mgmt.KeySupplyResponse(
            sender_id=self._km_id,
            source_id=command.source_id,
            target_id=command.target_id,
            session_id=command.session_id,
            application_code=command.application_code,
            key_amount=len(keys),
            key_size=8 * len(keys[0].key),  # what was asked, or the size of the key by ID
            key_id=command.key_id,  # Table 7-5: the command's; key_data names the keys returned
            key_data=keys,
            response_code=mgmt.KeySupplyResponseCode.SUCCESS,
        )

    async def key_deletion(
        self, command: mgmt.KeyDeletionCommand, connection: Connection
    ) -> mgmt.KeyDeletionResponse:
        """D2.3 Table 7-6: an application deletes keys held for it (``key_ids``: to fetch, or
        fetched and kept for a re-fetch, which ends their window), or ends a session of its own
        (``session_id`` alone), deleting what is still held for it in that session. Keys held
        for other applications are never touched: a command naming a key not held for the
        sender deletes nothing and fails as one naming an unknown key does (Table 7-7: 0x02
        failure), so it tells the sender nothing of other applications' keys."""
        application = self._config.served_application(command.sender_id, connection.peer_id)
        deleted = 0
        if command.key_ids:
            key_ids = list(dict.fromkeys(key_id.key_id for key_id in command.key_ids))
            held = await self._store.pools_of(key_ids)
            by_pool: dict[str, list[str]] = {}
            for key_id in key_ids:
                pool = held.get(key_id)
                if pool is not None and _held_for(pool, application):
                    by_pool.setdefault(pool, []).append(key_id)
            missing = len(key_ids) - sum(len(ids) for ids in by_pool.values())
            if missing:
                raise _not_held(missing, len(key_ids), application)
            for pool, ids in by_pool.items():
                deleted += len(await self._store.take_present(pool, ids))
        elif command.session_id is not None:
            deleted = await self._proactive.end_session(command.session_id, application)
        else:
            raise KeyManagerError("say which keys to delete: key_ids, or a session_id")
        logger.info("%s: %s deleted %d keys", self._km_id, application, deleted)
        return mgmt.KeyDeletionResponse(
            sender_id=self._km_id,
            source_id=command.source_id,
            target_id=command.target_id,
            session_id=command.session_id,
            application_code=command.application_code,
            response_code=mgmt.ResultCode.SUCCESS,
        )


def _held_for(pool: str, application: str) -> bool:
    """Whether ``pool`` holds keys for ``application`` to fetch (or fetch again) or be
    pushed."""
    return pool.startswith(session_pool(application, "")) or (
        pool.startswith(("app:", "delivered:")) and pool.endswith(f":{application}")
    )


def _not_held(
    missing: int, asked: int, application: str, source: str | None = None
) -> RequestRefused:
    """The one failure for keys asked for or named that are not held for ``application`` (from
    ``source``): the same words whether they are unknown, already supplied or another
    application's."""
    source_text = f" from {quoted(source)}" if source is not None else ""
    return RequestRefused(
        f"{missing} of the {asked} keys are not held for {quoted(application)}{source_text} "
        "(unknown, or already supplied)",
        etsi014_message=etsi014.KEYS_NOT_FOUND,
    )


def _route_type(mandatory: list[Any]) -> bool:
    """Whether the ``extension_mandatory`` of an ETSI 014 Get key asks for a direct route
    (:data:`ROUTE_TYPE_EXTENSION`); any parameter this KM does not support is refused."""
    direct = False
    for parameter in mandatory:
        if not isinstance(parameter, dict) or set(parameter) != {ROUTE_TYPE_EXTENSION}:
            raise RequestRefused(
                f"this KM supports only {{{ROUTE_TYPE_EXTENSION!r}: 'direct' or 'any'}} in "
                f"extension_mandatory, not {quoted(str(parameter), 80)}",
                etsi014_message=etsi014.MANDATORY_EXTENSION_UNSUPPORTED,
            )
        value = parameter[ROUTE_TYPE_EXTENSION]
        if value not in ("direct", "any"):
            raise RequestRefused(
                f"{ROUTE_TYPE_EXTENSION} {quoted(str(value))} is not 'direct' or 'any'",
                etsi014_message=etsi014.MANDATORY_EXTENSION_UNSUPPORTED,
            )
        direct = direct or value == "direct"
    return direct
