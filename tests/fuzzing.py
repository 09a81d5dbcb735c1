"""What the fuzz tests share: the input budget, the mutation engine, and a model of the framing.

Theory of operation
-------------------
Inputs are built by *mutating* what a peer would send: each message's example payload
(``example(cls)``, full and minimal) and its encoded frame. One mutation engine serves both the
hypothesis properties (tests/test_fuzz_codecs.py, randomness from ``draw``, so failures shrink)
and the live-connection fuzzer (tests/test_fuzz_connection.py, randomness from a seeded
:class:`random.Random`, so a failure replays from its seed): the engine asks a :class:`Source`
for its choices and never cares which one it got.

:func:`split_frames` is a model of Q.416x Appendix I framing written from the frame format alone,
independent of :class:`~qkdn_sdk.codecs.frame.FrameDecoder`: it says which frames a byte stream
holds and how the stream ends (cleanly, with framing lost at a bad Version, or inside a frame).
The decoder properties compare the decoder with it, and the connection fuzzer uses it to know
which replies every input is owed.

How many inputs: ``QKDN_FUZZ_PROFILE`` (``ci``, the default, or ``long``) picks a total budget,
``QKDN_FUZZ_EXAMPLES`` overrides it; each test takes a fixed share (:data:`SHARES`).
``QKDN_FUZZ_SEED`` fixes the seed of the connection fuzzer (otherwise random, and printed on
failure).
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import struct
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar

import attrs
import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from qkdn_sdk.codecs.frame import HEADER_SIZE, MAX_PAYLOAD_SIZE, VERSION, encode_message
from qkdn_sdk.codecs.payload import MAX_DEPTH, message_to_dict
from qkdn_sdk.messages import Message, all_messages, example

__all__ = [
    "BUDGET",
    "KNOWN_CODES",
    "MESSAGES",
    "PROFILE",
    "SHARES",
    "DrawSource",
    "RandomSource",
    "Source",
    "Split",
    "WireFrame",
    "budget",
    "example_frame",
    "example_payloads",
    "fuzz_settings",
    "mutate_frame",
    "mutate_json",
    "split_frames",
    "to_json_bytes",
    "unknown_code",
    "wide_json_values",
]

T = TypeVar("T")

# --- the budget ------------------------------------------------------------------------------

_TOTALS = {"ci": 100_000, "long": 2_000_000}
PROFILE = os.environ.get("QKDN_FUZZ_PROFILE", "ci")
if PROFILE not in _TOTALS:
    raise RuntimeError(f"QKDN_FUZZ_PROFILE must be one of {sorted(_TOTALS)}, not {PROFILE!r}")
BUDGET = int(os.environ.get("QKDN_FUZZ_EXAMPLES") or _TOTALS[PROFILE])
"""Inputs the fuzz tests run in all (their shares, rounded up, add up to at least this)."""

for _name in _TOTALS:
    # deadline=None: a slow CI machine must not turn a correct run red. print_blob: a failure
    # prints the @reproduce_failure line that replays it.
    settings.register_profile(
        f"qkdn-fuzz-{_name}",
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


SHARES = {
    "frame decoder": 0.07,
    "frame decoder not drained": 0.01,
    "any JSON value": 0.06,
    "mutated example payloads": 0.08,
    "error text bound": 0.03,
    "connections over memory": 0.70,
    "connections over tcp": 0.05,
}
"""Each fuzz test's share of :data:`BUDGET`. A hypothesis example costs about twice what a
live-connection input over memory does (2 ms, 1 ms): the properties take a quarter of the inputs
and under half of the time."""


def budget(test: str, *, among: int = 1) -> int:
    """The inputs of ``test`` (a key of :data:`SHARES`), spread over ``among`` parametrized cases
    (rounded up, so the shares add up to at least the budget)."""
    return max(1, math.ceil(BUDGET * SHARES[test] / among))


def fuzz_settings(test: str, *, among: int = 1) -> settings:
    """Hypothesis settings of the current profile running ``budget(test, among=among)``
    examples."""
    return settings(
        settings.get_profile(f"qkdn-fuzz-{PROFILE}"), max_examples=budget(test, among=among)
    )


# --- where randomness comes from ---------------------------------------------------------------


class Source(Protocol):
    """The choices a mutation makes; from hypothesis (``draw``) or from a seeded Random."""

    def choice(self, options: Sequence[T]) -> T: ...

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``."""
        ...

    def json_value(self) -> Any:
        """Any JSON-like value (big integers, NaN and lone surrogates included)."""
        ...

    def data(self, max_size: int) -> bytes: ...


