"""Per-application quotas and each application pair's fair share of a link's key, so one
application cannot starve the others (an SDK policy: Q.4161, ETSI GS QKD 014 and D2.3 set no
such limits).

Theory of operation
-------------------
A key request (Q.4161 clause 7.1.1, its ETSI 014 Get key, a D2.3 key supply for encryption) is
admitted by :meth:`Quotas.admitted` after it was checked and before any key is made, stored or
relayed. A refusal is :class:`OverQuota`, the request's own failure saying which limit, and
changes nothing: no token, no link key, no share is taken. Four rules, each a well-known
scheme, each of :class:`~qkdn_sdk.roles.km.config.KMConfig`:

1. **Rate** (``max_keys_per_second``): a token bucket per source application, refilled at that
   many keys a second up to one second's worth (at least ``max_key_per_request``, so a single
   request fits a full bucket). A request takes ``number_of_keys`` tokens, or is refused.
2. **Keys held** (``max_keys_held``): the keys made at an application's request for
   applications of this KM and not yet fetched by them (its ``app:<application>:*`` pools, which
   the store counts without I/O). Keys relayed to another KM are held there, not here; keys
   fetched and kept for a re-fetch (``delivered:`` pools) are held no more.
3. **Keys held per pair** (``max_keys_held_per_pair``): the same, for one destination: the
   ``app:<source>:<destination>`` pool. A bound on what one pair leaves unfetched, which ETSI
   014 Get status reports as ``max_key_count``.
4. **Fair share of a link** (``fair_share_reserve_bits``, ``fair_share_window_bits``,
   ``min_share``): the last ``fair_share_reserve_bits`` of a link's key are a reserve. A relay
   whose first hop would take the link's spendable key (less what relays admitted and not yet
   ended are about to spend) into the reserve is admitted only for an application pair within
   its share of the link's recent key: of the last ``fair_share_window_bits`` that relays started
   here spent on that link, the pair spent less than ``max(min_share, 1 / n)``, ``n`` being the
   pairs that spent in that window, the requester counted. That is max-min fairness over the
   demand seen, with a floor: the pairs that used less than an equal split are served from the
   reserve while the others wait for the link to refill. Above the reserve every request is
   served as it comes, so no key idles; a pair alone on a link may use the reserve until it has
   spent a whole window's worth (a flood), so an application that comes later still finds the
   reserve. A relay the link cannot pay at all is left to fail as before, saying so.

The window counts link key, not time: "recent" is the last so many bits spent, whatever the
link's rate, and no test needs a clock to see a share.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import trio

from qkdn_sdk.errors import quoted
from qkdn_sdk.roles import relay as otp
from qkdn_sdk.roles.keystore import KeyStore
from qkdn_sdk.roles.km.config import KeyManagerError, KMConfig
from qkdn_sdk.roles.km.keys import app_pool
from qkdn_sdk.roles.km.link_table import LinkTable
from qkdn_sdk.roles.km.routes import Routes

__all__ = ["FirstHop", "OverQuota", "Quotas"]

Pair = tuple[str, str]
"""(source application, destination application)."""
FirstHop = tuple[str, str, int]
"""(destination application, neighbour, link key bits): the first hop a key request's relay
spends at this KM."""


class OverQuota(KeyManagerError):
    """A key request over a quota of its application; nothing was made, stored or spent. Over
    ETSI 014 it is a 503: the same request may be served later."""


class _Window:
    """The last ``size`` bits that relays started here spent on one link, by application pair
    (the oldest spend is cut so that exactly ``size`` bits are counted once that many were
    spent)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._spends: collections.deque[tuple[Pair, int]] = collections.deque()
        self._total = 0
        self.by_pair: dict[Pair, int] = {}

    def add(self, pair: Pair, bits: int) -> None:
        self._spends.append((pair, bits))
        self.by_pair[pair] = self.by_pair.get(pair, 0) + bits
        self._total += bits
        while self._total > self._size:
            oldest, spent = self._spends[0]
            cut = min(spent, self._total - self._size)
            if cut == spent:
                self._spends.popleft()
            else:
                self._spends[0] = (oldest, spent - cut)
            self._total -= cut
            self.by_pair[oldest] -= cut
            if not self.by_pair[oldest]:
                del self.by_pair[oldest]

    def within_share(self, pair: Pair, min_share: float) -> bool:
        """Whether ``pair`` spent less than its share of the window (module docstring)."""
        pairs = len(self.by_pair) + (pair not in self.by_pair)
        return self.by_pair.get(pair, 0) < max(min_share, 1 / pairs) * self._size


