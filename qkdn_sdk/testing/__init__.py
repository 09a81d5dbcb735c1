"""Testing helpers for qkdn-sdk and its plugins: the transport conformance kit, the hostile-peer
suite and example messages, which need the test extra (from a checkout,
``python3 -m pip install '.[test]'``); and the literal peers, :mod:`qkdn_sdk.testing.literal`,
which need nothing more than the SDK.

The kits are imported when first named (``from qkdn_sdk.testing import TransportConformance``),
so ``import qkdn_sdk.testing.literal`` works without pytest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qkdn_sdk.messages import example

if TYPE_CHECKING:
    from qkdn_sdk.testing._conformance import (
        CLIENT_ID,
        SERVER_ID,
        ConformancePKI,
        ConformanceTarget,
        TransportConformance,
        conformance_pki,
    )
    from qkdn_sdk.testing._hostile import HostilePeerConformance, RawPeer

__all__ = [
    "CLIENT_ID",
    "SERVER_ID",
    "ConformancePKI",
    "ConformanceTarget",
    "HostilePeerConformance",
    "RawPeer",
    "TransportConformance",
    "conformance_pki",
    "example",
]

_KITS = {
    "CLIENT_ID": "_conformance",
    "SERVER_ID": "_conformance",
    "ConformancePKI": "_conformance",
    "ConformanceTarget": "_conformance",
    "TransportConformance": "_conformance",
    "conformance_pki": "_conformance",
    "HostilePeerConformance": "_hostile",
    "RawPeer": "_hostile",
}
"""Name -> the module of the pytest-based kits that defines it."""


def __getattr__(name: str) -> Any:
    module = _KITS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value
