"""The kernel nbgrader runs a submission in: test cells here, student code in two sandboxes.

nbgrader sends every cell of the notebook to one kernel. This kernel keeps three processes apart:

- a cell whose source is one of the assignment's test cells (as nbgrader restores them from the
  gradebook) runs HERE, in the grader's own Python, which student code never touches;
- every other cell goes to the student's own ipykernel (autograde.student_kernel), sandboxed, and
  its output is relayed back as if it ran here;
- a test cell's call to a student function runs in a third process, `autograde.call_server`: a
  sandbox that has never run a student cell, where the course's reference implementations are not
  (the notebook's own cells use them, so the student's kernel has them), and which can open no
  socket to ask that kernel for them.

A test cell sees each function the student defined as a `RemoteFunction`: calling it has the
student's kernel pickle the function (cloudpickle: code and globals by value), loads that in the
call server, ships the arguments, runs the function there under the exercise's from-scratch rules,
and brings back its result (read with `torch.load(weights_only=True)`, so it can only be data), the
new values of arguments it modified, and what it printed, which is shown as output, never as an
error. Gradients flow through the call. So a submission cannot raise its score by redefining the
grading helpers, torch, numpy or builtins, by printing a score, by reading the hidden tests (those
live in this process), or by calling the course's reference (that is not where the call runs). A
student cell that runs too long or kills its kernel fails with a reason; the kernel is restarted,
the cells that ran before are replayed, and the notebook goes on. A call that does the same fails
that check, and the call server is restarted.

What is checked inside the call server is the from-scratch rule on torch shortcuts: a function that
switches that check off while it runs (through torch's private API) can hide a shortcut there.
"""
import ast
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import torch
import zmq
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_core.paths import jupyter_runtime_dir

from autograde import launch
from autograde.sandbox import Limits, SandboxError
from course_lib import grading, memory_budget  # imported before any check runs: their import is not a call

HERE = Path(__file__).resolve().parent
TRUSTED_CELLS_ENV = "GRADER_TRUSTED_CELLS"   # a JSON file: the sha256 of each test cell's source
LIMITS_ENV = "GRADER_LIMITS"                 # a JSON object of autograde.sandbox.Limits fields
EVENTS_ENV = "GRADER_EVENTS"                 # a file this kernel appends what went wrong to, one JSON per line
RELAYED = {"stream", "display_data", "update_display_data", "execute_result", "error", "clear_output"}


def digest(source):
    return hashlib.sha256(source.encode()).hexdigest()


class StudentKernelDied(Exception):
    pass


def record_event(kind, message):
    """Note a fault (timeout, dead kernel, cut output, missing protection) for the grading summary."""
    path = os.environ.get(EVENTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, "message": message}) + "\n")


def _kill(process):
    """End a student process (launch.Sandboxed) and everything it started: its box closes."""
    if process:
        process.kill()


