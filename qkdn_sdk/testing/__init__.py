"""Testing helpers for qkdn-sdk and its plugins: the transport conformance kit and example
messages. Needs the test extra: ``pip install qkdn-sdk[test]``."""

from qkdn_sdk.messages import example
from qkdn_sdk.testing._conformance import (
    CLIENT_ID,
    SERVER_ID,
    ConformancePKI,
    ConformanceTarget,
    TransportConformance,
    conformance_pki,
)

__all__ = [
    "CLIENT_ID",
    "SERVER_ID",
    "ConformancePKI",
    "ConformanceTarget",
    "TransportConformance",
    "conformance_pki",
    "example",
]
