"""A whole QKD network from a topology file: :func:`load_topology` and :class:`Network`."""

from qkdn_sdk.network._network import ENDPOINTS_FILE, Network
from qkdn_sdk.network.topology import (
    ApplicationSpec,
    KMSpec,
    LinkSpec,
    Topology,
    TopologyError,
    load_topology,
    module_id,
    parse_topology,
)

__all__ = [
    "ENDPOINTS_FILE",
    "ApplicationSpec",
    "KMSpec",
    "LinkSpec",
    "Network",
    "Topology",
    "TopologyError",
    "load_topology",
    "module_id",
    "parse_topology",
]
