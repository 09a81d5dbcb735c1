"""Topology files (qkdn_sdk.network.topology): ETSI 014 at the KMs, on a link's modules, and
external ETSI 014 KMEs as a link's key source; every mistake is one line naming the entry."""

from __future__ import annotations

import re

import pytest

from qkdn_sdk.network import parse_topology
from qkdn_sdk.network.topology import TopologyError
from qkdn_sdk.roles.qkd_module import Kq1Mode
from qkdn_sdk.tls import TLSConfig

BASE = """
transport = "tcp+tls"
{top}
[controller]
id = "controller"

[[km]]
id = "km-b"

[[km]]
id = "km-c"

[[link]]
kms = ["km-b", "km-c"]
{link}
"""
KMES = (
    'kme.km-b = {url = "https://qkd-b:443", id = "qkd-b", sae_id = "sae-b", ca = "d/ca.pem", '
    'cert = "d/km-b.pem", key = "d/km-b.key"}\n'
    'kme.km-c = {url = "https://qkd-c:443"}'
)


def topology(top: str = "", link: str = 'secret_key_rate = 1000\nmode = "on-request"') -> str:
    return BASE.format(top=top, link=link)


def test_also_serves_interfaces_by_other_transports() -> None:
    spec = parse_topology(
        topology('also = {ak = ["https", "grpcs"], ck = ["grpcs"]}', link="secret_key_rate = 1")
    )
    assert [km.listen["ak@https"] for km in spec.kms] == ["https://127.0.0.1:0"] * 2
    config = spec.km_config("km-b", {})
    assert {key: config.listen[key] for key in ("ak@grpcs", "ck@grpcs")} == {
        "ak@grpcs": "grpcs://127.0.0.1:0",
        "ck@grpcs": "grpcs://127.0.0.1:0",
    }
    assert spec.controller_config().also_listen == ("grpcs://127.0.0.1:0",)
    assert set(parse_topology(topology()).kms[0].listen) == {"ak", "ck", "kq1", "kx"}


def test_a_link_of_014_modules() -> None:
    spec = parse_topology(
        topology(link='secret_key_rate = 1000\nmode = "on-request"\netsi014 = true')
    )
    assert spec.module_listen("km-b", "km-c") == "https://127.0.0.1:0"
    module = spec.module_config("km-b", "km-c", bytes(32), 0.0, listen_url="https://x:1")
    assert (module.km_id, module.peer_km_id) == ("km-b", "km-c")


def test_a_link_of_external_kmes() -> None:
    spec = parse_topology(topology(link=KMES))
    (link,) = spec.links
    assert link.mode is Kq1Mode.ON_REQUEST
    assert "km-b.km-c" not in spec.entities()  # no simulated module, no certificate for one
    (b_side,) = spec.km_config("km-b", {}).links
    assert (b_side.module_url, b_side.module_id, b_side.kme_pair) == (
        "https://qkd-b:443",
        "qkd-b",
        True,
    )
    assert b_side.sae_of_neighbour == "km-c"  # km-c's KME gave no sae_id: its KM ID
    assert b_side.tls == TLSConfig(ca="d/ca.pem", cert="d/km-b.pem", key="d/km-b.key")
    (c_side,) = spec.km_config("km-c", {}).links
    assert (c_side.sae_of_neighbour, c_side.tls) == ("sae-b", None)


def test_a_links_modules_hold_its_buffer_of_keys() -> None:
    default = parse_topology(topology())
    assert default.module_config("km-b", "km-c", bytes(32), 0.0, listen_url="x").buffer_keys == 256
    spec = parse_topology(topology(link="secret_key_rate = 1000\nbuffer_keys = 5000"))
    assert spec.module_config("km-c", "km-b", bytes(32), 0.0, km_url="x").buffer_keys == 5000


def test_a_links_modules_and_kms_use_its_hash_algorithm() -> None:
    default = parse_topology(topology())
    assert default.module_config("km-b", "km-c", bytes(32), 0.0, listen_url="x").hash_algorithm == (
        "sha256"
    )
    spec = parse_topology(topology(link='secret_key_rate = 1000\nhash_algorithm = "sha3_512"'))
    module = spec.module_config("km-c", "km-b", bytes(32), 0.0, km_url="x")
    assert module.hash_algorithm == "sha3_512"
    [link] = spec.km_config("km-c", {}).links
    assert link.hash_algorithm == "sha3_512"


@pytest.mark.parametrize(
    ("where", "entry"),
    [
        ("[controller]", "controller: unknown keys ['colour']"),
        ('id = "km-b"', "km 1: unknown keys ['colour']"),
        ('kms = ["km-b", "km-c"]', "link 1: unknown keys ['colour']"),
    ],
)
def test_a_key_no_table_has_is_refused(where: str, entry: str) -> None:
    text = topology().replace(where, f"{where}\ncolour = 1", 1)
    with pytest.raises(TopologyError, match=re.escape(entry)):
        parse_topology(text)
    application = topology() + '[[application]]\nid = "alice"\nkm = "km-b"\ncolour = 1\n'
    with pytest.raises(TopologyError, match=re.escape("application 1: unknown keys ['colour']")):
        parse_topology(application)


@pytest.mark.parametrize(
    ("top", "link", "problem"),
    [
        ('also = "https"', "secret_key_rate = 1", "also must be a table"),
        ('also = {ak = "https"}', "secret_key_rate = 1", "also: ak must be a list of schemes"),
        ('also = {az = ["https"]}', "secret_key_rate = 1", "unknown interface 'az@https'"),
        (
            'also = {ak = ["https"]}\ntransport = "memory"',
            "secret_key_rate = 1",
            "also: other transports need a TLS transport (tcp+tls or grpcs), not memory",
        ),
        ("", "secret_key_rate = 1\netsi014 = true", 'needs mode = "on-request"'),
        ("", "secret_key_rate = 1\nbuffer_keys = 0", "link 1: buffer_keys must be at least 1"),
        (
            "",
            'secret_key_rate = 1\nhash_algorithm = "md5"',
            "link 1: unknown hash algorithm 'md5': expected one of sha256, sha224",
        ),
        ("", "secret_key_rate = 1\nbuffer_keys = 1.5", "buffer_keys must be an integer, not 1.5"),
        ("", 'kme.km-b = {url = "https://b:1"}', "kme names one KME for each of"),
        (
            "",
            'kme.km-b = {url = "http://b:1"}\nkme.km-c = {url = "https://c:1"}',
            "kme km-b: url must be https://",
        ),
        (
            "",
            'kme.km-b = {url = "https://b:1", ca = "ca.pem"}\nkme.km-c = {url = "https://c:1"}',
            "give ca, cert and key together",
        ),
        (
            "",
            'kme.km-b = {url = "https://b:1", colour = 1}\nkme.km-c = {url = "https://c:1"}',
            "unknown keys ['colour']",
        ),
    ],
)
def test_mistakes_are_one_line(top: str, link: str, problem: str) -> None:
    text = topology(top, link)
    if 'transport = "memory"' in top:
        text = text.replace('transport = "tcp+tls"\n', "")
    with pytest.raises(TopologyError) as caught:
        parse_topology(text)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)
