"""Servers: register, read, list, optimistic updates, delete, slot-count reconciliation."""

from __future__ import annotations

from typing import Any

import pytest

from core.domain.models import Endpoints, Server, ServerStatus
from core.errors import StaleWriteError
from core.ports.storage import Store

from .factories import (
    NOW,
    active_tasks,
    applied,
    assert_same,
    claim_changes,
    completed_changes,
    make_server,
    put_online_server,
    put_pending,
)


def full_server(**overrides: Any) -> Server:
    """A server with every field set to something other than its default."""
    fields: dict[str, Any] = {
        "name": "GPU box 7 — Zürich 🇨🇭",
        "endpoints": Endpoints(
            predict="https://gpu7.example.com/v1/predict",
            health="https://gpu7.example.com/health",
            metrics="https://gpu7.example.com/metrics",
            cancel="https://gpu7.example.com/v1/cancel",
        ),
        "api_key": "sk-secret-123",
        "max_concurrent": 64,
        "capabilities": ["gpu", "video", "cuda-12"],
        "groups": ["eu", "premium"],
        "priority": 30,
        "status": ServerStatus.MAINTENANCE,
        "maintenance_reason": "driver upgrade",
        "registered_at": NOW - 86_400_000,
        "health_status": "unhealthy",
        "last_heartbeat": NOW - 5000,
        "last_check_at": NOW - 1000,
        "consecutive_failures": 2,
        "consecutive_successes": 0,
        "reported": {
            "gpu": {"util": 0.87, "mem_gb": 71.5, "temps": [61.5, 63.0, 58.25]},
            "model": {"server_id": "x", "name": "sdxl-ü"},
            "queue": 3,
            "ok": True,
            "none": None,
        },
        "tasks_processed": 1234,
        "success_count": 1200,
        "failure_count": 34,
        "processing_ms_total": 9_876_543_210,
        "version": 7,
    }
    fields.update(overrides)
    return make_server(**fields)


# -- put_server / get_server --------------------------------------------------------------


def test_put_then_get_round_trips_every_field_exactly(store: Store) -> None:
    # GIVEN a server with every field set
    server = full_server()

    # WHEN it is registered and read back
    store.put_server(server)
    got = store.get_server(server.id)

    # THEN it is equal field for field, types included
    assert got is not None
    assert_same(got, server)


def test_put_then_get_round_trips_a_minimal_server(store: Store) -> None:
    # GIVEN a server with only the required fields
    server = make_server()

    # WHEN it is registered and read back
    store.put_server(server)
    got = store.get_server(server.id)

    # THEN the optional fields are still None or their defaults
    assert got is not None
    assert_same(got, server)
    assert got.endpoints.metrics is None and got.api_key is None and got.reported == {}


def test_put_server_with_a_taken_id_is_a_stale_write_and_keeps_the_first(store: Store) -> None:
    # GIVEN a registered server
    first = put_online_server(store, name="first")

    # WHEN another server registers with the same id
    with pytest.raises(StaleWriteError):
        store.put_server(make_server(id=first.id, name="impostor"))

    # THEN the first is unchanged
    assert_same(store.get_server(first.id), first)


def test_get_server_of_an_unknown_id_is_none(store: Store) -> None:
    put_online_server(store)
    assert store.get_server("srv-unknown") is None


# -- list_servers -------------------------------------------------------------------------


def test_list_servers_returns_every_server_ordered_by_id(store: Store) -> None:
    # GIVEN servers registered out of id order
    ids = ["b-2", "a-10", "c", "a-9", "B-upper", "a_1"]
    servers = {i: put_online_server(store, id=i) for i in ids}

    # WHEN they are listed
    listed = store.list_servers()

    # THEN all of them come back, ordered by id, as stored
    assert [s.id for s in listed] == sorted(ids)
    for got in listed:
        assert_same(got, servers[got.id])


def test_list_servers_of_an_empty_fleet_is_empty(store: Store) -> None:
    assert store.list_servers() == []


def test_list_servers_does_not_list_tasks_or_settings(store: Store) -> None:
    # GIVEN a store holding a server and other kinds of items
    server = put_online_server(store)
    put_pending(store)
    store.put_setting("lb_algorithm", "random")
    store.next_in_sequence("rr")

    # WHEN / THEN only the server is listed
    assert [s.id for s in store.list_servers()] == [server.id]


# -- update_server ------------------------------------------------------------------------


def test_update_server_with_the_right_version_applies_changes_and_bumps_it(store: Store) -> None:
    # GIVEN a registered server at version 0
    server = put_online_server(store, maintenance_reason="old", reported={"a": 1})
    changes = {
        "status": ServerStatus.DEGRADED,
        "health_status": "unhealthy",
        "consecutive_failures": 1,
        "last_check_at": NOW + 5,
        "reported": {"gpu": {"util": 0.5}, "list": [1.5, "x"]},
        "maintenance_reason": None,
    }

    # WHEN it is updated at version 0
    written = store.update_server(server.id, changes, version=0)

    # THEN the changes are applied, the version is 1, and that is what is stored
    assert_same(written, applied(server, {**changes, "version": 1}))
    assert_same(store.get_server(server.id), written)


def test_update_server_twice_with_the_same_version_loses_the_second_time(store: Store) -> None:
    # GIVEN a server updated once at version 0
    server = put_online_server(store)
    first = store.update_server(server.id, {"name": "renamed"}, version=0)

    # WHEN a second writer also read version 0
    with pytest.raises(StaleWriteError) as caught:
        store.update_server(server.id, {"name": "clobbered"}, version=0)

    # THEN it loses, sees the current server, and nothing changes
    assert_same(caught.value.current, first)
    assert_same(store.get_server(server.id), first)
    assert store.update_server(server.id, {"priority": 9}, version=1).version == 2