class StudentKernel:
    """The student's ipykernel in the sandbox: ZMQ for cells, its channel (autograde.launch) for functions."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.process = self.client = self.channel = self.folder = None
        self.inbox = bytearray()    # what the kernel sent on its channel while a cell ran
        self.history = []           # student cells that ran without error, replayed after a restart
        self.used_seconds = 0.0
        self.calls = 0
        self.replacements = {}  # name -> object, set around a call by RemoteFunction.replaced_names
        self.server = CallServer(limits)
        self.reported = False

    # -- life cycle

    def start(self):
        """A fresh box each time: nothing a killed kernel left behind is seen again. The kernel serves on listening
        sockets made here, in a folder of the grader's that no box holds."""
        runtime = jupyter_runtime_dir()  # the job's own (batch sets it): gone with the job if this kernel is killed
        os.makedirs(runtime, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="kernel-", dir=runtime))
        connection = self.folder / "kernel.json"
        write_connection_file(str(connection), transport="ipc", ip=str(self.folder / "ipc"))
        info = json.loads(connection.read_text())
        listeners = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in launch.KERNEL_PORTS]
        try:
            for listener, port in zip(listeners, launch.KERNEL_PORTS):
                listener.bind(f"{info['ip']}-{info[port]}")
                listener.listen(16)
            settings = launch.Settings("student", self.limits, _threads(), info)
            self.process, self.channel = _started(settings, [s.fileno() for s in listeners], "the student's kernel")
        finally:
            for listener in listeners:
                listener.close()
        skipped = _first_frame(self.channel, self.process, "the student's kernel")
        self.client = BlockingKernelClient(connection_file=str(connection))
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.run((HERE / "student_side.py").read_text(), timeout=60)
        if skipped and not self.reported:
            self.reported = True
            record_event("sandbox", "protections this machine could not apply: " + "; ".join(skipped))

    def stop(self):
        self.server.stop()
        if self.client:
            self.client.stop_channels()
            self.client = None
        _kill(self.process)
        self.process = None
        if self.channel:
            self.channel.close()
            self.channel = None
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def restart(self):
        self.stop()
        self.start()
        for code in self.history:
            try:
                self.run(code, timeout=self.limits.cell_seconds)
            except (TimeoutError, StudentKernelDied):
                self.stop()
                self.start()

    # -- running code

    def run(self, code, timeout, relay=None, user_expressions=None):
        """Execute `code`; pass its output messages to `relay`; return the execute_reply content."""
        if self.process is None:
            self.start()
        msg_id = self.client.execute(code, silent=relay is None, store_history=relay is not None,
                                     user_expressions=user_expressions or {})
        deadline = time.monotonic() + timeout
        shell, iopub = self.client.shell_channel, self.client.iopub_channel
        poller = zmq.Poller()
        poller.register(shell.socket, zmq.POLLIN)
        poller.register(iopub.socket, zmq.POLLIN)
        poller.register(self.channel.fileno(), zmq.POLLIN)
        reply, idle = None, False
        while reply is None or not idle:
            if self.process.poll() is not None:
                raise StudentKernelDied(f"the kernel exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"stopped after {timeout:g} s")
            poller.poll(200)  # wake on a message at once, or every 0.2 s to check the process and the clock
            self._read_channel()
            while shell.msg_ready():
                message = shell.get_msg(timeout=0)
                if message["parent_header"].get("msg_id") == msg_id:
                    reply = message["content"]
            while iopub.msg_ready():
                message = iopub.get_msg(timeout=0)
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = message["msg_type"]
                if kind == "status" and message["content"]["execution_state"] == "idle":
                    idle = True
                elif kind in RELAYED and relay:
                    relay(kind, message["content"])
        # what the kernel sent on its channel before it replied (an export) may have come in after this loop's last
        # read: its send returned once the bytes were in our socket, so one more read takes them all
        self._read_channel()
        return reply

    def _read_channel(self):
        """Take what the kernel sent on its channel (it may block sending until we do), up to one frame's limit."""
        self.channel.setblocking(False)
        try:
            while len(self.inbox) <= (self.limits.file_mb << 20) + launch.HEADER_BYTES:
                chunk = self.channel.recv(1 << 20)
                if not chunk:
                    break
                self.inbox += chunk
        except (BlockingIOError, InterruptedError, ConnectionError):
            pass
        finally:
            self.channel.setblocking(True)

    def execute_cell(self, code, relay):
        started = time.monotonic()
        left = self.limits.notebook_seconds - self.used_seconds
        if left <= 0:
            raise TimeoutError(f"not run: the notebook's {self.limits.notebook_seconds:g} s (--notebook-seconds) "
                               f"are used up")
        try:
            if left < self.limits.cell_seconds:
                reply = self._limited(code, left, relay, f"the rest of the notebook's {self.limits.notebook_seconds:g}"
                                                         f" s (--notebook-seconds)")
            else:
                reply = self._limited(code, self.limits.cell_seconds, relay, "the limit on a cell (--cell-seconds)")
        finally:
            self.used_seconds += time.monotonic() - started
        if reply["status"] == "ok":
            self.history.append(code)
        return reply

    def _limited(self, code, seconds, relay, limit):
        try:
            return self.run(code, seconds, relay)
        except TimeoutError:
            raise TimeoutError(f"stopped after {seconds:g} s, {limit}") from None

    def functions(self):
        reply = self.run("", timeout=30, user_expressions={"names": "__grader_functions__()"})
        value = reply.get("user_expressions", {}).get("names", {})
        try:
            names = ast.literal_eval(value["data"]["text/plain"])
        except (KeyError, ValueError, SyntaxError):
            return []
        return [n for n in names if isinstance(n, str) and n.isidentifier()]

    def new_test_cell(self):
        """Functions are sent afresh to each test cell: the student may have redefined them since."""
        self.server.loaded = set()

    def load(self, names):
        """Send each of `names` the call server lacks, as `__grader_export__` sent it on the channel, to it."""
        for name in sorted(set(names) - self.server.loaded):
            self._read_channel()
            self.inbox.clear()  # whatever the student sent unasked is not the export
            try:
                reply = self.run(f"__grader_export__({name!r})", timeout=self.limits.cell_seconds)
            except (TimeoutError, StudentKernelDied) as error:
                self.restart()
                raise AssertionError(f"{name} could not be handed to the grader: pickling it {error}") from None
            if reply.get("status") != "ok":
                raise AssertionError(f"{name} could not be handed to the grader: "
                                     f"{reply.get('ename', 'no export')}: {reply.get('evalue', '')}")
            exported = self._frame(name)
            reply = self.server.request({"op": "load", "name": name}, exported)
            if reply["status"] != "ok":
                raise AssertionError(f"{name} could not be loaded for grading: {reply['type']}: {reply['message']}")
            self.server.loaded.add(name)

    def _frame(self, name):
        """The one frame the export sent, bounded: a larger one restarts the kernel (the channel is out of step)."""
        try:
            frame = launch.take_frame(self.inbox, self.limits.file_mb << 20)
        except ValueError:
            self.restart()
            raise AssertionError(f"{name} (with the globals it uses) is larger than {self.limits.file_mb} MB") from None
        if frame is None:
            raise AssertionError(f"{name} could not be handed to the grader: its kernel sent no whole export")
        return frame

    def call(self, request, payload):
        """One request to the call server, timed against the notebook's budget."""
        started = time.monotonic()
        try:
            return self.server.request(request, payload)
        finally:
            self.used_seconds += time.monotonic() - started


class CallServer:
    """The grader's end of `autograde.call_server`, started on first use and again after it dies."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.process = self.channel = None
        self.loaded = set()  # the student's functions it holds, as exported for the current test cell
        self.reported = False

    def start(self):
        settings = launch.Settings("calls", self.limits, _threads())
        self.process, self.channel = _started(settings, [], "the process for graded calls")
        skipped = _first_frame(self.channel, self.process, "the process for graded calls")
        if skipped and not self.reported:
            self.reported = True
            record_event("sandbox", "protections the process for graded calls could not get: " + "; ".join(skipped))

    def stop(self):
        if self.channel:
            self.channel.close()
            self.channel = None
        _kill(self.process)
        self.process = None
        self.loaded = set()

    def request(self, request, payload):
        """Send `request` and its payload, read the answer; a timeout or death stops the server."""
        if self.process is None:
            self.start()
        timeout, limit = self.limits.cell_seconds, self.limits.file_mb << 20
        alive = lambda: self.process.poll() is None  # noqa: E731
        try:
            launch.send(self.channel, json.dumps(request).encode(), timeout)
            launch.send(self.channel, payload, timeout)
            answer = launch.receive(self.channel, limit, timeout, alive)
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"stopped after {timeout:g} s, the limit on a call (--cell-seconds)") from None
        except (launch.ChannelClosed, OSError) as error:
            code = self.process.poll() if self.process else None
            self.stop()
            raise StudentKernelDied("the process running the call exited" +
                                    (f" with status {code}" if code is not None else f" ({error})")) from None
        except ValueError as error:
            self.stop()
            record_event("cut", f"a graded call's answer was refused: it {error}")
            raise AssertionError(f"the answer was refused: it {error} (at most {self.limits.file_mb} MB)") from None
        reply = torch.load(io.BytesIO(answer), weights_only=True)
        _bounded(reply, limit)
        return reply


def _threads():
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


def _started(settings, listeners, what):
    try:
        return launch.start(settings, listeners)
    except SandboxError as error:
        raise StudentKernelDied(f"{what} did not start: {error}") from None


def _first_frame(channel, process, what):
    """A started process's first word: the protections it could not apply (it has run nothing of a student's yet)."""
    try:
        return json.loads(launch.receive(channel, 1 << 16, 60, lambda: process.poll() is None))["skipped"]
    except (TimeoutError, launch.ChannelClosed, OSError, ValueError, KeyError) as error:
        _kill(process)
        raise StudentKernelDied(f"{what} did not start ({error})") from None


def _bounded(value, limit):
    """Refuse an answer whose tensors hold more than `limit` bytes, counted by their logical size: a view of
    one number stretched (stride 0) to a billion loads small and is materialised large by any comparison."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack += list(item.values())
        elif isinstance(item, (list, tuple)):
            stack += list(item)
        if total > limit:
            record_event("cut", f"a graded call returned more than {limit >> 20} MB of tensors; refused")
            raise AssertionError(f"the call returned tensors of more than {limit >> 20} MB in all (counting every "
                                 f"element of a broadcast or expanded view); such an answer is refused")


