"""Where a test's calls to the student's functions run: a sandbox the course's references never enter.

The student's kernel runs the notebook, and holds whatever the student's cells did to it (patched
torch, a profile hook switched off, threads). A test cell's call to a student function runs here
instead, in a process that has never run a student cell:

- course_lib's references were never imported here, and cannot be: its box holds only the student's
  edition of course_lib (course_lib.edition; the student's kernel has no more), and `import
  course_lib.<module>` of a reference (as the student's function's globals ask when they arrive)
  gives a stand-in whose every function refuses to run, naming itself;
- it cannot ask the student's kernel to compute anything for it: it opens no socket (seccomp),
  shares no memory (its own IPC namespace; System V and memfd refused) and sees no process of the
  kernel's (its own PID namespace); its one connection is to the grader.

The student's function comes from the kernel pickled with cloudpickle (its code and globals by value,
modules by name) and relayed by the grader. Loading it runs code the student wrote, here: that is
fine, because nothing here can compute the reference. The from-scratch rules on torch shortcuts
(`grading.from_scratch`) are applied around each call here too; they are checked in this process,
so a function that tampers with the check at call time can hide its use of a torch shortcut (never
of the course's reference, which is not here to call).

Role "calls" of autograde.launch (forked warm by autograde.zygote, or started cold), in a box of
its own: it puts itself under the sandbox's limits before anything else, then serves the grader on
the channel it was started with. Each request is two frames, a JSON header and a payload, and each
answer one frame, written with torch.save and read by the grader with weights_only=True:
  {"op": "load", "name"}                          payload: the cloudpickled object, becomes `name`
  {"op": "call", "name", "id", "keep_graph"}      payload: the arguments; answer: the result (and, asked, its
                                                  peak memory and the Triton launches it made, described as data)
  {"op": "backward", "id"}                        payload: the output gradients; answer: input gradients
"""
import builtins
import contextlib
import importlib.abc
import importlib.machinery
import io
import json
import os
import pickle
import sys
import types
import warnings

import cloudpickle  # noqa: F401 - what unpickling the student's function needs, ready before the sandbox
import torch

from autograde import launch, sandbox
from course_lib import edition, grading, memory_budget



# ---------------------------------------------------------------- the references: stand-ins only

class Unavailable:
    """What a course_lib reference is here: calling it fails, saying what it is."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise grading.FromScratchViolation(
            f"{self.name} is the course's reference implementation: graded code cannot call it.\n"
            f"  hint: write it yourself; the reference is there to compare with in the notebook, not to call")

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Unavailable(f"{self.name}.{attribute}")


class StandInModule(types.ModuleType):
    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Unavailable(f"{self.__name__}.{attribute}")


class StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of course_lib's reference modules get a StandInModule."""

    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("course_lib.") and not edition.is_student_module(fullname):
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return StandInModule(spec.name)

    def exec_module(self, module):
        pass


# ---------------------------------------------------------------- the calls