def test_update_server_with_a_wrong_version_is_stale_with_the_current_server(
    store: Store,
) -> None:
    # GIVEN a server at version 3
    server = put_online_server(store, version=3)

    # WHEN it is updated at version 2 and at version 4
    for version in (2, 4):
        with pytest.raises(StaleWriteError) as caught:
            store.update_server(server.id, {"status": ServerStatus.OFFLINE}, version=version)
        # THEN each loses with the current server and nothing changes
        assert_same(caught.value.current, server)
    assert_same(store.get_server(server.id), server)


def test_update_server_of_an_unknown_id_is_stale_with_none_and_creates_nothing(
    store: Store,
) -> None:
    with pytest.raises(StaleWriteError) as caught:
        store.update_server("srv-ghost", {"status": ServerStatus.OFFLINE}, version=0)
    assert caught.value.current is None
    assert store.get_server("srv-ghost") is None
    assert store.list_servers() == []


def test_update_server_never_touches_the_slot_count(store: Store) -> None:
    # GIVEN a server read at version 0, then given a task (active_tasks 1)
    server = put_online_server(store)
    task = put_pending(store)
    store.claim_task(task, claim_changes(task, server.id))

    # WHEN a health check writes what it read before the claim (stale slot count included)
    written = store.update_server(
        server.id, {"health_status": "healthy", "last_check_at": NOW + 1}, version=server.version
    )

    # THEN the version-checked write succeeds (slots are not under the version) and the slot
    # taken meanwhile is still counted
    assert written.active_tasks == 1
    got = store.get_server(server.id)
    assert got is not None
    assert (got.active_tasks, got.health_status, got.version) == (1, "healthy", 1)


# -- delete_server ------------------------------------------------------------------------


def test_delete_server_returns_it_and_then_it_is_gone(store: Store) -> None:
    # GIVEN two registered servers
    server = full_server(status=ServerStatus.ONLINE)
    store.put_server(server)
    keep = put_online_server(store)

    # WHEN one is deleted
    deleted = store.delete_server(server.id)

    # THEN it is returned as it was, no longer readable or listed, and the other remains
    assert_same(deleted, server)
    assert store.get_server(server.id) is None
    assert [s.id for s in store.list_servers()] == [keep.id]

    # AND deleting it again returns None
    assert store.delete_server(server.id) is None


def test_delete_server_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.delete_server("srv-never") is None
    assert store.list_servers() == []


def test_a_deleted_server_id_can_be_registered_again(store: Store) -> None:
    # GIVEN a server that was registered and deleted
    old = put_online_server(store, name="old", version=5)
    store.delete_server(old.id)

    # WHEN the id registers again
    new = make_server(id=old.id, name="new")
    store.put_server(new)

    # THEN the new registration is stored
    assert_same(store.get_server(old.id), new)


# -- set_active_tasks ---------------------------------------------------------------------


def test_set_active_tasks_sets_the_count_when_it_is_as_expected(store: Store) -> None:
    # GIVEN a server whose slot count drifted to 3
    server = put_online_server(store, active_tasks=3)

    # WHEN reconciliation sets it to 1, expecting 3
    ok = store.set_active_tasks(server.id, 1, expected=3)

    # THEN it is set, and nothing else changed (the version neither: slots are not under it)
    assert ok is True
    assert_same(store.get_server(server.id), applied(server, {"active_tasks": 1}))


def test_set_active_tasks_refuses_when_the_count_moved(store: Store) -> None:
    # GIVEN a server with 2 slots taken
    server = put_online_server(store, active_tasks=2)

    # WHEN reconciliation expected 3
    ok = store.set_active_tasks(server.id, 0, expected=3)

    # THEN nothing is written
    assert ok is False
    assert_same(store.get_server(server.id), server)


def test_set_active_tasks_of_an_unknown_server_is_false_and_creates_nothing(
    store: Store,
) -> None:
    assert store.set_active_tasks("srv-ghost", 0, expected=0) is False
    assert store.get_server("srv-ghost") is None


def test_set_active_tasks_refuses_when_a_claim_and_its_release_came_between(store: Store) -> None:
    # GIVEN reconciliation read a server with no slot taken and no claim yet
    seen = put_online_server(store)
    assert (seen.active_tasks, seen.last_claim_at) == (0, None)

    # WHEN a task is claimed there and released again before reconciliation writes (the count
    # is back to 0, as read) and reconciliation, having counted that task, sets 1
    task = put_pending(store)
    claimed = store.claim_task(task, claim_changes(task, seen.id))
    store.release_task(claimed, completed_changes({"ok": True}))
    ok = store.set_active_tasks(seen.id, 1, expected=0, last_claim_at=seen.last_claim_at)

    # THEN nothing is written: the claim changed last_claim_at
    assert ok is False
    assert active_tasks(store, seen.id) == 0


def test_set_active_tasks_with_an_unchanged_last_claim_sets_the_count(store: Store) -> None:
    # GIVEN a server claimed on once, its count since drifted to 2
    server = put_online_server(store)
    task = put_pending(store)
    store.claim_task(task, claim_changes(task, server.id))
    store.set_active_tasks(server.id, 2, expected=1)
    seen = store.get_server(server.id)
    assert seen is not None and seen.last_claim_at is not None

    # WHEN reconciliation sets it to 1, with the last claim it read
    ok = store.set_active_tasks(seen.id, 1, expected=2, last_claim_at=seen.last_claim_at)

    # THEN it is set
    assert ok is True
    assert active_tasks(store, seen.id) == 1
