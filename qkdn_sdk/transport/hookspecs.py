"""The plugin hooks of qkdn-sdk (pluggy, project name ``"qkdn"``).

A transport plugin is a module (or object) with a ``qkdn_register_transports`` hook, exposed
through the ``qkdn.transports`` entry-point group::

    # pyproject.toml of the plugin's distribution
    [project.entry-points."qkdn.transports"]
    tcp = "qkdn_tcp"

    # qkdn_tcp/__init__.py
    from qkdn_sdk.transport import hookimpl

    @hookimpl
    def qkdn_register_transports(registry):
        registry.add(TcpTransport)

Hooks only register classes: no I/O, no sockets, no threads (and a hook must not be ``async``:
pluggy would call it and drop the coroutine, so the registry refuses such a plugin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from qkdn_sdk.transport._registry import TransportRegistry

__all__ = ["ENTRY_POINT_GROUP", "PROJECT", "hookimpl", "hookspec", "qkdn_register_transports"]

PROJECT = "qkdn"
ENTRY_POINT_GROUP = "qkdn.transports"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def qkdn_register_transports(registry: TransportRegistry) -> None:
    """Add the plugin's :class:`~qkdn_sdk.transport.Transport` classes with
    ``registry.add(cls)``."""
