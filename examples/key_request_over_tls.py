"""A toy KM and an application exchanging Ak messages over tcp+tls with mutual authentication.

    python examples/key_request_over_tls.py

Makes a development PKI in a temporary directory, serves a KM that answers key requests with
fresh random keys, and asks it for keys as application app-a. The roles of a real QKD network
(keys shared with a peer KM, never handed out twice) come with the reference KM; this shows the
message layer and the transport alone.
"""

from __future__ import annotations

import secrets
import tempfile
import uuid
from pathlib import Path

import trio

from qkdn_sdk.errors import FailureResponse, QkdnError
from qkdn_sdk.messages import Key, Message, ak
from qkdn_sdk.pki import dev_tls_config, write_dev_pki
from qkdn_sdk.transport import Connection, ServerInfo, connect, serve

MAX_KEYS = 8


async def km(message: Message, connection: Connection) -> Message | None:
    """The KM's handler: the peer's ID comes from its certificate, not from the message."""
    if not isinstance(message, ak.KeyRequest):
        raise FailureResponse(
            f"this toy KM only answers key requests, not {message.spec_name}", None
        )
    number = message.number_of_keys or 1
    if number > MAX_KEYS:
        raise QkdnError(f"at most {MAX_KEYS} keys per request")  # the answer says "failure: ..."
    size = message.size_of_key or 256
    peer, destination = connection.peer_id, message.application_destination_id
    print(f"KM: {peer} asks {number} keys of {size} bits for {destination}")
    keys = [
        Key(key=secrets.token_bytes(size // 8), key_id=str(uuid.uuid4())) for _ in range(number)
    ]
    return ak.ResponseToKeyRequest(keys=keys, response="success")


async def main(directory: Path) -> None:
    write_dev_pki(directory, "example-ca", ["km-a", "app-a"])
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            lambda task_status: serve(
                "tcp+tls://127.0.0.1:0",
                km,
                tls=dev_tls_config(directory, "km-a"),
                task_status=task_status,
            )
        )
        async with connect(info.url, tls=dev_tls_config(directory, "app-a")) as connection:
            print(f"app: connected to {connection.peer_id} at {info.url}")
            response = await connection.request(
                ak.KeyRequest(application_destination_id="app-b", number_of_keys=2, size_of_key=256)
            )
            assert isinstance(response, ak.ResponseToKeyRequest)
            for key in response.keys:
                print(f"app: got key {key.key_id} ({len(key.key) * 8} bits)")  # never print key.key
            try:
                await connection.request(
                    ak.KeyRequest(application_destination_id="app-b", number_of_keys=100)
                )
            except FailureResponse as error:
                print(f"app: refused: {error.reason}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as pki:
        trio.run(main, Path(pki))
