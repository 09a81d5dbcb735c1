"""``qkdn network show``: a topology drawn as text, Mermaid and SVG (qkdn_sdk.network.picture), and
the drawing in docs/roles.md kept identical to what the command prints."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qkdn_sdk.network import load_topology
from qkdn_sdk.network.picture import as_mermaid, as_svg, as_text, picture_of, render

ROOT = Path(__file__).parent.parent
LINE3 = ROOT / "examples" / "topologies" / "line3.toml"
RING4 = ROOT / "examples" / "topologies" / "ring4.toml"


def show(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qkdn_sdk", "network", "show", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_text_names_every_part_and_each_links_rate_and_mode() -> None:
    assert as_text(picture_of(load_topology(LINE3))) == (
        "controller controller: routes for km-a, km-b, km-c\n"
        "km-a ==== km-b  (256 kbit/s, proactive)\n"
        "km-b ==== km-c  (256 kbit/s, on-request)\n"
        "alice -- km-a\n"
        "bob -- km-c\n"
    )


def test_levels_replace_the_rates_when_known() -> None:
    levels = {("km-a", "km-b"): 4096, ("km-b", "km-a"): 2048}
    text = as_text(picture_of(load_topology(LINE3), levels))
    assert "km-a ==== km-b  (km-a: 4,096 bits, km-b: 2,048 bits)" in text
    assert "km-b ==== km-c  (km-b: 0 bits, km-c: 0 bits)" in text


def test_mermaid_has_a_node_per_part_and_an_edge_per_link() -> None:
    mermaid = as_mermaid(picture_of(load_topology(RING4)))
    assert mermaid.startswith("flowchart LR\n")
    links = re.findall(r"km_(\S+) ===\|\"[^\"]+\"\| km_(\S+)", mermaid)
    assert links == [
        ("km_a", "km_b"),
        ("km_b", "km_c"),
        ("km_c", "km_d"),
        ("km_d", "km_a"),
    ]
    assert mermaid.count(" -.- ") == 4  # the controller's Ck to each KM


def test_svg_is_standalone_xml_naming_every_part() -> None:
    topology = load_topology(RING4)
    svg = ET.fromstring(as_svg(picture_of(topology)))
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {element.text for element in svg.iter("{http://www.w3.org/2000/svg}text")}
    names = {km.id for km in topology.kms} | {app.id for app in topology.applications}
    assert names | {"controller"} <= texts
    assert not list(svg.iter("{http://www.w3.org/2000/svg}script"))
    assert "href" not in as_svg(picture_of(topology))


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="'png' is not a format: choose text, mermaid, svg"):
        render(picture_of(load_topology(LINE3)), "png")


def test_the_docs_drawing_is_what_the_command_prints() -> None:
    docs = (ROOT / "docs" / "roles.md").read_text()
    marker = "<!-- qkdn network show examples/topologies/line3.toml --format mermaid -->\n"
    block = docs.split(marker, 1)[1].split("```mermaid\n", 1)[1].split("```", 1)[0]
    done = show(str(LINE3), "--format", "mermaid")
    assert done.returncode == 0, done.stderr
    assert block == done.stdout


def test_the_command_refuses_a_format_and_a_missing_file_in_one_line(tmp_path: Path) -> None:
    done = show(str(LINE3), "--format", "png")
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "'png' is not a format: choose text, mermaid, svg" in done.stderr
    done = show(str(tmp_path / "missing.toml"))
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1
