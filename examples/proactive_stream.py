"""alice streams messages to bob, each sealed with a QKD key (AES-256-GCM), a new key every few
messages; bob's KM pushes him the keys of their session (Q.4161 clause 7.2, proactive key
supply), and bob opens each message with the key its header names. Against a running network
(``qkdn network up``):

    python examples/proactive_stream.py state/endpoints.json [MESSAGES] [PER_KEY]

The messages go from alice to bob over a trio memory channel here, standing for any channel
(the network carries only keys): each is ``key ID (36 bytes) | nonce (12) | ciphertext``.
"""

import json
import os
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qkdn_sdk.client import KeyManagerClient, SuppliedKey
from qkdn_sdk.tls import TLSConfig

ENDPOINTS = Path(sys.argv[1] if len(sys.argv) > 1 else "state/endpoints.json")
MESSAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 12
PER_KEY = int(sys.argv[3]) if len(sys.argv) > 3 else 4  # messages sealed with one key


def connect(app: str) -> AbstractAsyncContextManager[KeyManagerClient]:
    """A connection of ``app`` to its KM's Ak interface, over mutual TLS."""
    endpoints = json.loads(ENDPOINTS.read_text())
    here, mine = ENDPOINTS.parent, endpoints["apps"][app]
    url = endpoints["kms"][mine["km"]]["ak"]["tcp+tls"]
    tls = TLSConfig(ca=here / endpoints["ca"], cert=here / mine["cert"], key=here / mine["key"])
    return KeyManagerClient.connect(url, tls=tls)


async def alice(bob_listens: trio.Event, channel: trio.MemorySendChannel[bytes]) -> None:
    await bob_listens.wait()  # the KM pushes the session's keys to bob's open connection
    async with connect("alice") as km, channel:
        session = await km.create_session("bob")
        key: SuppliedKey | None = None
        for number in range(MESSAGES):
            if number % PER_KEY == 0:  # rotate: the next key of the session
                [key] = await session.get_keys(1, 256)
            assert key is not None
            nonce = os.urandom(12)
            header = key.key_id.encode("ascii")
            text = f"message {number}".encode()
            await channel.send(header + nonce + AESGCM(key.key).encrypt(nonce, text, header))
        await session.end()


async def bob(listening: trio.Event, channel: trio.MemoryReceiveChannel[bytes]) -> None:
    keys: dict[str, bytes] = {}
    async with connect("bob") as km, channel:
        listening.set()
        async for sealed in channel:
            key_id = sealed[:36].decode("ascii")
            while key_id not in keys:  # pushed by bob's KM: wait for it
                pushed = await km.proactive_keys.receive()
                keys[pushed.key_id] = pushed.key
            text = AESGCM(keys[key_id]).decrypt(sealed[36:48], sealed[48:], sealed[:36])
            print(f"bob read {text.decode()!r} with key {key_id}")
    print(f"bob used {len(keys)} keys for {MESSAGES} messages")


async def main() -> None:
    send, receive = trio.open_memory_channel[bytes](0)
    listening = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bob, listening, receive)
        nursery.start_soon(alice, listening, send)


if __name__ == "__main__":
    trio.run(main)
