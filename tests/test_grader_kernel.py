"""The grader kernel (autograde/grader_kernel.py), cell by cell: a test cell runs in the grader's
process and reaches the student's functions only by calling them in the student's sandboxed one.

One kernel serves the module; cells run in order, as in a notebook.
"""
import json
import os
import sys

import pytest
from jupyter_client import KernelManager

from autograde import batch
from autograde.grader_kernel import digest

pytestmark = pytest.mark.slow

STUDENT_DEFINES = '''
import torch, warnings
from course_lib import grading
grading.check_close = lambda *a, **k: None          # tampering: the test cell must not see it
torch.allclose = lambda *a, **k: True

def double(x):
    warnings.warn("a harmless warning")               # must not turn the test cell red (stderr)
    return 2 * x

def with_metric(x):
    y = (x ** 2).sum()
    return y, y.detach() * 10                        # the second output is a metric: detached

def grows(n):
    return torch.zeros(n, dtype=torch.float64).sum()  # allocates n * 8 bytes in the student's process

def uses_helper(x):
    return helper(x) + 1

def helper(x):
    return -x                                         # wrong on purpose; the test swaps in a right one
'''
TEST_CELLS = {
    "tamper": '''
import torch
from course_lib import grading
print("allclose is real:", torch.allclose(torch.zeros(1), torch.ones(1)) is False)
try:
    grading.check_close(torch.zeros(1), torch.ones(1), call="x")
except AssertionError:
    print("check_close still checks")
''',
    "grad": '''
import torch
x = torch.tensor([1.0, 2.0], requires_grad=True)
y, metric = with_metric(x)
y.backward()
print("grad", x.grad.tolist(), "metric detached", not metric.requires_grad, "double", double(x).tolist())
''',
    "memory": '''
from course_lib.memory_budget import PeakMemory
with PeakMemory() as memory:
    grows(1_000_000)
print("peak at least 8 MB:", memory.peak >= 8_000_000)
''',
    "replace": '''
import torch
from course_lib import grading
with grading.replacing_globals(uses_helper, helper=lambda x: x):
    inside = uses_helper(torch.tensor(1.0)).item()
print("replaced", inside, "restored", uses_helper(torch.tensor(1.0)).item())
''',
}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernel")
    trusted = root / "trusted.json"
    trusted.write_text(json.dumps([digest(code) for code in TEST_CELLS.values()]))
    spec = root / "kernels" / batch.KERNEL_NAME
    spec.mkdir(parents=True)
    env = {"GRADER_TRUSTED_CELLS": str(trusted), "GRADER_LIMITS": json.dumps({"cell_seconds": 30}),
           "GRADER_EVENTS": str(root / "events.jsonl"), "PYTHONPATH": str(batch.HERE.parent)}
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "autograde.grader_kernel", "-f", "{connection_file}"],
        "display_name": "grader", "language": "python", "env": env}))
    os.environ["JUPYTER_PATH"] = str(root)
    manager = KernelManager(kernel_name=batch.KERNEL_NAME)
    manager.start_kernel(cwd=str(root))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    assert run(client, STUDENT_DEFINES)["status"] == "ok"
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    del os.environ["JUPYTER_PATH"]


def run(client, code):
    """Execute a cell; returns {"status", "stdout", "stderr"}."""
    out = {"stdout": "", "stderr": ""}

    def hook(message):
        if message["msg_type"] == "stream":
            out[message["content"]["name"]] += message["content"]["text"]
        elif message["msg_type"] == "error":
            out["stderr"] += message["content"]["evalue"]

    reply = client.execute_interactive(code, timeout=120, output_hook=hook)
    return dict(out, status=reply["content"]["status"])


def test_tampering_in_student_cells_does_not_reach_the_checks(kernel):
    out = run(kernel, TEST_CELLS["tamper"])
    assert "allclose is real: True" in out["stdout"] and "check_close still checks" in out["stdout"], out


def test_gradients_cross_the_boundary_and_detached_outputs_stay_detached_and_warnings_are_not_stderr(kernel):
    out = run(kernel, TEST_CELLS["grad"])
    assert out["status"] == "ok" and out["stderr"] == "", out
    assert "grad [2.0, 4.0] metric detached True double [2.0, 4.0]" in out["stdout"], out
    assert "a harmless warning" in out["stdout"]


def test_memory_is_measured_where_the_students_function_runs(kernel):
    assert "peak at least 8 MB: True" in run(kernel, TEST_CELLS["memory"])["stdout"]


def test_a_test_can_swap_a_helper_the_student_function_calls(kernel):
    assert "replaced 2.0 restored 0.0" in run(kernel, TEST_CELLS["replace"])["stdout"]


def test_a_student_cell_that_looks_like_a_test_cell_but_differs_runs_as_student_code(kernel):
    impostor = TEST_CELLS["tamper"] + "\n# one more line"
    out = run(kernel, impostor)
    assert "allclose is real: False" in out["stdout"], "the impostor ran where the student's tampering applies"
