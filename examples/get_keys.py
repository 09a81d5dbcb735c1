"""alice and bob, two applications of a running network, share keys (Q.4161 clause 7.1)."""

import json
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio

from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.tls import TLSConfig

# Written by `qkdn network up TOPOLOGY --state-dir state`; its paths are relative to it.
ENDPOINTS = Path(sys.argv[1] if len(sys.argv) > 1 else "state/endpoints.json")


def connect(app: str) -> AbstractAsyncContextManager[KeyManagerClient]:
    """A connection of ``app`` to its KM's Ak interface, over mutual TLS."""
    endpoints = json.loads(ENDPOINTS.read_text())
    here, mine = ENDPOINTS.parent, endpoints["apps"][app]
    url = endpoints["kms"][mine["km"]]["ak"]["tcp+tls"]
    tls = TLSConfig(ca=here / endpoints["ca"], cert=here / mine["cert"], key=here / mine["key"])
    return KeyManagerClient.connect(url, tls=tls)


async def main() -> None:
    async with connect("alice") as km:
        keys = await km.get_keys("bob", number=2, size=256)  # send [k.key_id ...] to bob
    async with connect("bob") as km:
        same = await km.get_keys_with_ids("alice", [k.key_id for k in keys])
    assert same == keys
    for key in same:
        print(f"alice and bob share key {key.key_id} ({key.size} bits)")  # never print key.key


trio.run(main)
