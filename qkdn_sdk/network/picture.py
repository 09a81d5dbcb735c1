"""A picture of a QKD network: its controller, KMs, QKD links and applications, as text, as a
Mermaid flowchart (which GitHub and mkdocs draw) or as a standalone SVG.

:func:`picture_of` reads what to draw from a :class:`~qkdn_sdk.network.topology.Topology`: each
QKD link labelled with its secret key rate and Kq-1 mode, or, when the caller knows them (a
running network's levels), with the link key each end holds. The renderers take the
:class:`Picture` only, so the same drawing comes from a file or from a running network.

The SVG is laid out without a graph library: KMs in columns by their hop count from the first
KM (a breadth-first walk over the QKD links), applications under their KM, the controller above.
That suits the lines, rings and small meshes of QKD networks; it does not avoid every crossing.
"""

from __future__ import annotations

import enum
import html
import re
from collections.abc import Mapping, Sequence

import attrs

from qkdn_sdk.network.topology import Topology

__all__ = [
    "FORMATS",
    "Format",
    "Picture",
    "as_mermaid",
    "as_svg",
    "as_text",
    "live_picture",
    "picture_of",
    "render",
]


class Format(enum.Enum):
    """What :func:`render` draws."""

    TEXT = "text"
    MERMAID = "mermaid"
    SVG = "svg"


FORMATS = tuple(form.value for form in Format)
"""The names of the :class:`Format` values, as :func:`render` takes them."""


@attrs.frozen
class Link:
    """A QKD link between two KMs, with what to say of it."""

    kms: tuple[str, str]
    label: str


@attrs.frozen
class Picture:
    """What a drawing of a network shows."""

    controller: str
    kms: tuple[str, ...]
    links: tuple[Link, ...]
    applications: tuple[tuple[str, str], ...]
    """``(application, its KM)``."""


def _rate(bits_per_second: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:.3g} {unit}"
    return f"{bits_per_second:.3g} bit/s"


def picture_of(topology: Topology, levels: Mapping[tuple[str, str], int] | None = None) -> Picture:
    """The picture of ``topology``. Each QKD link is labelled with its secret key rate and mode,
    or, with ``levels`` (``{(km, neighbour): bits}``, the link key ``km`` holds to send to
    ``neighbour``), with the key each end holds."""
    links = []
    for link in topology.links:
        a, b = link.kms
        if levels is not None:
            label = _levels(a, b, levels)
        else:
            source = "ETSI 014 KMEs" if link.kmes else link.mode.value
            label = f"{_rate(link.secret_key_rate)}, {source}"
        links.append(Link(kms=(a, b), label=label))
    return Picture(
        controller=topology.controller_id,
        kms=tuple(km.id for km in topology.kms),
        links=tuple(links),
        applications=tuple((app.id, app.km) for app in topology.applications),
    )


def _levels(a: str, b: str, levels: Mapping[tuple[str, str], int]) -> str:
    return f"{a}: {levels.get((a, b), 0):,} bits, {b}: {levels.get((b, a), 0):,} bits"


def live_picture(
    controller: str,
    kms: Sequence[str],
    applications: Mapping[str, str],
    levels: Mapping[tuple[str, str], int],
) -> Picture:
    """The picture of a running network: its links are the pairs of ``levels`` (``{(km,
    neighbour): bits}``, the link key ``km`` holds to send to ``neighbour``, as its metrics
    say), each labelled with the key both ends hold; ``applications`` maps each to its KM."""
    pairs = sorted({(min(end), max(end)) for end in levels})
    return Picture(
        controller=controller,
        kms=tuple(kms),
        links=tuple(Link(kms=(a, b), label=_levels(a, b, levels)) for a, b in pairs),
        applications=tuple(applications.items()),
    )


def as_text(picture: Picture) -> str:
    """One line per part: the controller and the KMs it routes for, each QKD link (``====``),
    each application and its KM (``--``)."""
    lines = [f"controller {picture.controller}: routes for {', '.join(picture.kms)}"]
    lines += [f"{link.kms[0]} ==== {link.kms[1]}  ({link.label})" for link in picture.links]
    lines += [f"{app} -- {km}" for app, km in picture.applications]
    return "\n".join(lines) + "\n"


