"""Triton kernels compiled for an NVIDIA GPU on a machine without one, and what the compiler made of them.

    with launches() as made:                     # every Triton kernel launched in the block is described, as data
        launcher(*inputs)
    compile_launch(rebuilt(made[0]), "sm_90")     # -> Compiled: registers, spilled bytes, shared bytes

A launch is described where it is made (`describe_launch`: the kernel's source, parameters, options and the
globals it reads, and each argument as Triton's binder sees it: a tensor's dtype and 16-byte alignment, a
number, a constexpr) and compiled from that description, possibly in another process (`rebuilt`): a graded call
runs in a sandbox, and its kernels are compiled by the grader, which runs nothing of the student's to do it.
Triton's own binder specialises the arguments (pointer dtypes, alignment, integers divisible by 16 or equal to
1, constexprs, num_warps), triton.compile makes PTX and a cubin for the target with the ptxas in the triton
wheel, and cuobjdump, also in the wheel, reads the cubin's resources: the compiler's output, not the interpreter's.

Where kernels run in Triton's interpreter (TRITON_INTERPRET=1), `launches()` also holds each load and store to
the memory of the tensors the kernel was given (`in_bounds`): the interpreter reads and writes wherever a pointer
points, where a GPU would fault or corrupt another tensor.
"""
import ast
import contextlib
import hashlib
import inspect
import json
import keyword
import linecache
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime import interpreter
from triton.runtime.errors import InterpreterError
from triton.runtime.jit import JITFunction, KernelInterface, _normalize_ty, create_function_from_signature

ARCHS = {"sm_80": 80, "sm_90": 90}  # A100, H100/H200
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
RESOURCES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
OPTIONS = {"do_not_specialize": list, "do_not_specialize_on_alignment": list, "noinline": bool, "debug": bool}
ACTIVE = []  # the lists of the `launches` blocks open now: a graded call run elsewhere adds its launches to each


@dataclass
class Launch:
    """One `kernel[grid](*args, **kwargs)`, as triton.compile needs it."""
    kernel: JITFunction
    args: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass
class Compiled:
    kernel: str
    arch: str
    configuration: str   # the launch's specialisation: pointer dtypes, constexprs, warps
    registers: int       # per thread
    spill_bytes: int     # per thread: stack frame and local memory, where ptxas puts what registers cannot hold
    shared_bytes: int    # per program: the cubin's static shared memory and the dynamic shared memory Triton asks
    seconds: float


class OutOfBounds(Exception):
    """An interpreted kernel loaded or stored outside the tensors it was given."""


# ---------------------------------------------------------------- launches, described where they are made

@contextlib.contextmanager
def launches(run=True):
    """Within the block, each Triton kernel launched, compiled or interpreted, appends its `describe_launch` to
    the yielded list. run=True launches it too, an interpreted one held `in_bounds`; run=False does not (its
    outputs stay unwritten), as where kernels are compiled on a machine that has no GPU to run them."""
    made, outer = [], KernelInterface.__getitem__

    def launcher(kernel, grid):
        def launch(*args, **kwargs):
            made.append(describe_launch(kernel, args, kwargs))
            if run:
                try:
                    with in_bounds(kernel, args, kwargs):
                        return outer(kernel, grid)(*args, **kwargs)
                except InterpreterError as error:  # the interpreter wraps every error: say ours plainly
                    if isinstance(error.__cause__, OutOfBounds):
                        raise error.__cause__ from None
                    raise
        return launch

    KernelInterface.__getitem__ = launcher
    ACTIVE.append(made)
    try:
        yield made
    finally:
        KernelInterface.__getitem__ = outer
        ACTIVE.remove(made)


def kernel_source(kernel):
    """The kernel's own source, from `def` on: what Triton compiles (a compiled kernel keeps it as `src`)."""
    if hasattr(kernel, "src"):
        return kernel.src
    source = textwrap.dedent(inspect.getsource(kernel.fn))  # an interpreted kernel reads its cell's, from linecache
    return source[source.index("def "):]


