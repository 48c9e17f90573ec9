"""The runtime helpers the services share: waiting with a deadline and stopping process groups."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pgai_orm.errors import VectorizerError
from pgai_orm.runtime.processes import exited, stop_group, stop_process
from pgai_orm.runtime.waiting import WaitTimeoutError, wait_for, wait_until


def test_wait_until_returns_as_soon_as_the_condition_holds() -> None:
    calls: list[int] = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert wait_until(third_time, timeout=10, interval=0.001)
    assert len(calls) == 3


def test_wait_until_gives_up_at_the_deadline_and_abort_ends_it_at_once() -> None:
    assert not wait_until(lambda: False, timeout=0.05, interval=0.01)
    checked: list[int] = []
    assert not wait_until(lambda: checked.append(1), timeout=60, abort=lambda: True)
    assert checked == []


def test_wait_for_returns_the_value_or_names_what_it_waited_for() -> None:
    assert wait_for(lambda: "ready", timeout=1) == "ready"
    with pytest.raises(WaitTimeoutError, match=r"waiting for the answer \(last: 0\)") as caught:
        wait_for(lambda: 0, timeout=0.05, what="the answer", interval=0.01)
    assert isinstance(caught.value, VectorizerError) and isinstance(caught.value, TimeoutError)


def test_stop_process_escalates_to_sigkill_when_sigterm_is_ignored() -> None:
    ignores_term = ("import signal, sys, time\n"
                    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    "sys.stdout.write('up'); sys.stdout.flush()\n"
                    "time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", ignores_term], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.read(2) == b"up"  # handler installed
    started = time.monotonic()
    stop_process(process.pid, timeout=0.5, process=process)
    assert exited(process.pid, process)
    assert process.returncode == -9
    assert time.monotonic() - started < 30


def test_stop_group_takes_the_children_of_the_group_with_it() -> None:
    spawns_child = ("import subprocess, sys, time\n"
                    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                    "print(child.pid, flush=True)\n"
                    "time.sleep(60)\n")
    leader = subprocess.Popen([sys.executable, "-c", spawns_child], stdout=subprocess.PIPE,
                              start_new_session=True)
    assert leader.stdout is not None
    grandchild = int(leader.stdout.readline())
    stop_group(leader.pid, timeout=5, process=leader)
    assert exited(leader.pid, leader)
    assert wait_until(lambda: exited(grandchild), timeout=10)


def test_stopping_a_process_that_is_already_gone_is_fine() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    stop_process(process.pid, timeout=1, process=process)
    assert exited(process.pid, process)