class RemoteFunction:
    """A student's function as a test cell sees it: calls run in the student's kernel.

    An attribute is another remote callable (`MyFunction.apply` for a student's autograd.Function).
    `replaced_names` lets a test swap a helper the function calls for the reference one
    (grading.replacing_globals), so that one exercise is graded on its own.
    """

    def __init__(self, kernel: StudentKernel, name: str, output_kb: int):
        self.kernel, self.__name__, self.__qualname__, self.output_kb = kernel, name, name, output_kb

    def __repr__(self):
        return f"<your function {self.__name__}>"

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return RemoteFunction(self.kernel, f"{self.__name__}.{attribute}", self.output_kb)

    @contextlib.contextmanager
    def replaced_names(self, replacements):
        self.kernel.replacements = dict(replacements)
        try:
            yield
        finally:
            self.kernel.replacements = {}

    def __call__(self, *args, **kwargs):
        tensors = [v for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor)]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return _ThroughStudent.apply(self, args, kwargs, *tensors)
        return self.invoke(args, kwargs, keep_graph=False)[0]

    def invoke(self, args, kwargs, keep_graph):
        forbidden, exercise = None, self.__name__
        if grading.ACTIVE_RULES:
            forbidden = tuple(f for rule, _ in grading.ACTIVE_RULES for f in rule)
            exercise = grading.ACTIVE_RULES[-1][1]
        self.kernel.calls += 1
        call_id = self.kernel.calls
        payload, named = _dumps((_detached(args), _detached(kwargs), forbidden, exercise, self.kernel.replacements,
                                 _measuring(), bool(_observers())))
        request = {"op": "call", "name": self.__name__, "id": call_id, "keep_graph": keep_graph}
        reply = self._checked(request, payload, {self.__name__.split(".")[0], *named})
        _add_remote_peak(reply)
        for launches in _observers():
            launches.extend(reply["launches"] if isinstance(reply.get("launches"), list) else [])
        _apply_changes(args, kwargs, reply.get("changed", {}))
        return _aliased(reply["result"], reply.get("aliases", {}), args, kwargs), call_id, \
            reply.get("differentiable", [])

    def backward(self, call_id, grad_outputs):
        reply = self._checked({"op": "backward", "id": call_id}, _dumps((grad_outputs, _measuring()))[0], ())
        _add_remote_peak(reply)
        return reply["result"]

    def _checked(self, request, payload, names):
        try:
            self.kernel.load(names)
            reply = self.kernel.call(request, payload)
        except TimeoutError as error:
            record_event("timeout", f"{self.__name__}(...) called by a test did not finish: {error}")
            raise AssertionError(f"{self.__name__}(...) did not finish: {error} (an endless loop?)") from None
        except StudentKernelDied as error:
            record_event("died", f"{self.__name__}(...) called by a test killed its process: {error}")
            raise AssertionError(f"{self.__name__}(...) killed the Python process running it ({error}): "
                                 f"a crash, os._exit or running out of memory") from None
        if reply.get("printed"):
            text = reply["printed"]
            limit = self.output_kb << 10
            print(text if len(text) <= limit else text[:limit] + "\n[output cut]", end="")
        if reply["status"] == "error":
            raise _student_error(self.__name__, reply)
        return reply


