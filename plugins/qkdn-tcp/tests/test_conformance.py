"""The qkdn-sdk conformance kit, on tcp:// and tcp+tls:// over real loopback sockets."""

from __future__ import annotations

import pytest

from qkdn_sdk.testing import ConformanceTarget, HostilePeerConformance


class TestTcpTransport(HostilePeerConformance):
    @pytest.fixture(params=["tcp://127.0.0.1:0", "tcp+tls://127.0.0.1:0", "tcp+tls://localhost:0"])
    def target(self, request: pytest.FixtureRequest) -> ConformanceTarget:
        url: str = request.param
        return ConformanceTarget(url=url, tls=url.startswith("tcp+tls"))
