"""Runs inside the student's sandboxed kernel, before any student code: hands the student's functions over.

A test cell's calls do not run in this kernel, which holds the course's reference implementations
(the notebook's own cells use them): they run in `autograde.call_server`, which never does. For each
function a test cell calls, the grader runs `__grader_export__(name)` here, which sends the object,
pickled with cloudpickle (code and globals by value), after the settings that decide how Triton
runs, on this kernel's channel to the grader (autograde.student_kernel); the grader passes those
bytes on without reading them. A student who replaces these functions can only send something else
to be graded, in a process where the references are not.
"""


def __grader_runtime__():
    import io
    import os
    import sys
    import types

    import cloudpickle

    namespace = globals()

    def kernel_options(kernel):
        """The keyword arguments of `triton.jit` the kernel was made with (noinline, do_not_specialize, ...)."""
        if hasattr(kernel, "kwargs"):  # an interpreted kernel keeps them as they were given
            return dict(kernel.kwargs)
        import inspect
        import triton
        # a compiled kernel keeps each under the option's name, but for `repr` (its `repr` is a method)
        kept = {name: getattr(kernel, name, None) for name in ("version", "do_not_specialize", "debug", "noinline",
                                                                "do_not_specialize_on_alignment", "launch_metadata")}
        kept["repr"] = getattr(kernel, "_repr", None)
        accepted = inspect.signature(triton.jit).parameters  # an older Triton has fewer options
        return {name: value for name, value in kept.items() if name in accepted and value not in (None, [])}

    def rebuilt_kernel(fn, source, options):
        """A Triton kernel made again on the receiving side from its own source.

        Pickling keeps a function's code but not where its source lives (cloudpickle 3 names every
        file `<dynamic-code>`), and Triton reads the source with `inspect` to compile or interpret it:
        so the source is registered in linecache under a file name of its own, as IPython does a cell's,
        and the function is pointed at it. Compiled Triton parses `source`, not the code object, so only
        the file name and first line of the code need to agree with it.
        """
        import hashlib
        import linecache

        import triton
        filename = f"<triton-kernel {fn.__qualname__} {hashlib.sha256(source.encode()).hexdigest()[:12]}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        fn.__code__ = fn.__code__.replace(co_filename=filename, co_firstlineno=1)
        return triton.jit(fn, **options)

    class Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj):
            # a Triton kernel holds locks and caches, and its function's source is only in this kernel's
            # linecache: send the function, its source and its options instead, and make it again there
            jit = sys.modules.get("triton.runtime.jit")
            interpreter = sys.modules.get("triton.runtime.interpreter")
            if (jit and type(obj) is jit.JITFunction) or (interpreter and type(obj) is interpreter.InterpretedFunction):
                from course_lib.triton_compile import kernel_source  # triton is imported: a kernel exists
                return rebuilt_kernel, (obj.fn, kernel_source(obj), kernel_options(obj))
            return super().reducer_override(obj)

    def export(name):
        if name not in namespace:
            raise NameError(f"name {name!r} is not defined: run the cell that defines it")
        from autograde.student_kernel import send_to_grader
        exported = io.BytesIO()
        # a notebook picks Triton's CPU interpreter at run time (TRITON_INTERPRET, before importing
        # triton): the call server must run the kernels the same way, so it gets these first
        Pickler(exported).dump({k: v for k, v in os.environ.items() if k.startswith("TRITON_")})
        Pickler(exported).dump(namespace[name])
        send_to_grader(exported.getvalue())

    def functions():
        """Names of the functions and classes the student's cells defined."""
        return [name for name, value in namespace.items()
                if not name.startswith("_") and isinstance(value, (types.FunctionType, type))
                and getattr(value, "__module__", None) == "__main__"]

    return export, functions


__grader_export__, __grader_functions__ = __grader_runtime__()
del __grader_runtime__