def _measuring():
    """Is a test measuring memory (course_lib.memory_budget.PeakMemory)? Then the call is measured where it runs."""
    return bool(memory_budget.ACTIVE)


def _observers():
    """The launch lists of the course_lib.triton_compile.launches() blocks a test has open: a call made in one has
    the call server describe its Triton launches, which the test compiles here (not where the student's code ran)."""
    triton_compile = sys.modules.get("course_lib.triton_compile")  # not imported: no block open, and no triton here
    return triton_compile.ACTIVE if triton_compile else []


def _add_remote_peak(reply):
    for memory in memory_budget.ACTIVE:
        memory.add_remote_peak(int(reply.get("peak_bytes", 0)))


class _ThroughStudent(torch.autograd.Function):
    """Autograd across the process boundary: backward asks the student's kernel for the input gradients."""

    @staticmethod
    def forward(ctx, function, args, kwargs, *tensors):
        result, call_id, differentiable = function.invoke(args, kwargs, keep_graph=True)
        ctx.function, ctx.call_id = function, call_id
        ctx.wants = [t.requires_grad for t in tensors]
        ctx.single = isinstance(result, torch.Tensor)
        outputs = (result,) if ctx.single else tuple(result)
        # what the student detached (a metric, say) stays detached here too
        ctx.mark_non_differentiable(*[o for o, d in zip(outputs, differentiable) if isinstance(o, torch.Tensor)
                                      and not d])
        return result if ctx.single else outputs

    @staticmethod
    def backward(ctx, *grad_outputs):
        grads = iter(ctx.function.backward(ctx.call_id, list(grad_outputs)))
        return (None, None, None, *[next(grads) if wants else None for wants in ctx.wants])


