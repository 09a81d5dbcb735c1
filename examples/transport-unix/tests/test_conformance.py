"""qkdn-sdk's conformance kit, on unix:// (a new socket for every server the kit starts)."""

from __future__ import annotations

import pytest

from qkdn_sdk.testing import ConformanceTarget, TransportConformance


class TestUnixTransport(TransportConformance):
    @pytest.fixture
    def target(self) -> ConformanceTarget:
        return ConformanceTarget(url="unix://")
