"""One student's grading job (autograde/job.py): the parts that need no kernel. (A job end to end is graded in
tests/test_batch.py and tests/test_course.py.)"""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from autograde import job


def test_a_stage_past_its_limit_is_stopped_and_the_stop_never_reaches_its_caller():
    def endless():
        while True:
            pass

    started = time.monotonic()
    assert job.time_limited(0.3, endless) == (True, None)
    assert time.monotonic() - started < 5
    with ThreadPoolExecutor(1) as pool:  # as Dask runs a job: not in the main thread
        assert pool.submit(job.time_limited, 0.3, endless).result() == (True, None)
    def swallows(error=None):  # as nbgrader does: everything is caught, and the stage returns
        try:
            endless()
        except BaseException as caught:
            error = caught
        return type(error).__name__

    assert job.time_limited(0.3, swallows) == (True, "StageTimeout")
    for _ in range(300):  # limits that expire as their stage ends: the caller goes on untouched
        stopped, value = job.time_limited(0.0005, sum, range(300))
        assert value in (None, sum(range(300))) and (stopped or value is not None)
        sum(range(2000))
    assert job.time_limited(5, sum, [1, 2]) == (False, 3)
    with pytest.raises(ZeroDivisionError):  # the stage's own error is the caller's, as in a plain call
        job.time_limited(5, lambda: 1 / 0)
