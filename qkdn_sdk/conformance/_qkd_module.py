"""The suite against a QKD module: a literal KM (:class:`~qkdn_sdk.testing.literal.LiteralKM`)
asks an on-request module for keys at its URL (Q.4162 clause 7.2), and serves a URL that a
proactive module is configured to push its keys to (clause 7.1).

A module works in one mode: the procedure of the other is skipped (no module URL, or no URL
to serve). The server lives for its procedure only, so keys a module pushes later reach no
one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import attrs
import trio

from qkdn_sdk.conformance._suite import Arrow, Procedure, Result, Skip, play
from qkdn_sdk.conformance._target import QKDModuleTarget
from qkdn_sdk.messages import failure_reason, kq1
from qkdn_sdk.testing.literal import LiteralKM, Trace

__all__ = ["QKD_MODULE_PROCEDURES", "run_qkd_module_suite"]

KM = "KM"
_NUMBER = 2
_AGAIN = 0.05
"""Seconds before the literal KM asks again a module that had no key ready (a module makes
keys at its link's rate: none may be ready when asked)."""


@attrs.define
class _KMs:
    target: QKDModuleTarget
    km: LiteralKM


def _traced(kms: _KMs, trace: Trace) -> None:
    kms.km.trace = trace


async def _keys(km: LiteralKM) -> kq1.ResponseToKeyRequest:
    """A key request answered with keys: asked again while the module has none ready."""
    while True:
        response = await km.key_request(_NUMBER)
        if failure_reason(response) is None:
            return response
        await trio.sleep(_AGAIN)


async def _upon_request(kms: _KMs, trace: Trace) -> None:
    """Q.4162 clause 7.2 (Figure 2), twice: the keys of the second answer are new ones
    (:meth:`~qkdn_sdk.testing.literal.LiteralKM.key_request` checks every answer)."""
    if kms.target.url is None:
        raise Skip("needs the URL of a module that supplies keys upon request")
    for _ in range(2):
        await _keys(kms.km)


async def _proactive(kms: _KMs, trace: Trace) -> None:
    """Q.4162 clause 7.1 (Figure 1): serve the KM's Kq-1 URL until the module supplied keys."""
    listen = kms.target.listen
    if listen is None:
        raise Skip(
            "needs a URL to serve (--listen), which a module that supplies keys proactively is "
            "configured to connect to as its KM's"
        )
    identity = kms.target.km
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(kms.km.serve, listen, tls=identity.tls, identity=identity.id))
        await kms.km.wait_supplied(_NUMBER)
        nursery.cancel_scope.cancel()


QKD_MODULE_PROCEDURES: tuple[Procedure[_KMs], ...] = (
    Procedure(
        name="kq1-key-request",
        title="Key request, key supply upon request mode",
        clause="Q.4162 7.2, 8.2.1-8.2.2",
        figure="Q.4162 Figure 2",
        sequence=(
            Arrow(KM, 0x1303, repeated=True),
            Arrow(KM, 0x3104, repeated=True),
            Arrow(KM, 0x1303),
            Arrow(KM, 0x3104),
            Arrow(KM, 0x1303, repeated=True),
            Arrow(KM, 0x3104, repeated=True),
            Arrow(KM, 0x1303),
            Arrow(KM, 0x3104),
        ),
        play=_upon_request,
    ),
    Procedure(
        name="kq1-proactive-key-supply",
        title="Key supply, proactive key supply mode",
        clause="Q.4162 7.1, 8.1.1-8.1.2",
        figure="Q.4162 Figure 1",
        sequence=(
            Arrow(KM, 0x3101),
            Arrow(KM, 0x1302),
            Arrow(KM, 0x3101, repeated=True),
            Arrow(KM, 0x1302, repeated=True),
        ),
        play=_proactive,
    ),
)
"""In the order they run."""


@asynccontextmanager
async def _connected(target: QKDModuleTarget) -> AsyncIterator[_KMs]:
    km = LiteralKM(KM, hash_algorithm=target.hash_algorithm)
    async with AsyncExitStack() as stack:
        if target.url is not None:
            await stack.enter_async_context(
                km.connected(target.url, tls=target.km.tls, identity=target.km.id)
            )
        yield _KMs(target, km)


async def run_qkd_module_suite(target: QKDModuleTarget) -> list[Result]:
    """Every procedure of :data:`QKD_MODULE_PROCEDURES` against ``target``. Raises
    :class:`~qkdn_sdk.errors.QkdnError` when the module cannot be reached at its URL, or the
    URL to serve cannot be served."""
    async with _connected(target) as kms:
        return await play(QKD_MODULE_PROCEDURES, kms, _traced, timeout=target.timeout)