def kernel_options(kernel):
    """The options of `triton.jit` that decide what is compiled (do_not_specialize, noinline, debug)."""
    given = dict(kernel.kwargs) if hasattr(kernel, "kwargs") else {  # an interpreted kernel keeps them as given
        name: getattr(kernel, name, None) for name in OPTIONS}
    return {name: value for name, value in given.items() if name in OPTIONS and value not in (None, [], ())}


def _global_names(source):
    """Every name the kernel's source reads, its signature's annotations and defaults included: what Triton's
    compiler may look up in the kernel's globals."""
    return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


def _plain(value):
    """A number, string, bool or None as itself; anything else has no description."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    raise TypeError(type(value).__name__)


def _described(value, kernels):
    """What a kernel argument, default or global is, as data: {"tensor": dtype name, "aligned": ...},
    {"value": ...}, {"constexpr": ...}, {"dtype": ...}, {"module": ...}, {"kernel": name} (described in
    `kernels`) or {"other": type name}."""
    if isinstance(value, KernelInterface) and isinstance(getattr(value, "fn", None), types.FunctionType):
        return {"kernel": _describe_kernel(value, kernels)}
    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "aligned": value.data_ptr() % 16 == 0}
    if isinstance(value, tl.constexpr):
        value = value.value
        kind = "constexpr"
    else:
        kind = "value"
    if isinstance(value, tl.dtype):
        return {"dtype": value.name}
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    try:
        return {kind: _plain(value)}
    except TypeError:
        return {"other": type(value).__name__}


def _describe_kernel(kernel, kernels):
    """Describe `kernel` (and the kernels it calls) into `kernels`, keyed by name; returns its name."""
    fn = kernel.fn
    if fn.__name__ in kernels:
        return fn.__name__
    source = kernel_source(kernel)
    kernels[fn.__name__] = description = {"source": source, "options": kernel_options(kernel)}
    description["params"] = [
        {"name": p.name, "annotation": "" if p.annotation is p.empty else _normalize_ty(p.annotation),
         **({} if p.default is p.empty else {"default": _described(p.default, kernels)})}
        for p in inspect.signature(fn).parameters.values()]
    description["globals"] = {name: _described(fn.__globals__[name], kernels)
                              for name in sorted(_global_names(source)) if name in fn.__globals__}
    return fn.__name__


def describe_launch(kernel, args, kwargs):
    """`kernel[grid](*args, **kwargs)` as data (strings, numbers, lists, dicts), enough to compile it elsewhere."""
    kernels = {}
    return {"kernel": _describe_kernel(kernel, kernels), "kernels": kernels,
            "args": [_described(a, kernels) for a in args],
            "kwargs": {name: _described(v, kernels) for name, v in kwargs.items()}}


# ---------------------------------------------------------------- compiled from the description

class NotRebuildable(ValueError):
    """A launch description that names something the compile check does not make again."""


def _trusted_module(name):
    if name == "math" or name == "triton" or name.startswith("triton.language"):
        return __import__(name, fromlist=["_"])
    return _Unavailable(f"module {name}")


class _Unavailable:
    """A global the description could not carry (a function, a tensor, another module): Triton's compiler refuses
    to read it from a kernel, as it would the original."""

    def __init__(self, what):
        self.what = what

    def __repr__(self):
        return f"<{self.what}>"


KINDS = ("tensor", "dtype", "module", "kernel", "constexpr", "value", "other")  # the keys `_described` writes


def _value(described, made, kernels):
    kind = next((k for k in KINDS if k in described), None)
    value = described.get(kind)
    if kind == "tensor":
        dtype = getattr(torch, value, None)
        if not isinstance(dtype, torch.dtype):
            raise NotRebuildable(f"no torch dtype {value!r}")
        memory = torch.empty(64, dtype=dtype)  # 64-byte aligned: a view one element on is not 16-byte aligned
        return memory if described["aligned"] else memory[1:]
    if kind == "dtype":
        dtypes = {d.name: d for d in vars(tl).values() if isinstance(d, tl.dtype)}  # "fp32": tl.float32
        if value not in dtypes:
            raise NotRebuildable(f"no Triton dtype {value!r}")
        return dtypes[value]
    if kind == "module":
        return _trusted_module(value)
    if kind == "kernel":
        return _kernel(value, made, kernels)
    if kind in ("value", "constexpr"):
        _plain(value)
        return tl.constexpr(value) if kind == "constexpr" else value
    return _Unavailable(f"a {value}")


def _identifier(name):
    if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)):
        raise NotRebuildable(f"{name!r} is not a Python name")
    return name


def _kernel(name, made, kernels):
    """A JITFunction for kernels[name], made without running any of its code: a generated `def name(params): pass`
    carries the signature (annotations and defaults set from the description), and Triton reads the body from the
    source, which linecache holds under a file name of the kernel's own."""
    if name in made:
        return made[name]
    description = kernels[_identifier(name)]
    source, params = description["source"], description["params"]
    names = [_identifier(p["name"]) for p in params]
    defaults = [p for p in params if "default" in p]
    if params[len(params) - len(defaults):] != defaults:
        raise NotRebuildable(f"{name}: a parameter without a default follows one with a default")
    filename = f"<triton-kernel {name} {hashlib.sha256(source.encode()).hexdigest()[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace = {"__name__": "described_kernels"}
    exec(compile(f"def {name}({', '.join(names)}):\n    pass\n", filename, "exec"), namespace)
    fn = namespace.pop(name)
    made[name] = None  # a kernel that reaches itself through its globals finds a placeholder, not a loop
    namespace.update({g: _value(v, made, kernels) for g, v in description["globals"].items() if _identifier(g)})
    fn.__defaults__ = tuple(_value(p["default"], made, kernels) for p in defaults) or None
    fn.__annotations__ = {p["name"]: str(p["annotation"]) for p in params if p["annotation"]}
    options = {k: OPTIONS[k](v) for k, v in description["options"].items() if k in OPTIONS}
    made[name] = JITFunction(fn, **options)
    return made[name]


