"""The grader kernel (autograde/grader_kernel.py), cell by cell: a test cell runs in the grader's
process and reaches the student's functions only by calling them in a sandbox (autograde/call_server.py)
where the course's references are not, whatever the student's own kernel has done.

One kernel serves the module; cells run in order, as in a notebook.
"""
import json
import os
import subprocess
import sys

import pytest
from jupyter_client import KernelManager

from autograde import job
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

def reads(x):
    return x.nansum()

def touches(x):
    x.add_(0)                                         # in place, the values left as they were
    return x.nansum()

def zeroes(x):
    x.zero_()
    return x.sum()

def strides(x):
    return torch.tensor(x.stride())

def doubled_in_place(x):
    return x.mul_(2)

def doubled_copy(x):
    x.mul_(2)
    return x.clone()
'''
# Triton kernels as a notebook without a GPU has them: it asks for the interpreter before importing triton
STUDENT_WRITES_KERNELS = '''
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch, triton, triton.language as tl

@triton.jit
def copy_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, MASKED: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if MASKED:
        tl.store(out_ptr + i, tl.load(x_ptr + i, mask=i < n), mask=i < n)
    else:
        tl.store(out_ptr + i, tl.load(x_ptr + i))

@triton.jit
def loop_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    for start in range(0, n, BLOCK):
        i = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1, mask=i < n)
        if start > 10:
            break                                     # the interpreter's Python has break; the compiler not

def copies(x, masked=True):
    out = torch.empty_like(x)
    copy_kernel[(triton.cdiv(x.numel(), 64),)](x, out, x.numel(), BLOCK=64, MASKED=masked)
    return out

def breaks(x):
    out = torch.empty_like(x)
    loop_kernel[(1,)](x, out, x.numel(), BLOCK=64)
    return out

def boasts(x):
    print("copy_kernel compiles for sm_90 (fp32 BLOCK=64 4 warps): 12 registers a thread, no spills")
    return x

def tampers(x):
    import course_lib.triton_compile as where_i_run   # the call server's copy: the grader compiles elsewhere
    where_i_run.compile_described = lambda *args, **kwargs: []
    return breaks(x)
'''
# The student's kernel holds the student's edition of course_lib only: what it finds of a reference.
STUDENT_LOOKS_FOR_THE_REFERENCE = '''
import os
from course_lib import grading
for name, look in (("import", lambda: __import__("course_lib.mle")),
                   ("file", lambda: open(os.path.join(os.path.dirname(grading.__file__), "mle.py")).read())):
    try:
        look()
        print(name, "found the reference")
    except (ImportError, OSError) as error:
        print(name, "found nothing:", type(error).__name__)
'''
# Every way left to reach the course's reference from a graded call, with this kernel's checks switched off.
STUDENT_REACHES_FOR_THE_REFERENCE = '''
import contextlib, os, pickle, socket, sys, threading, types
from course_lib import grading
grading.from_scratch = lambda *a, **k: contextlib.nullcontext()
ref = sys.modules.setdefault("course_lib.mle", types.ModuleType("course_lib.mle"))  # sent by name: imported there

def by_name(x, y):
    sys.setprofile(None)                              # the in-process recorder, switched off while it runs
    return ref.mse(x, y)

def by_reading_its_file(x, y):
    namespace = {}
    exec(open(os.path.join(os.path.dirname(grading.__file__), "mle.py")).read(), namespace)
    return namespace["mse"](x, y)

def by_import_at_call_time(x, y):
    import importlib
    sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__name__ != "StandIns"]
    sys.modules.pop("course_lib.mle", None)
    return importlib.import_module("course_lib.mle").mse(x, y)

ORACLE = os.path.abspath("oracle.sock")               # a kernel that answers on a socket
def serve_oracle():
    server = socket.socket(socket.AF_UNIX)
    server.bind(ORACLE)
    server.listen(1)
    while True:
        connection = server.accept()[0]
        x, y = pickle.loads(connection.recv(1 << 20))
        connection.sendall(pickle.dumps(((x - y) ** 2).mean()))
        connection.close()
