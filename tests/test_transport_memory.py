"""The conformance kit on the built-in memory:// transport."""

from __future__ import annotations

import pytest

from qkdn_sdk.testing import ConformanceTarget, TransportConformance


class TestMemoryTransport(TransportConformance):
    @pytest.fixture
    def target(self) -> ConformanceTarget:
        return ConformanceTarget(url="memory://km-a")
