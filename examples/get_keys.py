"""alice and bob, two applications of a running network, share keys (Q.4161 clause 7.1)."""

import json
import sys
from pathlib import Path

import trio

from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.tls import TLSConfig

ENDPOINTS = Path(sys.argv[1] if len(sys.argv) > 1 else "state/endpoints.json")
endpoints, here = json.loads(ENDPOINTS.read_text()), ENDPOINTS.parent  # `qkdn network up` wrote it


def connect(app: str):  # the app's connection to its KM, mutual TLS with the app's certificate
    mine = endpoints["apps"][app]
    tls = TLSConfig(ca=here / endpoints["ca"], cert=here / mine["cert"], key=here / mine["key"])
    return KeyManagerClient.connect(endpoints["kms"][mine["km"]]["ak"]["tcp+tls"], tls=tls)


async def main() -> None:
    async with connect("alice") as km:
        keys = await km.get_keys("bob", number=2, size=256)  # then alice tells bob their IDs
    async with connect("bob") as km:
        assert await km.get_keys_with_ids("alice", [key.key_id for key in keys]) == keys
    for key in keys:
        print(f"alice and bob share key {key.key_id} ({key.size} bits)")  # never print key.key


trio.run(main)
