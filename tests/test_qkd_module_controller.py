"""QKD module <-> QKDN controller (Y.3800 Cq; FG QIT4N D2.3 clause 8.1): every module
authenticates to the controller (Table 7-2 as 0x3480) and supplies its QKD link's status (Table
8-2 as 0x3483, and on the controller's Table 8-1 command 0x4382); the controller admits only the
modules of its network for these, and them for nothing else; a module whose controller is away
keeps supplying keys.

The single-module tests run a real :class:`~qkdn_sdk.roles.controller.Controller` and
:class:`~qkdn_sdk.roles.qkd_module.QKDModule` over ``memory://``; the network tests run line3
(``tests/test_network.py``) over memory and tcp+tls. Nothing sleeps to wait: tests wait on the
controller's record of supplies.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from qkdn_sdk.errors import FailureResponse
from qkdn_sdk.messages import Message, Role, example, kq1, mgmt, received_by
from qkdn_sdk.network import load_topology
from qkdn_sdk.network.deployment import load_role_config, write_role_configs
from qkdn_sdk.roles.controller import Controller, ControllerConfig, ModuleRequestFailed
from qkdn_sdk.roles.qkd_module import Kq1Mode, QKDModule, QKDModuleConfig
from qkdn_sdk.transport import Connection, connect, serve
from tests.test_network import TRANSPORTS, running
from tests.test_qkd_module import EPOCH, WallClock
from tests.test_serve import LINE3, first_port

WAIT = 10.0
CONTROLLER_URL = "memory://cq/controller"
MODULE_URL = "memory://cq/qkd-a"
RATE = 1024.0
KEY_SIZE = 256
LINKS = {"qkd-a": {"km-a", "km-b"}, "qkd-b": {"km-a", "km-b"}}


def module_config(**changes: Any) -> QKDModuleConfig:
    values: dict[str, Any] = {
        "module_id": "qkd-a",
        "matching_module_id": "qkd-b",
        "link_secret": bytes(range(32)),
        "epoch": EPOCH,
        "secret_key_rate": RATE,
        "mode": Kq1Mode.ON_REQUEST,
        "key_size": KEY_SIZE,
        "listen_url": MODULE_URL,
        "controller_id": "controller",
        "controller_url": CONTROLLER_URL,
        "report_interval": 0.05,
    }
    return QKDModuleConfig(**(values | changes))


def module(**changes: Any) -> QKDModule:
    """A module whose keys follow trio's (mock) clock."""
    return QKDModule(module_config(**changes), clock=WallClock())


def controller_config(modules: dict[str, set[str]] | None = None) -> ControllerConfig:
    return ControllerConfig(
        controller_id="controller",
        listen_url=CONTROLLER_URL,
        kms={"km-a", "km-b"},
        links=[("km-a", "km-b")],
        modules=LINKS if modules is None else modules,
    )


class LogWatch(logging.Handler):
    """The records of the SDK's loggers that say ``text``; :attr:`seen` is set at the first."""

    def __init__(self, text: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.text = text
        self.seen = trio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.text in message:
            self.messages.append(message)
            self.seen.set()


@contextmanager
def watching(text: str) -> Iterator[LogWatch]:
    watch = LogWatch(text)
    logger = logging.getLogger("qkdn_sdk")
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)


@asynccontextmanager
async def started(nursery: trio.Nursery, role: Controller | QKDModule) -> AsyncIterator[None]:
    """``role`` running in a scope of its own until the block ends."""
    scope = trio.CancelScope()
    await nursery.start(partial(_run, role, scope))
    try:
        yield
    finally:
        scope.cancel()


async def _run(
    role: Controller | QKDModule, scope: trio.CancelScope, *, task_status: trio.TaskStatus[Any]
) -> None:
    with scope:
        await role.run(task_status=task_status)


async def keys_from(module_url: str, number: int) -> list[str]:
    """Key IDs the KM ``km-a`` gets from its module when it asks for ``number`` keys."""
    async with connect(module_url, identity="km-a") as connection:
        response = await connection.request(kq1.KeyRequest(number_of_keys=number), timeout=WAIT)
    assert isinstance(response, kq1.ResponseToKeyRequest)
    return [key.key_id for key in response.keys]


# --- one module, one controller -------------------------------------------------------------


