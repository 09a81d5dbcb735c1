"""The qkdn-sdk conformance kit on grpc:// and grpcs:// over real loopback sockets."""

from __future__ import annotations

import pytest

from qkdn_sdk.testing import ConformanceTarget, TransportConformance


class TestGrpcTransport(TransportConformance):
    @pytest.fixture(params=["grpc://127.0.0.1:0", "grpcs://127.0.0.1:0", "grpcs://localhost:0"])
    def target(self, request: pytest.FixtureRequest) -> ConformanceTarget:
        url: str = request.param
        return ConformanceTarget(url=url, tls=url.startswith("grpcs"), framed=False)
