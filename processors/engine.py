"""One worker process serving every config version in the catalog: a faust app per version,
all of them on this process's one event loop.

Why apps in one process rather than a process per version: a process costs an interpreter, the
imports (faust, aiokafka, psycopg, the provider clients), the embedding model and its Kafka and
database clients, and all of that used to be paid once per vectorizer config version. An app
costs a consumer group membership, a consumer thread and two database connections. The embedding
models are loaded once per process (``pgai_orm.embedders.local``) and shared by every version
that uses them, so ten vectorizers on ten tables are one process, not ten.

Why still one faust app (and consumer group) per version: a building version replays the topic
from offset 0 while the active one keeps its place, so each version needs its own group
(:func:`pgai_orm.names.consumer_group`), and faust gives every agent of an app the app's single
group. Keeping the groups keeps every delivery guarantee of ``processors.app`` unchanged: offsets
committed after the store commit, the LSN guard, replay into a fresh store while the old one
serves, and failover of a version's partitions between the processes of its group, on this
machine (``--concurrency``) and on others.

Why the apps are not mode child services of the engine: mode marks every service in the
crashing service's beacon tree as crashed (up to the root, and the root's children), so a
consumer that crashes in one version would stop every other version and the process. Each app
here is its own tree; the engine starts and stops it, notices a crash at its next poll, and
builds that version a new app after a backoff, while the other versions go on.

The catalog is polled every ``poll_interval``: a new vectorizer or version gets its app within
one poll, a retired or dropped one loses it. A version that cannot start (its embedder needs an
API key that is not in the environment, an optional extra is not installed, the stored config
does not load) records why in ``vectorizer.errors`` (step ``start``, one row per version while
it keeps failing), logs it in one line and is tried again with backoff; the other versions run.
The first app of the version that starts deletes the error.

Run control (``vectorizer worker`` flags, pgai's names): a paused vectorizer
(``vectorizer.vectorizers.paused_at``) has no app, so nothing is embedded while its changes wait
in Kafka at the group's committed offsets; ``only`` (``--vectorizer-id``) and ``names``
(``--vectorizer``) choose the vectorizers served; with ``once`` the engine serves the versions
until their groups reached the topics' high-water marks as read at start, then stops; with
``exit_on_error`` the first row error (or a version that cannot start) stops it. Either way it
stops as on SIGTERM (each app commits what it did) and ``exit_status`` says how it went. Every
few seconds it records each selected version's pending events and last applied LSN in
``vectorizer.worker_progress`` (``processors.progress``), paused versions included.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import faust
import mode
import psycopg

from pgai_orm.catalog import catalog_exists, ensure_catalog
from pgai_orm.catalog import errors as catalog_errors
from pgai_orm.catalog.progress import ServedVersion, read_served
from pgai_orm.configuration import ConfigurationError
from pgai_orm.embedders.errors import MissingApiKeyError
from pgai_orm.errors import VectorizerError
from pgai_orm.runtime.backoff import Backoff
from pgai_orm.runtime.failures import describe_unreachable, one_line
from pgai_orm.runtime.logs import scrub
from pgai_orm.runtime.urls import describe_database
from processors.app import VersionRunner, WorkerSettings, create_app, load_spec
from processors.metrics import WorkerMetrics, metrics_enabled
from processors.offsets import committed_offsets
from processors.progress import Progress, Where, behind, measure_pending, read_marks, record_progress, where

logger = logging.getLogger("processors.worker")

GroupKey = tuple[int, int]  # (vectorizer_id, version)

#: Seconds before the first and the longest retry of a version that failed to start or crashed.
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0
#: Seconds an app may take to drain its batch in flight and commit when it is stopped.
STOP_TIMEOUT_S = 30.0
#: Seconds between the checks of ``once`` (caught up?) and ``exit_on_error`` (a row failed?).
WATCH_INTERVAL_S = 0.5
#: Exit statuses of a worker that stopped by itself: rows failed (``--once``) or the first error
#: (``--exit-on-error``); a name given with ``--vectorizer`` that does not exist (``--once``);
#: the catalog could not be read at the start of ``--once``.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69


def read_served_versions(database_url: str, *, check_catalog: bool) -> list[ServedVersion] | None:
    """The config versions that need processors (every ``active`` and ``building`` one, paused
    ones included: see ``ServedVersion.paused``); None when the database has no catalog yet.

    With ``check_catalog`` a catalog older than this code is upgraded first (a no-op when it is
    current), so no worker runs against a catalog that lacks a column it writes. Also records a
    ``source`` error for each vectorizer whose source table was dropped or lost a column it
    reads, once each (logged by the caller), and forgets the ``start`` errors of versions no
    longer served.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not catalog_exists(conn):
            return None
        if check_catalog:
            ensure_catalog(conn)
        catalog_errors.clear_stale_start_errors(conn)
        for message in (catalog_errors.record_missing_sources(conn)
                        + catalog_errors.record_schema_errors(conn)):
            logger.error(message)
        return read_served(conn)


