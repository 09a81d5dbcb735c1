"""Literal peers: an application, a KM, a neighbouring KM, a QKDN controller and a QKD module
written from the specification tables alone, as a vendor would write them.

Theory of operation
-------------------
A literal peer speaks one side of Ak (Q.4161, and D2.3 clause 7.2.1), Ck (Q.4164, and D2.3
clause 8.1), Kq-1 (Q.4162) or the KM link (D2.3 clause 7.2.2) through an ordinary
:class:`~qkdn_sdk.transport.Connection`, and does nothing the tables do not say:

- it sends only messages of the Recommendations and of D2.3's tables, and fills only their
  table fields; it never puts anything in an ``extension``. D2.3 gives its messages no code:
  the literal peers send them under the SDK's codes, and nothing else of the SDK's (the KM
  link's key ID synchronisation and key relay, the SDK's Key IDs of a key deletion);
- it reads only table fields of what it receives;
- it fails loudly on anything else it receives: a message the procedure does not expect, an SDK
  extension message, an SDK object in an ``extension`` (:data:`SDK_EXTENSION_MEMBERS`), or a
  failure where the figure draws success, is a :class:`NonConformance` whose text quotes the
  message. (A message that misses a mandatory table field never reaches it: decoding one is
  refused by the message layer, and the request that waited for it fails.)

Every message a literal peer sends or receives is written, in order, to the :class:`Trace` the
peer is handed, under the peer's name; a non-conformance found while answering the other side
is kept there too (the other side gets a failure answer), so whoever runs the procedure (the
conformance suite, :mod:`qkdn_sdk.conformance`) sees it. The peers answer requests at once and
hold no keys: :class:`LiteralKM` answers a key relay request as completed without relaying, and
:class:`LiteralQKDModule` makes a new random key for every one it supplies.

One module per peer; importing the package needs nothing of the test extra (no pytest).
"""

from __future__ import annotations

from qkdn_sdk.testing.literal._application import LiteralApplication
from qkdn_sdk.testing.literal._base import (
    SDK_EXTENSION_MEMBERS,
    NonConformance,
    Step,
    Trace,
    hash_value,
    quote,
)
from qkdn_sdk.testing.literal._controller import STATUS_LINK, LiteralController
from qkdn_sdk.testing.literal._km import LiteralKM
from qkdn_sdk.testing.literal._module import LiteralQKDModule
from qkdn_sdk.testing.literal._neighbour import LiteralNeighbour, session_hash

__all__ = [
    "SDK_EXTENSION_MEMBERS",
    "STATUS_LINK",
    "LiteralApplication",
    "LiteralController",
    "LiteralKM",
    "LiteralNeighbour",
    "LiteralQKDModule",
    "NonConformance",
    "Step",
    "Trace",
    "hash_value",
    "quote",
    "session_hash",
]
