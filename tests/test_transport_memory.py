"""The conformance kit on the built-in memory:// transport."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from qkdn_sdk.testing import ConformanceTarget, HostilePeerConformance
from qkdn_sdk.transport import FramedConnection, Limits
from qkdn_sdk.transport._memory import MemoryTransport


class TestMemoryTransport(HostilePeerConformance):
    @pytest.fixture
    def target(self) -> ConformanceTarget:
        return ConformanceTarget(url="memory://km-a")


@pytest.mark.parametrize(
    ("is_client", "first", "last"), [(True, 1, 0xFFFF_FFFF), (False, 2, 0xFFFF_FFFE)]
)
def test_message_ids_keep_to_their_parity_and_wrap(is_client: bool, first: int, last: int) -> None:
    """The connecting side numbers its messages 1, 3, 5..., the accepting side 2, 4, 6...; at
    the 4-byte limit the numbering starts again."""
    stream, _ = trio.testing.memory_stream_pair()
    connection = FramedConnection(
        stream, transport=MemoryTransport(), is_client=is_client, handler=None, limits=Limits()
    )
    assert [connection._take_message_id() for _ in range(3)] == [first, first + 2, first + 4]
    connection._next_id = last
    assert connection._take_message_id() == last
    assert connection._take_message_id() == first