async def test_a_module_authenticates_then_supplies_its_link_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    controller = Controller(controller_config())
    async with trio.open_nursery() as nursery:
        async with started(nursery, controller), started(nursery, module()):
            with trio.fail_after(WAIT):
                await controller.modules.wait_for_report("qkd-a", 3)  # unsolicited, periodic
            assert controller.modules.authenticated == {"qkd-a"}
            status = controller.modules.status("qkd-a")
            assert status is not None
            assert status.pop("key_amount") % KEY_SIZE == 0  # whole keys held for the KM
            assert status == {"qkd_link": "qkd-b", "key_generation_rate": 1024, "status": "up"}
            assert controller.modules.key_generation_rate("km-b", "km-a") == 1024
            assert controller.modules.status("qkd-b") is None
            assert controller.modules.key_generation_rate("km-a", "km-c") is None
        nursery.cancel_scope.cancel()


async def test_the_key_amount_is_what_the_module_holds_for_its_km(
    autojump_clock: trio.testing.MockClock,
) -> None:
    controller = Controller(controller_config())
    qkd_a = module(report_interval=3600.0)
    async with trio.open_nursery() as nursery:
        async with started(nursery, controller), started(nursery, qkd_a):
            await trio.sleep(2.0)  # (mock time) about 8 keys of 256 bits become ready
            table = await controller.modules.request_status("qkd-a", parameters=["key_amount"])
            held = qkd_a.stats.buffered
            assert held >= 7
            assert table == [{"qkd_link": "qkd-b", "key_amount": held * KEY_SIZE}]
            assert len(await keys_from(MODULE_URL, 3)) == 3
            table = await controller.modules.request_status("qkd-a", parameters=["key_amount"])
            assert table == [{"qkd_link": "qkd-b", "key_amount": (held - 3) * KEY_SIZE}]
        nursery.cancel_scope.cancel()


async def test_the_controller_asks_a_module_for_the_parameters_it_wants(
    autojump_clock: trio.testing.MockClock,
) -> None:
    controller = Controller(controller_config())
    async with trio.open_nursery() as nursery:
        async with started(nursery, controller), started(nursery, module(report_interval=3600.0)):
            with trio.fail_after(WAIT):
                await controller.modules.wait_for_report("qkd-a")
            table = await controller.modules.request_status("qkd-a", parameters=["status"])
            assert table == [{"qkd_link": "qkd-b", "status": "up"}]
            with pytest.raises(ModuleRequestFailed, match="unknown status parameters"):
                await controller.modules.request_status("qkd-a", parameters=["temperature"])
            # with a period, the unsolicited supplies come at that period (not the hour of
            # report_interval) and carry what was asked
            table = await controller.modules.request_status(
                "qkd-a", period=1, parameters=["key_generation_rate"]
            )
            assert table == [{"qkd_link": "qkd-b", "key_generation_rate": 1024}]
            count = controller.modules.report_count("qkd-a")
            with trio.fail_after(10.0):
                await controller.modules.wait_for_report("qkd-a", count + 5)
            with pytest.raises(ModuleRequestFailed, match="qkd-b: it is not connected"):
                await controller.modules.request_status("qkd-b")
        nursery.cancel_scope.cancel()


async def test_a_module_without_its_controller_keeps_supplying_keys_and_tries_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No controller at first: keys go to the KM all the same, the outage is logged once; when
    the controller comes, the module authenticates and reports."""
    controller = Controller(controller_config())
    async with trio.open_nursery() as nursery:
        with watching("cannot report to its controller") as outage:
            async with started(nursery, module()):
                with trio.fail_after(WAIT):
                    await outage.seen.wait()
                await trio.sleep(1.0)  # (mock time) keys become ready, tries go on
                assert len(await keys_from(MODULE_URL, 4)) == 4
                assert len(outage.messages) == 1, outage.messages
                assert "keys still go to its KM" in outage.messages[0]
                async with started(nursery, controller):
                    with trio.fail_after(WAIT):
                        await controller.modules.wait_for_report("qkd-a")
                    assert "qkd-a" in controller.modules.authenticated
        nursery.cancel_scope.cancel()


async def test_a_module_authenticates_again_to_a_controller_that_came_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The controller stops (its record goes with it) and another starts at its URL: once the
    module found the first gone, it authenticates to the second before it reports again."""
    first, second = Controller(controller_config()), Controller(controller_config())
    async with trio.open_nursery() as nursery, started(nursery, module()):
        async with started(nursery, first):
            with trio.fail_after(WAIT):
                await first.modules.wait_for_report("qkd-a")
        with watching("cannot report to its controller") as outage:
            with trio.fail_after(WAIT):
                await outage.seen.wait()
        async with started(nursery, second):
            with trio.fail_after(WAIT):
                await second.modules.wait_for_report("qkd-a")
            assert second.modules.authenticated == {"qkd-a"}
        nursery.cancel_scope.cancel()


