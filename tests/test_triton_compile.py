"""Triton kernels compiled for sm_80/sm_90 without a GPU (course_lib/triton_compile.py, benchmarks/gpu_check.py).

Compiling needs kernels Triton has not replaced by its interpreter, so each check runs in a process started
without TRITON_INTERPRET (this one has it set, by conftest.py).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
COMPILED_ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def _python(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=COMPILED_ENV, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def gpu_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check"
    done = _python("benchmarks/gpu_check.py", "--out", str(out))
    return done, json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else None


def test_every_kernel_compiles_for_both_targets_in_every_configuration_its_launchers_use(gpu_check):
    done, rows = gpu_check
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    by_kernel = {}
    for row in rows:
        by_kernel.setdefault((row["source"], row["kernel"]), []).append(row)
    assert set(by_kernel) == {("course_lib.triton_cross_entropy", k) for k in
                              ("cross_entropy_forward_kernel", "cross_entropy_backward_kernel")} | \
        {("solutions 10", k) for k in ("logsumexp_kernel", "ce_forward_kernel", "ce_backward_kernel")}
    for (source, kernel), compiled in by_kernel.items():
        configurations = {row["configuration"] for row in compiled}
        assert {row["arch"] for row in compiled} == {"sm_80", "sm_90"}
        assert len(compiled) == 2 * len(configurations), f"{kernel}: each configuration once per target"
        dtypes = ("fp32", "bf16", "fp16", "fp64") if source.startswith("course_lib") else ("fp32", "bf16", "fp16")
        for dtype in dtypes:
            assert any(c.startswith(dtype) for c in configurations), f"{kernel} was not compiled for {dtype} logits"
    course = [r["configuration"] for r in rows if r["source"].startswith("course_lib")]
    for block, warps in ((1024, 4), (4096, 8), (16384, 16)):
        assert any(f"BLOCK={block} {warps} warps" in c for c in course), f"no launch with BLOCK={block}"
    assert all(r["registers"] > 0 and r["spill_bytes"] == 0 and r["error"] is None for r in rows)
    assert "| cross_entropy_forward_kernel | sm_90 |" in done.stdout, "the table is printed"


CASES = '''
import json, sys
import torch, triton, triton.language as tl
from course_lib import triton_compile

@triton.jit
def copy_ragged(x_ptr, out_ptr, BLOCK: tl.constexpr):  # the interpreter runs it; arange needs a power of two
    tl.store(out_ptr + tl.arange(0, BLOCK), tl.load(x_ptr + tl.arange(0, BLOCK)))

@triton.jit
def minus_max(x_ptr, out_ptr, BLOCK: tl.constexpr):  # every x stays live across the max
    x = tl.load(x_ptr + tl.arange(0, BLOCK))
    tl.store(out_ptr + tl.arange(0, BLOCK), x - tl.max(x, axis=0))

x = torch.zeros(16384)
results = {}
# hoard: 16384 floats on 1 warp are 512 live a thread, more than 255 registers hold; fits: 8 a thread
for name, kernel, block, warps in (("ragged", copy_ragged, 1000, 4), ("hoard", minus_max, 16384, 1),
                                   ("fits", minus_max, 1024, 4)):
    namespace = {"kernel": kernel}
    with triton_compile.recording(namespace) as launches:
        namespace["kernel"][(1,)](x, x, BLOCK=block, num_warps=warps)
    try:
        results[name] = vars(triton_compile.compile_launch(launches[0], "sm_90"))
    except Exception as error:
        results[name] = {"error": triton_compile.error_message(error)}
json.dump(results, sys.stdout)
'''


def test_the_compiler_rejects_what_the_interpreter_runs_and_spills_are_counted(tmp_path):
    (tmp_path / "cases.py").write_text(textwrap.dedent(CASES))
    done = _python(str(tmp_path / "cases.py"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["ragged"]["error"] == "arange's range must be a power of 2 (at 2:23 of the kernel)"
    assert results["hoard"]["spill_bytes"] > 0
    assert results["fits"]["spill_bytes"] == 0 and 0 < results["fits"]["registers"] < 255


def test_recording_refuses_where_the_interpreter_replaced_the_kernels():
    done = subprocess.run([sys.executable, "-c", "from course_lib import triton_compile\n"
                           "with triton_compile.recording({}): pass"],
                          cwd=ROOT, env=dict(COMPILED_ENV, TRITON_INTERPRET="1"), capture_output=True, text=True)
    assert done.returncode and "run it where TRITON_INTERPRET is not 1" in done.stderr