def start_failure_message(exc: BaseException, config: dict[str, object] | None = None) -> str:
    """One line saying why a version cannot start and what fixes it; never a secret.

    ``config`` is the version's stored config (for the embedder's name).
    """
    embedding = (config or {}).get("embedding")
    implementation = embedding.get("implementation") if isinstance(embedding, dict) else None
    if isinstance(exc, MissingApiKeyError):
        embedder = f"the {implementation} embedder" if implementation else "the embedder"
        message = (f"{embedder} needs an API key: set the environment variable {exc.variable}"
                   " for `vectorizer worker` and restart it")
    elif isinstance(exc, ConfigurationError):  # stored by an older or newer version of the code
        message = (f"its stored config does not load: {exc}; change it with"
                   " op.alter_vectorizer")
    elif isinstance(exc, VectorizerError):  # our own messages name the problem and the fix
        message = str(exc)
    else:  # a bug or an environment problem: the log has the traceback
        message = f"{type(exc).__name__}: {exc} (traceback in the worker's log)"
    return scrub(" ".join(message.split()))


def record_start_failure(database_url: str, key: GroupKey, message: str,
                         exc: BaseException) -> str | None:
    """Write the ``start`` error of one version and count it; returns the vectorizer's name
    (None when the catalog cannot be written: the reason is then logged here)."""
    details = {"error": type(exc).__name__, "host": socket.gethostname(), "pid": os.getpid()}
    name = None
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            catalog_errors.record_start_error(conn, key[0], key[1], message, details)
            error = catalog_errors.start_errors(conn).get(key)
            name = error.name if error is not None else None
    except psycopg.Error as db_exc:
        logger.error("vectorizer %d version %d cannot start: %s (and cannot record it in"
                     " vectorizer.errors: %s)", key[0], key[1], message,
                     " ".join(str(db_exc).split()))
    if metrics_enabled():
        WorkerMetrics.of(*key, name=name).errors(["start"])
    return name


@dataclass
class _Served:
    """The app of one version, and since when it runs (for the restart backoff)."""

    app: faust.App
    started: float


