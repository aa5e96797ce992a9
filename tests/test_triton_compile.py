"""Triton kernels compiled for sm_80/sm_90 without a GPU (course_lib/triton_compile.py, benchmarks/gpu_check.py).

`make gpu-check` and the compiler's verdicts run in processes started without TRITON_INTERPRET, as on a machine
with a GPU; the launches described, compiled and held to their tensors in this process are the interpreter's
(conftest.py sets TRITON_INTERPRET=1), as where a notebook without a GPU is graded.
"""
import io
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import triton
import triton.language as tl
from triton.runtime.jit import KernelInterface

from conftest import ROOT
from course_lib import grading, triton_compile

COMPILED_ENV = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def _python(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=COMPILED_ENV, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def gpu_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check"
    done = _python("benchmarks/gpu_check.py", "--out", str(out))
    return done, json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else None


@pytest.mark.slow
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
    with triton_compile.launches(run=False) as launches:
        kernel[(1,)](x, x, BLOCK=block, num_warps=warps)
    try:
        results[name] = vars(triton_compile.compile_launch(triton_compile.rebuilt(launches[0]), "sm_90"))
    except Exception as error:
        results[name] = {"error": triton_compile.error_message(error)}
json.dump(results, sys.stdout)
'''


@pytest.mark.slow
def test_the_compiler_rejects_what_the_interpreter_runs_and_spills_are_counted(tmp_path):
    (tmp_path / "cases.py").write_text(textwrap.dedent(CASES))
    done = _python(str(tmp_path / "cases.py"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["ragged"]["error"] == "arange's range must be a power of 2 (at 2:23 of the kernel)"
    assert results["hoard"]["spill_bytes"] > 0
    assert results["fits"]["spill_bytes"] == 0 and 0 < results["fits"]["registers"] < 255




# ---------------------------------------------------------------- in this process: kernels run in the interpreter

@triton.jit
def _row_sums(x_ptr, out_ptr, V, BLOCK: tl.constexpr, MASKED: tl.constexpr = True):
    cols = tl.arange(0, BLOCK)
    row = tl.program_id(0)
    if MASKED:
        z = tl.load(x_ptr + row * V + cols, mask=cols < V, other=0.0)
    else:  # reads past the row, keeps only what lies in it: right values, wrong memory
        z = tl.where(cols < V, tl.load(x_ptr + row * V + cols), 0.0)
    tl.store(out_ptr + row, _twice(tl.sum(z, axis=0)) * HALF)


@triton.jit
def _twice(x):
    return 2 * x


HALF = tl.constexpr(0.5)


@triton.jit
def _fill(out_ptr, V, BLOCK: tl.constexpr):
    cols = tl.arange(0, BLOCK)
    tl.store(out_ptr + tl.program_id(0) * V + cols, 1.0)  # no mask: the last row's lanes past V write past the end


def test_a_launch_runs_and_is_described_as_data_that_compiles_here():
    x = torch.randn(3, 100)
    out = torch.empty(3)
    with triton_compile.launches() as made:
        _row_sums[(3,)](x, out, 100, BLOCK=128)
    torch.testing.assert_close(out, x.sum(1))  # it ran
    assert KernelInterface.__getitem__ is not None and "launch" not in KernelInterface.__getitem__.__qualname__
    (launch,) = made
    buffer = io.BytesIO()
    torch.save(made, buffer)  # plain data: what a graded call sends back, read with weights_only=True
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == made
    assert launch["args"][:2] == [{"tensor": "float32", "aligned": True}] * 2 and launch["args"][2] == {"value": 100}
    assert set(launch["kernels"]) == {"_row_sums", "_twice"}
    assert launch["kernels"]["_row_sums"]["globals"]["HALF"] == {"constexpr": 0.5}
    # kernels ran in this process's interpreter, which left triton.language patched: a child process compiles
    (compiled,) = triton_compile.compile_described(made, "sm_90")
    assert compiled["kernel"] == "_row_sums" and compiled["error"] is None
    assert compiled["registers"] > 0 and compiled["spill_bytes"] == 0
    assert "BLOCK=128" in compiled["configuration"] and "MASKED=True" in compiled["configuration"]


def test_the_patch_is_undone_when_the_block_raises():
    before = KernelInterface.__getitem__
    with pytest.raises(ZeroDivisionError), triton_compile.launches():
        1 / 0
    assert KernelInterface.__getitem__ is before and triton_compile.ACTIVE == []


def test_an_unmasked_load_or_store_past_the_tensor_is_refused_naming_it():
    x = torch.randn(3, 100)
    out = torch.empty(3)
    with pytest.raises(triton_compile.OutOfBounds, match=r"_row_sums loaded 28 element\(s\) outside every tensor "
                                                          r"it was given, .*past the end of `x_ptr` \(a \(3, 100\)"):
        with triton_compile.launches():
            _row_sums[(3,)](x, out, 100, BLOCK=128, MASKED=False)
    with pytest.raises(triton_compile.OutOfBounds, match=r"_fill stored 28 element\(s\).*`out_ptr`"):
        with triton_compile.launches():
            _fill[(3,)](torch.empty(3, 100), 100, BLOCK=128)
    _row_sums[(3,)](x, out, 100, BLOCK=128, MASKED=False)  # held only inside a block: the interpreter is as it was
    torch.testing.assert_close(out, x.sum(1))


def test_a_description_is_made_again_without_running_any_of_it():
    x, out = torch.randn(2, 16), torch.empty(2)
    with triton_compile.launches(run=False) as made:
        _row_sums[(2,)](x, out, 16, BLOCK=16)
    hostile = json.loads(json.dumps(made[0]))
    hostile["kernels"]["_row_sums"]["params"][0]["name"] = "x_ptr=print('ran')"  # no code in a name
    with pytest.raises(triton_compile.NotRebuildable, match="is not a Python name"):
        triton_compile.rebuilt(hostile)
    module = json.loads(json.dumps(made[0]))
    module["kernels"]["_row_sums"]["globals"]["HALF"] = {"module": "os"}  # only triton's and math may be imported
    (refused,) = triton_compile.compile_described([module], "sm_90")
    assert refused["kernel"] == "_row_sums" and "Cannot access global variable HALF" in refused["error"]


def test_the_compiling_process_is_kept_and_a_dead_one_replaced():
    x, out = torch.randn(2, 16), torch.empty(2)
    with triton_compile.launches(run=False) as made:
        _row_sums[(2,)](x, out, 16, BLOCK=16)
    registers = lambda: [r["registers"] for r in triton_compile.compile_described(made)]  # noqa: E731
    first = registers()  # in a child process: this one's triton is the interpreter's
    child = triton_compile._Compiler.running.process
    assert registers() == first and triton_compile._Compiler.running.process is child
    child.kill()
    child.wait()
    assert registers() == first and triton_compile._Compiler.running.process is not child


@triton.jit
def _minus_max(x_ptr, out_ptr, BLOCK: tl.constexpr):  # every x stays live across the max
    x = tl.load(x_ptr + tl.arange(0, BLOCK))
    tl.store(out_ptr + tl.arange(0, BLOCK), x - tl.max(x, axis=0))


def test_check_compiles_passes_a_kernel_that_spills_and_says_so(capsys):
    def centred(x, warps):  # 16384 floats on 1 warp: 512 live a thread, more than 255 registers hold
        out = torch.empty_like(x)
        _minus_max[(1,)](x, out, BLOCK=x.numel(), num_warps=warps)
        return out

    grading.check_compiles(centred, [("16384 floats, 1 warp", (torch.randn(16384), 1))], name="centred")
    printed = capsys.readouterr().out
    assert re.search(r"_minus_max compiles for sm_90 \(fp32 BLOCK=16384 1 warps\): \d+ registers a thread, and spills "
                     r"\d+ bytes a thread to local memory: slower on a GPU, no points lost", printed), printed
    grading.check_compiles(centred, [("1024 floats, 4 warps", (torch.randn(1024), 4))], name="centred")
    assert "no spills" in capsys.readouterr().out
    with pytest.raises(grading.CheckFailed, match="no Triton kernel was launched"):
        grading.check_compiles(lambda x: x * 2, [("a tensor", (torch.randn(4),))], name="doubles")
