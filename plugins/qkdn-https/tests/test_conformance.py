"""The qkdn-sdk conformance kit on https:// (ETSI GS QKD 014) over real loopback mTLS."""

from __future__ import annotations

import pytest

from qkdn_sdk.messages import Role, ak, received_by
from qkdn_sdk.testing import ConformanceTarget, TransportConformance

_AK = frozenset(cls for cls in received_by(Role.KM) if cls.interface is ak.KeyRequest.interface)


class TestHttpsTransport(TransportConformance):
    @pytest.fixture(params=["https://127.0.0.1:0", "https://localhost:0"])
    def target(self, request: pytest.FixtureRequest) -> ConformanceTarget:
        return ConformanceTarget(url=request.param, tls=True, accepts=_AK, framed=False)
