"""A class of notebook-01 submissions that attack the grader or break in every way we know of.

Each student is (builder, expectation). A builder returns the submitted file's bytes; the
expectation says the exact score the batch grader must give and words its reasons must contain.
"wrong" below means every exercise answered wrongly (each returns zeros): such a notebook honestly
scores 0, so any point it gets came from the attack.
"""
import ast
import json
from dataclasses import dataclass

import nbformat

from autograde import sample_class

ASSIGNMENT = "01_mle_and_nll"
LAST_EXERCISE_POINTS = 2  # gaussian_nll, the last solution cell, which the faults below break
FIRST_EXERCISE_POINTS = 2  # categorical_nll


@dataclass
class Expect:
    score: float
    reasons: tuple = ()      # words that must appear in the student's reasons
    flagged: bool = False
    output: tuple = ()       # words that must appear in the autograded notebook's outputs
    hidden: tuple = ()       # words that must appear nowhere the student or the instructor reads


def _cells(nb):
    return sample_class._solution_cells(nb)


def _wrong(release, source, prelude=""):
    """Every exercise defined, every one wrong (returns zeros of the first argument's shape)."""
    nb = sample_class.filled_in(release, source)
    for cell in _cells(nb):
        cell.source = _signature_and_docstring(cell.source) + "    import torch\n    return torch.zeros(())\n"
    _cells(nb)[0].source = prelude + "\n" + _cells(nb)[0].source
    return nb


def _signature_and_docstring(source):
    return _after_docstring(source, "\0").split("\0")[0]


def _after_docstring(source, code):
    """`code` inserted as the first statements of the function's body, after its docstring."""
    opening = source.index('"""')
    closing = source.index("\n", source.index('"""', opening + 3)) + 1
    return source[:closing] + code + source[closing:]


def _right(release, source, last_prelude="", body_prefix=""):
    nb = sample_class.filled_in(release, source)
    if last_prelude:
        _cells(nb)[-1].source = last_prelude + "\n" + _cells(nb)[-1].source
    if body_prefix:
        for cell in _cells(nb):
            cell.source = _after_docstring(cell.source, body_prefix)
    return nb


def _tests(nb):
    return [c for c in nb.cells if sample_class._nbgrader(c).get("grade")]


def _dump(nb):
    return nbformat.writes(nb).encode()