async def test_a_controller_that_does_not_know_the_module_refuses_it(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A controller whose network has no such module: the module's authentication and its
    supplies are refused; it goes on supplying keys and trying again."""
    controller = Controller(controller_config(modules={"qkd-b": {"km-a", "km-b"}}))
    async with trio.open_nursery() as nursery:
        with watching("it refused the authentication") as refused:
            async with started(nursery, controller), started(nursery, module()):
                with trio.fail_after(WAIT):
                    await refused.seen.wait()
                await trio.sleep(1.0)  # (mock time) keys become ready, tries go on
                assert len(await keys_from(MODULE_URL, 4)) == 4
        nursery.cancel_scope.cancel()
    assert len(refused.messages) == 1  # logged once per outage
    assert any(
        "refused 0x3480" in record.getMessage()
        and "'qkd-a' is not a QKD module of the network of controller" in record.getMessage()
        for record in caplog.records
    )
    assert controller.modules.authenticated == set()
    assert controller.modules.report_count("qkd-a") == 0


async def test_only_the_controller_may_answer_the_authentication(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A server at the controller's URL that authenticates as the controller but answers in
    the name of someone else: the module does not take it as authenticated, and sends it no
    status."""
    received: list[Message] = []

    async def impostor(message: Message, connection: Connection) -> Message | None:
        received.append(message)
        return mgmt.CqAuthenticationResponse(
            sender_id="impostor", response_code=mgmt.ResultCode.SUCCESS
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve, CONTROLLER_URL, impostor, identity="controller"))
        with watching("answered the authentication, not the controller") as answered:
            async with started(nursery, module()):
                with trio.fail_after(WAIT):
                    await answered.seen.wait()
                await trio.sleep(1.0)  # (mock time) it tries again, and again
        nursery.cancel_scope.cancel()
    assert len(received) > 1
    assert all(isinstance(message, mgmt.CqAuthenticationCommand) for message in received)
    assert "'impostor' answered" in answered.messages[0]


async def test_malformed_status_entries_are_ignored() -> None:
    """Entries a module should not send change nothing (the first is logged); a good one from
    the same module is recorded as it is."""
    controller = Controller(controller_config())
    good = {"qkd_link": "qkd-b", "key_generation_rate": 5}
    entries: list[Any] = [
        {"qkd_link": 3},
        {"qkd_link": "qkd-b", "key_generation_rate": "fast"},
        {"qkd_link": "qkd-b", "key_amount": -1},
        {"qkd_link": "qkd-b", "status": "sideways"},
        {"qkd_link": "qkd-b", "key_generation_rate": float("nan")},
        good,
    ]
    async with trio.open_nursery() as nursery:
        with watching("ignored status_table[0] of qkd-a") as ignored:
            async with (
                started(nursery, controller),
                connect(CONTROLLER_URL, identity="qkd-a") as connection,
            ):
                for entry in entries:
                    await connection.send(
                        mgmt.CqStatusInformationSupplyResponse(
                            sender_id="qkd-a",
                            status_table=[entry],
                            response_code=mgmt.ResultCode.SUCCESS,
                        )
                    )
                with trio.fail_after(WAIT):
                    await controller.modules.wait_for_report("qkd-a", len(entries))
        nursery.cancel_scope.cancel()
    assert controller.modules.status("qkd-a") == good
    assert controller.modules.key_generation_rate("km-a", "km-b") == 5
    assert "qkd_link is not a QKD module ID" in ignored.messages[0]


