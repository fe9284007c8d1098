"""Task ids sort in the order one process made them: the scheduler's FIFO tie-break."""

from __future__ import annotations

import re

from core.domain.ids import check_path_id, new_task_id


def test_ids_made_in_a_burst_sort_in_the_order_they_were_made() -> None:
    # GIVEN a burst of ids, many within one millisecond (past 4,096 in one, too)
    made = [new_task_id() for _ in range(10_000)]
    # THEN sorting them changes nothing, and none repeats
    assert sorted(made) == made
    assert len(set(made)) == len(made)


def test_an_id_is_a_valid_path_id_of_the_documented_shape() -> None:
    task_id = new_task_id()
    assert re.fullmatch(r"task_[0-9a-f]{24}", task_id)
    assert check_path_id(task_id, "task") == task_id
