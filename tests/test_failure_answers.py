"""Which answer each failed request gets (the last column of docs/reference/messages.md): its
own response type holding what the request gave, or an error indication where that table
cannot say it. Checked over a real connection for every request of every interface."""

from __future__ import annotations

import attrs
import pytest
import trio

from qkdn_sdk.catalogue import failure_answer
from qkdn_sdk.errors import FailureResponse, QkdnError
from qkdn_sdk.messages import Message, all_messages, example, mgmt
from qkdn_sdk.transport import Connection, connect, serve

REQUESTS = [cls for cls in all_messages() if cls.response_type() is not None]


async def refuse(message: Message, connection: Connection) -> Message | None:
    raise QkdnError("refused for the test")


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda cls: f"0x{cls.code:04X}")
async def test_a_refused_request_gets_the_documented_answer(cls: type[Message]) -> None:
    request = example(cls)
    async with trio.open_nursery() as nursery:
        info = await nursery.start(
            lambda task_status: serve(
                f"memory://failure-{cls.code:04x}",
                refuse,
                identity="server",
                task_status=task_status,
            )
        )
        async with connect(info.url, identity="peer") as connection:
            with pytest.raises(FailureResponse) as caught:
                await connection.request(request, timeout=5)
        nursery.cancel_scope.cancel()
    answer = caught.value.response
    assert type(answer) is failure_answer(cls)
    assert caught.value.reason.startswith("failure")  # the handler's, or the claims check's
    if not isinstance(answer, mgmt.ErrorIndication):  # it holds the IDs the request gave
        given = attrs.asdict(request, recurse=False)
        for name in ("session_id", "key_relay_request_id", "key_id"):
            if isinstance(given.get(name), str) and hasattr(answer, name):
                assert getattr(answer, name) == given[name], name