class Quotas:
    """The quotas of the applications of one KM and their shares of its links' key."""

    def __init__(self, config: KMConfig, store: KeyStore, links: LinkTable, routes: Routes) -> None:
        self._config = config
        self._store = store
        self._links = links
        self._routes = routes
        self._depth = max(config.max_keys_per_second, config.max_key_per_request)
        self._buckets: dict[str, tuple[float, float]] = {}
        """Per application: its tokens, and when they were counted."""
        self._windows = {
            link.neighbour: _Window(config.fair_share_window_bits) for link in config.links
        }
        self._in_flight = dict.fromkeys(self._windows, 0)
        """Per neighbour: link key bits that relays admitted and not yet ended may spend."""

    async def first_hops(self, slaves: list[str], number: int, size: int) -> list[FirstHop]:
        """The first hop of the relay to each slave not served here, for :meth:`admitted`: the
        neighbour (the only one, else the controller's next hop; nothing is spent asking) and
        the link key bits the relay of ``number`` keys of ``size`` bits spends towards it."""
        bits = otp.units_for(otp.MAC_KEY_BYTES + number * size // 8) * otp.UNIT_BITS
        links = self._config.links
        hops = []
        for slave in slaves:
            if slave in self._config.applications or not links:
                continue
            if len(links) == 1:
                neighbour = links[0].neighbour
            else:
                _, neighbour = await self._routes.next_hop(application=slave, bits=bits)
            hops.append((slave, neighbour, bits))
        return hops

    def held(self, application: str) -> int:
        """Keys made here at ``application``'s request that its peers at this KM did not fetch."""
        return sum(self._store.counts(app_pool(application, "")).values())

    def pair_room(self, source: str, destination: str) -> int:
        """Keys ``source`` may still have made for ``destination`` to fetch here before their
        pair holds ``max_keys_held_per_pair``."""
        held = self._store.count(app_pool(source, destination))
        return max(0, self._config.max_keys_held_per_pair - held)

    def keys_allowed(self, application: str, destination: str, *, local: bool) -> float:
        """The most keys the rate quota (and, for ``destination`` a peer of this KM, ``local``,
        the quotas of keys held) would let ``application`` get now for ``destination``;
        ``math.inf`` without a limit."""
        allowed = self._tokens(application)
        if local:
            held_room = max(0, self._config.max_keys_held - self.held(application))
            allowed = min(allowed, held_room, self.pair_room(application, destination))
        return allowed

    def link_bits_allowed(self, pair: Pair, neighbour: str) -> int:
        """Bits of the link to ``neighbour`` a relay of ``pair`` may spend now: the link's spendable
        key, less the reserve when the pair is not within its share."""
        spendable = self._spendable(neighbour)
        if self._windows[neighbour].within_share(pair, self._config.min_share):
            return spendable
        return max(0, spendable - self._config.fair_share_reserve_bits)

    @contextmanager
    def admitted(
        self, source: str, number: int, *, local: Sequence[str], hops: Sequence[FirstHop]
    ) -> Iterator[None]:
        """Admit a key request of ``source`` for ``number`` keys, to be held here for each of
        its peers ``local`` and relayed over ``hops``; raise :class:`OverQuota`, taking nothing,
        when a rule of the module docstring refuses it. Admitted, its tokens are taken and its
        first hops counted in their links' windows; the block serves it, and while it runs its
        hops' bits count as about to be spent."""
        tokens = self._tokens(source)
        if number > tokens:
            rate = self._config.max_keys_per_second
            raise OverQuota(
                f"{quoted(source)} is over its quota of {rate:g} keys per second "
                f"(max_keys_per_second): {math.floor(tokens)} keys now, {number} asked"
            )
        local_keys = number * len(local)
        if local_keys:
            held = self.held(source)
            if held + local_keys > self._config.max_keys_held:
                raise OverQuota(
                    f"{quoted(source)} is over its quota of {self._config.max_keys_held} keys "
                    f"held (max_keys_held): {held} keys it asked for wait at "
                    f"{self._config.km_id} for their peers to fetch them, {local_keys} more asked"
                )
        cap = self._config.max_keys_held_per_pair
        for destination in local:
            held = self._store.count(app_pool(source, destination))
            if held + number > cap:
                raise OverQuota(
                    f"{quoted(source)} is over its quota of {cap} keys held for "
                    f"{quoted(destination)} (max_keys_held_per_pair): {held} keys wait at "
                    f"{self._config.km_id} for {quoted(destination)} to fetch them, {number} "
                    "more asked"
                )
        planned: dict[str, int] = {}
        for destination, neighbour, bits in hops:
            self._check_share((source, destination), neighbour, bits, planned.get(neighbour, 0))
            planned[neighbour] = planned.get(neighbour, 0) + bits
        self._buckets[source] = (tokens - number, trio.current_time())
        for destination, neighbour, bits in hops:
            self._windows[neighbour].add((source, destination), bits)
            self._in_flight[neighbour] += bits
        try:
            yield
        finally:
            for _, neighbour, bits in hops:
                self._in_flight[neighbour] -= bits

    def _check_share(self, pair: Pair, neighbour: str, bits: int, planned: int) -> None:
        spendable = self._spendable(neighbour) - planned
        reserve = self._config.fair_share_reserve_bits
        if spendable < bits or spendable - bits >= reserve:
            return  # the link cannot pay at all (the relay says so), or pays above the reserve
        if self._windows[neighbour].within_share(pair, self._config.min_share):
            return
        source, destination = pair
        raise OverQuota(
            f"{quoted(source)} is over its fair share of link {self._config.km_id}-{neighbour} "
            f"for keys to {quoted(destination)}: the link's last {reserve} bits are kept for "
            f"applications within their share ({spendable} bits left, {bits} asked)"
        )

    def _spendable(self, neighbour: str) -> int:
        return max(0, self._links.link_key_bits(neighbour) - self._in_flight[neighbour])

    def _tokens(self, application: str) -> float:
        """``application``'s tokens now: the bucket starts full, refills at the rate."""
        rate = self._config.max_keys_per_second
        if math.isinf(rate):
            return math.inf
        now = trio.current_time()
        tokens, since = self._buckets.get(application, (self._depth, now))
        return min(self._depth, tokens + (now - since) * rate)