_ODD_TEXT = [
    "",
    " ",
    "\x00",
    "é",
    "\u2028",
    "😀",
    "\ufeff",
    "\ud800",  # a lone surrogate: no UTF-8 for it; JSON escapes it, and a decoder refuses it
    "a" * 300,
    "\U0010ffff" * 3,
    "failure",
    "success",
    "0",
    "null",
]
_ODD_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    -(10**30),
    0.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    True,
    False,
]

wide_json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(_ODD_NUMBERS)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(_ODD_TEXT),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
"""JSON-like values wider than JSON: unbounded integers, NaN, infinities, lone surrogates."""


@attrs.define
class DrawSource:
    """Choices drawn by hypothesis (they shrink)."""

    draw: st.DrawFn

    def choice(self, options: Sequence[T]) -> T:
        return options[self.draw(st.integers(0, len(options) - 1))]

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def json_value(self) -> Any:
        return self.draw(wide_json_values)

    def data(self, max_size: int) -> bytes:
        return self.draw(st.binary(max_size=max_size))


@attrs.define
class RandomSource:
    """Choices from a seeded :class:`random.Random` (cheap; replayable from the seed)."""

    rng: random.Random

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def json_value(self, depth: int = 0) -> Any:
        rng = self.rng
        kind = rng.randrange(9 if depth < 3 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.randint(-(2**64), 2**64)
        if kind == 3:
            return self.choice(_ODD_NUMBERS)
        if kind == 4:
            return self.choice(_ODD_TEXT)
        if kind == 5:
            # ASCII, or any code point at all (lone surrogates included).
            length = rng.randint(0, 8)
            return "".join(
                chr(rng.choice((rng.randint(32, 126), rng.randint(0, 0x10FFFF))))
                for _ in range(length)
            )
        if kind in (6, 7):
            return [self.json_value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {
            f"k{rng.randint(0, 9)}": self.json_value(depth + 1) for _ in range(rng.randint(0, 3))
        }

    def data(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))


# --- JSON mutations ----------------------------------------------------------------------------

Path = tuple[str | int, ...]


def _nodes(value: Any, limit: int = 400) -> list[tuple[Path, Any]]:
    """``(path, node)`` of the first ``limit`` nodes of ``value``, breadth first (no recursion:
    values nest hundreds deep)."""
    found: list[tuple[Path, Any]] = [((), value)]
    for path, node in found:  # the list grows as it is read: breadth first
        if len(found) >= limit:
            break
        if type(node) is dict:
            found.extend(((*path, key), item) for key, item in node.items())
        elif type(node) is list:
            found.extend(((*path, index), item) for index, item in enumerate(node))
    return found[:limit]


def _replace(root: Any, path: Path, make: Callable[[Any], Any], *, delete: bool = False) -> Any:
    """A copy of ``root`` with the node at ``path`` replaced by ``make(node)`` (or deleted from
    its parent); only the containers along the path are copied."""
    chain = [root]
    for step in path:
        chain.append(chain[-1][step])
    if not path:
        return {} if delete else make(root)
    new: Any = make(chain[-1])
    for depth in range(len(path) - 1, -1, -1):
        parent, step = chain[depth], path[depth]
        copy: Any = dict(parent) if type(parent) is dict else list(parent)
        if delete and depth == len(path) - 1:
            del copy[step]
        else:
            copy[step] = new
        new = copy
    return new


def _nest(value: Any, depth: int, source: Source) -> Any:
    """``value`` inside ``depth`` arrays, or objects, or both in turn."""
    pattern = source.choice([(True,), (False,), (True, False)])
    for level in range(depth):
        value = [value] if pattern[level % len(pattern)] else {"n": value}
    return value


# Each mutation: (name, function of (node, source) -> new node). "drop" deletes the node.
_JSON_MUTATIONS: list[tuple[str, Callable[[Any, Source], Any]]] = [
    ("drop", lambda node, source: node),
    ("null", lambda node, source: None),
    ("any value", lambda node, source: source.json_value()),
    ("odd number", lambda node, source: source.choice(_ODD_NUMBERS)),
    ("odd text", lambda node, source: source.choice(_ODD_TEXT)),
    ("wrap in a list", lambda node, source: [node]),
    ("wrap in an object", lambda node, source: {"value": node}),
    ("as text", lambda node, source: json.dumps(node, default=str)[:50]),
    ("nest deep", lambda node, source: node),  # see mutate_json: it needs the room left
    (
        "repeat",  # many bad items: every one of them is an error to report
        lambda node, source: (
            [node] * min(source.choice([2, 50, 1000]), max(2, 5000 // len(_nodes(node, 50))))
        ),
    ),
    (
        "add a field",
        lambda node, source: (
            {**node, source.choice(["x", "key_id", "extension", "é" * 40, "k" * 5000]): 1}
            if type(node) is dict
            else node
        ),
    ),
    ("empty", lambda node, source: type(node)() if type(node) in (dict, list, str) else node),
]


def mutate_json(value: Any, source: Source, *, mutations: int | None = None) -> Any:
    """``value`` changed in 1 to 4 places (or ``mutations``): fields dropped, retyped, nulled,
    wrapped in lists or objects, nested past :data:`MAX_DEPTH`, repeated thousands of times,
    unknown fields added, huge numbers and odd unicode put in."""
    count = source.integer(1, 4) if mutations is None else mutations
    for _ in range(count):
        path, _node = source.choice(_nodes(value))
        name, mutation = source.choice(_JSON_MUTATIONS)
        if name == "nest deep":
            # Past MAX_DEPTH, but within what json.dumps (a recursive encoder) can write.
            depth = min(
                source.choice([MAX_DEPTH - 3, MAX_DEPTH, MAX_DEPTH + 1, 300]),
                _MAX_TEST_DEPTH - _depth(value),
            )
            mutation = functools.partial(_nest_in, depth)
        apply = functools.partial(_apply, mutation, source)
        value = _replace(value, path, apply, delete=name == "drop")
    return value


def _apply(mutation: Callable[[Any, Source], Any], source: Source, node: Any) -> Any:
    return mutation(node, source)


def _nest_in(depth: int, node: Any, source: Source) -> Any:
    return _nest(node, depth, source)


_MAX_TEST_DEPTH = 400


def _depth(value: Any) -> int:
    """How many arrays and objects ``value`` nests (iterative)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if type(node) in (dict, list):
            deepest = max(deepest, depth)
            stack.extend(
                (item, depth + 1) for item in (node.values() if type(node) is dict else node)
            )
    return deepest


def to_json_bytes(value: Any, style: int) -> bytes:
    """``value`` as JSON text, in one of three styles: compact ASCII, spaced UTF-8 (lone
    surrogates passed through: not valid UTF-8), or with odd whitespace. Integers of any size
    are written out; NaN and infinities as ``NaN``/``Infinity``, which JSON does not allow."""
    if style == 0:
        return json.dumps(value, separators=(",", ":")).encode("ascii")
    if style == 1:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(value, separators=("\r\n,\t", " :\n ")).encode("ascii")


# --- examples ----------------------------------------------------------------------------------

MESSAGES: list[type[Message]] = all_messages()
KNOWN_CODES: frozenset[int] = frozenset(cls.code for cls in MESSAGES)


_EXAMPLE_PAYLOADS = {
    cls: [message_to_dict(example(cls, full=full)) for full in (True, False)] for cls in MESSAGES
}
_EXAMPLE_FRAMES = {
    (cls, full): encode_message(example(cls, full=full), 0)
    for cls in MESSAGES
    for full in (True, False)
}


def example_payloads(cls: type[Message]) -> list[dict[str, Any]]:
    """The payload objects of the full and the minimal example of ``cls`` (shared: never
    change them in place)."""
    return _EXAMPLE_PAYLOADS[cls]


def example_frame(cls: type[Message], message_id: int, *, full: bool = True) -> bytes:
    """The frame of the full (or minimal) example of ``cls`` sent with ``message_id``."""
    frame = _EXAMPLE_FRAMES[cls, full]
    return frame[:2] + message_id.to_bytes(4, "big") + frame[6:]


def unknown_code(source: Source) -> int:
    """A command code that no message has."""
    code = source.integer(0, 0xFFFF)
    while code in KNOWN_CODES:
        code = (code + 1) & 0xFFFF
    return code


# --- frame mutations ---------------------------------------------------------------------------

_HEADER = struct.Struct(">HIHH")


def _set_header(frame: bytes, **fields: int) -> bytes:
    if len(frame) < HEADER_SIZE:
        return frame
    version, message_id, code, length = _HEADER.unpack_from(frame)
    values = {"version": version, "message_id": message_id, "code": code, "length": length}
    values.update(fields)
    return _HEADER.pack(*values.values()) + frame[HEADER_SIZE:]


def _with_payload(frame: bytes, payload: bytes) -> bytes:
    payload = payload[:MAX_PAYLOAD_SIZE]
    if len(frame) < HEADER_SIZE:
        return frame
    return _set_header(frame[:HEADER_SIZE], length=len(payload)) + payload


def _flip(frame: bytes, source: Source) -> bytes:
    if not frame:
        return frame
    bit = source.integer(0, 8 * len(frame) - 1)
    data = bytearray(frame)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def _insert(frame: bytes, source: Source) -> bytes:
    at = source.integer(0, len(frame))
    return frame[:at] + source.data(4) + frame[at:]


def _delete(frame: bytes, source: Source) -> bytes:
    if not frame:
        return frame
    at = source.integer(0, len(frame) - 1)
    return frame[:at] + frame[at + source.integer(1, 4) :]


def _payload_of(frame: bytes) -> Any:
    """The JSON of a frame's payload to mutate (``{}`` when there is none json.dumps can write
    back)."""
    try:
        value = orjson.loads(frame[HEADER_SIZE:])
    except orjson.JSONDecodeError:
        return {}
    return value if _depth(value) <= _MAX_TEST_DEPTH else {}


_DEEP_BYTES = [b"[" * 300 + b"]" * 300, b"[" * 1100 + b"]" * 1100, b"{" * 10]

_FRAME_MUTATIONS: dict[str, Callable[[bytes, Source], bytes]] = {
    "flip a bit": _flip,
    "insert bytes": _insert,
    "delete bytes": _delete,
    "truncate": lambda frame, source: frame[: source.integer(0, max(0, len(frame) - 1))],
    "version": lambda frame, source: _set_header(
        frame, version=source.choice([0, 2, 0x0100, 0xFFFF, source.integer(2, 0xFFFF)])
    ),
    "message ID": lambda frame, source: _set_header(
        frame, message_id=source.choice([0, 0xFFFF_FFFF, source.integer(0, 0xFFFF_FFFF)])
    ),
    "known code": lambda frame, source: _set_header(frame, code=source.choice(sorted(KNOWN_CODES))),
    "unknown code": lambda frame, source: _set_header(frame, code=unknown_code(source)),
    "length": lambda frame, source: _set_header(
        frame,
        length=source.choice(
            [0, 0xFFFF, source.integer(0, 0xFFFF)]
            + [
                n
                for n in (len(frame) - HEADER_SIZE + d for d in (-2, -1, 1, 2))
                if 0 <= n <= 0xFFFF
            ]
        ),
    ),
    "payload JSON": lambda frame, source: _with_payload(
        frame, to_json_bytes(mutate_json(_payload_of(frame), source), source.integer(0, 2))
    ),
    "payload bytes": lambda frame, source: _with_payload(frame, source.data(40)),
    "payload odd": lambda frame, source: _with_payload(
        frame, source.choice([b"", b"null", b"[]", b"{}", b"\xff\xfe", b'{"a":', *_DEEP_BYTES])
    ),
}
# Mutated JSON thrice as often as the others: most bad input a server sees is a frame whose
# framing holds and whose payload breaks its table.
FRAME_MUTATIONS = [*sorted(_FRAME_MUTATIONS), "payload JSON", "payload JSON"]


def mutate_frame(frame: bytes, source: Source, *, mutations: int | None = None) -> bytes:
    """``frame`` changed 1 to 3 times (or ``mutations``): bits flipped, bytes inserted or
    deleted, truncated, a header field changed (Version, MessageID, CommandCode to another known
    or an unknown code, Length), or the payload replaced (mutated JSON, random bytes, deep
    nesting)."""
    count = source.integer(1, 3) if mutations is None else mutations
    for _ in range(count):
        frame = _FRAME_MUTATIONS[source.choice(FRAME_MUTATIONS)](frame, source)
    return frame


# --- a model of the framing ---------------------------------------------------------------------


@attrs.frozen
class WireFrame:
    """One whole frame in a byte stream, as the format says to read it."""

    offset: int
    message_id: int
    command_code: int
    payload: bytes = attrs.field(repr=False)

    @property
    def end(self) -> int:
        return self.offset + HEADER_SIZE + len(self.payload)


@attrs.frozen
class Split:
    """What a byte stream holds: whole frames, then how it ends.

    ``end`` is ``"clean"`` (the last frame ends the stream), ``"lost"`` (a frame at ``rest``
    has a Version other than 1: nothing after it can be read) or ``"partial"`` (the stream ends
    inside a frame starting at ``rest``). ``version`` is the bad Version when lost.
    """

    frames: list[WireFrame]
    end: Literal["clean", "lost", "partial"]
    rest: int
    version: int | None = None

    def header_id(self, data: bytes, available: int) -> int | None:
        """The MessageID of the frame at ``rest`` when ``available`` bytes from it are there to
        read it (6 for a bad Version, which is seen from the first two; 10 for a whole header)."""
        if len(data) - self.rest < available:
            return None
        return int.from_bytes(data[self.rest + 2 : self.rest + 6], "big")


def split_frames(data: bytes) -> Split:
    """The frames of ``data`` per Q.416x Appendix I: ``Version(2) MessageID(4) CommandCode(2)
    Length(2) Payload(Length)``, big-endian; a Version other than 1 loses the framing."""
    frames: list[WireFrame] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset >= 2:
            version = int.from_bytes(data[offset : offset + 2], "big")
            if version != VERSION:
                return Split(frames, "lost", offset, version)
        if len(data) - offset < HEADER_SIZE:
            return Split(frames, "partial", offset)
        _, message_id, code, length = _HEADER.unpack_from(data, offset)
        if len(data) - offset - HEADER_SIZE < length:
            return Split(frames, "partial", offset)
        payload = data[offset + HEADER_SIZE : offset + HEADER_SIZE + length]
        frames.append(WireFrame(offset, message_id, code, payload))
        offset += HEADER_SIZE + length
    return Split(frames, "clean", offset)