def rebuilt(launch):
    """The Launch that `describe_launch` described, with stand-in tensors of the same dtypes and alignment."""
    try:
        made, kernels = {}, launch["kernels"]
        kernel = _kernel(launch["kernel"], made, kernels)
        return Launch(kernel, tuple(_value(a, made, kernels) for a in launch["args"]),
                      {_identifier(k): _value(v, made, kernels) for k, v in launch["kwargs"].items()})
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise NotRebuildable(f"the launch could not be made again to compile it ({type(error).__name__}: {error})")


def _describe(source, num_warps):
    """e.g. "bf16/i64/fp32 WRITE_GRAD=True ACC=fp32 BLOCK=16384 16 warps V%16=0": the pointers' dtypes, every
    constexpr (an integer argument equal to 1 is one too: Triton specialises it), the warps, and the integer
    arguments Triton knows to be multiples of 16 (it may then vectorise what they index)."""
    names, types_ = source.fn.arg_names, list(source.signature.values())
    pointers = "/".join(dict.fromkeys(t[1:] for t in types_ if t.startswith("*")))
    fixed = [f"{names[path[0]]}={getattr(value, 'name', value)}" for path, value in sorted(source.constants.items())]
    multiples = [names[path[0]] for path, attrs in sorted(source.attrs.items())
                 if ["tt.divisibility", 16] in attrs and not types_[path[0]].startswith("*")]
    return " ".join([pointers, *fixed, f"{num_warps} warps", *(f"{name}%16=0" for name in multiples)])


