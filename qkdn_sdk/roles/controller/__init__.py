"""The QKDN controller: key relay routes over Ck, hop by hop or whole (Q.4164 clauses 7.1, 7.2).

Theory of operation
-------------------
The controller knows the network from its :class:`ControllerConfig`: the KMs, the KM links
(pairs of KMs with a QKD link between them) and which KM serves each application. What it
learns at run time is how much key each KM link holds: every KM sends it, unsolicited, a
*status information supply* (FG QIT4N D2.3 Table 8-2) whose status table says, per neighbour,
how many bits of key the KM has to send to that neighbour. The controller keeps the latest
amount of each *directed* link (``km-a -> km-b`` and ``km-b -> km-a`` are two amounts: each
end reports its own).

In a distributed QKDN the key is relayed hop by hop, and each KM on the way asks the controller
for its own next hop (*key relay next hop request*, Q.4164 Table 1, with ``source_kma_id`` =
itself). The controller computes a whole route from that KM to the destination and answers with
its second node (Q.4164 Table 2). In a centralized QKDN the source KM notifies the controller
(*key relay request notification*, Table 3) and the controller sends it the whole route in a
*key relay request* of its own (Table 4), which the KM answers once the relay ended (Table 5).
The route is a shortest path (Dijkstra) where a directed link
``u -> v`` costs ``1 + SCALE / (1 + bits available on u -> v)``: one per hop, plus a penalty
that grows as the key on the link runs out, so routes drift towards links with key to spare.
Links holding less than the key the relay needs per link (the ``key_bits`` extension of the
request) are left out; a link never reported counts as 0 bits. Among routes of equal cost the
lexicographically smallest list of KM IDs wins, so the answer is deterministic.

Everything here runs in one trio run; the handler (:meth:`Controller.handle`) never blocks, so
route and status updates are atomic with respect to each other.

The QKD modules of the network (``ControllerConfig.modules``) authenticate to the controller and
supply the status of their QKD links too (D2.3 clause 8.1, over the Y.3800 reference point Cq,
on the controller's Ck URLs): :attr:`Controller.modules` records the key generation rate and
state of each QKD link. Routes do not use them: a relay spends the key the KMs hold and report.

The package has four parts: ``_network`` (the configuration, the key amounts and states the KMs
report, and the routes over them: no I/O), ``_controller`` (the :class:`Controller` that serves
Ck and keeps sessions, reservations and status reports), ``_modules`` (:class:`QKDModules`, what
the QKD modules authenticate and supply) and ``_reporters`` (the authentication and status
supplies of KMs and modules alike).
"""

from qkdn_sdk.roles.controller._controller import (
    LOG_INTERVAL,
    Controller,
    KMRequestFailed,
    Reservation,
)
from qkdn_sdk.roles.controller._modules import ModuleRequestFailed, QKDModules
from qkdn_sdk.roles.controller._network import (
    MAX_KEY_BITS,
    SCALE,
    ControllerConfig,
    NoRoute,
    link_cost,
)

__all__ = [
    "LOG_INTERVAL",
    "MAX_KEY_BITS",
    "SCALE",
    "Controller",
    "ControllerConfig",
    "KMRequestFailed",
    "ModuleRequestFailed",
    "NoRoute",
    "QKDModules",
    "Reservation",
    "link_cost",
]
