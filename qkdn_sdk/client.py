"""The application client: what a cryptographic application imports to get keys from its KM.

::

    async with KeyManagerClient.connect("tcp+tls://km-a:5000", tls=tls) as km:
        keys = await km.get_keys("bob", number=2, size=256)          # source side
        ...                                                           # send [k.key_id ...] to bob
    async with KeyManagerClient.connect("tcp+tls://km-c:5000", tls=bob_tls) as km:
        same = await km.get_keys_with_ids("alice", key_ids)           # destination side

Key supply upon request, Q.4161 clause 7.1: :meth:`KeyManagerClient.get_keys` sends a
:class:`~qkdn_sdk.messages.ak.KeyRequest` (Table 1), :meth:`~KeyManagerClient.get_keys_with_ids`
a :class:`~qkdn_sdk.messages.ak.KeyRequestWithId` (Table 2); both return the keys of the
:class:`~qkdn_sdk.messages.ak.ResponseToKeyRequest` (Table 3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs

from qkdn_sdk.errors import FailureResponse, QkdnError
from qkdn_sdk.messages import Key, KeyId, Role, ak, received_by
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import DEFAULT_TIMEOUT, Connection, connect

__all__ = ["KeyManagerClient", "KeysRefused", "SuppliedKey"]


class KeysRefused(QkdnError):
    """The KM answered with a failure; ``reason`` is its text (e.g. ``"failure: not enough key
    on link km-b-km-c: 0 bits, 768 needed"``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class SuppliedKey:
    """One key supplied to the application: its ID (to tell the peer) and its bytes."""

    key_id: str
    key: bytes = attrs.field(repr=False)

    @property
    def size(self) -> int:
        """Bits."""
        return 8 * len(self.key)


class KeyManagerClient:
    """A connection from one application to its KM (interface Ak)."""

    def __init__(self, connection: Connection, *, identity: str | None, timeout: float) -> None:
        self._connection = connection
        self._identity = identity
        self._timeout = timeout

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        tls: TLSConfig | None = None,
        identity: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncIterator[KeyManagerClient]:
        """Connect to the KM at ``url``. Over TLS our application ID is the one in our
        certificate; ``identity`` is it where no certificate says it (``memory://``, ``tcp://``).
        Raises :class:`~qkdn_sdk.errors.TransportError` when the KM cannot be reached."""
        async with connect(
            url, tls=tls, identity=identity, accepts=received_by(Role.APPLICATION)
        ) as connection:
            yield cls(connection, identity=connection.local_id or identity, timeout=timeout)

    async def get_keys(
        self, peer: str, number: int | None = None, size: int | None = None
    ) -> list[SuppliedKey]:
        """New keys shared with the application ``peer`` (``number`` keys of ``size`` bits; the
        KM's defaults when left out). Give ``peer`` their IDs; it gets the same keys from its
        own KM with :meth:`get_keys_with_ids`. Raises :class:`KeysRefused` with the KM's
        reason."""
        request = ak.KeyRequest(
            application_source_id=self._identity,
            application_destination_id=peer,
            number_of_keys=number,
            size_of_key=size,
        )
        return await self._keys(request)

    async def get_keys_with_ids(self, peer: str, key_ids: Sequence[str]) -> list[SuppliedKey]:
        """The keys ``key_ids`` that the application ``peer`` got for us, each exactly once.
        Raises :class:`KeysRefused` with the KM's reason."""
        request = ak.KeyRequestWithId(
            application_source_id=peer,
            application_destination_id=self._identity,
            key_ids=[KeyId(key_id=key_id) for key_id in key_ids],
        )
        return await self._keys(request)

    async def _keys(self, request: ak.KeyRequest | ak.KeyRequestWithId) -> list[SuppliedKey]:
        try:
            response = await self._connection.request(request, timeout=self._timeout)
        except FailureResponse as exc:
            raise KeysRefused(exc.reason) from None
        assert isinstance(response, ak.ResponseToKeyRequest)
        return [_supplied(key) for key in response.keys]


def _supplied(key: Key) -> SuppliedKey:
    return SuppliedKey(key_id=key.key_id, key=key.key)
