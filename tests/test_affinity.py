"""Which CPU a new worker is pinned to (soapreceptor.affinity); the pinning itself is tested on gunicorn."""

from __future__ import annotations

import os

import pytest

from soapreceptor import affinity


@pytest.mark.parametrize(("value", "expected"), [(None, "auto"), ("", "auto"), (" Auto ", "auto"), ("OFF", "off")])
def test_the_setting(value: str | None, expected: str) -> None:
    environ = {} if value is None else {"SOAPRECEPTOR_CPU_AFFINITY": value}
    assert affinity.mode(environ) == expected


def test_an_unknown_setting_says_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"SOAPRECEPTOR_CPU_AFFINITY is 'nearest'; use 'auto' .* or 'off'"):
        affinity.mode({"SOAPRECEPTOR_CPU_AFFINITY": "nearest"})


def test_workers_spread_over_the_cpus_lowest_first() -> None:
    taken: list[int | None] = []
    for _ in range(4):
        taken.append(affinity.choose_cpu({3, 1, 2, 0}, taken))
    assert taken == [0, 1, 2, 3]
    assert affinity.choose_cpu({0, 1}, [0, 1]) == 0, "more workers than CPUs: the least taken, lowest first"


def test_a_replacement_takes_the_cpu_left_free() -> None:
    assert affinity.choose_cpu({0, 1, 2}, [0, 2]) == 1


def test_workers_not_pinned_or_pinned_elsewhere_do_not_count() -> None:
    assert affinity.choose_cpu({4, 5}, [None, 7, 4]) == 5


def test_no_cpu_to_choose_from() -> None:
    with pytest.raises(ValueError, match="no CPU"):
        affinity.choose_cpu(set(), [])


@pytest.mark.parametrize(
    ("allowed", "workers", "taken", "expected"),
    [
        ({0, 1}, 2, [], 0),
        ({0, 1}, 2, [0], 1),
        ({0, 1, 2, 3}, 2, [0], 1),
        ({0, 1}, 3, [0, 1], None),  # more workers than CPUs: the scheduler balances them
        ({5}, 1, [], None),  # one CPU: nothing to choose
    ],
)
def test_a_cpu_for_each_worker_or_none(
    monkeypatch: pytest.MonkeyPatch, allowed: set[int], workers: int, taken: list[int | None], expected: int | None
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: allowed, raising=False)
    assert affinity.cpu_for_new_worker(workers, taken) == expected


def test_no_pinning_where_the_platform_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert affinity.cpu_for_new_worker(1, []) is None
