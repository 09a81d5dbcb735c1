"""The literal QKD module (Q.4162)."""

from __future__ import annotations

import secrets
import uuid

from qkdn_sdk.messages import Key, Message, Role, kq1
from qkdn_sdk.testing.literal._base import (
    LiteralPeer,
    NonConformance,
    Trace,
    check,
    hash_value,
    quote,
)
from qkdn_sdk.transport import Connection

__all__ = ["LiteralQKDModule"]

_PAYLOAD_BUDGET = 60_000
"""Bytes of key data one Table 4 answer may carry: under the 65,535 of a TCP frame (Q.4162
Appendix I), with room for the IDs and the JSON around them."""


class LiteralQKDModule(LiteralPeer):
    """A QKD module written from Q.4162 alone, in either mode.

    Proactive (clause 7.1): connected to its KM's Kq-1 URL (:meth:`connected`), it supplies
    keys (:meth:`supply`: Table 1, whose answer, Table 2, must name the same Key ID and, when
    given, the same module IDs). On request (clause 7.2): served (:meth:`serve`), it answers
    every key request (Table 3) with the keys asked for, of the size asked for (``key_size``
    bits by default), as Table 4 writes them: no Key extension, no Extension.

    Its keys are random, each under a new UUID as Key ID; it fills Table 1's QKD module ID
    (its certificate's), Matching QKD module ID (``matching_id``, when given), Key length, and
    Hash value: ``hash_algorithm`` of the key, which Table 1 does not fix."""

    role = Role.QKD_MODULE

    def __init__(
        self,
        name: str = "QKD module",
        trace: Trace | None = None,
        *,
        key_size: int = 256,
        hash_algorithm: str = "sha256",
        matching_id: str | None = None,
        ignore_sdk_members: bool = False,
    ) -> None:
        super().__init__(name, trace, ignore_sdk_members=ignore_sdk_members)
        if key_size < 8 or key_size % 8:
            raise ValueError(f"key_size must be a positive multiple of 8 bits, not {key_size}")
        self.key_size = key_size
        self.hash_algorithm = hash_algorithm
        self.matching_id = matching_id
        self.requests: list[kq1.KeyRequest] = []
        """The key requests answered, in order."""

    def new_key(self, size: int | None = None) -> Key:
        """A fresh QKD-key of ``size`` bits (``key_size``) under a new Key ID."""
        return Key(key=secrets.token_bytes((size or self.key_size) // 8), key_id=str(uuid.uuid4()))

    async def supply(
        self, key: Key | None = None, *, wrong_hash: bool = False
    ) -> kq1.ResponseToKeySupply:
        """Q.4162 clause 7.1: supply ``key`` (a new one) as Table 1 writes it, and return the
        KM's answer (Table 2) once checked. ``wrong_hash``: give a Hash value that is not the
        key's, and return the failure the KM must answer."""
        key = key or self.new_key()
        supply = kq1.KeySupply(
            key=key.key,
            key_id=key.key_id,
            qkd_module_id=self.identity,
            matching_qkd_module_id=self.matching_id,
            key_length=8 * len(key.key),
            hash_value=hash_value(self.hash_algorithm, key.key + b"\0" if wrong_hash else key.key),
        )
        if wrong_hash:
            answer = await self.ask_refused(
                supply, f"a key whose Hash value is not the {self.hash_algorithm} of its data"
            )
            check(self.name, answer, kq1.ResponseToKeySupply, success=False, members=False)
            assert isinstance(answer, kq1.ResponseToKeySupply)
            response = answer
        else:
            response = await self.ask(supply, kq1.ResponseToKeySupply)
        if (
            response.key_id != supply.key_id
            or response.qkd_module_id not in (None, supply.qkd_module_id)
            or response.matching_qkd_module_id not in (None, supply.matching_qkd_module_id)
        ):
            raise NonConformance(f"{self.name} sent {quote(supply)}, answered {quote(response)}")
        return response

    async def answer(self, message: Message, connection: Connection) -> Message | None:
        """Q.4162 clause 7.2: Table 3 answered by Table 4."""
        check(self.name, message, kq1.KeyRequest, success=False, members=self.refuse_sdk_members)
        assert isinstance(message, kq1.KeyRequest)
        size = message.size_of_key or self.key_size
        if size % 8:
            return kq1.ResponseToKeyRequest(
                keys=[], response=f"failure: keys are whole bytes, and {size} bits are not"
            )
        self.requests.append(message)
        fit = max(1, _PAYLOAD_BUDGET // (size // 6 + 64))  # base64 and a UUID each
        number = min(message.number_of_keys or 1, fit)
        return kq1.ResponseToKeyRequest(
            keys=[self.new_key(size) for _ in range(number)], response="success"
        )
