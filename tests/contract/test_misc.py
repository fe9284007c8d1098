"""Settings, sequences, statistics counters, rate windows and idempotency records."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.models import TaskStatus
from core.ports.storage import IdempotencyRecord, Store

from .factories import assert_same, assert_turns_cycle, make_server, make_task, unique_id

SETTING_VALUES: list[Any] = [
    "least-connections",
    "",
    "ünïcödé 🚀",
    0,
    12,
    -3,
    2.5,
    True,
    False,
    [],
    {},
    ["a", 1, 2.5, None, {"b": [True]}],
    {"algorithm": "weighted-round-robin", "weights": {"srv-1": 3, "srv-2": 0.5}, "on": True},
]

# Reserved words and punctuation a statistics key might use, beside plain names.
COUNTER_NAMES = ["completed", "count", "status", "name", "srv-1", "by.type", "FAILED:TIMEOUT"]


def record(key: str, *, expires_at: int = 2_000, task_id: str | None = None) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=key,
        body_hash=unique_id("sha256"),
        task_id=task_id or unique_id("task"),
        expires_at=expires_at,
    )


# -- settings -----------------------------------------------------------------------------


def test_get_setting_of_an_unknown_name_is_none(store: Store) -> None:
    assert store.get_setting("lb_algorithm") is None


@pytest.mark.parametrize("value", SETTING_VALUES, ids=repr)
def test_put_setting_then_get_round_trips_any_json_value(store: Store, value: Any) -> None:
    # GIVEN a setting stored with some JSON value
    store.put_setting("lb_algorithm", value)

    # WHEN / THEN it reads back exactly, type included
    assert_same(store.get_setting("lb_algorithm"), value)


def test_put_setting_overwrites_and_settings_are_independent(store: Store) -> None:
    # GIVEN two settings
    store.put_setting("lb_algorithm", "round-robin")
    store.put_setting("other", {"keep": 1})

    # WHEN one is written again, with a value of another type
    store.put_setting("lb_algorithm", {"name": "p2c"})

    # THEN it holds the new value and the other is untouched
    assert_same(store.get_setting("lb_algorithm"), {"name": "p2c"})
    assert_same(store.get_setting("other"), {"keep": 1})


# -- next_in_sequence ---------------------------------------------------------------------


def test_next_in_sequence_counts_1_2_3(store: Store) -> None:
    # WHEN 60 turns are taken one after another
    turns = [store.next_in_sequence("rr") for _ in range(60)]

    # THEN they count 1, 2, 3, ... (one counter) or cycle evenly (several)
    assert_turns_cycle(turns, store.sequence_counters)
    if store.sequence_counters == 1:
        assert turns == list(range(1, 61))


def test_sequences_with_different_names_are_independent(store: Store) -> None:
    # GIVEN sequence "a" advanced 20 times
    a_turns = [store.next_in_sequence("a") for _ in range(20)]

    # WHEN / THEN "b" starts afresh (1, or below its count of counters + 1) and "a" goes on
    assert 1 <= store.next_in_sequence("b") <= store.sequence_counters
    a_turns.append(store.next_in_sequence("a"))
    assert_turns_cycle(a_turns, store.sequence_counters)
    assert type(store.next_in_sequence("b")) is int


# -- add_counters / get_counters ----------------------------------------------------------


def test_add_counters_accumulates_per_name(store: Store) -> None:
    # GIVEN a bucket with some counters
    store.add_counters("stats#2024-05-01", {"completed": 1, "failed": 2}, expires_at=10_000)

    # WHEN more is added, including a new name
    store.add_counters("stats#2024-05-01", {"completed": 3, "retried": 5}, expires_at=10_000)

    # THEN each name holds its sum, as ints
    assert_same(
        store.get_counters(["stats#2024-05-01"]),
        {"stats#2024-05-01": {"completed": 4, "failed": 2, "retried": 5}},
    )


def test_counter_names_may_be_reserved_words_or_punctuated(store: Store) -> None:
    # GIVEN counters whose names are DynamoDB reserved words or contain - . :
    increments = {name: i + 1 for i, name in enumerate(COUNTER_NAMES)}

    # WHEN they are added twice
    store.add_counters("k", increments, expires_at=10_000)
    store.add_counters("k", increments, expires_at=10_000)

    # THEN each reads back doubled
    assert_same(store.get_counters(["k"]), {"k": {n: 2 * v for n, v in increments.items()}})


def test_get_counters_returns_only_the_keys_that_exist(store: Store) -> None:
    # GIVEN two buckets
    store.add_counters("day#1", {"completed": 1}, expires_at=10_000)
    store.add_counters("day#2", {"failed": 7}, expires_at=10_000)

    # WHEN three keys are asked for, one missing
    got = store.get_counters(["day#1", "day#missing", "day#2"])

    # THEN the two that exist come back, each with its own counters
    assert_same(got, {"day#1": {"completed": 1}, "day#2": {"failed": 7}})


def test_get_counters_of_no_keys_or_unknown_keys_is_empty(store: Store) -> None:
    assert store.get_counters([]) == {}
    assert store.get_counters(["nope", "nada"]) == {}


def test_get_counters_reads_many_keys_at_once(store: Store) -> None:
    # GIVEN 101 buckets (one more than a DynamoDB BatchGetItem call takes)
    keys = [f"hour#{i:03d}" for i in range(101)]
    for i, key in enumerate(keys):
        store.add_counters(key, {"n": i + 1}, expires_at=10_000)

    # WHEN all are read in one call
    got = store.get_counters(keys)

    # THEN every bucket is there
    assert got == {key: {"n": i + 1} for i, key in enumerate(keys)}


def test_get_counters_accepts_any_collection(store: Store) -> None:
    store.add_counters("x", {"n": 1}, expires_at=10_000)
    assert store.get_counters({"x", "y"}) == {"x": {"n": 1}}
    assert store.get_counters(("x",)) == {"x": {"n": 1}}


# -- add_counters_once ---------------------------------------------------------------------


def test_add_counters_once_adds_a_batch_and_ignores_its_retry(store: Store) -> None:
    # GIVEN a batch of increments over two keys, added once
    batch = {
        "hour:2024-05-01T13": {"created": 3, "completed": 1},
        "server:2024-05-01:gpu-1": {"completed": 1},
    }
    assert store.add_counters_once("b-1", batch, expires_at=10_000, now_s=1_000) is True

    # WHEN the same batch is added again (a stream consumer retried on the same records)
    again = store.add_counters_once("b-1", batch, expires_at=10_000, now_s=1_001)

    # THEN nothing more is counted; another batch id counts
    assert again is False
    assert store.add_counters_once(
        "b-2", {"hour:2024-05-01T13": {"created": 1}}, expires_at=10_000, now_s=1_002
    )
    assert_same(
        store.get_counters(list(batch)),
        {"hour:2024-05-01T13": {"created": 4, "completed": 1}, "server:2024-05-01:gpu-1": {"completed": 1}},
    )


def test_add_counters_once_adds_to_counters_written_one_by_one(store: Store) -> None:
    store.add_counters("k", {"n": 5}, expires_at=10_000)
    store.add_counters_once("b", {"k": {"n": 2, "m": 1}}, expires_at=10_000, now_s=1_000)
    assert_same(store.get_counters(["k"]), {"k": {"n": 7, "m": 1}})


def test_add_counters_once_of_nothing_writes_nothing(store: Store) -> None:
    assert store.add_counters_once("empty", {"k": {}}, expires_at=10_000, now_s=1_000) is True
    assert store.get_counters(["k"]) == {}


def test_add_counters_once_takes_more_keys_than_one_transaction_holds(store: Store) -> None:
    # GIVEN 150 keys in one batch (a DynamoDB transaction holds 100 writes)
    batch = {f"server:2024-05-01:gpu-{i:03d}": {"completed": i + 1} for i in range(150)}

    # WHEN it is added twice
    assert store.add_counters_once("big", batch, expires_at=10_000, now_s=1_000) is True
    assert store.add_counters_once("big", batch, expires_at=10_000, now_s=1_000) is False

    # THEN every key holds its increment once
    assert store.get_counters(list(batch)) == batch


def test_a_counted_batch_is_forgotten_after_two_days(store: Store) -> None:
    store.add_counters_once("old", {"k": {"n": 1}}, expires_at=10_000_000, now_s=1_000)
    assert store.add_counters_once("old", {"k": {"n": 1}}, expires_at=10_000_000, now_s=1_000 + 3 * 86_400)
    assert store.get_counters(["k"]) == {"k": {"n": 2}}


# -- hit_rate_window ----------------------------------------------------------------------


def test_hit_rate_window_counts_1_2_3_per_key(store: Store) -> None:
    # GIVEN two principals' windows
    # WHEN alice hits three times and bob once, interleaved
    counts = [
        store.hit_rate_window("alice#task_create#28333333", expires_at=1_700_000_120),
        store.hit_rate_window("bob#task_create#28333333", expires_at=1_700_000_120),
        store.hit_rate_window("alice#task_create#28333333", expires_at=1_700_000_120),
        store.hit_rate_window("alice#task_create#28333333", expires_at=1_700_000_120),
    ]

    # THEN each window counts its own hits, including the current one
    assert counts == [1, 1, 2, 3]
    assert all(type(c) is int for c in counts)


def test_hit_rate_window_next_window_starts_again(store: Store) -> None:
    for _ in range(4):
        store.hit_rate_window("alice#other#100", expires_at=6_100)
    assert store.hit_rate_window("alice#other#101", expires_at=6_160) == 1


# -- put_idempotency ----------------------------------------------------------------------


def test_put_idempotency_first_stores_and_returns_none(store: Store) -> None:
    assert store.put_idempotency(record("key-1"), now_s=1_000) is None


def test_put_idempotency_again_returns_the_first_record_and_keeps_it(store: Store) -> None:
    # GIVEN a live record for a key
    first = record("key-1", expires_at=2_000)
    store.put_idempotency(first, now_s=1_000)

    # WHEN another record with the same key is put, twice
    second = store.put_idempotency(record("key-1", expires_at=3_000), now_s=1_500)
    third = store.put_idempotency(record("key-1", expires_at=4_000), now_s=1_999)

    # THEN both times the FIRST record comes back (nothing was overwritten)
    assert second == first
    assert third == first
    assert isinstance(second, IdempotencyRecord)
    assert type(second.expires_at) is int


def test_put_idempotency_replaces_an_expired_record(store: Store) -> None:
    # GIVEN a record that expires at 2000
    store.put_idempotency(record("key-1", expires_at=2_000), now_s=1_000)

    # WHEN a record with the same key arrives at 2000 (expires_at <= now_s: expired)
    replacement = record("key-1", expires_at=5_000)
    result = store.put_idempotency(replacement, now_s=2_000)

    # THEN it is stored as if the key were new, and is what later callers get
    assert result is None
    assert store.put_idempotency(record("key-1", expires_at=9_000), now_s=2_001) == replacement


def test_put_idempotency_keeps_a_record_one_second_before_expiry(store: Store) -> None:
    first = record("key-1", expires_at=2_000)
    store.put_idempotency(first, now_s=1_000)
    assert store.put_idempotency(record("key-1"), now_s=1_999) == first


def test_put_idempotency_keys_are_independent(store: Store) -> None:
    a = record("key-a")
    store.put_idempotency(a, now_s=1_000)
    assert store.put_idempotency(record("key-b"), now_s=1_000) is None
    assert store.put_idempotency(record("key-a"), now_s=1_000) == a


# -- namespaces ---------------------------------------------------------------------------


def test_items_of_different_kinds_with_the_same_name_do_not_collide(store: Store) -> None:
    # GIVEN a task, a server, a setting, a sequence, counters, a rate window and an
    # idempotency record that all use the name "same"
    task = make_task(id="same", status=TaskStatus.PENDING)
    server = make_server(id="same")
    store.put_task(task)
    store.put_server(server)
    store.put_setting("same", "value")
    store.add_counters("same", {"n": 5}, expires_at=10_000)
    idem = record("same")

    # WHEN each is written and read through its own method
    assert store.next_in_sequence("same") <= store.sequence_counters
    assert store.hit_rate_window("same", expires_at=10_000) == 1
    assert store.put_idempotency(idem, now_s=1_000) is None

    # THEN none overwrote another
    assert_same(store.get_task("same"), task)
    assert_same(store.get_server("same"), server)
    assert store.get_setting("same") == "value"
    assert store.get_counters(["same"]) == {"same": {"n": 5}}
    assert store.next_in_sequence("same") <= store.sequence_counters + 1
    assert store.hit_rate_window("same", expires_at=10_000) == 2
    assert store.put_idempotency(record("same"), now_s=1_000) == idem
    assert [s.id for s in store.list_servers()] == ["same"]
