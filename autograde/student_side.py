"""Runs inside the student's sandboxed kernel, before any student code: the far end of a call.

The grader kernel sends this file's source to the student's kernel and then, for each call a test
cell makes to a student function, writes the arguments to `call.in` in the kernel's working
directory and runs `__grader_call__(...)`. The function runs under the exercise's from-scratch
rules; its result, the new values of any arguments it changed and what it printed go back in
`call.out`, written with `torch.save` and read by the grader with `weights_only=True`, so nothing
the student returns can run code in the grader. A student who tampers with these functions can
only break their own calls: the checks themselves run in the grader.
"""


def __grader_runtime__():
    import builtins
    import contextlib
    import io
    import pickle
    import types
    import warnings

    import torch

    from course_lib import grading, memory_budget

    namespace = globals()
    graphs = {}  # call id -> (inputs that require grad, outputs): kept for a later backward

    def student_function(name):
        """`name` or `Name.attribute` (e.g. the apply of a student's autograd.Function)."""
        first, *rest = name.split(".")
        fn = namespace.get(first)
        for attribute in rest:
            fn = getattr(fn, attribute, None)
        if not callable(fn):
            raise NameError(f"name {name!r} is not defined: run the cell that defines it")
        return fn

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, reference):  # the grader's stand-in for one of the student's functions
            return student_function(reference[1])

    def load_call():
        with open("call.in", "rb") as handle:
            return Unpickler(handle).load()

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
        if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalars and 0-d arrays
            return torch.as_tensor(value)
        if type(value).__module__ == "numpy":
            return torch.as_tensor(value)
        raise TypeError(f"returned a {type(value).__name__}, which cannot be graded: return tensors or numbers")

    def changed_arguments(before, args, kwargs):
        """New values of tensor arguments the call modified, and the state of modules and optimizers."""
        out = {}
        for key, value in list(enumerate(args)) + list(kwargs.items()):
            if isinstance(value, torch.Tensor) and key in before and not torch.equal(before[key], value.detach()):
                out[key] = ("tensor", value.detach().clone())
            elif isinstance(value, torch.nn.Module):
                grads = {n: p.grad for n, p in value.named_parameters() if p.grad is not None}
                flags = {n: p.requires_grad for n, p in value.named_parameters()}
                out[key] = ("module", {"state": value.state_dict(), "grads": grads, "requires_grad": flags,
                                       "training": value.training})
            elif isinstance(value, torch.optim.Optimizer):
                out[key] = ("optimizer", value.state_dict())
        return out

    def call(name, call_id, keep_graph):
        args, kwargs, forbidden, exercise, replacements, measure = load_call()
        before = {k: v.detach().clone() for k, v in list(enumerate(args)) + list(kwargs.items())
                  if isinstance(v, torch.Tensor)}
        printed = io.StringIO()
        reply = {}
        try:
            fn = student_function(name)
            memory = memory_budget.PeakMemory() if measure else contextlib.nullcontext()
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), \
                    warnings.catch_warnings(), grading.names_replaced(namespace, replacements), memory:
                warnings.simplefilter("always")
                warnings.showwarning = lambda m, c, f, l, file=None, line=None: printed.write(f"{c.__name__}: {m}\n")
                # always: the course's reference implementations may not stand in for the student's work
                with grading.from_scratch(*(forbidden or ()), exercise=exercise):
                    result = fn(*args, **kwargs)
            if keep_graph:
                leaves = [v for v in list(args) + list(kwargs.values())
                          if isinstance(v, torch.Tensor) and v.requires_grad]
                outputs = [result] if isinstance(result, torch.Tensor) else list(result)
                graphs[call_id] = (leaves, outputs)
                while len(graphs) > 256:
                    graphs.pop(next(iter(graphs)))
            reply = {"status": "ok", "result": sendable(result), "changed": changed_arguments(before, args, kwargs),
                     "peak_bytes": memory.peak if measure else 0,
                     "differentiable": [isinstance(o, torch.Tensor) and o.requires_grad for o in
                                        ([result] if isinstance(result, torch.Tensor) else
                                         list(result) if isinstance(result, (tuple, list)) else [])]}
        except BaseException as error:  # noqa: B036 - the student's error is reported, not raised here
            kind = "FromScratchViolation" if isinstance(error, grading.FromScratchViolation) else type(error).__name__
            builtin = kind if isinstance(getattr(builtins, kind, None), type) else None
            reply = {"status": "error", "type": kind, "builtin": builtin, "message": str(error)}
        reply["printed"] = printed.getvalue()[-20000:]
        torch.save(reply, "call.out")

    def backward(call_id):
        grad_outputs, measure = load_call()
        try:
            leaves, outputs = graphs.pop(call_id)
            pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None and o.requires_grad]
            memory = memory_budget.PeakMemory() if measure else contextlib.nullcontext()
            with memory:
                grads = torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True)
            reply = {"status": "ok", "result": [None if g is None else g.detach() for g in grads],
                     "peak_bytes": memory.peak if measure else 0}
        except BaseException as error:  # noqa: B036
            reply = {"status": "error", "type": type(error).__name__, "builtin": None, "message": str(error)}
        reply["printed"] = ""
        torch.save(reply, "call.out")

    def functions():
        """Names of the functions and classes the student's cells defined."""
        return [name for name, value in namespace.items()
                if not name.startswith("_") and isinstance(value, (types.FunctionType, type))
                and getattr(value, "__module__", None) == "__main__"]

    return call, backward, functions


__grader_call__, __grader_backward__, __grader_functions__ = __grader_runtime__()
del __grader_runtime__