def sendable(value):
    """What torch.load(weights_only=True) accepts: tensors, numbers, strings, containers of them."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone() if type(value) is torch.Tensor else torch.Tensor(value.detach()).clone()
    if isinstance(value, (tuple, list)):
        return type(value)(sendable(v) for v in value) if type(value) in (tuple, list) else list(map(sendable, value))
    if isinstance(value, dict):
        return {str(k): sendable(v) for k, v in value.items()}
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value).__module__ == "numpy":  # numpy scalars and arrays
        return torch.as_tensor(value)
    raise TypeError(f"returned a {type(value).__name__}, which cannot be graded: return tensors or numbers")


def changed_arguments(before, args, kwargs):
    """New values of tensor arguments the call modified (by value, or by an in-place op that left the values: the
    grader's copy then sees its version counter move too), and the state of modules and optimizers."""
    out = {}
    for key, value in list(enumerate(args)) + list(kwargs.items()):
        if isinstance(value, torch.Tensor) and key in before and (
                value._version != before[key][1] or not grading.identical(before[key][0], value.detach())):
            out[key] = ("tensor", value.detach().clone())
        elif isinstance(value, torch.nn.Module):
            grads = {n: p.grad for n, p in value.named_parameters() if p.grad is not None}
            flags = {n: p.requires_grad for n, p in value.named_parameters()}
            out[key] = ("module", {"state": value.state_dict(), "grads": grads, "requires_grad": flags,
                                   "training": value.training})
        elif isinstance(value, torch.optim.Optimizer):
            out[key] = ("optimizer", value.state_dict())
    return out


def aliases(result, args, kwargs):
    """Which outputs are a tensor argument itself, as an in-place function returns its input: {output: argument},
    the output -1 for a single tensor, else its index; the grader hands back its own tensor there."""
    outputs = {-1: result} if isinstance(result, torch.Tensor) else \
        dict(enumerate(result)) if isinstance(result, (tuple, list)) else {}
    inputs = [(k, v) for k, v in list(enumerate(args)) + list(kwargs.items()) if isinstance(v, torch.Tensor)]
    return {i: k for i, o in outputs.items() if isinstance(o, torch.Tensor) for k, v in inputs
            if (o.data_ptr(), o.shape, o.stride(), o.dtype) == (v.data_ptr(), v.shape, v.stride(), v.dtype)}


def error_reply(error):
    """The student's error for the grader: its type, message, and the student's own frames (none of ours)."""
    kind = "FromScratchViolation" if isinstance(error, grading.FromScratchViolation) else type(error).__name__
    frames, text = grading.student_frames(error)
    return {"status": "error", "type": kind, "message": str(error),
            "builtin": kind if isinstance(getattr(builtins, kind, None), type) else None,
            "frames": text[-4000:], "raised_in": frames[-1].name if frames else None}


def _launches():
    """course_lib.triton_compile.launches(): the call's Triton launches, described as data for the grader to compile
    (only the notebooks with kernels ask, so only they import triton here)."""
    from course_lib import triton_compile
    return triton_compile.launches()


class Server:
    def __init__(self):
        self.functions = {}  # name -> the student's object, as last loaded
        self.graphs = {}     # call id -> (inputs that require grad, outputs): kept for a later backward

    def resolve(self, name):
        """`name` or `Name.attribute` (e.g. the apply of a student's autograd.Function)."""
        first, *rest = name.split(".")
        value = self.functions.get(first)
        for attribute in rest:
            value = getattr(value, attribute, None)
        if not callable(value):
            raise NameError(f"name {name!r} is not defined: run the cell that defines it")
        return value

    def read(self, payload):
        server = self

        class Unpickler(pickle.Unpickler):
            def persistent_load(self, reference):  # the grader's stand-in for one of the student's functions
                return server.resolve(reference[1])

        return Unpickler(io.BytesIO(payload)).load()

    def load(self, name, payload):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            exported = io.BytesIO(payload)
            settings = pickle.load(exported)
            os.environ.update({k: str(v) for k, v in settings.items() if str(k).startswith("TRITON_")})
            self.functions[name] = pickle.load(exported)
        return {"status": "ok", "printed": printed.getvalue()[-20000:]}

    def call(self, name, call_id, keep_graph, payload):
        args, kwargs, forbidden, exercise, replacements, measure, observe = self.read(payload)
        before = {k: (v.detach().clone(), v._version) for k, v in list(enumerate(args)) + list(kwargs.items())
                  if isinstance(v, torch.Tensor)}
        printed = io.StringIO()
        try:
            fn = self.resolve(name)
            namespace = getattr(self.functions[name.split(".")[0]], "__globals__", {})
            memory = memory_budget.PeakMemory() if measure else contextlib.nullcontext()
            kernels = _launches() if observe else contextlib.nullcontext([])
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), \
                    warnings.catch_warnings(), grading.names_replaced(namespace, replacements), memory, \
                    kernels as launched:
                warnings.simplefilter("always")
                warnings.showwarning = lambda m, c, f, l, file=None, line=None: printed.write(f"{c.__name__}: {m}\n")
                with grading.from_scratch(*(forbidden or ()), exercise=exercise):
                    result = fn(*args, **kwargs)
            outputs = [result] if isinstance(result, torch.Tensor) else \
                list(result) if isinstance(result, (tuple, list)) else []
            if keep_graph:
                self.graphs[call_id] = ([v for v in list(args) + list(kwargs.values())
                                         if isinstance(v, torch.Tensor) and v.requires_grad], outputs)
                while len(self.graphs) > 256:
                    self.graphs.pop(next(iter(self.graphs)))
            reply = {"status": "ok", "result": sendable(result), "changed": changed_arguments(before, args, kwargs),
                     "aliases": {} if keep_graph else aliases(result, args, kwargs),
                     "peak_bytes": memory.peak if measure else 0, "launches": launched,
                     "differentiable": [isinstance(o, torch.Tensor) and o.requires_grad for o in outputs]}
        except BaseException as error:  # noqa: B036 - the student's error is reported, not raised here
            reply = error_reply(error)
        reply["printed"] = printed.getvalue()[-20000:]
        return reply

    def backward(self, call_id, payload):
        grad_outputs, measure = self.read(payload)
        leaves, outputs = self.graphs.pop(call_id)
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None and o.requires_grad]
        memory = memory_budget.PeakMemory() if measure else contextlib.nullcontext()
        with memory:
            grads = torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True)
        return {"status": "ok", "result": [None if g is None else g.detach() for g in grads],
                "peak_bytes": memory.peak if measure else 0, "printed": ""}

    def serve(self, channel, limit):
        while True:
            try:
                request = json.loads(launch.receive(channel, 1 << 16))
                payload = launch.receive(channel, limit)
            except launch.ChannelClosed:
                return
            try:
                if request["op"] == "load":
                    reply = self.load(request["name"], payload)
                elif request["op"] == "call":
                    reply = self.call(request["name"], request["id"], request["keep_graph"], payload)
                else:
                    reply = self.backward(request["id"], payload)
            except BaseException as error:  # noqa: B036 - a failed load or backward is an answer too
                reply = dict(error_reply(error), printed="")
            answer = io.BytesIO()
            torch.save(reply, answer)
            launch.send(channel, answer.getvalue())


def run(settings, channel):
    """Sandbox this process, say what the sandbox could not apply, then serve the grader on `channel`."""
    edition.refuse_references(sys.modules, "the process for graded calls")
    sys.meta_path.insert(0, StandIns())
    skipped = sandbox.restrict(settings.limits, calls=True)
    torch.set_num_threads(settings.threads)
    launch.send(channel, json.dumps({"skipped": skipped}).encode())
    Server().serve(channel, settings.limits.file_mb << 20)