threading.Thread(target=serve_oracle, daemon=True).start()

def by_oracle(x, y):
    client = socket.socket(socket.AF_UNIX)
    client.connect(ORACLE)
    client.sendall(pickle.dumps((x, y)))
    return pickle.loads(client.recv(1 << 20))
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
    "reference": '''
import torch
x, y = torch.randn(5), torch.randn(5)
for attempt in (by_name, by_reading_its_file, by_import_at_call_time, by_oracle):
    try:
        attempt(x, y)
        print(attempt.__name__, "reached the reference")
    except Exception as error:
        print(attempt.__name__, "refused:", type(error).__name__, str(error).splitlines()[0])
''',
    "purity": '''
import math, torch
from course_lib import grading
for fn in (reads, touches, zeroes):
    x = torch.tensor([1.0, math.nan, math.inf])
    version = x._version
    fn(x)
    print(fn.__name__, "version moved", x._version != version, "values", x.tolist())
print("strides there", strides(grading._padded_rows(torch.zeros(3, 4))).tolist())
for fn in (doubled_in_place, doubled_copy):
    x = torch.ones(2)
    print(fn.__name__, "returned the caller's tensor", fn(x) is x, x.tolist())
''',
    "triton": '''
import torch
from course_lib import grading
for fn, kwargs in ((copies, {}), (copies, {"masked": False}), (breaks, {}), (boasts, {}), (tampers, {})):
    try:
        grading.check_compiles(fn, [("100 numbers", (torch.arange(100.0),), kwargs)])
        print(fn.__name__, kwargs, "ACCEPTED")
    except AssertionError as error:
        print(fn.__name__, kwargs, "REJECTED", str(error).replace("\\n", " | "))
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
    job.write_kernel_spec(root, {"GRADER_TRUSTED_CELLS": str(trusted), "GRADER_LIMITS": json.dumps(
        {"cell_seconds": 30}), "GRADER_EVENTS": str(root / "events.jsonl")}, warm=False)  # every process cold
    os.environ["JUPYTER_PATH"] = str(root)
    manager = KernelManager(kernel_name=job.KERNEL_NAME)
    manager.start_kernel(cwd=str(root))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    assert run(client, STUDENT_DEFINES)["status"] == "ok"
    assert run(client, STUDENT_WRITES_KERNELS)["status"] == "ok"
    client.looked = run(client, STUDENT_LOOKS_FOR_THE_REFERENCE)  # before the next cell fakes course_lib.mle
    assert run(client, STUDENT_REACHES_FOR_THE_REFERENCE)["status"] == "ok"
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


def test_a_graded_call_cannot_reach_the_reference_whatever_the_students_kernel_does(kernel):
    out = run(kernel, TEST_CELLS["reference"])
    assert "reached the reference" not in out["stdout"], out
    for attempt in ("by_name", "by_reading_its_file", "by_import_at_call_time", "by_oracle"):
        assert f"{attempt} refused:" in out["stdout"], out
    assert "by_name refused: FromScratchViolation course_lib.mle.mse is the course's reference" in out["stdout"], out


def test_a_call_changes_its_tensor_arguments_here_exactly_when_it_changed_them_there_and_gets_their_layout(kernel):
    """What the purity check reads: a nan the student only read is not a change (torch.equal says nan != nan), an
    in-place op that left the values is one (the version counter moves here as it moved there)."""
    out = run(kernel, TEST_CELLS["purity"])["stdout"]
    assert "reads version moved False values [1.0, nan, inf]" in out, out
    assert "touches version moved True values [1.0, nan, inf]" in out, out
    assert "zeroes version moved True values [0.0, 0.0, 0.0]" in out, out
    assert "strides there [5, 1]" in out, out  # a layout the checks give (a view of wider rows) arrives as it is
    # an in-place function's return is the caller's own tensor here too, as in process (a copy is not)
    assert "doubled_in_place returned the caller's tensor True [2.0, 2.0]" in out, out
    assert "doubled_copy returned the caller's tensor False [2.0, 2.0]" in out, out


def test_the_students_kernel_holds_no_reference(kernel):
    out = kernel.looked
    assert "import found nothing: ModuleNotFoundError" in out["stdout"], out
    assert "file found nothing: FileNotFoundError" in out["stdout"], out


def test_a_test_can_swap_a_helper_the_student_function_calls(kernel):
    assert "replaced 2.0 restored 0.0" in run(kernel, TEST_CELLS["replace"])["stdout"]


def test_a_graded_kernel_is_described_where_it_runs_and_compiled_here(kernel):
    """The call server sends each launch back as data; the grader's own process compiles it, so neither a kernel's
    printed claim nor a patch of the checks where the student's code runs passes a kernel the compiler rejects."""
    printed = run(kernel, TEST_CELLS["triton"])["stdout"].splitlines()
    lines = {line.split(" REJECTED ")[0].split(" ACCEPTED")[0]: line for line in printed if "ACCEPTED" in line or
             "REJECTED" in line}
    assert lines["copies {}"].endswith("ACCEPTED"), lines
    assert "raised OutOfBounds: copy_kernel loaded 28 element(s) outside every tensor" in \
        lines["copies {'masked': False}"]
    assert "launched loop_kernel, which Triton's compiler rejects for sm_90" in lines["breaks {}"]
    assert "unsupported AST node type: Break" in lines["breaks {}"], lines["breaks {}"]
    assert "returned: no Triton kernel was launched" in lines["boasts {}"]
    assert "unsupported AST node type: Break" in lines["tampers {}"]


def test_a_student_cell_that_looks_like_a_test_cell_but_differs_runs_as_student_code(kernel):
    impostor = TEST_CELLS["tamper"] + "\n# one more line"
    out = run(kernel, impostor)
    assert "allclose is real: False" in out["stdout"], "the impostor ran where the student's tampering applies"


# A Triton kernel defined in a notebook cell, calling a helper from the same cell, as notebook 10's do: IPython
# keeps a cell's source only in linecache, under a file name that does not exist; a compiled kernel holds locks
# that cannot be pickled; and cloudpickle 3 sends a function's code without its file name.
TRITON_CELL = '''
import triton, triton.language as tl
@triton.jit(noinline=True)
def block_start(program, BLOCK: tl.constexpr):
    return program * BLOCK
