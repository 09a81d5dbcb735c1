"""alice and bob get the same key from their KMs over ETSI GS QKD 014 with a plain HTTP client
(httpx): no SDK, only the standard's three URLs and mutual TLS. Against a running network
(``qkdn network up``):

    python examples/etsi014_httpx.py state/endpoints.json

Any 014 client does the same: a KM's ``"https"`` URL in ``endpoints.json`` is its 014 base URL,
the application's certificate says who it is (the SAE ID), the KM's who the KM is.
"""

import json
import ssl
import sys
from pathlib import Path

import httpx

ENDPOINTS = Path(sys.argv[1] if len(sys.argv) > 1 else "state/endpoints.json")


def kme(app: str) -> httpx.Client:
    """An HTTPS client of ``app``'s KM (its KME), presenting ``app``'s certificate."""
    endpoints = json.loads(ENDPOINTS.read_text())
    here, mine = ENDPOINTS.parent, endpoints["apps"][app]
    context = ssl.create_default_context(cafile=here / endpoints["ca"])
    context.load_cert_chain(here / mine["cert"], here / mine["key"])
    return httpx.Client(base_url=endpoints["kms"][mine["km"]]["ak"]["https"], verify=context)


with kme("alice") as alice:
    status = alice.get("/api/v1/keys/bob/status").raise_for_status().json()
    print(f"alice's KME {status['source_KME_ID']} reaches bob's {status['target_KME_ID']}")
    container = alice.get("/api/v1/keys/bob/enc_keys", params={"number": 2, "size": 256})
    keys = container.raise_for_status().json()["keys"]

with kme("bob") as bob:
    asked = {"key_IDs": [{"key_ID": key["key_ID"]} for key in keys]}
    same = bob.post("/api/v1/keys/alice/dec_keys", json=asked).raise_for_status().json()["keys"]

assert same == keys, "bob's KME gave other keys"
for key in keys:
    print(f"alice and bob share key {key['key_ID']}")  # never print key["key"]
