"""Fault-injection, bad-input and security tests (``-m reliability``); fixtures come from tests/conftest.py."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: fault injection, bad input and security tests of the whole pipeline")