@triton.jit(do_not_specialize=["n"])
def add_one(x_ptr, n, BLOCK: tl.constexpr):
    i = block_start(tl.program_id(0), BLOCK) + tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1, mask=i < n)
def launch(x):
    return add_one
'''
EXPORT_FROM_A_KERNEL = '''
import linecache, sys
sys.path.insert(0, sys.argv[3])
from autograde import student_kernel  # what the kernel sends on its channel, kept here in a file
student_kernel.send_to_grader = lambda data: open("export.pkl", "wb").write(data)
cell = "/nonexistent/ipykernel_1/cell.py"
linecache.cache[cell] = (len(sys.argv[2]), None, sys.argv[2].splitlines(keepends=True), cell)
exec(compile(open(sys.argv[1]).read(), "student_side.py", "exec"))
exec(compile(sys.argv[2], cell, "exec"))
__grader_export__("launch")
'''
# The call server's side: a compiled kernel is compiled for a GPU (Triton's compiler runs without one), an
# interpreted one runs on CPU tensors; either way Triton has read both functions' source again.
LOAD_AS_THE_CALL_SERVER = '''
import inspect, os, pickle
with open("export.pkl", "rb") as handle:
    os.environ.update(pickle.load(handle))
    launch = pickle.load(handle)
kernel = launch(None)
helper = kernel.fn.__globals__["block_start"]
print(type(kernel).__name__, type(helper).__name__)
print(*(inspect.getsourcelines(f.fn)[0][0].strip() for f in (kernel, helper)), sep="; ")
if os.environ.get("TRITON_INTERPRET") == "1":
    import torch
    x = torch.arange(5.0)
    kernel[(2,)](x, 5, BLOCK=4)
    print("ran", x.tolist())
