"""Triton kernels compiled for an NVIDIA GPU on a machine without one, and what the compiler made of them.

    with recording(vars(module)) as launches:   # every @triton.jit kernel there records its launches
        launcher(*inputs)                        # instead of running (outputs are left unwritten)
    compile_launch(launches[0], "sm_90")         # -> Compiled: registers, spilled bytes, shared bytes

A launch is compiled as Triton would compile it at that call: Triton's own binder specialises the
arguments (pointer dtypes, 16-byte alignment, integers divisible by 16 or equal to 1, constexprs, num_warps),
triton.compile makes PTX and a cubin for the target with the ptxas in the triton wheel, and cuobjdump, also
in the wheel, reads the cubin's resources. This reads the compiler's output, not the interpreter's: it must
run where TRITON_INTERPRET is not 1 (the interpreter replaces kernels with Python before they can be compiled).
"""
import contextlib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

ARCHS = {"sm_80": 80, "sm_90": 90}  # A100, H100/H200
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
RESOURCES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


@dataclass
class Launch:
    """One `kernel[grid](*args, **kwargs)` a launcher made."""
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


class _Recorder:
    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(Launch(self.kernel, args, kwargs))


@contextlib.contextmanager
def recording(namespace):
    """Within the block, each @triton.jit kernel in `namespace` (a module's vars() or a notebook's globals)
    appends a Launch to the yielded list when launched, and does not run."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("triton_compile needs compiled kernels: run it where TRITON_INTERPRET is not 1")
    kernels = {name: value for name, value in namespace.items() if isinstance(value, JITFunction)}
    launches = []
    namespace.update({name: _Recorder(kernel, launches) for name, kernel in kernels.items()})
    try:
        yield launches
    finally:
        namespace.update(kernels)


def _describe(source, num_warps):
    """e.g. "bf16/i64/fp32 WRITE_GRAD=True ACC=fp32 BLOCK=16384 16 warps V%16=0": the pointers' dtypes, every
    constexpr (an integer argument equal to 1 is one too: Triton specialises it), the warps, and the integer
    arguments Triton knows to be multiples of 16 (it may then vectorise what they index)."""
    names, types = source.fn.arg_names, list(source.signature.values())
    pointers = "/".join(dict.fromkeys(t[1:] for t in types if t.startswith("*")))
    fixed = [f"{names[path[0]]}={getattr(value, 'name', value)}" for path, value in sorted(source.constants.items())]
    multiples = [names[path[0]] for path, attrs in sorted(source.attrs.items())
                 if ["tt.divisibility", 16] in attrs and not types[path[0]].startswith("*")]
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


def error_message(error):
    """A compiler error in one line: Triton's message, then where in the kernel ("at 2:23")."""
    lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    where = f" ({lines[0].rstrip(':')} of the kernel)" if re.match(r"at \d+:\d+", lines[0]) else ""
    return lines[-1].strip() + where
