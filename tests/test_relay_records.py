"""The record each KM keeps of the relays it took part in (qkdn_sdk.roles.km.relay_hops): bounded,
updated as the relay goes on, logged once its outcome is known, without key material."""

from __future__ import annotations

import logging

import pytest

from qkdn_sdk.roles.km.relay_hops import MAX_RECORDS, RelayRecords, RelayRole


def test_records_are_bounded_and_the_oldest_go_first() -> None:
    records = RelayRecords("km-b")
    for index in range(MAX_RECORDS + 5):
        records.begin(f"r-{index}", RelayRole.TRANSIT, "km-a")
    kept = [record.relay_id for record in records.entries]
    assert kept == [f"r-{index}" for index in range(5, MAX_RECORDS + 5)]
    records.update("r-0", outcome="confirmed")  # forgotten: nothing to update, nothing raised
    assert records.outcome("r-0") is None


def test_a_record_gathers_what_becomes_known_and_is_logged_with_its_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = RelayRecords("km-b")
    records.begin("r-1", RelayRole.TRANSIT, "km-a", kma_key_id="kma-key-in")
    records.update("r-1", next_kma_id="km-c", number_of_keys=3, kma_key_id="kma-key-out")
    with caplog.at_level(logging.INFO, logger="qkdn_sdk.roles.km"):
        records.update("r-1", outcome="pending")
        records.update("r-1", outcome="confirmed")
    [record] = records.entries
    assert (record.previous_kma_id, record.next_kma_id, record.number_of_keys) == (
        "km-a",
        "km-c",
        3,
    )
    assert record.kma_key_ids == ("kma-key-in", "kma-key-out")
    assert record.outcome == "confirmed"
    assert [entry.getMessage() for entry in caplog.records] == [
        "km-b: relay r-1 (transit, from km-a to km-c, 3 keys): pending",
        "km-b: relay r-1 (transit, from km-a to km-c, 3 keys): confirmed",
    ]


def test_the_records_handed_out_are_a_copy() -> None:
    records = RelayRecords("km-a")
    records.begin("r-1", RelayRole.SOURCE, None, 1)
    records.entries.clear()
    assert len(records.entries) == 1