class _Pickler(cloudpickle.CloudPickler):
    """cloudpickle (functions defined in a test cell travel by value), with our RemoteFunctions sent as
    references that the call server resolves to the student's functions of that name."""

    def __init__(self, file):
        super().__init__(file)
        self.named = set()

    def persistent_id(self, obj):
        if isinstance(obj, RemoteFunction):
            self.named.add(obj.__name__.split(".")[0])
            return ("student", obj.__name__)
        return None


def _dumps(value):
    """The pickled value, and the names of the student's functions it refers to."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(value)
    return buffer.getvalue(), pickler.named


def _detached(value):
    """Tensors as leaves (keeping requires_grad), so that they pickle; the graph is rebuilt on the other side."""
    if isinstance(value, torch.Tensor):
        return value.detach().requires_grad_(value.requires_grad) if not value.is_leaf else value
    if type(value) in (list, tuple):
        return type(value)(_detached(v) for v in value)
    if type(value) is dict:
        return {k: _detached(v) for k, v in value.items()}
    return value


def _argument(args, kwargs, key):
    """The call's argument at a position (an int) or keyword, as the call server names it in a reply."""
    return args[key] if isinstance(key, int) else kwargs[key]


def _aliased(result, aliases, args, kwargs):
    """The result with each output that was an argument there (an in-place call's return) this side's argument."""
    if -1 in aliases:
        return _argument(args, kwargs, aliases[-1])
    if aliases and isinstance(result, (tuple, list)):
        return type(result)(_argument(args, kwargs, aliases[i]) if i in aliases else o for i, o in enumerate(result))
    return result


def _apply_changes(args, kwargs, changed):
    for key, (kind, value) in changed.items():
        target = _argument(args, kwargs, key)
        if kind == "tensor":
            with torch.no_grad():
                target.copy_(value)
        elif kind == "module":
            target.load_state_dict(value["state"])
            target.train(value["training"])
            for name, parameter in target.named_parameters():
                parameter.requires_grad_(value["requires_grad"].get(name, parameter.requires_grad))
                parameter.grad = value["grads"].get(name)
        elif kind == "optimizer":
            target.load_state_dict(value)


REBUILT_ERRORS = (ValueError, TypeError, IndexError, KeyError, RuntimeError, ZeroDivisionError, NotImplementedError,
                  AttributeError, NameError, AssertionError, OverflowError)


def _student_error(name, reply):
    """The student's exception, rebuilt here as the same built-in type (tests may expect a ValueError), with the
    student's frames and the function it was raised in, which the checks' message shows."""
    if reply["type"] == "FromScratchViolation":
        return grading.FromScratchViolation(reply["message"])
    error = next((error_type(reply["message"]) for error_type in REBUILT_ERRORS
                  if error_type.__name__ == reply.get("builtin")), None)
    if error is None:  # a class of its own (course_lib's OutOfBounds, say): a RuntimeError under the same name
        kind = reply["type"] if str(reply["type"]).isidentifier() else "Error"
        error = type(kind, (RuntimeError,), {})(reply["message"])
    error.student_frames, error.raised_in = reply.get("frames", ""), reply.get("raised_in")
    return error


