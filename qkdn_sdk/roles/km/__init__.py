"""The key manager (KM): acquires QKD-keys, keeps them, relays keys and supplies applications.

Theory of operation
-------------------
A :class:`KeyManager` serves four interfaces (each its own URL): Ak to applications (Q.4161),
Kq-1 to QKD modules that push keys (Q.4162 clause 7.1), Ck to the QKDN controller (Q.4164) and
the KM link to neighbouring KMs (D2.3 clause 7.1.3, :mod:`qkdn_sdk.messages.kx`). It calls out
to the controller, to each neighbour, and to QKD modules that supply keys on request (Q.4162
clause 7.2). Every key it holds lives in its :class:`~qkdn_sdk.roles.keystore.KeyStore`, in the
pools :mod:`~qkdn_sdk.roles.km.keys` names. Nothing here knows which transport carries a
message.

The KM is composed of parts, one module each, each owning its state and handed only the
collaborators it uses. :data:`~qkdn_sdk.roles.km.manager.HANDLERS` names the one part and
method that handles each message a KM receives:

============================  ==========================================================
module (class)                duty
============================  ==========================================================
``applications`` (KeySupply)  Ak key supply upon request (Q.4161 clause 7.1), ETSI 014 Get
                              key / Get key with key IDs / Get status, D2.3 key supply and
                              key deletion
``proactive``                 Ak proactive key supply: authentication, sessions (Q.4161
(ProactiveSupply)             clause 7.2, Q.4164 clauses 7.3, 7.4), pushes
``relays`` (Relay)            key relay at the source: its route (Q.4164 clauses 7.1, 7.2),
                              its first hop, its confirmation, rerouting
``relay_receiver``            hops from neighbours: passed on at a trusted node, checked and
(RelayReceiver)               held at the destination, stored with the confirmation
``links`` (KMLinks)           the KM link: HELLO, SESSION, UPDATE, key ID synchronisation
``acquisition`` (Acquisition) QKD-keys from QKD modules and ETSI 014 KMEs (Q.4162)
``reservation``               key reservation and allocation (Q.4164 clauses 7.5, 7.6)
(Reservations)
``status`` (StatusSupply)     authentication to the controller and status supply (D2.3
                              clause 8.1)
``routes`` (Routes)           next hop and route information from the controller
``quotas`` (Quotas)           per-application quotas and the fair share of link key,
                              checked before a key request makes anything (and, at the
                              destination, before a relay's keys are held)
``expiry`` (Expiry)           the erasure of keys past their lifetime: never fetched,
                              never pushed, or kept for a re-fetch
============================  ==========================================================

and of the collaborators they share: ``config`` (:class:`KMConfig`, what the KM is),
``keys`` (pool names, keys made here), ``link_table`` (:class:`~.link_table.LinkTable`, the state
of each KM link) and ``peers`` (:class:`~.peers.Peers`, the connections to the controller,
neighbours and modules). ``manager`` composes them into :class:`KeyManager`; no part imports
it. The parts depend on each other one way only (an arrow: "calls")::

    KeySupply ──> ProactiveSupply ──> Relay ──> Routes
        │                                │
        └───────────> Relay, Routes      └──> HopSender (relay_hops) <── RelayReceiver
                                                                           │
                                   Quotas, Routes, Sessions (roles.sessions) <──┘
    KMLinks ──> Acquisition
    KMLinks ──> StatusSupply
    Reservations ──> Routes
    KeySupply, ProactiveSupply, RelayReceiver ──> Quotas ──> LinkTable, Routes

    every part ──> config, keys; those that use links ──> LinkTable, Peers

The relay's receiving side tells the proactive supply that relayed keys were stored through a
callback the composition wires (``RelayReceiver(stored=...)``), so no arrow points back.
"""

from qkdn_sdk.roles.km.applications import ROUTE_TYPE_EXTENSION
from qkdn_sdk.roles.km.config import (
    INTERFACES,
    KeyManagerError,
    KMConfig,
    KMLink,
    Routing,
    listen_interface,
)
from qkdn_sdk.roles.km.manager import HANDLERS, KeyManager
from qkdn_sdk.roles.km.status import STATUS_PARAMETERS

__all__ = [
    "HANDLERS",
    "INTERFACES",
    "ROUTE_TYPE_EXTENSION",
    "STATUS_PARAMETERS",
    "KMConfig",
    "KMLink",
    "KeyManager",
    "KeyManagerError",
    "Routing",
    "listen_interface",
]
