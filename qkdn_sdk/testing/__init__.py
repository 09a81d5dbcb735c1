"""Testing helpers for qkdn-sdk and its plugins: the transport conformance kit, the hostile-peer
suite and example messages. Needs the test extra: from a checkout,
``python3 -m pip install '.[test]'``."""

from qkdn_sdk.messages import example
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
