"""How a KM reaches its peers: one :class:`~qkdn_sdk.roles._peer.Dialer` each to the QKDN
controller (Ck), to every neighbouring KM (the KM link) and to every QKD module or KME it asks
for keys (Kq-1), and what not reaching them means."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager

import trio

from qkdn_sdk.errors import FailureResponse, TransportError
from qkdn_sdk.messages import Message
from qkdn_sdk.roles._peer import Dialer
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig, passed_on
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.qkd_module import Kq1Mode
from qkdn_sdk.tls import TLSConfig
from qkdn_sdk.transport import Handler, Limits

__all__ = ["Peers"]


class Peers:
    """The connections a KM opens. ``directory`` maps peer IDs to the URL that reaches them (a
    neighbour's KM-link URL, the controller's Ck URL); it is read again before each request, so
    a restarted peer that moved is found. The dialers exist once :meth:`open` ran."""

    def __init__(
        self,
        config: KMConfig,
        links: LinkTable,
        *,
        handler: Handler,
        accepted: Callable[[str], Collection[type[Message]]],
        tls: TLSConfig | None,
        directory: Mapping[str, str],
        limits: Limits | None,
    ) -> None:
        self._config = config
        self._links = links
        self._handler = handler
        self._accepted = accepted
        self._tls = tls
        self._directory = directory
        self._limits = limits
        self._controller: Dialer | None = None
        self._neighbours: dict[str, Dialer] = {}
        self._modules: dict[str, Dialer] = {}

    def open(self, nursery: trio.Nursery) -> None:
        """Make the dialers; their connections live in ``nursery``."""

        def dial(
            peer: str, interface: str, url: str | None = None, tls: TLSConfig | None = None
        ) -> Dialer:
            return Dialer(
                nursery,
                url=url or self._directory.get(peer),
                tls=tls or self._tls,
                identity=self._config.km_id,
                peer=peer,
                handler=self._handler,
                accepts=self._accepted(interface),
                limits=self._limits,
                connect_timeout=self._config.relay_timeout,
            )

        self._controller = dial(self._config.controller_id, "ck")
        for link in self._config.links:
            self._neighbours[link.neighbour] = dial(link.neighbour, "kx")
            if link.mode is Kq1Mode.ON_REQUEST:
                self._modules[link.neighbour] = dial(
                    link.module_id, "kq1", link.module_url, link.tls
                )

    def dialer(self, peer: str) -> Dialer:
        """The dialer of a neighbour, or of the controller for any other ``peer``."""
        dialer = self._neighbours.get(peer, self._controller)
        assert dialer is not None
        dialer.url = self._directory.get(peer, dialer.url)  # a restarted peer may have moved
        return dialer

    def module(self, neighbour: str) -> Dialer:
        """The dialer of the QKD module (or KME) of the on-request link to ``neighbour``."""
        return self._modules[neighbour]

    async def ask_controller(self, request: Message, *, timeout: float | None = None) -> Message:
        """The controller's answer to ``request``; :class:`KeyManagerError` with its failure
        reason, or saying it is unreachable."""
        with self._reaching_controller():
            return await self.dialer(self._config.controller_id).request(
                request, timeout=timeout or self._config.relay_timeout
            )

    async def tell_controller(self, message: Message) -> None:
        """Send the controller the one-way ``message``; :class:`KeyManagerError` saying it is
        unreachable, as :meth:`ask_controller`."""
        with self._reaching_controller():
            await self.dialer(self._config.controller_id).send(message)

    @contextmanager
    def _reaching_controller(self) -> Iterator[None]:
        """Within the block, a failure the controller answers, or not reaching it, is a
        :class:`KeyManagerError` saying so."""
        try:
            yield
        except FailureResponse as exc:
            raise KeyManagerError(passed_on(exc.reason)) from None
        except TransportError as exc:
            raise KeyManagerError(
                f"the QKDN controller {self._config.controller_id} is unreachable ({exc})"
            ) from None

    async def ask_neighbour(self, neighbour: str, message: Message, doing: str) -> Message:
        """The answer of ``neighbour`` to ``message``; :class:`KeyManagerError` with its failure
        reason, or saying it is unreachable while ``doing`` (then its link is marked
        unreachable in the link table until it answers)."""
        try:
            response = await self.dialer(neighbour).request(
                message, timeout=self._config.relay_timeout
            )
        except FailureResponse as exc:
            self._links.unreachable.discard(neighbour)
            raise KeyManagerError(passed_on(exc.reason)) from None
        except TransportError as exc:
            self._links.unreachable.add(
                neighbour
            )  # reported as a link without key until it answers
            raise KeyManagerError(
                f"neighbour KM {neighbour} is unreachable while {doing} ({exc})"
            ) from None
        self._links.unreachable.discard(neighbour)
        return response