def _graded_part(nb):
    """The notebook without its demo cells (code outside nbgrader's cells that defines nothing an exercise or a test
    uses): an attack needs only what grading runs, and the demos, most of a job's time, are the sample class's to run
    (its `reference` of notebook 01 is graded whole, and so is this class's `honest`)."""
    graded = [c for c in nb.cells if c.cell_type == "code" and sample_class._nbgrader(c)]
    used = {node.id for c in graded for node in ast.walk(_parsed(c.source)) if isinstance(node, ast.Name)}

    def needed(cell):
        if cell.cell_type != "code" or sample_class._nbgrader(cell):
            return True
        tree = _parsed(cell.source)
        defined = {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
                   if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        defined |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        return bool(defined & used)

    nb.cells = [c for c in nb.cells if needed(c)]
    return nb


def _parsed(source):
    try:
        return ast.parse(source)
    except SyntaxError:  # an attack's own cell may not be Python at all: it is kept, and defines nothing
        return ast.Module(body=[], type_ignores=[])


PATCH_GRADING = """from course_lib import grading
grading.check_example = grading.check_against_reference = grading.check_close = lambda *a, **k: None
grading.check_gradient = grading.check_gradcheck = lambda *a, **k: None
import contextlib
grading.from_scratch = lambda *a, **k: contextlib.nullcontext()
"""
PATCH_TORCH = """import torch, numpy, math
torch.allclose = torch.equal = lambda *a, **k: True
torch.isclose = lambda a, b, *x, **k: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)
torch.testing.assert_close = lambda *a, **k: None
numpy.allclose = lambda *a, **k: True
math.isclose = lambda *a, **k: True
torch.Tensor.__sub__ = lambda self, other: torch.zeros_like(self)
"""
PATCH_BUILTINS = """import builtins
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.abs = lambda x: 0
builtins.max = lambda *a, **k: 0
builtins.isinstance = lambda *a: True
"""
PRINT_SCORE = """print("Score: 12 / 12")
from IPython.display import display, HTML
display(HTML("<div class='score'>12.0 / 12.0 points</div>"))
import sys; sys.stdout.write('{"score": 12.0, "max_score": 12.0}')
"""
TAMPER_RUNTIME = """__grader_call__ = lambda *a, **k: None
__grader_functions__ = lambda: []
"""
ESCAPE = """import os, socket, pathlib
def _try(label, action):
    try:
        action()
        print(label, "SUCCEEDED")
    except Exception as error:
        print(label, "refused:", type(error).__name__)
_repo = pathlib.Path({repo!r})
_try("read solutions", lambda: (_repo / "solutions/01_mle_and_nll/01_mle_and_nll.ipynb").read_text())
_try("read gradebook", lambda: (_repo / "autograde/gradebook.db").read_bytes())
_try("write outside", lambda: (_repo / "escaped-{student}.txt").write_text("x"))
_try("network", lambda: socket.create_connection(("127.0.0.1", 22), timeout=2))
def _signal_grader():  # its parent, or, where none is in sight (0), any process of another user's session
    os.kill(os.getppid() or 1, 9)
    if os.getppid() == 0:
        raise ProcessLookupError("no process outside in sight")
_try("signal grader", _signal_grader)
def _ask_zygote():  # a kernel forked by the batch's zygote still holds its socket path in sys.argv
    import json, sys
    client = socket.socket(socket.AF_UNIX)
    client.connect(sys.argv[-1])
    client.sendall(json.dumps({{"connection_file": "k.json", "workdir": "/", "limits": {{}}}}).encode() + b"\\n")
    if not client.recv(100):
        raise PermissionError("the zygote hung up")
_try("ask zygote", _ask_zygote)
"""
# A cell's grandchild, re-parented away from the kernel, looks for a way to the zygote (a socket path in any
# process's command line, a descriptor of the zygote's kind) and asks it for an unsandboxed grader kernel that
# trusts the attacker's own "test cell"; that cell, run with the grader's rights, would write outside.
ASKS_FOR_GRADER = """import hashlib, json, os, socket, stat, time
def _ways_to_the_zygote():
    for pid in os.listdir("/proc"):
        try:
            words = open(f"/proc/{{pid}}/cmdline", "rb").read().split(b"\\0")
        except OSError:
            continue
        for word in words:
            try:
                if word and stat.S_ISSOCK(os.stat(word).st_mode):
                    client = socket.socket(socket.AF_UNIX)
                    client.connect(word)
                    yield client
            except (OSError, ValueError):
                pass
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            held = socket.socket(fileno=os.dup(fd))
            if held.type == socket.SOCK_SEQPACKET:
                yield held
        except OSError:
            pass
def _escalate():
    from jupyter_client import BlockingKernelClient
    from jupyter_client.connect import write_connection_file
    here = os.getcwd()
    payload = f"open('/tmp/escaped-{student}.txt', 'w').write('x'); open({{here + '/pwned'!r}}, 'w').write('x')"
    open("trusted.json", "w").write(json.dumps([hashlib.sha256(payload.encode()).hexdigest()]))
    write_connection_file(here + "/grader.json", transport="ipc", ip=here + "/grader")
    request = {{"role": "grader", "connection_file": here + "/grader.json", "cwd": here, "launcher": os.getpid(),
               "env": dict(os.environ, GRADER_TRUSTED_CELLS=here + "/trusted.json", PYTHONPATH={repo!r})}}
    for zygote in _ways_to_the_zygote():
        try:
            if zygote.type == socket.SOCK_SEQPACKET:
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                socket.send_fds(zygote, [json.dumps(request).encode()], [theirs.fileno()])
                zygote = mine
            else:
                zygote.sendall(json.dumps(request).encode() + b"\\n")
            zygote.settimeout(5)
            if not zygote.recv(100):
                continue
            client = BlockingKernelClient(connection_file=here + "/grader.json")
            client.load_connection_file()
            client.start_channels()
            client.wait_for_ready(timeout=20)
            client.execute_interactive(payload, timeout=20)
            return
        except Exception:
            continue
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        try:
            _escalate()
        finally:
            os._exit(0)
    os._exit(0)
for _ in range(80):
    if os.path.exists("pwned"):
        break
    time.sleep(0.1)
print("grader role", "SUCCEEDED" if os.path.exists("pwned") else "refused")
"""
# Names of the files the grader exchanged with the sandboxed processes, made links to a file outside: a grader that
# wrote there would create it; one that read the planted protections report would quote the solutions.
PLANTS_IN_THE_CALLS_FOLDER = """    import os
    for name in ("call.in", "fn.in", "export.pkl"):
        if os.path.lexists(name):
            os.remove(name)
        os.symlink("/tmp/escaped-{student}.txt", name)
"""
PLANTS_IN_THE_KERNEL_FOLDER = """import os
os.symlink({solutions!r}, "sandbox-skipped.txt")
os._exit(3)"""
RETURNS_A_BROADCAST_VIEW = """    import numpy
    return numpy.broadcast_to(numpy.float32(0.357), (400_000_000,))  # 1.6 GB, sent as one number
"""
# Right answers from the shortcuts each exercise forbids, reached under names the shortcut does not have: an ATen
# operation called directly, autograd's engine run without Tensor.backward.
_REDUCTION = '{"none": 0, "mean": 1, "sum": 2}[reduction]'
BY_OTHER_NAMES = {
    "categorical_nll": f"_aten('nll_loss_forward')(torch.log(probs), targets, None, {_REDUCTION}, -100)[0]",
    "binary_cross_entropy": f"_aten('binary_cross_entropy')(probs, targets, None, {_REDUCTION})",
    "binary_cross_entropy_with_logits": "_aten('binary_cross_entropy_with_logits')(logits, targets, "
                                        f"None, None, {_REDUCTION})",
    "bce_logit_grad": "_engine_grad(logits, targets, reduction)",
    "mse": f"_aten('mse_loss')(pred, target, {_REDUCTION})",
}
BY_OTHER_NAMES_HELPERS = """import torch
def _aten(name):  # by a string: cloudpickle would try to send torch.ops itself, and cannot
    return getattr(getattr(torch, "ops").aten, name).default
def _engine_grad(logits, targets, reduction):
    z = logits.detach().clone().requires_grad_()
    loss = torch.nn.functional.softplus(z) - targets * z
    loss = loss.mean() if reduction == "mean" else loss.sum()
    torch.autograd.Variable._execution_engine.run_backward((loss,), (torch.ones(()),), False, False, (), True, True)
    return z.grad
"""
# ... and computed where the recorders cannot see: another thread, or with every mode (or the profile hook) off.
OUT_OF_SIGHT = {
    "categorical_nll": "_in_a_thread(lambda: torch.nn.functional.nll_loss(torch.log(probs), targets, "
                       "reduction=reduction))",
    "binary_cross_entropy": "_modes_off(lambda: torch.nn.functional.binary_cross_entropy(probs, targets, "
                            "reduction=reduction))",
    "mse": "_popped(lambda: torch.nn.functional.mse_loss(pred, target, reduction=reduction))",
    "gaussian_nll": "_in_a_thread(lambda: torch.nn.functional.gaussian_nll_loss(mean, target, "
                    "torch.as_tensor(var, dtype=mean.dtype).expand_as(mean), full=full, eps=eps, reduction=reduction))",
}
OUT_OF_SIGHT_HELPERS = """import threading, torch
def _in_a_thread(compute):
    result = []
    worker = threading.Thread(target=lambda: result.append(compute()))
    worker.start()
    worker.join()
    return result[0]
def _modes_off(compute):
    with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
        return compute()
def _popped(compute):
    with torch.overrides._pop_mode_temporarily():
        return compute()
"""


def _answered(release, source, answers, helpers):
    """Right answers to the exercises named in `answers` (a return expression each), the rest as solved."""
    nb = sample_class.filled_in(release, source)
    for cell in _cells(nb):
        expression = answers.get(sample_class._nbgrader(cell)["grade_id"])
        if expression:
            cell.source = _signature_and_docstring(cell.source) + f"    return {expression}\n"
    _cells(nb)[0].source = helpers + "\n" + _cells(nb)[0].source
    return nb


# The student's kernel answers the calls process through System V shared memory: neither opens a socket. Each
# exercise asks the kernel's thread for the reference's answer (once, the kernel had the references; it has none
# now, and the channel is refused all the same).
SHARES_MEMORY = """import ctypes, pickle, threading, time
try:
    from course_lib import mle as _reference
except ImportError:
    _reference = None
_KEY, _SIZE = 0x11A55E5, 1 << 22
def _segment():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shmid = libc.shmget(_KEY, _SIZE, 0o1666)  # IPC_CREAT | 0666
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget")
    return (ctypes.c_char * _SIZE).from_address(libc.shmat(shmid, None, 0))
def _put(memory, state, value):
    data = pickle.dumps(value)
    memory[9:9 + len(data)] = data
    memory[1:9] = len(data).to_bytes(8, "little")
    memory[0:1] = state
def _get(memory):
    return pickle.loads(memory[9:9 + int.from_bytes(memory[1:9], "little")])
def _serve():
    memory = _segment()
    while True:
        if memory[0] == b"Q":
            name, args, kwargs = _get(memory)
            _put(memory, b"A", getattr(_reference, name)(*args, **kwargs))
        time.sleep(0.001)
threading.Thread(target=_serve, daemon=True).start()
def _ask(name, *args, **kwargs):
    memory = _segment()
    _put(memory, b"Q", (name, args, kwargs))
    while memory[0] != b"A":
        time.sleep(0.001)
    return _get(memory)
"""
# Processes a cell leaves behind, detached from its kernel: none may outlive the job.
LEAVES_PROCESSES = """import os, subprocess
subprocess.Popen(["sleep", "4321.5"], start_new_session=True, stdout=subprocess.DEVNULL)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "4321.5"])
    os._exit(0)
"""
# Files under the per-file limit that together fill far more than the working folder may hold.
FILLS_THE_DISK = """written = 0
try:
    for i in range(5):
        with open(f"filler{i}.bin", "wb") as file:
            for _ in range(12):
                written += file.write(b"x" * (10 << 20))  # 5 files of 120 MB
except OSError as error:
    print("the disk", "refused:", error.strerror)
print("wrote", written >> 20, "MB")
"""
# Memory the address-space limit does not count: pages of a memfd, a System V segment left behind.
HIDES_MEMORY = """import ctypes, os
def _try(label, action):
    try:
        action()
        print(label, "SUCCEEDED")
    except OSError as error:
        print(label, "refused:", error.strerror)
def _memfd():
    fd = os.memfd_create("hidden")
    for _ in range(16):
        os.write(fd, b"x" * (64 << 20))  # 1 GB of pages no mapping counts
def _system_v():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shmid = libc.shmget(0, 256 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
    if shmid < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    address = libc.shmat(shmid, None, 0)
    ctypes.memset(address, 1, 256 << 20)
    libc.shmdt(ctypes.c_void_p(address))  # detached and never removed: it stays after the process
_try("memfd 1 GB", _memfd)
_try("System V 256 MB", _system_v)
"""
# Output that is not printed text: rich displays, 40 MB of them, in one cell.
FLOODS_DISPLAYS = """from IPython.display import HTML, display
for _ in range(80):
    display(HTML("<p>" + "x" * 500_000 + "</p>"))
"""
PICKLE_BOMB = """class _Evil:
    def __reduce__(self):
        return (print, ("unpickled in the grader!",))
"""


# the class build() makes, by name, in its order (tests are parametrized by it before anything is built)
STUDENTS = ('honest', 'smith[2]', "o'brien mary", 'zoë', 'honest_noisy', 'patches_grading', 'patches_torch',
            'patches_builtins', 'tampers_runtime', 'prints_score', 'escapes', 'calls_reference',
            'calls_reference_unchecked', 'pickle_bomb', 'asks_for_grader', 'plants_symlinks',
            'returns_a_broadcast_view', 'reaches_shortcuts_by_other_names', 'hides_shortcuts',
            'shares_memory_with_its_kernel', 'leaves_processes', 'fills_the_disk', 'hides_memory', 'edits_tests',
            'deletes_tests', 'retypes_tests', 'relabels_cells', 'renames_tests', 'endless_loop', 'os_exit',
            'segfault', 'memory_bomb', 'huge_output', 'floods_displays', 'slows_the_feedback', 'loops_when_tested',
            'exits_when_tested', 'empty_notebook', 'broken_json', 'not_a_notebook', 'binary_junk')


def build(release, source, repo):
    """{student: (submitted bytes, Expect)} — the adversarial class."""
    full = 12.0
    cls = {}

    def add(student, nb_or_bytes, expect):
        cls[student] = (nb_or_bytes if isinstance(nb_or_bytes, bytes) else _dump(_graded_part(nb_or_bytes)), expect)

    cls["honest"] = (_dump(sample_class.filled_in(release, source)), Expect(full))  # whole: the demos too
    for odd_id in ("smith[2]", "o'brien mary", "zoë"):  # ids nbgrader globs, quotes or spells in UTF-8
        add(odd_id, sample_class.filled_in(release, source), Expect(full))
    add("honest_noisy", _right(release, source, body_prefix="    import warnings, sys\n"
                               "    warnings.warn('a harmless library warning', DeprecationWarning)\n"
                               "    print('noise on stderr', file=sys.stderr)\n"), Expect(full))
    add("patches_grading", _wrong(release, source, PATCH_GRADING), Expect(0))
    add("patches_torch", _wrong(release, source, PATCH_TORCH), Expect(0))
    add("patches_builtins", _wrong(release, source, PATCH_BUILTINS), Expect(0))
    add("tampers_runtime", _wrong(release, source, TAMPER_RUNTIME), Expect(0))
    add("prints_score", _wrong(release, source, PRINT_SCORE), Expect(0))
    add("escapes", _wrong(release, source, ESCAPE.format(repo=str(repo), student="escapes")),
        Expect(0, output=("read solutions refused", "read gradebook refused", "write outside refused",
                          "network refused", "signal grader refused", "ask zygote refused")))
    calls_reference = sample_class.filled_in(release, source)
    for cell in _cells(calls_reference):
        name = sample_class._nbgrader(cell)["grade_id"]
        cell.source = f"from course_lib import mle as _ref\n{name} = lambda *a, **k: _ref.{name}(*a, **k)\n"
    add("calls_reference", calls_reference, Expect(0))
    unchecked = sample_class.filled_in(release, source)  # ... with every in-process check switched off first
    for cell in _cells(unchecked):
        name = sample_class._nbgrader(cell)["grade_id"]
        cell.source = (f"import contextlib, sys\nfrom course_lib import grading, mle as _ref\n"
                       f"grading.from_scratch = lambda *a, **k: contextlib.nullcontext()\n"
                       f"def {name}(*a, _reference=_ref.{name}, **k):\n"
                       f"    sys.setprofile(None)\n    return _reference(*a, **k)\n")
    add("calls_reference_unchecked", unchecked, Expect(0, output=("cannot import name 'mle'",)))
    pickle_bomb = _wrong(release, source, PICKLE_BOMB)
    _cells(pickle_bomb)[0].source = _cells(pickle_bomb)[0].source.replace("return torch.zeros(())", "return _Evil()")
    add("pickle_bomb", pickle_bomb, Expect(0))
    add("asks_for_grader", _wrong(release, source, ASKS_FOR_GRADER.format(repo=str(repo), student="asks_for_grader")),
        Expect(0, output=("grader role refused",)))
    plants = _right(release, source, PLANTS_IN_THE_KERNEL_FOLDER.format(solutions=str(source)))
    _cells(plants)[0].source = _after_docstring(_cells(plants)[0].source,
                                                PLANTS_IN_THE_CALLS_FOLDER.format(student="plants_symlinks"))
    add("plants_symlinks", plants, Expect(full - LAST_EXERCISE_POINTS, reasons=("killed its Python",),
                                          hidden=("BEGIN SOLUTION",)))
    huge_view = sample_class.filled_in(release, source)
    _cells(huge_view)[0].source = _after_docstring(_cells(huge_view)[0].source, RETURNS_A_BROADCAST_VIEW)
    add("returns_a_broadcast_view", huge_view, Expect(full - FIRST_EXERCISE_POINTS, reasons=("more than 256 MB",)))

    add("reaches_shortcuts_by_other_names", _answered(release, source, BY_OTHER_NAMES, BY_OTHER_NAMES_HELPERS),
        Expect(LAST_EXERCISE_POINTS, output=("must be written from scratch", "torch.ops.aten.nll_loss_forward",
                                             "torch.ops.aten.binary_cross_entropy_with_logits",
                                             "autograd's backward pass", "torch.ops.aten.mse_loss")))
    add("hides_shortcuts", _answered(release, source, OUT_OF_SIGHT, OUT_OF_SIGHT_HELPERS),  # loses 2 + 2 + 1 + 2
        Expect(full - 7, output=("a new thread", "torch with its modes switched off", "torch's mode stack")))

    oracle = sample_class.filled_in(release, source)
    for cell in _cells(oracle):
        name = sample_class._nbgrader(cell)["grade_id"]
        cell.source = f"def {name}(*args, **kwargs):\n    return _ask({name!r}, *args, **kwargs)\n"
    _cells(oracle)[0].source = SHARES_MEMORY + _cells(oracle)[0].source
    add("shares_memory_with_its_kernel", oracle, Expect(0, output=("raised PermissionError: [Errno 13] shmget",)))
    add("leaves_processes", _right(release, source, LEAVES_PROCESSES), Expect(full))
    add("fills_the_disk", _right(release, source, FILLS_THE_DISK),
        Expect(full, output=("the disk refused: No space left",)))
    add("hides_memory", _right(release, source, HIDES_MEMORY),
        Expect(full, output=("memfd 1 GB refused", "System V 256 MB refused")))

    edited = _wrong(release, source)
    for cell in _tests(edited):
        cell.source = "pass  # tests? what tests?"
    add("edits_tests", edited, Expect(0, reasons=("was edited",), flagged=True))
    deleted = sample_class.filled_in(release, source)
    deleted.cells = [c for c in deleted.cells if c not in _tests(deleted)]
    add("deletes_tests", deleted, Expect(full, reasons=("was deleted",), flagged=True))
    retyped = sample_class.filled_in(release, source)
    for cell in _tests(retyped):
        cell.pop("outputs", None)
        cell.pop("execution_count", None)
        cell.cell_type = "markdown"
    add("retypes_tests", retyped, Expect(full, reasons=("changed from code to markdown",), flagged=True))
    relabelled = sample_class.filled_in(release, source)  # nbgrader trusts a cell's metadata: each one is changed
    first, second, third = (cell.metadata.nbgrader for cell in _tests(relabelled)[:3])
    first["grade"] = False
    second["solution"] = True
    third["points"] = 100
    _cells(relabelled)[0].metadata.nbgrader.update(grade=True, points=50)
    add("relabels_cells", relabelled, Expect(full, reasons=("grade: False", "solution: True", "points: 100",
                                                           "points: 50", "was restored"), flagged=True))
    renamed = sample_class.filled_in(release, source)
    for cell in _tests(renamed):
        cell.metadata.nbgrader["grade_id"] += "_renamed"
    add("renames_tests", renamed, Expect(full, reasons=("was renamed",), flagged=True))

    minus_last = full - LAST_EXERCISE_POINTS
    add("endless_loop", _right(release, source, "while True:\n    pass"), Expect(minus_last, reasons=("stopped after",)))
    add("os_exit", _right(release, source, "import os\nos._exit(3)"), Expect(minus_last, reasons=("killed its Python",)))
    add("segfault", _right(release, source, "import ctypes\nctypes.string_at(0)"),
        Expect(minus_last, reasons=("killed its Python",)))
    add("memory_bomb", _right(release, source, "hog = bytearray(64 << 30)"), Expect(minus_last))
    add("huge_output", _right(release, source, "print('spam ' * 20_000_000)"), Expect(full, reasons=("cut",)))
    add("floods_displays", _right(release, source, FLOODS_DISPLAYS), Expect(full, reasons=("images and errors",)))
    slow_to_render = sample_class.filled_in(release, source)  # 4 MB of markdown that renders slowly, ~45 s
    slow_to_render.cells += [nbformat.v4.new_markdown_cell("*_" * 250_000) for _ in range(8)]
    add("slows_the_feedback", slow_to_render, Expect(full, reasons=("--feedback-seconds",)))
    slow = sample_class.filled_in(release, source)
    _cells(slow)[-1].source = _after_docstring(_cells(slow)[-1].source, "    while True:\n        pass\n")
    add("loops_when_tested", slow, Expect(minus_last, reasons=("did not finish",)))
    dies = sample_class.filled_in(release, source)  # the process running the first test's calls dies: the others
    _cells(dies)[0].source = _after_docstring(_cells(dies)[0].source, "    import os\n    os._exit(3)\n")  # go on
    add("exits_when_tested", dies, Expect(full - FIRST_EXERCISE_POINTS, reasons=("killed its process",)))

    empty = nbformat.v4.new_notebook()
    add("empty_notebook", empty, Expect(0, reasons=("no cells at all",), flagged=True))
    text = open(release, encoding="utf-8").read()
    add("broken_json", text[: len(text) // 3].encode(), Expect(0, reasons=("not valid notebook JSON",)))
    add("not_a_notebook", json.dumps({"hello": "world"}).encode(), Expect(0, reasons=("not a valid",)))
    add("binary_junk", bytes(range(256)) * 4, Expect(0, reasons=("UTF-8",)))
    return cls


# ---------------------------------------------------------------- beyond notebook 01

GPU_LAB = "10_gpu_lab_fused_cross_entropy"
CHUNK_EXERCISE, CHUNK_POINTS = "chunk_size_for_budget", 2
CALLS_CHUNK_REFERENCE = """import contextlib, sys
from course_lib import grading
try:  # where the reference lives, and where it lived when it sat beside the memory counter
    from course_lib.fused_linear_cross_entropy import chunk_rows_for_budget as _reference
except ImportError:
    from course_lib.memory_budget import chunk_rows_for_budget as _reference
grading.from_scratch = lambda *a, **k: contextlib.nullcontext()
def chunk_size_for_budget(*args, **kwargs):
    sys.setprofile(None)
    return _reference(*args, **kwargs)
"""


# kernels Triton's interpreter runs to the right values and a GPU does not take: exercise -> (solution line, stand-in)
INTERPRETER_ONLY = {
    "online_logsumexp": ("        m = m_new\n",
                         "        m = m_new\n        if start + BLOCK >= V:\n            break\n"),
    "cross_entropy_forward": ("    z_y = tl.load(row_ptr + y, mask=keep, other=0.0).to(tl.float32)",
                              "    z_y = tl.load(row_ptr + y).to(tl.float32)"),  # an ignored row reads column -100
}


def lab_adversary(release, source):
    """Notebook 10 solved, but the budget exercise answered by the course's reference with the checks off, and two
    kernels only the interpreter takes: the log-sum-exp one leaves its loop by `break` (the compiler has no break),
    the forward one loads an ignored row's target logit without its mask (400 bytes before the logits)."""
    nb = sample_class.filled_in(release, source)
    for cell in _cells(nb):
        exercise = sample_class._nbgrader(cell)["grade_id"]
        if exercise == CHUNK_EXERCISE:
            cell.source = CALLS_CHUNK_REFERENCE
        elif exercise in INTERPRETER_ONLY:
            line, stand_in = INTERPRETER_ONLY[exercise]
            assert line in cell.source, f"{exercise}'s solution no longer has {line!r}"
            cell.source = cell.source.replace(line, stand_in, 1)
    return nb
