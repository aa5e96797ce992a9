"""Every Triton kernel of the course, compiled for sm_80 and sm_90 as its launchers launch it, on a machine
without a GPU: registers, spills, shared memory, compile time.

    python benchmarks/gpu_check.py            (make gpu-check; writes benchmarks/results/gpu_check.{md,json})

The kernels are course_lib.triton_cross_entropy's and those of the solution notebooks (their solution cells,
run as a module). Each launcher is called on small CPU tensors of every dtype it takes and of vocabularies
that reach each of its block sizes and warp counts; its kernels' launches are described instead of run
(course_lib/triton_compile.py), and each distinct one is compiled fresh (an empty Triton cache) from its
description, as the grader compiles a student's. Exits 1 on a compile error or on a kernel that spills
registers to local memory.
"""
import argparse
import ast
import functools
import json
import linecache
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: the compiler's kernels, not Python's
os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="triton-cache-"))  # compile times are fresh

import nbformat  # noqa: E402
import torch  # noqa: E402

from course_lib import triton_compile  # noqa: E402
from course_lib import triton_cross_entropy as tce  # noqa: E402

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
LOW_PRECISION = (torch.float32, torch.bfloat16, torch.float16)  # the notebook's kernels accumulate in fp32
# a vocabulary per (block, warps) the launcher picks on a GPU: 1024 and 4 warps, 4096 and 8, 16384 and 16
VOCABULARIES = (1000, 4096, 50257)
ROWS = 4


def course_lib_launches():
    """triton_cross_entropy's three launches (loss; loss and gradient in one pass; gradient), as its
    autograd Function and the fused linear cross-entropy make them on a GPU."""
    with triton_compile.launches(run=False) as launches:
        for dtype in DTYPES:
            for V in VOCABULARIES:
                z, y = torch.zeros(ROWS, V, dtype=dtype), torch.zeros(ROWS, dtype=torch.long)
                acc, block = torch.promote_types(dtype, torch.float32), tce.default_block(V, dtype, on_gpu=True)
                _, lse = tce.cross_entropy_forward(z, y, block_size=block)
                tce.cross_entropy_forward(z, y, dloss=torch.ones((), dtype=acc), grad=z, block_size=block)
                tce.cross_entropy_backward(z, y, lse.to(acc), torch.ones(ROWS, dtype=acc), torch.empty_like(z),
                                           block_size=block)
    return launches


def solution_module(assignment):
    """The notebook's solution cells run as one module, below every import of its cells other than tests."""
    nb = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    roles = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    code = [c.source for c, role in zip(nb.cells, roles) if c.cell_type == "code" and role.get("solution")]
    imports = [node for c, role in zip(nb.cells, roles) if c.cell_type == "code" and not role.get("grade")
               for node in ast.walk(ast.parse(c.source)) if isinstance(node, (ast.Import, ast.ImportFrom))]
    source = "\n".join([ast.unparse(node) for node in imports] + code)
    filename = f"<{assignment} solutions>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # @triton.jit reads it
    namespace = {"__name__": assignment.replace("-", "_")}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def notebook_10_launches():
    """Notebook 10's three kernels, through the launchers the solution cells define."""
    ns = solution_module("10_gpu_lab_fused_cross_entropy")
    with triton_compile.launches(run=False) as launches:
        for dtype in LOW_PRECISION:
            z, y = torch.zeros(ROWS, VOCABULARIES[-1], dtype=dtype), torch.zeros(ROWS, dtype=torch.long)
            ns["online_logsumexp"](z)
            _, lse = ns["cross_entropy_forward"](z, y)
            ns["cross_entropy_backward"](z, y, lse, inplace=True)
    return launches


SOURCES = {"course_lib.triton_cross_entropy": course_lib_launches, "solutions 10": notebook_10_launches}


@functools.cache
def distinct_launches(source):
    """SOURCES[source]'s launches, one per program Triton would compile (its specialisation and options)."""
    return triton_compile.distinct([triton_compile.rebuilt(launch) for launch in SOURCES[source]()])


def _compile(job):
    source, index, arch = job
    launch = distinct_launches(source)[index]
    try:
        return {"source": source, **vars(triton_compile.compile_launch(launch, arch)), "error": None}
    except Exception as error:  # a compile error is a row of the table, named, not a crash of the check
        return {"source": source, "kernel": launch.kernel.__name__, "arch": arch,
                "error": triton_compile.error_message(error)}


def run(workers):
    jobs = [(source, i, arch) for source in SOURCES for i in range(len(distinct_launches(source)))
            for arch in triton_compile.ARCHS]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_compile, jobs))


def table(rows):
    lines = ["| source | kernel | target | configuration | registers | spilled B | shared B | compile s |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['source']} | {r['kernel']} | {r['arch']} | **compile error**: {r['error']} | | | | |")
        else:
            lines.append(f"| {r['source']} | {r['kernel']} | {r['arch']} | {r['configuration']} | {r['registers']} "
                         f"| {r['spill_bytes']} | {r['shared_bytes']} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check", help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    rows = run(args.workers)
    failed = [r for r in rows if r["error"] or r["spill_bytes"]]
    text = (f"# Triton kernels compiled for sm_80 and sm_90 (no GPU needed)\n\n`python benchmarks/gpu_check.py` "
            f"(`make gpu-check`), Triton {triton_compile.triton.__version__}, {len(rows)} compiles.\n\n{table(rows)}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(text)
    if failed:
        sys.exit(f"gpu-check: {len(failed)} of {len(rows)} compiles failed or spilled: "
                 + "; ".join(f"{r['kernel']} {r['arch']}: {r['error'] or str(r['spill_bytes']) + ' B spilled'}"
                             for r in failed))


if __name__ == "__main__":
    main()
