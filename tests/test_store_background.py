"""BackgroundWrites: a transaction's writes in order on one thread, errors never lost."""

from __future__ import annotations

import threading
import time

import pytest

from huitouke.store.background import BackgroundWrites


def test_writes_run_in_submission_order_on_one_other_thread():
    done, threads = [], set()

    def write(n):
        time.sleep(0.01 if n == 0 else 0)
        threads.add(threading.get_ident())
        done.append(n)

    with BackgroundWrites() as writes:
        for n in range(5):
            writes.submit(write, n)
    assert done == [0, 1, 2, 3, 4]
    assert threads and threading.get_ident() not in threads


def test_wait_raises_the_first_error_and_later_writes_are_skipped():
    done = []

    def fail():
        raise RuntimeError("disk full")

    writes = BackgroundWrites()
    with pytest.raises(RuntimeError, match="disk full"):
        with writes:
            writes.submit(done.append, 1)
            writes.submit(fail)
            writes.submit(done.append, 2)
    assert done == [1]


def test_an_error_of_the_caller_waits_for_the_running_write_before_it_propagates():
    finished = threading.Event()

    def slow():
        time.sleep(0.05)
        finished.set()

    with pytest.raises(ValueError):
        with BackgroundWrites() as writes:
            writes.submit(slow)
            raise ValueError("computing failed")
    assert finished.is_set()  # the transaction would only now be rolled back