def _node_id(kind: str, name: str) -> str:
    """A Mermaid node ID: letters, digits and underscores only, unique across kinds."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9]', '_', name)}"


def _label(text: str) -> str:
    # Mermaid labels in double quotes; a quote inside is written as its entity
    return '"' + text.replace('"', "#quot;") + '"'


def as_mermaid(picture: Picture) -> str:
    """A Mermaid flowchart: KMs as boxes, QKD links as thick lines labelled with their rate or
    levels, applications as rounded boxes, the controller as a hexagon with dotted lines (Ck)."""
    lines = ["flowchart LR"]
    controller = _node_id("controller", picture.controller)
    lines.append(f"    {controller}{{{{{_label(picture.controller)}}}}}")
    for km in picture.kms:
        lines.append(f"    {_node_id('km', km)}[{_label(km)}]")
    for app, _ in picture.applications:
        lines.append(f"    {_node_id('app', app)}({_label(app)})")
    for link in picture.links:
        a, b = (_node_id("km", km) for km in link.kms)
        lines.append(f"    {a} ===|{_label(link.label)}| {b}")
    for app, km in picture.applications:
        lines.append(f"    {_node_id('app', app)} --- {_node_id('km', km)}")
    for km in picture.kms:
        lines.append(f"    {controller} -.- {_node_id('km', km)}")
    return "\n".join(lines) + "\n"


# --- SVG -------------------------------------------------------------------------------------

_COLUMN = 220
_ROW = 110
_MARGIN = 60
_BOX = (96, 36)


def _columns(picture: Picture) -> dict[str, tuple[int, int]]:
    """``{km: (column, row)}``: columns by hop count from the first KM of each connected part."""
    neighbours: dict[str, list[str]] = {km: [] for km in picture.kms}
    for link in picture.links:
        a, b = link.kms
        neighbours[a].append(b)
        neighbours[b].append(a)
    place: dict[str, tuple[int, int]] = {}
    rows: dict[int, int] = {}
    start_column = 0
    for first in picture.kms:
        if first in place:
            continue
        queue = [(first, start_column)]
        seen = {first}
        while queue:
            km, column = queue.pop(0)
            place[km] = (column, rows.get(column, 0))
            rows[column] = rows.get(column, 0) + 1
            for other in neighbours[km]:
                if other not in seen:
                    seen.add(other)
                    queue.append((other, column + 1))
        start_column = max(column for column, _ in place.values()) + 1
    return place


def as_svg(picture: Picture) -> str:
    """A standalone SVG drawing (no scripts, no external references)."""
    place = _columns(picture)
    apps_of: dict[str, list[str]] = {}
    for app, km in picture.applications:
        apps_of.setdefault(km, []).append(app)
    rows = max((row for _, row in place.values()), default=0) + 1
    columns = max((column for column, _ in place.values()), default=0) + 1
    app_rows = max((len(apps) for apps in apps_of.values()), default=0)

    def centre(km: str) -> tuple[float, float]:
        column, row = place[km]
        return _MARGIN + _BOX[0] / 2 + column * _COLUMN, 2 * _ROW + row * _ROW * (1 + app_rows)

    width = 2 * _MARGIN + _BOX[0] + (columns - 1) * _COLUMN
    height = 3 * _ROW + (rows - 1) * _ROW * (1 + app_rows) + app_rows * _ROW
    parts: list[str] = []
    controller = (width / 2, _ROW / 2 + 10)
    for km in picture.kms:  # Ck, under everything else
        x, y = centre(km)
        parts.append(_line(controller, (x, y), 'stroke="#999" stroke-dasharray="4 4"'))
    for link in picture.links:
        (x1, y1), (x2, y2) = centre(link.kms[0]), centre(link.kms[1])
        parts.append(_line((x1, y1), (x2, y2), 'stroke="#1f5fa8" stroke-width="5"'))
        parts.append(_text(((x1 + x2) / 2, (y1 + y2) / 2 - 10), link.label, 'font-size="11"'))
    for km in picture.kms:
        x, y = centre(km)
        for index, app in enumerate(apps_of.get(km, ())):
            ay = y + (index + 1) * _ROW * 0.8
            parts.append(_line((x, y), (x, ay), 'stroke="#444"'))
            parts.append(_box((x, ay), app, 'fill="#eef7ee" stroke="#2e7d32"', rounded=True))
        parts.append(_box((x, y), km, 'fill="#e8f0fb" stroke="#1f5fa8"'))
    parts.append(_box(controller, picture.controller, 'fill="#f6f0e6" stroke="#8a5a00"'))
    body = "\n".join(f"  {part}" for part in parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif">\n{body}\n</svg>\n'
    )


def _line(a: tuple[float, float], b: tuple[float, float], style: str) -> str:
    return f'<line x1="{a[0]:.0f}" y1="{a[1]:.0f}" x2="{b[0]:.0f}" y2="{b[1]:.0f}" {style}/>'


def _text(at: tuple[float, float], text: str, style: str = "") -> str:
    return (
        f'<text x="{at[0]:.0f}" y="{at[1]:.0f}" text-anchor="middle" {style}>'
        f"{html.escape(text)}</text>"
    )


def _box(at: tuple[float, float], text: str, style: str, *, rounded: bool = False) -> str:
    width, height = max(_BOX[0], 8 * len(text) + 16), _BOX[1]
    radius = height / 2 if rounded else 4
    return (
        f'<rect x="{at[0] - width / 2:.0f}" y="{at[1] - height / 2:.0f}" width="{width:.0f}" '
        f'height="{height}" rx="{radius:.0f}" {style}/>'
        + _text((at[0], at[1] + 5), text, 'font-size="13"')
    )


def render(picture: Picture, form: str) -> str:
    """``picture`` in one of :data:`FORMATS`. Raises :class:`ValueError` for another."""
    renderers = {"text": as_text, "mermaid": as_mermaid, "svg": as_svg}
    if form not in renderers:
        raise ValueError(f"{form!r} is not a format: choose {', '.join(FORMATS)}")
    return renderers[form](picture)
