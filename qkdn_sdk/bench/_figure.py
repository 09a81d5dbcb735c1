"""One figure of ``qkdn bench``, as the table shows it and the JSON report holds it."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Figure"]


@attrs.frozen(kw_only=True)
class Figure:
    """A measured ``value`` of the SDK beside the ``baseline``, the bare stack doing the same
    work in the same run; ``ratio`` is value / baseline (for a rate, the share of the bare
    stack's speed the SDK keeps; for a time, how many times longer the SDK takes)."""

    name: str
    """What was measured (``ak_round_trip``)."""
    value: float
    unit: str
    baseline: float | None
    """The bare stack's figure in the same unit (``None``: there is no bare equivalent)."""
    transport: str | None = None
    """The scheme measured (``tcp+tls``), when the figure is of one transport."""
    case: str | None = None
    """Which variant (``16 in flight``, ``3 hops``), when a name has several."""
    baseline_is: str | None = None
    """What the bare stack was."""
    p50: float | None = None
    """Latency of one call, milliseconds (median)."""
    p99: float | None = None
    """Latency of one call, milliseconds (99th percentile)."""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict[str, Any]:
        """The figure as the report's ``figures`` hold it: ``name``, ``transport``, ``value``,
        ``unit``, ``baseline``, ``ratio``, then what else is known."""
        document: dict[str, Any] = {
            "name": self.name,
            "transport": self.transport,
            "value": _rounded(self.value),
            "unit": self.unit,
            "baseline": None if self.baseline is None else _rounded(self.baseline),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
        }
        for name in ("case", "baseline_is", "p50", "p99"):
            value = getattr(self, name)
            if value is not None:
                document[name] = _rounded(value) if isinstance(value, float) else value
        return document


def _rounded(value: float) -> float:
    """Four significant digits: the figures are not more precise than that."""
    return float(f"{value:.4g}")