def resources(cubin):
    """(registers, stack, shared, local) bytes of the one function in `cubin`, as cuobjdump reports them."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        report = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", file.name],
                                capture_output=True, text=True, check=True).stdout
    found = RESOURCES.search(report)
    if not found:
        raise RuntimeError(f"cuobjdump reported no resources:\n{report}")
    return tuple(int(v) for v in found.groups())


def specialise(launch, arch="sm_90"):
    """(what triton.compile takes for `launch` on `arch`: the source with its signature, constexprs and
    attributes, the target, the options), as Triton's binder makes them at that call."""
    target = GPUTarget("cuda", ARCHS[arch], 32)
    backend = make_backend(target)
    kernel = launch.kernel
    bind = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = bind(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.kwargs, bound, specialization, options)
    return ASTSource(kernel, signature, constexprs, attrs), target, options


def distinct(launches):
    """One Launch per program Triton would compile (its specialisation and options), in the order first made."""
    programs = {}
    for launch in launches:
        program, _, options = specialise(launch)
        programs.setdefault((program.hash(), repr(options)), launch)
    return list(programs.values())


def compile_launch(launch, arch="sm_90"):
    """Compile `launch` for `arch` ("sm_80" or "sm_90") as Triton would at that call; raises Triton's
    CompilationError (or the ptxas error) for a kernel the compiler rejects."""
    source, target, options = specialise(launch, arch)
    start = time.perf_counter()
    compiled = triton.compile(source, target=target, options=options.__dict__)
    seconds = time.perf_counter() - start
    registers, stack, shared, local = resources(compiled.asm["cubin"])
    configuration = _describe(source, options.num_warps)
    return Compiled(launch.kernel.__name__, arch, configuration, registers, stack + local,
                    shared + compiled.metadata.shared, seconds)


def _compiled_here(described, arch):
    results = []
    try:
        programs = distinct([rebuilt(launch) for launch in described])
    except Exception as error:  # a launch the binder refuses is the compiler's refusal too
        return [{"kernel": "a kernel", "error": error_message(error)}]
    for launch in programs:
        try:
            results.append({"kernel": launch.kernel.__name__, **vars(compile_launch(launch, arch)), "error": None})
        except Exception as error:  # CompilationError, or the ptxas error: the verdict, not a crash
            results.append({"kernel": launch.kernel.__name__, "error": error_message(error)})
    return results


def compile_described(described, arch="sm_90"):
    """Each distinct program among these `describe_launch` descriptions compiled for `arch`: one dict each, the
    Compiled fields and "error" None, or "kernel" and the compiler's "error" in one line.

    Compiled in this process, unless triton.language was imported here for the interpreter (TRITON_INTERPRET=1, as
    where a notebook runs without a GPU): its own @triton.jit functions (tl.sum, tl.max) are then Python for the
    interpreter, which the compiler cannot inline. The descriptions, data only, then go to a child process started
    without TRITON_INTERPRET (`_Compiler`), which compiles them."""
    if not isinstance(tl.sum, interpreter.InterpretedFunction):
        return _compiled_here(described, arch)
    return _Compiler.get().compile(described, arch)


class _Compiler:
    """The child process that compiles for a process whose Triton is the interpreter's: started on first use and
    kept (importing torch and triton takes longer than a compile), one JSON line in, one out; a new one if it dies."""
    ANSWER = "compiled: "  # marks the answer among anything else that reaches the child's stdout
    running = None

    @classmethod
    def get(cls):
        if cls.running is None or cls.running.process.poll() is not None:
            cls.running = cls()
        return cls.running

    def __init__(self):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen([sys.executable, "-m", __spec__.name], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.errors, text=True, env=env)

    def compile(self, described, arch, timeout=600):
        stuck = threading.Timer(timeout, self.process.kill)  # a compile that hangs ends the process, and the wait
        stuck.start()
        try:
            self.process.stdin.write(json.dumps([described, arch]) + "\n")
            self.process.stdin.flush()
            for line in iter(self.process.stdout.readline, ""):
                if line.startswith(self.ANSWER):
                    return json.loads(line.removeprefix(self.ANSWER))
        except OSError:  # BrokenPipeError: it had exited
            pass
        finally:
            stuck.cancel()
        self.process.kill()
        self.errors.seek(0)
        raise RuntimeError(f"the process compiling the kernels stopped:\n{self.errors.read()[-3000:]}")


