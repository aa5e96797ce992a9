"""Runs inside the student's sandboxed kernel, before any student code: hands the student's functions over.

A test cell's calls do not run in this kernel, which holds the course's reference implementations
(the notebook's own cells use them): they run in `autograde.call_server`, which never does. For each
function a test cell calls, the grader runs `__grader_export__(name)` here, which writes the object,
pickled with cloudpickle (code and globals by value), to `export.pkl`, after the settings that
decide how Triton runs; the grader passes those bytes on without reading them. A student who replaces these functions can only send something else to be
graded, in a process where the references are not.
"""


def __grader_runtime__():
    import linecache
    import os
    import sys
    import types

    import cloudpickle

    namespace = globals()

    def rebuilt_kernel(fn, filename, lines):
        """A Triton kernel, compiled from its source: which the other side reads from linecache, as here."""
        import triton
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
        return triton.jit(fn)

    class Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj):
            # a compiled Triton kernel holds locks and a device cache: send its function and source instead
            jit = sys.modules.get("triton.runtime.jit")
            if jit and type(obj) is jit.JITFunction:
                filename = obj.fn.__code__.co_filename
                return rebuilt_kernel, (obj.fn, filename, linecache.getlines(filename))
            return super().reducer_override(obj)

    def export(name):
        if name not in namespace:
            raise NameError(f"name {name!r} is not defined: run the cell that defines it")
        with open("export.pkl", "wb") as handle:
            # a notebook picks Triton's CPU interpreter at run time (TRITON_INTERPRET, before importing
            # triton): the call server must run the kernels the same way, so it gets these first
            Pickler(handle).dump({k: v for k, v in os.environ.items() if k.startswith("TRITON_")})
            Pickler(handle).dump(namespace[name])

    def functions():
        """Names of the functions and classes the student's cells defined."""
        return [name for name, value in namespace.items()
                if not name.startswith("_") and isinstance(value, (types.FunctionType, type))
                and getattr(value, "__module__", None) == "__main__"]

    return export, functions


__grader_export__, __grader_functions__ = __grader_runtime__()
del __grader_runtime__
