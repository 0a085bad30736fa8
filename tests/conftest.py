"""Shared pytest setup."""

import os
import queue
import sys
import threading

import pytest

# How long a child process may take to print an expected line. Generous: it only bounds a stall,
# which must fail its test with a message instead of hanging the whole run.
LINE_TIMEOUT_S = 120

_exit_status = {}


def pytest_sessionfinish(session, exitstatus):
    _exit_status["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # py-rattler 0.28 can crash while the interpreter finalizes after its async
    # calls ("PyGILState_Release ... finalizing", SIGSEGV; seen in about 1 of 5
    # script runs on a loaded machine). Every result is reported by now, so
    # leave without finalizing: a passing run must not end in a crash.
    if "code" in _exit_status and "rattler" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status["code"])


@pytest.fixture
def readline():
    """readline(proc, what): the next line of proc's stdout, or a test failure naming `what` after a deadline.

    A thread does the blocking read: on Windows a pipe cannot be waited on with a timeout.
    """

    def read(proc, what, timeout=LINE_TIMEOUT_S):
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            pass
        state = "still running" if proc.poll() is None else f"exit code {proc.returncode}"
        pytest.fail(f"{what} printed no line within {timeout} s ({state})", pytrace=False)

    return read
