"""The transport registry: URL scheme -> transport, filled by plugins found by entry point.

The process-wide registry, :func:`~qkdn_sdk.transport.transport_registry`, lives at the package's
edge, which also hands this module the plugins built into qkdn-sdk (``memory://``): the
transports sit above the registry, which never imports them."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

import attrs
import pluggy

from qkdn_sdk.errors import TransportError
from qkdn_sdk.messages import Message
from qkdn_sdk.transport import hookspecs
from qkdn_sdk.transport._api import Transport

__all__ = ["PluginFailure", "TransportRegistry", "load_registry"]

logger = logging.getLogger("qkdn_sdk.transport")


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded or registered: its name and what went wrong."""

    plugin: str
    distribution: str | None
    error: str


@attrs.frozen
class RegisteredTransport:
    """A transport as registered: the instance, and the plugin and distribution it came from."""

    transport: Transport
    plugin: str
    distribution: str | None


class TransportRegistry:
    """Maps URL schemes to transports. Filled by the ``qkdn_register_transports`` hooks."""

    def __init__(self) -> None:
        self._by_scheme: dict[str, RegisteredTransport] = {}
        self._entries: list[RegisteredTransport] = []
        self.failures: list[PluginFailure] = []
        """Plugins that failed to load or register (the others work)."""
        self._current: tuple[str, str | None] = ("direct", None)

    def add(self, transport_class: type[Transport]) -> None:
        """Register a transport class (instantiated here, once). A scheme may be served by one
        transport only: a second one is refused with :class:`~qkdn_sdk.errors.TransportError`."""
        if not (isinstance(transport_class, type) and issubclass(transport_class, Transport)):
            raise TransportError(f"{transport_class!r} is not a qkdn_sdk.transport.Transport class")
        for scheme in transport_class.schemes:
            if scheme in self._by_scheme:
                taken = self._by_scheme[scheme]
                raise TransportError(
                    f"scheme {scheme}:// of {transport_class.__name__} is already served by "
                    f"{taken.plugin} ({type(taken.transport).__name__})"
                )
        plugin, distribution = self._current
        entry = RegisteredTransport(transport_class(), plugin, distribution)
        self._entries.append(entry)
        for scheme in transport_class.schemes:
            self._by_scheme[scheme] = entry

    def lookup(self, scheme: str) -> Transport:
        """The transport of ``scheme``; :class:`~qkdn_sdk.errors.TransportError` naming the
        installed schemes when there is none."""
        try:
            return self._by_scheme[scheme].transport
        except KeyError:
            known = ", ".join(f"{name}://" for name in sorted(self._by_scheme)) or "none"
            raise TransportError(
                f"no transport for {scheme}:// is installed (installed: {known})"
            ) from None

    def entries(self) -> list[RegisteredTransport]:
        """Every registered transport, in registration order."""
        return list(self._entries)

    def carrying(self, message_type: type[Message], *, from_client: bool) -> list[str]:
        """Schemes whose transport can carry ``message_type`` in that direction."""
        return sorted(
            scheme
            for scheme, entry in self._by_scheme.items()
            if entry.transport.carries(message_type, from_client=from_client)
        )

    def register_plugin(self, plugin: object, name: str, distribution: str | None) -> None:
        """Call ``plugin``'s hook in isolation: a failure is recorded, not raised."""
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        try:
            manager.register(plugin, name=name)
            manager.check_pending()  # a misspelt hook is an error, not a silent no-op
            for hook in manager.hook.qkdn_register_transports.get_hookimpls():
                if inspect.iscoroutinefunction(hook.function):
                    raise TypeError("qkdn_register_transports must not be async")
            self._current = (name, distribution)
            manager.hook.qkdn_register_transports(registry=self)
        except Exception as exc:  # one broken plugin must not break the others
            logger.warning("transport plugin %s failed: %s", name, exc)
            self.failures.append(PluginFailure(name, distribution, f"{type(exc).__name__}: {exc}"))
        finally:
            self._current = ("direct", None)


def load_registry(built_in: Iterable[tuple[str, object]]) -> TransportRegistry:
    """A registry of the plugins ``built_in`` (name, plugin: part of qkdn-sdk) and then of every
    plugin of the ``qkdn.transports`` entry-point group, each registered in isolation (a broken
    one is in :attr:`TransportRegistry.failures`)."""
    registry = TransportRegistry()
    for name, bundled in built_in:
        registry.register_plugin(bundled, name, "qkdn-sdk")
    for entry_point in entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        distribution = entry_point.dist.name if entry_point.dist is not None else None
        try:
            plugin: Any = entry_point.load()
        except Exception as exc:  # an import error is reported by name, not raised
            registry.failures.append(
                PluginFailure(entry_point.name, distribution, f"{type(exc).__name__}: {exc}")
            )
            continue
        registry.register_plugin(plugin, entry_point.name, distribution)
    return registry
