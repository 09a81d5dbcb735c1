"""The simulated QKD module: one end of a QKD link, supplying QKD-keys to its KM over Kq-1
(ITU-T Q.4162).

Theory of operation
-------------------
The two modules of a link never talk to each other: they agree because they compute the same
thing. Key number ``i`` of a link is the ChaCha20 key stream of the link secret with nonce
``i`` (:func:`link_key`): its first 16 bytes make the key ID (a version-4 UUID), the next
``key_size / 8`` bytes the key. Key ``i`` becomes *ready* at ``epoch + (i + 1) * key_size /
secret_key_rate`` (:meth:`QKDModule.ready_time`), so both ends produce the same keys, with the
same IDs and generation time stamps, at the configured secret key rate.

A module started at wall-clock time ``t`` begins with the first key ready *after* ``t``: it never
produces a key of the past, so a module that crashed and restarted never issues a key twice.

The buffer holds the ready keys not yet delivered. Since a key is a function of its index, the
buffer is only a range of indices ``[oldest, next)``; key bytes exist only while a key is being
sent. When more than ``buffer_keys`` keys are ready the oldest are dropped (counted in
:attr:`QKDModule.stats`, and a warning at most once a minute). The buffer catches up with the clock
whenever it is looked at (:meth:`QKDModule.run`'s tasks, a key request, :attr:`QKDModule.stats`),
so no task has to wake for every key.

Two Kq-1 modes (Q.4162 clause 7):

- :attr:`Kq1Mode.PROACTIVE` (clause 7.1, Tables 1-2): the module connects to its KM and supplies
  each ready key, oldest first, with :class:`~qkdn_sdk.messages.kq1.KeySupply` (0x3101),
  awaiting :class:`~qkdn_sdk.messages.kq1.ResponseToKeySupply` (0x1302) before the next. A key
  leaves the buffer when the KM acknowledges it, or says it had it before (the answer to a
  supply whose acknowledgement was lost); any other failure keeps it, to send again after a
  back-off. An unreachable KM is retried with a back-off from 0.1 s doubling to 2 s, logged once
  per outage.
- :attr:`Kq1Mode.ON_REQUEST` (clause 7.2, Tables 3-4): the module serves its URL; the KM sends
  :class:`~qkdn_sdk.messages.kq1.KeyRequest` (0x1303) and gets the oldest buffered keys in a
  :class:`~qkdn_sdk.messages.kq1.ResponseToKeyRequest` (0x3104). Keys handed out leave the buffer
  at once: no key is supplied twice, even if the response is then lost.

With ``km_id`` configured, keys go to that KM only (the identity the transport authenticated).
Key bytes never appear in logs, errors or ``repr()``.

With ``controller_id`` and ``controller_url`` configured, the module also speaks FG QIT4N D2.3
clause 8.1 to its QKDN controller (the Y.3800 reference point Cq): it authenticates
(:class:`~qkdn_sdk.messages.mgmt.CqAuthenticationCommand`, 0x3480, answered by that controller
only), then supplies the status of its QKD link
(:class:`~qkdn_sdk.messages.mgmt.CqStatusInformationSupplyResponse`, 0x3483) every
``report_interval`` seconds and whenever the controller asks (0x4382): one entry ``{"qkd_link":
<matching module>, "key_amount": <bits buffered>, "key_generation_rate": <bits/s>, "status":
"up"}`` (:data:`MODULE_STATUS_PARAMETERS`). A controller that is unreachable or refuses is tried
again a report period later; keys never wait for it.

The package has four parts: ``_config`` (:class:`QKDModuleConfig`), ``_keys`` (the keys of the
link and the buffer: :func:`link_key`, no I/O), ``_module`` (the :class:`QKDModule` that
serves them over Kq-1 in either mode) and ``_control`` (its status supply to the controller).
"""

from qkdn_sdk.roles.qkd_module._config import (
    BUFFER_KEYS,
    HASH_ALGORITHMS,
    KEY_SIZE_UNIT,
    LINK_SECRET_SIZE,
    REPORT_INTERVAL,
    Kq1Mode,
    QKDModuleConfig,
    check_hash_algorithm,
    hash_of,
)
from qkdn_sdk.roles.qkd_module._control import MODULE_STATUS_PARAMETERS
from qkdn_sdk.roles.qkd_module._keys import LinkKey, QKDModuleStats, link_key
from qkdn_sdk.roles.qkd_module._module import QKDModule, max_keys_per_response

__all__ = [
    "BUFFER_KEYS",
    "HASH_ALGORITHMS",
    "KEY_SIZE_UNIT",
    "LINK_SECRET_SIZE",
    "MODULE_STATUS_PARAMETERS",
    "REPORT_INTERVAL",
    "Kq1Mode",
    "LinkKey",
    "QKDModule",
    "QKDModuleConfig",
    "QKDModuleStats",
    "check_hash_algorithm",
    "hash_of",
    "link_key",
    "max_keys_per_response",
]
