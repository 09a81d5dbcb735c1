"""The conformance suite: every procedure of Q.4161, Q.4162, Q.4164 and D2.3's key supply, KM
link and routing control protocols played by literal peers (:mod:`qkdn_sdk.testing.literal`)
against a running KM, QKDN controller or QKD module, ours or another vendor's, with the message
sequence each figure draws asserted. ``qkdn conformance`` runs it; docs/conformance.md lists
the procedures and the readings of the tables they encode.

::

    target = ControllerTarget("tcp+tls://ctrl:5000", kms=[Identity.of(tls_a), Identity.of(tls_c)])
    for result in await run_suite(target):
        print(result.name, result.outcome, result.detail)

Layer: above the transports and the messages, below the CLI; it never imports the roles.
"""

from __future__ import annotations

from qkdn_sdk.conformance._controller import CONTROLLER_PROCEDURES, run_controller_suite
from qkdn_sdk.conformance._km import KM_PROCEDURES, run_km_suite
from qkdn_sdk.conformance._qkd_module import QKD_MODULE_PROCEDURES, run_qkd_module_suite
from qkdn_sdk.conformance._suite import Arrow, Outcome, Procedure, Result, Skip, first_wrong
from qkdn_sdk.conformance._target import (
    DEFAULT_COMMUNITY,
    DEFAULT_HASH_ALGORITHM,
    DEFAULT_TIMEOUT,
    ControllerTarget,
    Identity,
    KMTarget,
    QKDModuleTarget,
)

__all__ = [
    "CONTROLLER_PROCEDURES",
    "DEFAULT_COMMUNITY",
    "DEFAULT_HASH_ALGORITHM",
    "DEFAULT_TIMEOUT",
    "KM_PROCEDURES",
    "QKD_MODULE_PROCEDURES",
    "Arrow",
    "ControllerTarget",
    "Identity",
    "KMTarget",
    "Outcome",
    "Procedure",
    "QKDModuleTarget",
    "Result",
    "Skip",
    "first_wrong",
    "run_suite",
]


async def run_suite(target: ControllerTarget | KMTarget | QKDModuleTarget) -> list[Result]:
    """Every procedure of the suite of ``target``'s role, in order: one :class:`Result` each.
    Raises :class:`~qkdn_sdk.errors.QkdnError` when the target cannot be reached."""
    if isinstance(target, ControllerTarget):
        return await run_controller_suite(target)
    if isinstance(target, QKDModuleTarget):
        return await run_qkd_module_suite(target)
    return await run_km_suite(target)
