"""A KM whose link keys come from QKD devices speaking ETSI GS QKD 014.

    alice -- km-a ==== km-b ---- km-c -- bob
                       dev-b ~~~~ dev-c     (two 014 KMEs: the ends of a QKD device pair)

    python examples/qkd_device_014.py [STATE_DIR]

Most QKD devices hand out their keys over ETSI 014: the KM is an SAE of its device, km-b gets
keys with Get key and names them to km-c in the key ID synchronisation, and km-c fetches the
same keys from its own device with Get key with key IDs. The link's `kme` entries in the
topology say where each device is and which certificate the KM presents to it (a device usually
has a PKI of its own). Here two toy devices stand in for real ones (the SDK's https transport, a
handler handing out random keys); for real ones, put their URLs and TLS files in the topology.
"""

import functools
import secrets
import sys
import tempfile
import uuid
from pathlib import Path

import trio

from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.messages import Interface, Key, Message, Role, kq1, received_by
from qkdn_sdk.network import Network, parse_topology
from qkdn_sdk.pki import dev_tls_config, write_dev_pki
from qkdn_sdk.transport import Connection, serve

TOPOLOGY = """
transport = "tcp+tls"
host = "127.0.0.1"
[controller]
id = "controller"
[[km]]
id = "km-a"
[[km]]
id = "km-b"
[[km]]
id = "km-c"
[[link]]
kms = ["km-a", "km-b"]
secret_key_rate = 256_000
[[link]]
kms = ["km-b", "km-c"]
key_size = 256
kme.km-b = {{url = "{url_b}", id = "dev-b", ca = "{ca}", cert = "{cert_b}", key = "{key_b}"}}
kme.km-c = {{url = "{url_c}", id = "dev-c", ca = "{ca}", cert = "{cert_c}", key = "{key_c}"}}
[[application]]
id = "alice"
km = "km-a"
[[application]]
id = "bob"
km = "km-c"
"""


DEVICE_RECEIVES = frozenset(
    cls for cls in received_by(Role.QKD_MODULE) if cls.interface is not Interface.CQ
)
"""What a device answers: the Kq-1 messages a QKD module receives (not the controller's)."""


class DevicePair:
    """Two toy 014 KMEs of one QKD link: what dev-b hands out, dev-c hands out by ID."""

    def __init__(self) -> None:
        self.waiting: dict[str, bytes] = {}

    async def handle(self, device: str, message: Message, connection: Connection) -> Message:
        if isinstance(message, kq1.StatusRequest):
            return kq1.Status(
                source_kme_id=device,
                target_kme_id="dev-c" if device == "dev-b" else "dev-b",
                master_sae_id=connection.peer_id or "",
                slave_sae_id=message.slave_sae_id,
                key_size=256,
                stored_key_count=1000,
                max_key_count=1000,
                max_key_per_request=16,
                max_key_size=256,
                min_key_size=256,
                max_sae_id_count=0,
            )
        if isinstance(message, kq1.KeyRequest):  # Get key, at dev-b
            keys = [
                Key(key=secrets.token_bytes(32), key_id=str(uuid.uuid4()))
                for _ in range(message.number_of_keys or 1)
            ]
            self.waiting.update((key.key_id, key.key) for key in keys)
            return kq1.ResponseToKeyRequest(keys=keys, response="success")
        assert isinstance(message, kq1.KeyRequestWithKeyIds)  # Get key with key IDs, at dev-c
        keys = [Key(key=self.waiting.pop(k.key_id), key_id=k.key_id) for k in message.key_ids]
        return kq1.ResponseToKeyRequest(keys=keys, response="success")


async def main(state_dir: Path) -> None:
    pki = state_dir.parent / "devices"  # the devices' own PKI: certificates for them and the KMs
    write_dev_pki(pki, "device-ca", ["dev-b", "dev-c", "km-b", "km-c"])
    pair = DevicePair()
    async with trio.open_nursery() as nursery:
        urls = {}
        for device in ("dev-b", "dev-c"):
            info = await nursery.start(
                functools.partial(
                    serve,
                    "https://127.0.0.1:0",
                    functools.partial(pair.handle, device),
                    tls=dev_tls_config(pki, device),
                    accepts=DEVICE_RECEIVES,  # 014 as Kq-1 (Q.4162 Appendix II), not Ak
                )
            )
            urls[device] = info.url
        b, c = dev_tls_config(pki, "km-b"), dev_tls_config(pki, "km-c")
        topology = parse_topology(
            TOPOLOGY.format(
                url_b=urls["dev-b"],
                url_c=urls["dev-c"],
                ca=b.ca,
                cert_b=b.cert,
                key_b=b.key,
                cert_c=c.cert,
                key_c=c.key,
            )
        )
        network = Network(topology, state_dir, store="memory")
        endpoints = await nursery.start(network.run)
        await network.wait_for_keys()
        print("km-b and km-c hold link key from dev-b and dev-c")

        def ak_url(km_id: str) -> str:
            return endpoints["kms"][km_id]["ak"]["tcp+tls"]

        async with KeyManagerClient.connect(ak_url("km-a"), tls=network.tls("alice")) as alice:
            keys = await alice.get_keys("bob", number=2, size=256)
        async with KeyManagerClient.connect(ak_url("km-c"), tls=network.tls("bob")) as bob:
            same = await bob.get_keys_with_ids("alice", [key.key_id for key in keys])
        assert same == keys
        print(f"alice and bob share {len(same)} keys, relayed over the devices' link")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as directory:
            trio.run(main, Path(directory) / "state")
