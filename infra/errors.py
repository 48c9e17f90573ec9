"""Errors of the embedded dev stack.

Each failure a developer can fix has its own class, so callers (the CLI, the test fixtures) can
show one clear message instead of a traceback from deep inside ``subprocess``. Every one derives
from :class:`InfraError`, a ``RuntimeError`` under the project's root
:class:`~pgai_orm.errors.VectorizerError`.
"""

from __future__ import annotations

from pgai_orm.errors import VectorizerError
from pgai_orm.runtime.processes import ProcessStopError


class InfraError(VectorizerError, RuntimeError):
    """Base class: something about the local Postgres or broker went wrong."""


class BinaryNotFoundError(InfraError):
    """A bundled executable (``initdb``, ``pg_ctl``, ``tansu``) is not where we expected it."""


class PortInUseError(InfraError):
    """The port asked for is already bound by another process."""


class ServiceStartError(InfraError):
    """A service was launched but did not become ready; the message carries its log tail."""


class ServiceStopError(InfraError, ProcessStopError):
    """A service did not exit after being asked to stop (and after being killed)."""


class SlotBusyError(InfraError, TimeoutError):
    """A replication slot stayed held by a backend that was told to terminate."""
