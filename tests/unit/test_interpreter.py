"""The worker's GIL switch interval: 1 ms by default, overridable, a bad value named clearly."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from processors.interpreter import SWITCH_INTERVAL_ENV, set_worker_switch_interval


@pytest.fixture(autouse=True)
def restore_switch_interval(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(SWITCH_INTERVAL_ENV, raising=False)
    before = sys.getswitchinterval()
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_default_is_one_millisecond() -> None:
    assert set_worker_switch_interval() == pytest.approx(0.001)
    assert sys.getswitchinterval() == pytest.approx(0.001)


def test_empty_value_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SWITCH_INTERVAL_ENV, " ")
    assert set_worker_switch_interval() == pytest.approx(0.001)


@pytest.mark.parametrize(("value", "seconds"), [("0.2", 0.0002), ("5", 0.005), (" 2 ", 0.002)])
def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, value: str, seconds: float) -> None:
    monkeypatch.setenv(SWITCH_INTERVAL_ENV, value)
    assert set_worker_switch_interval() == pytest.approx(seconds)
    assert sys.getswitchinterval() == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["fast", "1ms", "0", "-1", "nan", "inf"])
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    before = sys.getswitchinterval()
    monkeypatch.setenv(SWITCH_INTERVAL_ENV, value)
    with pytest.raises(ValueError, match=SWITCH_INTERVAL_ENV):
        set_worker_switch_interval()
    assert sys.getswitchinterval() == before  # left as it was
