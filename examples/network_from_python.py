"""Start a QKD network from Python, get keys through it, and stop it: what ``qkdn network up``
does, inside a program (a test harness, a notebook, a simulation).

    python examples/network_from_python.py [STATE_DIR]

The network is ``examples/topologies/line3.toml``; its PKI and key stores go to STATE_DIR (a
temporary directory by default), its roles listen on loopback, and all of them stop when the
nursery is cancelled.
"""

import sys
import tempfile
from pathlib import Path

import trio

from qkdn_sdk.client import KeyManagerClient
from qkdn_sdk.network import Network, load_topology

LINE3 = Path(__file__).parent / "topologies" / "line3.toml"


async def main(state_dir: Path) -> None:
    network = Network(load_topology(LINE3), state_dir, store="memory")
    async with trio.open_nursery() as nursery:
        endpoints = await nursery.start(network.run)  # every role serves: what endpoints.json says
        await network.wait_for_keys()  # every QKD link has key
        print(f"line3 up: {', '.join(network.kms)} with {len(network.modules)} QKD modules")

        def ak_url(km_id: str) -> str:
            return endpoints["kms"][km_id]["ak"]["tcp+tls"]

        async with KeyManagerClient.connect(ak_url("km-a"), tls=network.tls("alice")) as alice:
            keys = await alice.get_keys("bob", number=3, size=256)
        async with KeyManagerClient.connect(ak_url("km-c"), tls=network.tls("bob")) as bob:
            same = await bob.get_keys_with_ids("alice", [key.key_id for key in keys])
        assert same == keys
        print(f"alice and bob share {len(same)} keys, relayed by km-b")

        nursery.cancel_scope.cancel()  # stops every role
    print("line3 stopped")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as directory:
            trio.run(main, Path(directory) / "state")