@pytest.mark.parametrize(
    ("modules", "problem"),
    [
        ({"qkd-a": {"km-a", "km-c"}}, r"is on \['km-a', 'km-c'\], not one of links"),
        ({"km-a": {"km-a", "km-b"}}, "is the ID of a KM or of the controller"),
        ({"": {"km-a", "km-b"}}, "must be a non-empty string"),
    ],
)
def test_a_controller_config_refuses_a_module_off_its_links(
    modules: dict[str, set[str]], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        controller_config(modules)


def test_a_module_config_needs_the_controllers_id_and_url_together() -> None:
    with pytest.raises(ValueError, match="controller_id and controller_url together"):
        module_config(controller_url=None)
    assert module_config(controller_id=None, controller_url=None).controller_id is None


# --- line3 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_module_of_the_network_authenticates_and_reports(
    tmp_path: Path, transport: str
) -> None:
    async with running(tmp_path, transport) as network:
        controller = network.controller
        assert controller is not None
        assert set(controller.config.modules) == set(network.modules)
        with trio.fail_after(WAIT):
            for module_id in network.modules:
                await controller.modules.wait_for_report(module_id)
        assert controller.modules.authenticated == set(network.modules)
        for module_id, module in network.modules.items():
            status = controller.modules.status(module_id)
            assert status is not None
            assert status["qkd_link"] == module.config.matching_module_id
            assert status["status"] == "up"
        # line3's two links each make 256,000 bits/s
        assert controller.modules.key_generation_rate("km-a", "km-b") == 256_000
        assert controller.modules.key_generation_rate("km-c", "km-b") == 256_000


@pytest.mark.parametrize("transport", ["memory", "tcp+tls"])
async def test_the_controller_admits_modules_for_module_messages_only(
    tmp_path: Path, transport: str
) -> None:
    """Every request the controller accepts, from a KM's and a module's certificate: the one
    whose role does not send it is refused, naming it."""
    async with running(tmp_path, transport) as network:
        controller = network.controller
        assert controller is not None
        url = controller.urls[0]
        identities = {Role.KM: "km-a", Role.QKD_MODULE: "km-a.km-b"}
        refusals = {
            Role.KM: "is not a KM of the network of controller",
            Role.QKD_MODULE: "is not a QKD module of the network of controller",
        }
        requests = sorted(
            (
                cls
                for cls in received_by(Role.CONTROLLER)
                if cls.response_type() is not None and cls.sender in identities
            ),
            key=lambda cls: cls.code,
        )
        assert mgmt.CqAuthenticationCommand in requests
        refused = 0
        for role, identity in identities.items():
            async with connect(url, tls=network.tls(identity), identity=identity) as connection:
                for cls in requests:
                    if cls.sender is role:
                        continue
                    with pytest.raises(FailureResponse) as caught:
                        await connection.request(example(cls, sender=identity), timeout=WAIT)
                    reason = caught.value.reason
                    if not reason.startswith("failure: response code"):  # a table with a reason
                        assert f"'{identity}' {refusals[cls.sender]}" in reason, (identity, cls)
                    refused += 1
        assert refused == len(requests)
        # a KM's certificate cannot supply a QKD link's status either (one-way: dropped)
        with watching("refused 0x3483") as dropped:
            async with connect(url, tls=network.tls("km-c"), identity="km-c") as connection:
                await connection.send(
                    example(mgmt.CqStatusInformationSupplyResponse, sender="km-c")
                )
                with trio.fail_after(WAIT):
                    await dropped.seen.wait()
        assert "'km-c' is not a QKD module of the network of controller" in dropped.messages[0]
        assert controller.modules.report_count("km-c") == 0


async def test_module_and_controller_files_carry_the_cq_wiring(tmp_path: Path) -> None:
    """``qkdn network configure``: the controller's file lists the modules, each module's file
    names the controller it reports to."""
    files = write_role_configs(load_topology(LINE3), tmp_path, first_port=first_port())
    controller = load_role_config(files["controller"], "controller").config
    assert isinstance(controller, ControllerConfig)
    assert dict(controller.modules) == {
        "km-a.km-b": {"km-a", "km-b"},
        "km-b.km-a": {"km-a", "km-b"},
        "km-b.km-c": {"km-b", "km-c"},
        "km-c.km-b": {"km-b", "km-c"},
    }
    for module_id in controller.modules:
        module = load_role_config(files[module_id], "qkd-module").config
        assert isinstance(module, QKDModuleConfig)
        assert (module.controller_id, module.controller_url) == (
            "controller",
            controller.listen_url,
        )
