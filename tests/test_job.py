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


@pytest.mark.slow
def test_one_worker_grades_student_after_student_on_one_warm_zygote(tmp_path):
    """The zygote dies with the thread that started it (PR_SET_PDEATHSIG): started from the grading stage's thread,
    where the provisioner asks for it, every job would pay a fresh one (seconds of imports)."""
    from dataclasses import asdict
    from autograde import course, gradebook, zygote
    from autograde.sandbox import Limits
    from conftest import require_box
    require_box()
    assignment = course.assignments()[0]
    workspace = course.Workspace(root=tmp_path / "course", release=tmp_path / "release")
    template = gradebook.template_gradebook(workspace, assignment)  # releases the assignment into the workspace
    release = workspace.release / assignment / f"{assignment}.ipynb"
    untouched = job.Job("untouched", assignment, {release.name: release.read_bytes()}, template, asdict(Limits()))
    zygotes = []
    for _ in range(2):
        outcome = job.grade_job(untouched)
        assert not outcome.reasons and outcome.grades, outcome.reasons
        time.sleep(0.5)  # time for a zygote killed as the stage's thread ended to be gone
        zygotes.append(zygote._worker_zygote)
        assert zygotes[-1] is not None and zygotes[-1].alive(), "the worker's zygote died with the job's grading stage"
    assert zygotes[0] is zygotes[1], "the second job started a zygote of its own"