def error_message(error):
    """A compiler error in one line: Triton's message, then where in the kernel ("at 2:23")."""
    lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    where = f" ({lines[0].rstrip(':')} of the kernel)" if re.match(r"at \d+:\d+", lines[0]) else ""
    return lines[-1].strip() + where


# ---------------------------------------------------------------- loads and stores, held to the tensors given

def _regions(kernel, args, kwargs):
    """(name, first byte, end, description) of the memory of each tensor the launch passes."""
    names = list(inspect.signature(kernel.fn).parameters)
    given = list(zip(names, args)) + [(k, v) for k, v in kwargs.items() if k in names]
    return [(name, v.untyped_storage().data_ptr(), v.untyped_storage().data_ptr() + v.untyped_storage().nbytes(),
             f"a {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')} tensor")
            for name, v in given if isinstance(v, torch.Tensor)]


def _where(address, regions):
    """Where `address` lies, said from the nearest tensor: "12 bytes past the end of `z_ptr` (a ... tensor)"."""
    after = [(address - end, name, what) for name, start, end, what in regions if address >= end]
    before = [(start - address, name, what) for name, start, end, what in regions if address < start]
    if after and (not before or min(after)[0] <= min(before)[0]):
        gap, name, what = min(after)
        return f"{gap} bytes past the end of `{name}` ({what})" if gap else f"just past the end of `{name}` ({what})"
    gap, name, what = min(before)
    return f"{gap} bytes before the start of `{name}` ({what})"


@contextlib.contextmanager
def in_bounds(kernel, args, kwargs):
    """While an interpreted `kernel` runs on these arguments, each load and store it makes (each lane its mask keeps)
    must fall inside the memory of a tensor it was given, or OutOfBounds is raised; a compiled kernel is left be."""
    if not isinstance(kernel, interpreter.InterpretedFunction):
        yield
        return
    regions, builder = _regions(kernel, args, kwargs), interpreter.interpreter_builder
    name = kernel.fn.__name__

    def held(access, verb):
        def checked(ptrs, *rest):
            mask = rest[1] if verb == "stored" else rest[0]
            size = np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize
            addresses = ptrs.data[np.broadcast_to(mask.data, ptrs.data.shape)].astype(np.uint64)
            inside = np.zeros(addresses.shape, dtype=bool)
            for _, start, end, _ in regions:
                inside |= (addresses >= start) & (addresses + size <= end)
            if not inside.all():
                outside = addresses[~inside]
                raise OutOfBounds(
                    f"{name} {verb} {outside.size} element(s) outside every tensor it was given, the first of them "
                    f"{_where(int(outside[0]), regions)}: on a GPU that is another tensor's memory, or a fault. "
                    f"Mask the access (mask=offsets < n): a lane past the end of a row must not touch memory, even "
                    f"if tl.where drops what it read")
            return access(ptrs, *rest)
        return checked

    patched = ("create_masked_load", "create_masked_store")  # create_load and create_store call these
    previous = {attribute: vars(builder)[attribute] for attribute in patched if attribute in vars(builder)}
    builder.create_masked_load = held(builder.create_masked_load, "loaded")
    builder.create_masked_store = held(builder.create_masked_store, "stored")
    try:
        yield
    finally:
        for attribute in patched:
            if attribute in previous:
                setattr(builder, attribute, previous[attribute])
            else:
                delattr(builder, attribute)


if __name__ == "__main__":  # _Compiler's child: a line [descriptions, arch] on stdin, a line of results on stdout
    for request in sys.stdin:
        print(_Compiler.ANSWER + json.dumps(_compiled_here(*json.loads(request))), flush=True)
