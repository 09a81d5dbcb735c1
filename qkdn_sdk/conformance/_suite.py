"""The suite as data: procedures (:class:`Procedure`), the message sequence each figure draws
(:class:`Arrow`), and the runner that plays them and judges what was seen (:func:`play`).

A procedure's ``play`` coroutine drives literal peers (:mod:`qkdn_sdk.testing.literal`) against
the target and raises :class:`~qkdn_sdk.testing.literal.NonConformance` at the first message the
tables do not allow, or :class:`Skip` when what the suite was given cannot prove what the
procedure needs. Once it returns, the messages each literal peer sent and received must follow
the figure's sequence for that peer: the peers of one procedure run on separate connections, so
only the order each of them sees is asserted, and facts across them (the same session ID, the
same keys at both ends) are checked by ``play``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Literal, TypeVar

import attrs
import trio

from qkdn_sdk.messages import message_class
from qkdn_sdk.testing.literal import NonConformance, Step, Trace

__all__ = ["Arrow", "Outcome", "Procedure", "Result", "Skip", "first_wrong", "play"]

Outcome = Literal["pass", "fail", "skip"]
_C = TypeVar("_C")


class Skip(Exception):
    """The procedure cannot be run with what the suite was given; the text says why."""


@attrs.frozen
class Arrow:
    """One message of a figure, as one literal peer (``peer``) sends or receives it (the command
    code says which; ``or_codes``: others that may come in its place, such as an error
    indication for a refusal the table's response cannot say). ``repeated`` arrows next to each
    other form a group that may come any number of times, none included (the keys a KM
    pushes)."""

    peer: str
    code: int
    repeated: bool = False
    or_codes: tuple[int, ...] = ()

    def matches(self, code: int) -> bool:
        return code == self.code or code in self.or_codes

    def describe(self) -> str:
        return " or ".join(
            f"0x{code:04X} {message_class(code).spec_name}" for code in (self.code, *self.or_codes)
        )


@attrs.frozen
class Procedure(Generic[_C]):
    """One procedure of the standards: ``name`` (the suite's), ``title`` (the clause's),
    ``clause``, ``figure`` and the ``sequence`` the figure draws; ``play(context, trace)`` runs
    it with the literal peers of ``context`` writing to ``trace``. ``skip`` is the reason it is
    never run (the suite cannot make the target do it), or ``None``."""

    name: str
    title: str
    clause: str
    figure: str
    sequence: tuple[Arrow, ...]
    play: Callable[[_C, Trace], Awaitable[None]] | None
    skip: str | None = None

    def peers(self) -> list[str]:
        return list(dict.fromkeys(arrow.peer for arrow in self.sequence))


@attrs.frozen
class Result:
    """How a procedure went: ``detail`` is the first wrong message quoted (``fail``), the reason
    (``skip``), or empty."""

    name: str
    title: str
    clause: str
    figure: str
    outcome: Outcome
    detail: str = ""

    def as_json(self) -> dict[str, str]:
        return attrs.asdict(self)


def _groups(sequence: Sequence[Arrow]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of repeated arrows."""
    groups: list[tuple[int, int]] = []
    start: int | None = None
    for index, arrow in enumerate([*sequence, Arrow("", 0)]):
        if arrow.repeated and start is None:
            start = index
        elif not arrow.repeated and start is not None:
            groups.append((start, index))
            start = None
    return groups


def first_wrong(sequence: Sequence[Arrow], steps: Sequence[Step]) -> str | None:
    """Why ``steps`` (one peer's) do not follow ``sequence`` (that peer's arrows): the first step
    no arrow allows, quoted, or the arrow still expected at the end; ``None`` when they do."""
    groups = _groups(sequence)

    def closure(positions: set[int]) -> set[int]:
        reached: set[int] = set()
        todo = list(positions)
        while todo:
            position = todo.pop()
            if position in reached:
                continue
            reached.add(position)
            for start, end in groups:
                if position == start:
                    todo.append(end)  # the group not at all (again)
                if position == end:
                    todo.append(start)  # the group once more
        return reached

    positions = closure({0})
    for step in steps:
        possible = sorted(p for p in positions if p < len(sequence))
        following = {p + 1 for p in possible if sequence[p].matches(step.message.code)}
        if not following:
            wanted = " or ".join(dict.fromkeys(sequence[p].describe() for p in possible))
            return f"{step.describe()}; the figure has {wanted or 'nothing more'} there"
        positions = closure(following)
    if len(sequence) in positions:
        return None
    missing = " or ".join(
        dict.fromkeys(sequence[p].describe() for p in sorted(positions) if p < len(sequence))
    )
    peer = sequence[0].peer
    return f"{peer} never saw {missing}"


async def play(
    procedures: Sequence[Procedure[_C]],
    context: _C,
    traced: Callable[[_C, Trace], None],
    *,
    timeout: float,
) -> list[Result]:
    """Run each procedure in turn against ``context`` (the literal peers, connected), handing
    them a new trace through ``traced(context, trace)``; a procedure gets ``timeout`` seconds.
    Returns one result per procedure, in order."""
    results = []
    for procedure in procedures:
        trace = Trace()
        traced(context, trace)
        outcome, detail = await _judge(procedure, context, trace, timeout)
        results.append(
            Result(
                name=procedure.name,
                title=procedure.title,
                clause=procedure.clause,
                figure=procedure.figure,
                outcome=outcome,
                detail=detail,
            )
        )
    return results


async def _judge(
    procedure: Procedure[_C], context: _C, trace: Trace, timeout: float
) -> tuple[Outcome, str]:
    if procedure.play is None:
        return "skip", procedure.skip or "not run"
    try:
        with trio.fail_after(timeout if math.isfinite(timeout) else math.inf):
            await procedure.play(context, trace)
    except Skip as exc:
        return "skip", str(exc)
    except NonConformance as exc:
        return "fail", str(exc)
    except trio.TooSlowError:
        last = trace.steps[-1].describe() if trace.steps else "nothing"
        return "fail", f"not done in {timeout:g} s; the last message: {last}"
    if trace.violations:
        return "fail", str(trace.violations[0])
    for peer in procedure.peers():
        arrows = [arrow for arrow in procedure.sequence if arrow.peer == peer]
        wrong = first_wrong(arrows, [step for step in trace.steps if step.peer == peer])
        if wrong is not None:
            return "fail", wrong
    return "pass", ""