class GraderKernel(IPythonKernel):
    implementation = "llm-losses-grader"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Triton kernels run in the student's processes, never here (notebook 10 sets TRITON_INTERPRET in its own
        # kernel where there is no GPU); here they are compiled (grading.check_compiles), by triton uninterpreted
        os.environ.pop("TRITON_INTERPRET", None)
        limits = json.loads(os.environ.get(LIMITS_ENV, "{}"))
        self.limits = Limits(**limits)
        trusted = os.environ.get(TRUSTED_CELLS_ENV)
        self.trusted = set(json.loads(Path(trusted).read_text())) if trusted else set()
        self.student = StudentKernel(self.limits)
        self.shell.set_custom_exc((Exception,), _short_traceback)

    def _relay(self, kind, content):
        self.session.send(self.iopub_socket, kind, content, parent=self.get_parent("shell"),
                          ident=self._topic(kind))

    async def do_execute(self, code, silent, store_history=True, user_expressions=None, allow_stdin=False,
                         **kwargs):
        if digest(code) in self.trusted:
            self._bind_student_functions()
            # nbgrader scores a test cell that wrote to stderr as failed: a harmless warning must not cost points
            stderr, sys.stderr = sys.stderr, sys.stdout
            try:
                return await super().do_execute(code, silent, store_history, user_expressions, allow_stdin,
                                                **kwargs)
            finally:
                sys.stderr = stderr
        return self._execute_student_cell(code, store_history)

    def _bind_student_functions(self):
        self.student.new_test_cell()
        try:
            names = self.student.functions()
        except (TimeoutError, StudentKernelDied):
            self.student.restart()
            names = self.student.functions()
        for name in names:
            self.shell.user_ns[name] = RemoteFunction(self.student, name, self.limits.output_kb)

    def _execute_student_cell(self, code, store_history):
        if store_history:
            self.shell.execution_count += 1
        count = self.shell.execution_count
        sent, budget = [0], self.limits.output_kb << 10

        def relay(kind, content):
            """Every kind of output counts (text, images, HTML, errors), by the size it takes in the notebook;
            past the budget nothing more is kept but the error that ends the cell, shortened."""
            size = len(json.dumps(content))
            sent[0] += size
            if sent[0] > budget:
                if sent[0] - size <= budget:
                    record_event("output", f"cell {count} sent more than {self.limits.output_kb} KiB of output "
                                           f"(text, images and errors together); the rest was cut")
                    self._relay("stream", {"name": "stdout", "text": "\n[output cut: too long]\n"})
                if kind != "error":
                    return
                content = {"ename": str(content.get("ename", ""))[:200],
                           "evalue": str(content.get("evalue", ""))[:2000], "traceback": []}
            if kind == "execute_result":
                content = dict(content, execution_count=count)
            self._relay(kind, content)

        try:
            reply = self.student.execute_cell(code, relay)
        except (TimeoutError, StudentKernelDied) as error:
            reason = "CellTimeoutError" if isinstance(error, TimeoutError) else "DeadKernelError"
            text = (f"this cell was {error}" if isinstance(error, TimeoutError) else
                    f"this cell killed its Python process ({error}): a crash, os._exit or running out of memory")
            record_event("timeout" if isinstance(error, TimeoutError) else "died", f"cell {count}: {text}")
            self.student.restart()
            error_content = {"ename": reason, "evalue": text, "traceback": [f"{reason}: {text}"]}
            self._relay("error", error_content)
            return {"status": "error", "execution_count": count, **error_content}
        return {"status": reply.get("status", "error"), "execution_count": count,
                **{k: reply[k] for k in ("ename", "evalue", "traceback") if k in reply},
                "user_expressions": {}, "payload": []}

    def do_shutdown(self, restart):
        self.student.stop()
        return super().do_shutdown(restart)


def _short_traceback(shell, etype, value, tb, tb_offset=None):
    """A failed check shows its message alone; any other error its type and message; never the test's source
    lines (hidden tests stay hidden)."""
    render = getattr(value, "_render_traceback_", None)
    structured = render() if render else [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, structured)  # IPython leaves the display to a custom handler
    return structured


def main(connection_file):
    """The grader kernel on `connection_file`: what nbclient starts, cold or forked by the zygote."""
    IPKernelApp.launch_instance(kernel_class=GraderKernel, argv=["-f", connection_file])


if __name__ == "__main__":  # python -m autograde.grader_kernel -f CONNECTION_FILE, as the kernelspec says
    main(sys.argv[sys.argv.index("-f") + 1])
