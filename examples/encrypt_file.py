"""alice encrypts a file for bob with a QKD key (AES-256-GCM); bob gets the key by its ID and
decrypts it. Both are applications of a running network (``qkdn network up``):

    python examples/encrypt_file.py state/endpoints.json encrypt report.pdf report.sealed
    python examples/encrypt_file.py state/endpoints.json decrypt report.sealed report.out

The sealed file carries the key's ID (it is not secret), the nonce and the ciphertext; the key
itself travels only through the QKD network, relayed by the KMs between alice's and bob's.
"""

import json
import os
import sys
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.tls import TLSConfig

KEY_ID_LENGTH = 36  # the KMs' key IDs are UUIDs
NONCE_LENGTH = 12


def connect(endpoints_file: Path, app: str) -> AbstractAsyncContextManager[KeyManagerClient]:
    """A connection of ``app`` to its KM's Ak interface, over mutual TLS."""
    endpoints = json.loads(endpoints_file.read_text())
    here, mine = endpoints_file.parent, endpoints["apps"][app]
    url = endpoints["kms"][mine["km"]]["ak"]["tcp+tls"]
    tls = TLSConfig(ca=here / endpoints["ca"], cert=here / mine["cert"], key=here / mine["key"])
    return KeyManagerClient.connect(url, tls=tls)


async def encrypt(endpoints: Path, plain: Path, sealed: Path) -> None:
    async with connect(endpoints, "alice") as km:
        [key] = await km.get_keys("bob", number=1, size=256)
    key_id = key.key_id.encode("ascii")
    assert len(key_id) == KEY_ID_LENGTH
    nonce = os.urandom(NONCE_LENGTH)
    ciphertext = AESGCM(key.key).encrypt(nonce, plain.read_bytes(), key_id)
    sealed.write_bytes(key_id + nonce + ciphertext)
    print(f"alice sealed {plain} with key {key.key_id}")


async def decrypt(endpoints: Path, sealed: Path, plain: Path) -> None:
    data = sealed.read_bytes()
    key_id, nonce = data[:KEY_ID_LENGTH], data[KEY_ID_LENGTH : KEY_ID_LENGTH + NONCE_LENGTH]
    async with connect(endpoints, "bob") as km:
        [key] = await km.get_keys_with_ids("alice", [key_id.decode("ascii")])
    plain.write_bytes(AESGCM(key.key).decrypt(nonce, data[KEY_ID_LENGTH + NONCE_LENGTH :], key_id))
    print(f"bob opened {sealed} with key {key.key_id}")


def main() -> None:
    steps = {"encrypt": encrypt, "decrypt": decrypt}
    if len(sys.argv) != 5 or sys.argv[2] not in steps:
        sys.exit(f"usage: {sys.argv[0]} ENDPOINTS encrypt|decrypt SOURCE TARGET")
    endpoints, action, source, target = sys.argv[1:]
    trio.run(steps[action], Path(endpoints), Path(source), Path(target))


if __name__ == "__main__":
    main()