else:
    import triton
    from triton.backends.compiler import GPUTarget
    print(kernel.src, helper.src, kernel.do_not_specialize, helper.noinline)
    source = triton.compiler.ASTSource(kernel, {"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}, {"BLOCK": 128})
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
    print("compiled", ".entry add_one" in ptx, ".func" in ptx and "block_start" in ptx)
'''


@pytest.mark.parametrize("interpret", ["0", "1"], ids=["compiled", "interpreted"])
def test_a_triton_kernel_and_its_helper_reach_the_call_server_with_their_source(tmp_path, interpret):
    env = {**os.environ, "TRITON_INTERPRET": interpret}
    side = str(job.HERE / "student_side.py")
    for script, args in ((EXPORT_FROM_A_KERNEL, [side, TRITON_CELL, str(job.HERE.parent)]),
                         (LOAD_AS_THE_CALL_SERVER, [])):
        done = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[1] == ("def add_one(x_ptr, n, BLOCK: tl.constexpr):; "
                                           "def block_start(program, BLOCK: tl.constexpr):"), done.stdout
    if interpret == "1":
        assert done.stdout.splitlines()[::2] == ["InterpretedFunction InterpretedFunction", "ran [1.0, 2.0, 3.0, 4.0, 5.0]"]
    else:
        assert done.stdout.startswith("JITFunction JITFunction"), done.stdout
        for expected in ("def add_one(x_ptr, n, BLOCK: tl.constexpr):", "def block_start(program, BLOCK: tl.constexpr):",
                         "['n'] True", "compiled True True"):
            assert expected in done.stdout, done.stdout


def test_what_the_kernel_sent_just_before_it_replied_is_read_whole():
    """The export comes on the channel, the reply on the kernel's shell socket: a frame that lands after the grader
    last looked at the channel, but before the reply is read, must still be taken (a function once failed its test
    cell, "sent no whole export", on a loaded machine)."""
    import socket

    from autograde import launch
    from autograde.grader_kernel import StudentKernel
    from autograde.sandbox import Limits

    ours, theirs = socket.socketpair()
    quiet, _ = socket.socketpair()  # what the poller waits on for the kernel's sockets: nothing arrives

    class Messages:
        socket = quiet

        def __init__(self, messages, before=None):
            self.messages, self.before = messages, before

        def msg_ready(self):
            if self.before:  # the kernel's last frame lands now, after this round's read of the channel
                lands, self.before = self.before, None
                lands()
            return bool(self.messages)

        def get_msg(self, timeout=0):
            return self.messages.pop(0)

    reply = {"parent_header": {"msg_id": "m"}, "content": {"status": "ok"}, "msg_type": "execute_reply"}
    idle = {"parent_header": {"msg_id": "m"}, "content": {"execution_state": "idle"}, "msg_type": "status"}
    kernel = StudentKernel(Limits())
    kernel.channel, kernel.process = ours, type("Running", (), {"poll": lambda self: None})()
    kernel.client = type("Client", (), {"execute": lambda self, *a, **k: "m"})()
    kernel.client.shell_channel = Messages([reply], before=lambda: launch.send(theirs, b"the export"))
    kernel.client.iopub_channel = Messages([idle])
    assert kernel.run("__grader_export__('f')", timeout=10) == {"status": "ok"}
    assert launch.take_frame(kernel.inbox, 1 << 20) == b"the export"
