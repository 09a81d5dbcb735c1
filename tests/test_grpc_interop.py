"""A stock grpcio client built from ``qkdn.proto`` alone gets keys from a running KM.

The client is a separate Python process in isolated mode that imports nothing of this SDK:
``grpc_tools.protoc`` compiles the shipped ``qkdn.proto`` into a temporary directory, and the
generated ``AkStub`` sends alice's key request to km-a of line3 over grpcs, as a program in any
language gRPC supports would. bob then fetches the same keys by ID with the SDK's client.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import qkdn_grpc
import trio

from tests.test_network import client, ids, ready, relay_bits, running

PROTO = Path(qkdn_grpc.__file__).parent / "qkdn.proto"

CLIENT = textwrap.dedent(
    """
    import sys

    import grpc

    out, ca, cert, key, target = sys.argv[1:]
    sys.path.insert(0, out)
    import qkdn_pb2
    import qkdn_pb2_grpc

    credentials = grpc.ssl_channel_credentials(
        open(ca, "rb").read(), open(key, "rb").read(), open(cert, "rb").read()
    )
    with grpc.secure_channel(target, credentials) as channel:
        request = qkdn_pb2.AkKeyRequest(
            application_destination_id="bob", number_of_keys=2, size_of_key=256
        )
        response = qkdn_pb2_grpc.AkStub(channel).KeyRequest(request, timeout=20)
    print(response.response)
    for key in response.keys:
        print(key.key_id, key.key.hex())
    sdk = ("qkdn_sdk", "qkdn_grpc", "qkdn_tcp", "qkdn_https")
    print("sdk imported:", any(name.split(".")[0] in sdk for name in sys.modules))
    """
)


async def test_a_grpcio_client_from_the_proto_alone_gets_keys(tmp_path: Path) -> None:
    out = tmp_path / "generated"
    out.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO.parent}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            PROTO.name,
        ],
        check=True,
    )
    script = tmp_path / "client.py"
    script.write_text(CLIENT, encoding="utf-8")
    async with running(tmp_path, "grpcs") as network:
        await ready(network, relay_bits(2, 256))
        tls = network.tls("alice")
        assert tls is not None
        target = network.endpoints()["kms"]["km-a"]["ak"]["grpcs"].removeprefix("grpcs://")
        files = [str(tls.ca), str(tls.cert), str(tls.key)]
        result = await trio.run_process(
            [sys.executable, "-I", str(script), str(out), *files, target],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        lines = result.stdout.decode().splitlines()
        assert lines[0] == "success"
        assert lines[-1] == "sdk imported: False"
        got = {key_id: bytes.fromhex(key) for key_id, key in (line.split() for line in lines[1:-1])}
        assert len(got) == 2
        assert all(len(key) == 32 for key in got.values())
        async with client(network, "bob") as bob:
            same = await bob.get_keys_with_ids("alice", list(got))
        assert {key.key_id: key.key for key in same} == got
        assert ids(same) == list(got)