class Engine(mode.Service):
    """Keeps one faust app running for every served config version (see the module docstring)."""

    def __init__(self, settings: WorkerSettings, *, poll_interval: float = 5.0,
                 only: Iterable[int] | None = None, names: Iterable[str] | None = None,
                 once: bool = False, exit_on_error: bool = False,
                 progress_interval: float | None = None,
                 on_finished: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.poll_interval = poll_interval
        #: serve only these vectorizer ids (None: all)
        self.only = None if only is None else frozenset(only)
        #: serve only the vectorizers of these names (None: all); with ``only``, either may match
        self.names = frozenset(names) if names else None
        self.once = once
        self.exit_on_error = exit_on_error
        #: seconds between two records of vectorizer.worker_progress
        self.progress_interval = (progress_interval if progress_interval is not None
                                  else min(5.0, max(1.0, poll_interval)))
        #: called once when the engine stopped by itself (``once``, ``exit_on_error``); the
        #: command stops the process with it (default: the engine just stops)
        self.on_finished = on_finished
        #: what the process should exit with once it stops (0 while all went well)
        self.exit_status = 0
        self._finishing = False
        #: versions chosen by ``only``/``names`` at the last poll, paused ones included
        self._selected: dict[GroupKey, ServedVersion] = {}
        #: ``once``: the high-water marks per version to reach, read at the first poll
        self._targets: dict[GroupKey, dict[int, int]] | None = None
        self._metrics: dict[GroupKey, WorkerMetrics] = {}
        self._start_failures: set[GroupKey] = set()
        self._said_unknown: frozenset[str] = frozenset()
        self._said_progress: str | None = None
        #: held by a poll (which may be starting apps) and by ``on_stop``: an app whose start
        #: is under way is stopped only once it started, never half-way (its consumer thread
        #: would outlive the loop)
        self._reconciling = asyncio.Lock()
        self.apps: dict[GroupKey, _Served] = {}
        self._retry_at: dict[GroupKey, float] = {}
        self._backoff: dict[GroupKey, Backoff] = {}
        self._catalog_checked = False
        self._said_waiting: str | None = None

    @mode.Service.task
    async def _poll_catalog(self) -> None:
        logger.info("worker starting: reading the vectorizers of database %s",
                    describe_database(self.settings.database_url))
        while not self.should_stop:
            await self.reconcile()
            await self.sleep(self.poll_interval)  # returns early when the engine stops

    async def reconcile(self) -> None:
        """Make the running apps match the catalog: start, stop and restart them."""
        async with self._reconciling:
            await self._reconcile()

    async def _reconcile(self) -> None:
        try:
            served = await asyncio.to_thread(read_served_versions, self.settings.database_url,
                                             check_catalog=not self._catalog_checked)
        except psycopg.Error as exc:
            reason = (describe_unreachable(exc, database_url=self.settings.database_url)
                      or f"cannot read the catalog: {one_line(exc)}")
            if self.once and self._targets is None:
                self._finish(EXIT_UNAVAILABLE, f"--once: {reason}")
                return
            self._say_waiting(f"{reason}; keeping the versions this worker serves and trying"
                              f" again every {self.poll_interval:g} s")
            return
        selected = self._select(served or [])
        self._selected = {v.key: v for v in selected}
        wanted = {v.key for v in selected if not v.paused}
        if self.once:
            if self._targets is None:
                self._targets = await self._read_targets(wanted)
            # what was pending at the start, nothing that comes later
            wanted &= self._targets.keys() if self._targets is not None else set()
        if served is None or not selected:
            self._catalog_checked = served is not None
            database = describe_database(self.settings.database_url)
            self._say_waiting(f"no vectorizer in database {database} yet: waiting for one (create"
                              " it with op.create_vectorizer in an Alembic migration; the catalog"
                              f" is read every {self.poll_interval:g} s)")
        else:
            self._catalog_checked = True
            if not wanted and not self.once:
                self._say_waiting("every vectorizer this worker serves is paused: waiting for"
                                  " `vectorizer resume NAME` (or op.enable_vectorizer)")
        for key in list(self.apps):
            served_app = self.apps[key]
            if key not in wanted:
                paused = key in self._selected and self._selected[key].paused
                await self._stop_app(key, "it is paused (changes wait in Kafka)" if paused
                                     else "it is no longer served")
            elif served_app.app.crashed:
                crash = served_app.app.crash_reason
                await self._stop_app(key, f"it crashed ({type(crash).__name__}: {crash})")
                uptime = time.monotonic() - served_app.started
                self._schedule_retry(key, reset=uptime > MAX_RETRY_S)
        now = time.monotonic()
        due = [key for key in sorted(wanted - self.apps.keys())
               if self._retry_at.get(key, 0.0) <= now]
        if due and not self.should_stop and not self._finishing:  # at once: a start waits for its group join
            await asyncio.gather(*(self._start_app(key) for key in due))
        if wanted:
            self._said_waiting = None

    def _select(self, versions: list[ServedVersion]) -> list[ServedVersion]:
        """The versions of the vectorizers this worker serves (``only`` ids, ``names``)."""
        if self.only is None and self.names is None:
            return versions
        chosen = [v for v in versions if (self.only is not None and v.vectorizer_id in self.only)
                  or (self.names is not None and v.name in self.names)]
        unknown = (self.names or frozenset()) - {v.name for v in versions}
        if unknown and unknown != self._said_unknown:
            listed = ", ".join(sorted(unknown))
            if self.once:
                self._finish(EXIT_USAGE, f"--vectorizer {listed}: no such vectorizer in database"
                             f" {describe_database(self.settings.database_url)} (see `vectorizer"
                             " status` for the names)")
            else:
                logger.warning("--vectorizer %s: no such vectorizer (yet); serving it once it is"
                               " created", listed)
        self._said_unknown = unknown
        return chosen

    def _where(self, key: GroupKey) -> Where:
        return where(self._selected[key], self.settings.topic_prefix)

    async def _read_targets(self, keys: set[GroupKey]) -> dict[GroupKey, dict[int, int]] | None:
        """``once``: the high-water marks each version must reach (``{}``: no topic yet, so
        nothing to do); None when a topic cannot be read (asked again at the next poll)."""
        wheres = {key: self._where(key) for key in keys}
        marks = await read_marks(self.settings.bootstrap_servers,
                                 (w.topic for w in wheres.values()))
        missing = {w.topic for w in wheres.values()} - marks.keys()
        if missing:
            logger.warning("--once: cannot read the high-water marks of %s yet; trying again",
                           ", ".join(sorted(missing)))
            return None
        targets = {key: marks[w.topic] for key, w in wheres.items()}
        logger.info("--once: serving %d config version(s) until they caught up with %d pending"
                    " event(s)", len(targets),
                    sum(behind(t, {}) for t in targets.values()))
        return targets

    def _finish(self, status: int, why: str) -> None:
        """Stop by itself (``once``, ``exit_on_error``): each app commits what it did first."""
        if self._finishing:
            return
        self._finishing = True
        self.exit_status = status
        (logger.info if status == 0 else logger.error)("worker finishing: %s", why)
        if self.on_finished is not None:
            self.on_finished()
        else:
            asyncio.ensure_future(self.stop())

    def rows_failed(self) -> int:
        """Rows recorded as failed by this process since it started."""
        return sum(m.rows_failed for m in self._metrics.values())

    @mode.Service.task
    async def _watch_run(self) -> None:
        """``exit_on_error``: stop at the first row error; ``once``: stop once caught up."""
        if not (self.once or self.exit_on_error):
            return
        while not self.should_stop and not self._finishing:
            await self.sleep(WATCH_INTERVAL_S)
            if self.exit_on_error and self.rows_failed():
                self._finish(EXIT_FAILED, f"--exit-on-error: {self.rows_failed()} row(s) could"
                             " not be embedded (see `vectorizer errors`)")
            elif self.once and self._targets is not None and await self._caught_up():
                await self.record_progress()
                failed, cannot_start = self.rows_failed(), len(self._start_failures)
                if failed or cannot_start:
                    self._finish(EXIT_FAILED, f"--once: caught up; {failed} row(s) failed and"
                                 f" {cannot_start} version(s) cannot start (see `vectorizer"
                                 " errors`)")
                else:
                    self._finish(0, "--once: every version caught up with what was pending")

    async def _caught_up(self) -> bool:
        """``once``: every version's group reached its target (or cannot start, or was paused
        or dropped meanwhile); a building version that caught up is activated first."""
        for key, target in (self._targets or {}).items():
            version = self._selected.get(key)
            if key in self._start_failures or version is None or version.paused or not target:
                continue
            at = self._where(key)
            try:
                committed = await committed_offsets(self.settings.bootstrap_servers, at.group,
                                                    at.topic)
            except Exception as exc:  # noqa: BLE001  # the broker is busy: asked again
                logger.debug("--once: offsets of %s unknown: %s", at.group, exc)
                return False
            if behind(target, committed):
                return False
        for key in self._targets or {}:
            served = self.apps.get(key)
            if served is not None:  # activate a building version that caught up, now
                try:
                    await served.app.runner.check_caught_up()  # type: ignore[attr-defined]
                except Exception as exc:  # noqa: BLE001  # the next run activates it
                    logger.warning("catch-up check failed: %s: %s", type(exc).__name__, exc)
        return True

    @mode.Service.task
    async def _record_progress_task(self) -> None:
        while not self.should_stop:
            await self.sleep(self.progress_interval)
            if not self.should_stop:
                await self.record_progress()

    async def record_progress(self) -> None:
        """Record each selected version's pending events and last applied LSN in
        ``vectorizer.worker_progress`` (paused versions too: their changes wait in Kafka)."""
        selected = dict(self._selected)
        if not selected:
            return
        wheres = {key: where(v, self.settings.topic_prefix) for key, v in selected.items()}
        try:
            pending = await measure_pending(self.settings.bootstrap_servers, wheres)
        except Exception as exc:  # noqa: BLE001  # the broker is away: LSNs still go in
            logger.debug("pending unknown: %s", exc)
            pending = {}
        rows = []
        for key in selected:
            metrics = self._metrics.get(key)
            rows.append(Progress(key, pending.get(key),
                                 metrics.applied_lsn if metrics else None,
                                 metrics.applied_at if metrics else None))
        try:
            await asyncio.to_thread(record_progress, self.settings.database_url, rows)
        except psycopg.Error as exc:
            said = (f"cannot record progress in vectorizer.worker_progress ({one_line(exc)}):"
                    " the vectorizer_status view shows old numbers; the worker's role needs"
                    " GRANT SELECT, INSERT, UPDATE ON vectorizer.worker_progress (docs/security.md)")
            if said != self._said_progress:
                logger.warning("%s", said)
                self._said_progress = said
        else:
            self._said_progress = None

    def _say_waiting(self, what: str) -> None:
        """Log what the worker waits for, once per cause (not on every poll)."""
        if what != self._said_waiting:
            logger.info("%s", what)
            self._said_waiting = what

    def _schedule_retry(self, key: GroupKey, *, reset: bool = False) -> float:
        """When to try ``key`` again: 1 s, doubling up to 60 s; ``reset`` starts at 1 s again."""
        backoff = self._backoff.setdefault(key, Backoff(FIRST_RETRY_S, MAX_RETRY_S, jitter=0))
        if reset:
            backoff.reset()
        delay = backoff.next_delay()
        self._retry_at[key] = time.monotonic() + delay
        return delay

    def _settings_for(self) -> WorkerSettings:
        """This process's settings; with a faust web port, each app gets the next free one."""
        if self.settings.web_port is None:
            return self.settings
        used = {s.app.conf.web_port for s in self.apps.values()}
        port = self.settings.web_port
        while port in used:
            port += 1
        return replace(self.settings, web_port=port)

    async def _start_app(self, key: GroupKey) -> None:
        vectorizer_id, version = key
        try:
            spec, topic = await asyncio.to_thread(load_spec, self.settings.database_url,
                                                  vectorizer_id, version,
                                                  self.settings.topic_prefix)
        except LookupError:  # dropped between the poll and now
            return
        except psycopg.Error as exc:
            logger.warning("cannot read version %d of vectorizer %d (%s); next poll tries again",
                           version, vectorizer_id, " ".join(str(exc).split()))
            return
        try:
            app = create_app(spec, topic, self._settings_for(), build_pipeline=False)
        except Exception as exc:  # noqa: BLE001  # whatever it is, this version cannot run: say why
            await self._start_failed(key, exc, dict(spec.config))
            return
        runner: VersionRunner = app.runner  # type: ignore[attr-defined]  # set by create_app
        self.apps[key] = _Served(app, time.monotonic())
        self._metrics[key] = runner.metrics
        # the pipeline (embedder, model) is built while the app joins its group: both mostly wait
        built, started = await asyncio.gather(runner.build(), app.start(), return_exceptions=True)
        if isinstance(built, BaseException):
            await self._stop_app(key, "it cannot start")
            if not isinstance(built, Exception):
                raise built
            await self._start_failed(key, built, dict(spec.config))
            return
        if isinstance(started, BaseException):  # e.g. the broker refused: the next poll retries
            logger.error("vectorizer %d version %d: its app did not start (%s: %s)",
                         vectorizer_id, version, type(started).__name__, started)
            await self._stop_app(key, "it did not start")
            self._schedule_retry(key)
            return
        await self._forget_start_error(key)
        runner.metrics.apps.set(1)
        logger.info("serving vectorizer %d version %d (consumer group %s, topic %s)",
                    vectorizer_id, version, spec.group_id, topic)

    async def _start_failed(self, key: GroupKey, exc: BaseException,
                            config: dict[str, object]) -> None:
        message = start_failure_message(exc, config)
        if not isinstance(exc, VectorizerError):
            logger.debug("version %s cannot start", key, exc_info=True)
        name = await asyncio.to_thread(record_start_failure, self.settings.database_url, key,
                                       message, exc)
        delay = self._schedule_retry(key)
        logger.error("vectorizer %s version %d cannot start: %s (next try in %.0f s; see"
                     " `vectorizer errors`)", name or key[0], key[1], message, delay,
                     extra={"vectorizer": key[0], "version": key[1]})
        self._start_failures.add(key)
        if self.exit_on_error:
            self._finish(EXIT_FAILED, f"--exit-on-error: vectorizer {name or key[0]} version"
                         f" {key[1]} cannot start: {message}")

    async def _forget_start_error(self, key: GroupKey) -> None:
        """The version started: delete its ``start`` error, if it had one."""
        from psycopg import AsyncConnection

        try:
            async with await AsyncConnection.connect(self.settings.database_url,
                                                     autocommit=True) as conn:
                await conn.execute(catalog_errors.CLEAR_START_ERROR_SQL, key)
        except psycopg.Error as exc:
            logger.warning("could not clear the start error of vectorizer %d version %d: %s",
                           key[0], key[1], " ".join(str(exc).split()))

    async def _stop_app(self, key: GroupKey, why: str) -> None:
        served = self.apps.pop(key)
        try:
            await asyncio.wait_for(served.app.stop(), STOP_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001  # it is going away whatever happened
            logger.warning("vectorizer %d version %d did not stop cleanly: %s: %s",
                           key[0], key[1], type(exc).__name__, exc)
        runner = getattr(served.app, "runner", None)
        if runner is not None:
            runner.metrics.apps.set(0)
            await runner.close()
        logger.info("stopped serving vectorizer %d version %d: %s", key[0], key[1], why)

    async def on_stop(self) -> None:
        """Stop every app at once: each drains its batch in flight and commits, in parallel
        (after the starts under way, if a poll is starting apps)."""
        try:
            await asyncio.wait_for(self._reconciling.acquire(), STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("apps still starting after %.0f s: stopping them anyway", STOP_TIMEOUT_S)
        await asyncio.gather(*(self._stop_app(key, "the worker is stopping")
                               for key in list(self.apps)))
