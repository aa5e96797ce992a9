"""Grading helpers used by every notebook test cell.

Each check raises ``CheckFailed`` (an ``AssertionError``) with a message a student can act on, and the
notebook, Validate and the feedback show that message alone, with no frame of this module:

- ``check_close`` / ``check_against_reference``: compare what a student's function
  returned with what was expected, on worked examples, random and extreme inputs;
  the message says what was called, what came back, what was expected, and a hint.
- ``check_frequencies``: counts of random draws against their probabilities,
  within a few binomial standard deviations (sampling exercises).
- ``check_gradient`` / ``check_gradcheck``: an analytic gradient against autograd,
  and an autograd-able function against finite differences.
- ``from_scratch``: while a "from scratch" exercise runs, record every call to the
  torch shortcut it replaces (under any alias: torch.logsumexp, x.logsumexp(),
  torch.special.logsumexp, F.log_softmax, nn.LogSoftmax, ...) and to the course's
  own reference implementations, and fail naming the forbidden call.
- ``check_compiles``: a Triton kernel must compile for a GPU (none needed here) and stay inside its tensors.
- ``replacing_globals``: grade one exercise on its own by swapping a helper it calls
  (another exercise) for a correct one.
- ``written``: whether an exercise is written yet, for the notebook's own cells that use it.
- ``demo_steps``: how long a demonstration trains: briefly while nbgrader grades the notebook.
"""
import contextlib
import dis
import functools
import inspect
import math
import os
import sys
import traceback

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .edition import is_student_module

REFERENCE_DIR = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- failed checks

def _message_lines(self):
    """What IPython shows for the exception (it asks for ``_render_traceback_``): its message, no frame."""
    return str(self).splitlines()


class CheckFailed(AssertionError):
    """A failed check. Its message is what the student needs, so IPython shows the message alone: no frame of
    the checks (nbgrader's Validate and feedback show the traceback the notebook stored)."""
    _render_traceback_ = _message_lines


class Stop(Exception):
    """Stops Run All with one plain message (a notebook whose machine lacks what it needs), no traceback."""
    _render_traceback_ = _message_lines


class NotWritten(CheckFailed):
    """The exercise still raises the release's ``NotImplementedError()``."""


class StudentRaised(CheckFailed):
    """The student's function raised: the message first, then the student's own frames (never the checks')."""


def student_frames(error):
    """The frames of `error`'s traceback that are the student's: not course_lib's, the grader's or a library's.

    An error rebuilt from another process (the batch grader's calls) brings its frames as ``student_frames``."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith((REFERENCE_DIR, GRADER_DIR, *_libraries()))]
    return frames, "".join(traceback.format_list(frames)).rstrip() or getattr(error, "student_frames", "")


def _stub_name(error):
    """Which function raised the release's bare NotImplementedError(): the innermost of the student's frames."""
    frames, _ = student_frames(error)
    return getattr(error, "raised_in", None) or (frames[-1].name if frames else None)


def _raised_by_stub(error):
    """Whether `error` is the bare NotImplementedError() a released exercise raises until it is written."""
    return type(error) is NotImplementedError and not str(error)


def _student_error(error, name, call, hint=""):
    """A student's exception as a failed check: NotWritten for the release's stub, StudentRaised for the rest (its
    message, the student's frames, then the call's hint)."""
    if _raised_by_stub(error):
        stub = _stub_name(error)
        if stub and stub != name and not stub.startswith("<"):
            return NotWritten(f"`{stub}` is not written yet (`{name}` calls it): fill in its cell, above")
        return NotWritten(f"`{name}` is not written yet: fill in the cell above")
    _, frames = student_frames(error)
    where = f"\n  where it raised (your code):\n{frames}" if frames else ""
    advice = f"\n  hint: {hint}" if hint else ""
    return StudentRaised(f"{call}\n  raised {type(error).__name__}: {error}{where}{advice}")


# ---------------------------------------------------------------- describing values

def describe(value, limit=8) -> str:
    """A short, readable description of an argument or a result."""
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if value.numel() == 0:
            return f"tensor(shape={tuple(value.shape)}, dtype={dtype}, no elements)"
        if value.numel() <= limit:
            exact = value.detach().cpu()
            values = np.array2string(exact.double().numpy() if exact.is_floating_point() else exact.numpy(),
                                     precision=4, separator=", ")
            return f"tensor({values}, dtype={dtype})"
        finite = value[torch.isfinite(value)] if value.is_floating_point() else value
        span = f", values in [{finite.min().item():.4g}, {finite.max().item():.4g}]" if finite.numel() else ""
        special = [] if not value.is_floating_point() else [
            word for word, present in (("-inf", (value == -math.inf).any()), ("+inf", (value == math.inf).any()),
                                       ("nan", value.isnan().any())) if bool(present)]
        extra = f", contains {', '.join(special)}" if special else ""
        return f"tensor(shape={tuple(value.shape)}, dtype={dtype}{span}{extra})"
    return repr(value)


def describe_call(name, args=(), kwargs=None) -> str:
    parts = [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in (kwargs or {}).items()]
    return f"{name}({', '.join(parts)})"


def _fail(call, got, expected, hint, detail=""):
    lines = [f"{call}", f"  returned: {got}", f"  expected: {expected}"]
    if detail:
        lines.append(f"  {detail}")
    if hint:
        lines.append(f"  hint: {hint}")
    raise CheckFailed("\n".join(lines))


# ---------------------------------------------------------------- comparing values

def check_close(actual, expected, *, call, hint="", rtol=1e-5, atol=1e-6):
    """Assert ``actual`` matches ``expected`` (tensor or number): same shape, close values, NaN where NaN.

    A tuple ``expected`` (a function with several outputs, e.g. a value and its new state) needs a
    tuple or list of the same length, compared output by output.
    """
    if isinstance(expected, tuple):
        _check_outputs(actual, expected, call=call, hint=hint, rtol=rtol, atol=atol)
        return
    expected = torch.as_tensor(expected)
    if actual is None:
        _fail(call, "None", describe(expected), hint or "did you forget to `return` the result?")
    if not isinstance(actual, torch.Tensor):
        try:
            actual = torch.as_tensor(actual)
        except (TypeError, ValueError, RuntimeError):
            _fail(call, repr(actual), describe(expected), hint, "the result should be a tensor or a number")
    if tuple(actual.shape) != tuple(expected.shape):
        _fail(call, describe(actual), describe(expected), hint,
              f"shape {tuple(actual.shape)} but expected shape {tuple(expected.shape)}")
    if not actual.is_floating_point() and expected.is_floating_point():
        _fail(call, describe(actual), describe(expected), hint, f"dtype {actual.dtype} but expected a floating result")
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    if not bool(close.all()):
        where = tuple(torch.nonzero(~close)[0].tolist())
        at = f" at index {where}" if where else ""
        got, want = _apart(a[where].item(), e[where].item())
        detail = f"first mismatch{at}: got {got}, expected {want} (rtol={rtol}, atol={atol})"
        _fail(call, describe(actual), describe(expected), hint, detail)


def _apart(a, b):
    """Two numbers printed with the fewest significant digits (6 or more) that tell them apart: near 1e8, a
    mismatch of 1 needs 9."""
    for digits in range(6, 18):
        shown = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if shown[0] != shown[1]:
            return shown
    return shown


def check_same_memory(result, tensor, *, call, hint=""):
    """Assert ``result`` is ``tensor`` or a view of all of it, the same memory: what an in-place function returns
    (a copy with the right values would double the memory the in-place version exists to save)."""
    same = isinstance(result, torch.Tensor) and result.shape == tensor.shape and \
        result.data_ptr() == tensor.data_ptr() and result.stride() == tensor.stride()
    if not same:
        _fail(call, _kind(result) + ("" if not isinstance(result, torch.Tensor) else " in other memory"),
              f"the tensor it was given, {_kind(tensor)}, itself", hint)


def check_peak_memory(run, *, call, allowed, hint="", name="your function", unit=None):
    """``run()`` (the student's code: a forward and backward, say) under ``PeakMemory``: the bytes it creates and keeps
    alive at once must stay within `allowed`. unit: (bytes, what) to say the peak in those units too (e.g. one
    chunk of logits). An exception inside `run` becomes a failed check naming `call`, as for every helper here."""
    from .memory_budget import PeakMemory
    try:
        with PeakMemory() as memory:
            run()
    except CheckFailed:
        raise
    except Exception as error:
        raise _student_error(error, name, call, hint) from None
    if memory.peak > allowed:
        size = f" ({memory.peak / unit[0]:.2f} x {unit[1]})" if unit else ""
        _fail(call, f"{memory.peak} bytes created and alive at its peak{size}", f"at most {allowed} bytes", hint)
    # returns nothing: a test cell's last value is shown, and nbgrader reads a number shown there as partial credit


def check_frequencies(counts, probabilities, *, call, hint="", sigmas=5.0):
    """Assert category counts from n independent draws match ``probabilities``.

    Each count is Binomial(n, p_i): it must lie within ``sigmas`` standard deviations
    sqrt(n p_i (1 - p_i)) of n p_i, so a category of probability 0 must never be drawn.
    """
    counts = torch.as_tensor(counts).double().cpu()
    p = torch.as_tensor(probabilities).double().cpu()
    n = counts.sum()
    expected, bound = n * p, sigmas * (n * p * (1 - p)).sqrt()
    outside = (counts - expected).abs() > bound + 1e-9
    if bool(outside.any()):
        i = int(torch.nonzero(outside)[0])
        _fail(call, f"counts {counts.long().tolist()} in {int(n)} draws",
              f"about {expected.round().long().tolist()}, each within +-{bound.round().long().tolist()} "
              f"({sigmas:g} sd)",
              hint, f"first outlier: category {i} drawn {int(counts[i])} times, expected {expected[i].item():.1f}")


def returned(value, *, call, outputs=1, differentiable=False):
    """What the student's function returned, checked to be what a test may use before comparing it (unpacking it,
    `.backward()`): a tensor (outputs=1) or a tuple of `outputs` tensors, with an autograd graph if `differentiable`.
    Anything else is a failed check that says what came back, not a crash in the test's own code. (It may run under
    ``from_scratch``, inside a test's wrapper of the student's function: it calls no torch function.)"""
    wanted = "a tensor" if outputs == 1 else f"a tuple of {outputs} tensors"
    if outputs != 1 and (not isinstance(value, (tuple, list)) or len(value) != outputs):
        got = f"{len(value)} outputs" if isinstance(value, (tuple, list)) else _kind(value)
        _fail(call, got, wanted, "return the outputs in the order asked for, e.g. `return loss, lse`")
    for output in (value,) if outputs == 1 else value:
        if not isinstance(output, torch.Tensor):
            _fail(call, _kind(output), wanted, "did the function end without `return`, or return a Python number?")
        if differentiable and not output.requires_grad:
            _fail(call, f"{_kind(output)} with no autograd graph (requires_grad=False)",
                  f"{wanted} that autograd can differentiate", "compute it from the inputs with torch operations (no "
                  ".item(), .detach() or torch.no_grad() on the way), or return a torch.autograd.Function's apply")
    return value


def _kind(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}, dtype {str(value.dtype).replace('torch.', '')}"
    return f"{value!r} ({type(value).__name__})"


def _check_outputs(actual, expected, *, call, hint, rtol, atol):
    shown = f"a tuple of {len(expected)} outputs"
    if not isinstance(actual, (tuple, list)):
        _fail(call, describe(actual), shown, hint, "the function should return several outputs, in the order asked for")
    if len(actual) != len(expected):
        _fail(call, f"{len(actual)} outputs", shown, hint)
    for i, (a, e) in enumerate(zip(actual, expected)):
        check_close(a, e, call=f"{call}   [output {i}]", hint=hint, rtol=rtol, atol=atol)


def _clone(value, requires_grad=False):
    """A copy with the same values and the same layout (strides; any gap between rows holds nan, or 0)."""
    if not isinstance(value, torch.Tensor):
        return value
    value = value.detach()
    if value.is_contiguous() or any(stride == 0 for stride, size in zip(value.stride(), value.shape) if size > 1):
        copy = value.clone()  # an expanded tensor (stride 0) cannot be written through: its values are copied
    else:
        extent = 1 + sum((size - 1) * stride for size, stride in zip(value.shape, value.stride()))
        memory = torch.full((extent if value.numel() else 0,), math.nan if value.is_floating_point() else 0,
                            dtype=value.dtype, device=value.device)
        copy = memory.as_strided(value.shape, value.stride()).copy_(value)
    return copy.requires_grad_(requires_grad and value.is_floating_point())


def _unpack(case):
    """(label, args) or (label, args, kwargs) -> (label, args, kwargs)."""
    return (tuple(case) + ({},))[:3]


def _run_student(student_fn, args, kwargs, forbidden, name, call=None, wrt=(), hint=""):
    """Call student code on private copies of the inputs, under the exercise's from-scratch rules; then check that
    it left every tensor input as it was (values and version counter: a loss must not change what it is given),
    unless the call says inplace=True. The copies of the inputs named in `wrt` (positions, keyword names) are
    leaves that require grad; returns (result, {position or name: that leaf}).

    An exception the student's code raises becomes a failed check that says so (NotWritten, StudentRaised), with
    the call's hint.
    """
    given = {f"argument {i + 1}": _clone(a, i in wrt) for i, a in enumerate(args)} | {
        k: _clone(v, k in wrt) for k, v in kwargs.items()}
    # a call asked to work in place (inplace=True, as in PyTorch's own functions) may change its inputs: that is its job
    versions = {} if kwargs.get("inplace") is True else {
        k: v._version for k, v in given.items() if isinstance(v, torch.Tensor)}
    copies = list(given.values())
    try:
        with from_scratch(*forbidden, exercise=name):
            got = student_fn(*copies[:len(args)], **dict(zip(kwargs, copies[len(args):])))
    except CheckFailed:
        raise
    except Exception as error:
        raise _student_error(error, name, call or describe_call(name, args, kwargs), hint) from None
    before = dict(zip(given, list(args) + list(kwargs.values())))
    for key, version in versions.items():
        if given[key]._version != version or not identical(given[key], before[key]):
            _fail(call or describe_call(name, args, kwargs), "(its result is not checked: first this)",
                  f"{key} left as it was given", "return new tensors and leave the inputs alone: an in-place op "
                  "(x.mul_(...), x[...] = ..., x += ...) changes the caller's tensor (a residual stream, the logits)",
                  f"your function changed its input {key} in place")
    keys = list(range(len(args))) + list(kwargs)
    return got, {key: copy for key, copy in zip(keys, copies)
                 if key in wrt and isinstance(copy, torch.Tensor) and copy.requires_grad}


def identical(a, b):
    """Same shape, dtype and values, nan where nan (torch.equal says a nan differs from itself)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    return bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())


def _float64(value):
    value = _clone(value)
    return value.double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def input_scale(case):
    """Largest finite |x / temperature| over a case's first argument x.

    float32 rounds a number that large at about 1e-7 of its size, so a correct float32 answer on
    logits of 1e4 can differ from the float64 reference by ~1e-3: scale tolerances with this.
    """
    _, args, kwargs = _unpack(case)
    x = args[0]
    finite = x[torch.isfinite(x)].abs()
    return (finite.max().item() if finite.numel() else 1.0) / kwargs.get("temperature", 1.0)


def float32_rounding(case, units=2):
    """`units` rounding units of float32 (eps = 1.2e-7) at the case's input scale (``input_scale``): how far a correct
    float32 answer may be from the float64 reference when its inputs are that large. Logits z = 1e4 / T = 2e5 are
    rounded by up to eps/2 * 2e5 = 0.012 before any arithmetic, and exp turns that absolute error in z into a relative
    one in p (log-probabilities keep it absolute). The solutions of notebook 02 and their right alternatives measure
    within a quarter of a unit; 2 units leave room for another order of operations, and nothing more."""
    return units * torch.finfo(torch.float32).eps * input_scale(case)


def check_against_reference(student_fn, reference_fn, cases, *, hint="", rtol=1e-5, atol=1e-6,
                            forbidden=(), name=None, gradients=(), differentiable_at_zero=False, same_dtype=False):
    """Call ``student_fn`` and ``reference_fn`` on every case and compare the results.

    cases: iterable of (label, args) or (label, args, kwargs). Each function gets its own copy
    of the inputs, so a student function that modifies its inputs cannot change the reference.
    The reference runs on float64 copies of floating inputs: the expected values are exact to
    float64, and rtol/atol state how much rounding the student's float32 (or better) may add.
    forbidden: torch op names or functions the student must not call (see ``from_scratch``).
    gradients: the names of the arguments (as the reference spells them) a loss must be differentiable in: the
    gradient of each, through the student's result, must be the reference's (see ``_check_gradients``); with
    differentiable_at_zero, also at inputs that hold a 0 (a loss smooth there, whose formula has kinks that cancel).
    The result's floating dtype must be the reference's on the same inputs, or float64 (never less precise: float16
    inputs give float32); with same_dtype, exactly the reference's (a docstring that says float32 stays float32).
    Every case is called twice, as given and with each tensor of two or more rows as a view of wider rows (the same
    values, not contiguous, see ``_check_on_wider_rows``): the result must not depend on the layout.
    """
    name = name or getattr(student_fn, "__name__", "your function")
    for case in cases:
        label, args, kwargs = _unpack(case)
        call = f"{describe_call(name, args, kwargs)}   [case: {label}]"
        got, leaves = _run_student(student_fn, args, kwargs, forbidden, name, call,
                                   wrt=_passed_as(gradients, reference_fn, args, kwargs), hint=hint)
        ref_args, ref_kwargs = list(map(_float64, args)), {k: _float64(v) for k, v in kwargs.items()}
        # the reference's own leaves, where the student's gradient is checked
        theirs = {key: (ref_args if isinstance(key, int) else ref_kwargs)[key].requires_grad_(True) for key in leaves}
        want = reference_fn(*ref_args, **ref_kwargs)
        _check_kind(got, want, call=call)
        check_close(got, want, call=call, hint=hint, rtol=rtol, atol=atol)
        _check_dtype(got, want, reference_fn, args, kwargs, call=call, exact=same_dtype)
        if leaves:
            _check_gradients(got, leaves, want, theirs, name=name, call=call, rtol=rtol, hint=hint,
                             temperature=kwargs.get("temperature", 1.0), at_zero=differentiable_at_zero)
        _check_on_wider_rows(student_fn, args, kwargs, want, forbidden=forbidden, name=name, call=call, rtol=rtol,
                             atol=atol, hint=hint)


def _check_on_wider_rows(student_fn, args, kwargs, want, *, forbidden, name, call, rtol, atol, hint=""):
    """The call again, each tensor of two or more rows given as a view of wider rows (``_padded_rows``): the same
    values, not contiguous. Every helper that calls student code on a case does this: the result must be `want` again.
    """
    twins = [_padded_rows(a) for a in args], {k: _padded_rows(v) for k, v in kwargs.items()}
    if all(t is a for t, a in zip(twins[0] + list(twins[1].values()), list(args) + list(kwargs.values()))):
        return
    again = f"{call}   [the same inputs as views of wider rows: x.stride(-2) > x.shape[-1]]"
    got, _ = _run_student(student_fn, *twins, forbidden, name, again, hint=hint)
    check_close(got, want, call=again, rtol=rtol, atol=atol,
                hint="a tensor's layout is not its value: a view of every other row, or of the first V columns of a "
                     "wider buffer, is not contiguous. .view() needs contiguous memory (use .reshape()); a kernel "
                     "must step rows by x.stride(0), not V, and read no column past V")


def _padded_rows(value):
    """The same values as a view of rows one element wider, the extra column nan (0 for integers): a layout a
    kernel that steps rows by V, or reads past the last column, gets wrong, and .view(-1) refuses. Tensors with
    fewer than two rows or dimensions are returned as they are."""
    if not isinstance(value, torch.Tensor) or value.dim() < 2 or value.shape[-2] < 2 or value.shape[-1] < 1:
        return value
    wider = torch.full((*value.shape[:-1], value.shape[-1] + 1), math.nan if value.is_floating_point() else 0,
                       dtype=value.dtype, device=value.device)
    wider[..., :-1] = value.detach()
    return wider[..., :-1]


def _check_kind(got, want, *, call):
    """The kind of result the docstring promises, as the reference returns it: a tensor where it returns a tensor
    (not a Python number), and no autograd graph where it returns a plain number (a metric); each output of a tuple
    alike."""
    if isinstance(want, tuple) and isinstance(got, (tuple, list)) and len(got) == len(want):
        for i, (g, w) in enumerate(zip(got, want)):
            _check_kind(g, w, call=f"{call}   [output {i}]")
    elif isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            _fail(call, _kind(got), f"a tensor of shape {tuple(want.shape)}", "return a tensor, as the docstring says "
                  "(no .item() or float(...): a caller may backpropagate through it or keep it on the GPU)")
    elif isinstance(want, (bool, int, float)) and isinstance(got, torch.Tensor) and got.requires_grad:
        _fail(call, f"{_kind(got)} with an autograd graph", f"a Python {type(want).__name__} (or a 0-d tensor "
              "with no graph)", "a metric is a number: .item(), or compute it under torch.no_grad(); a graph kept "
              "alive holds every activation it was computed from")


def _check_dtype(got, want, reference_fn, args, kwargs, *, call, exact=False):
    """The floating dtype the reference returns for these very inputs (not its float64 copies), output by output;
    float64 is accepted too, unless `exact` (a float64 copy of float32 logits doubles their memory). `want` is the
    reference's result on the float64 copies: where no input is of another floating dtype, those copies are the
    inputs, and the reference is not called again. (Not under no_grad: a reference may differentiate inside.)"""
    values = list(args) + list(kwargs.values())
    if any(isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float64 for v in values):
        want = reference_fn(*map(_clone, args), **{k: _clone(v) for k, v in kwargs.items()})
    pairs = zip(got, want) if isinstance(want, tuple) and isinstance(got, (tuple, list)) else [(got, want)]
    for i, (g, w) in enumerate(pairs):
        floating = all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in (g, w))
        if floating and g.dtype != w.dtype and (exact or g.dtype != torch.float64):
            output = f"   [output {i}]" if isinstance(want, tuple) else ""
            _fail(call + output, _kind(g), f"a {str(w.dtype).replace('torch.', '')} result",
                  "losses are computed in float32 or better: float16/bfloat16 inputs give float32, and float32 and "
                  "float64 keep their dtype (unless the docstring says otherwise)")


def _passed_as(names, reference_fn, args, kwargs):
    """Where a case passes each named argument: its position, or its keyword (an argument left at its default has
    no input to differentiate)."""
    if not names:
        return set()
    parameters = list(inspect.signature(reference_fn).parameters)
    return {parameters.index(n) if parameters.index(n) < len(args) else n for n in names} & (
        set(range(len(args))) | set(kwargs))


# The largest input (logits / T) a gradient is checked at (see _check_gradients): float32 holds e^-16 next to 1, so
# up to a logit gap of 16 no probability rounds to 1. The tests' ordinary cases lie inside (logits ~ 3 N(0, 1)),
# their large and extreme ones (x 50, +-1e4, T = 0.05) outside
ORDINARY = 16.0


def _check_gradients(got, leaves, want, theirs, *, name, call, rtol, hint="", temperature=1.0, at_zero=False):
    """The gradient of sum(g * result) with respect to each input in `leaves` (the student's copies) against `theirs`
    (the float64 reference's inputs, whose result is `want`), for a random upstream gradient g: not ones, as a caller
    scales a loss (gradient accumulation does). A result with several outputs is differentiated through those of
    the reference's that carry a graph.

    Checked on the cases of ordinary size, where the derivative is an ordinary number: every differentiated input
    finite, not empty, nonzero (unless `at_zero`) and at most ORDINARY in size (over the temperature, if the call
    has one: logits / T are what saturates), the reference's result and gradient finite. At the edges of the domain
    correct implementations legitimately differ: at p = 0 or a -inf logit (0, a subgradient or nan), at a kink (0
    for |x|, l1), and where float32 rounds a probability to 1 (then (1 - p) ** gamma's derivative is 0 * inf = nan).
    The values there are checked; the gradients here. A float32 gradient is as accurate as its conditioning allows,
    and a wrong one (detached, mis-scaled, a constant that is not one) is off by its own size: so the tolerance is 1e4
    rounding units of the precision it is computed in (float32 or better), or the call's rtol if looser, relative to
    the gradient's largest entry."""
    if any(x.numel() == 0 or not bool(torch.isfinite(x).all()) or (not at_zero and bool((x == 0).any()))
           or x.abs().max() / temperature > ORDINARY for x in theirs.values()):
        return
    single = not isinstance(want, (tuple, list))
    wants, gots = ((want,), (got,)) if single else (tuple(want), tuple(got))
    pairs = [(i, w) for i, w in enumerate(wants) if isinstance(w, torch.Tensor) and w.requires_grad]
    upstream = [torch.randn(w.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i, w in pairs]
    expected = torch.autograd.grad([w for _, w in pairs], list(theirs.values()), upstream, allow_unused=True)
    expected = [torch.zeros_like(x) if e is None else e for x, e in zip(theirs.values(), expected)]
    if not all(bool(torch.isfinite(w.detach()).all()) for _, w in pairs) or not all(
            bool(e.isfinite().all()) for e in expected):
        return
    mine = []
    for i, _ in pairs:
        output = f"   [output {i}]" if not single else ""
        mine.append(returned(gots[i], call=f"{call}{output}   [gradients]", differentiable=True))
    try:  # the student's backward runs here (theirs, if the function is a torch.autograd.Function)
        actual = torch.autograd.grad(mine, list(leaves.values()), [g.to(m.dtype).to(m.device) for g, m in
                                                                  zip(upstream, mine)], allow_unused=True)
    except Exception as error:
        raise _student_error(error, name, f"{call}   [backward]", hint) from None
    for key, a, e in zip(leaves, actual, expected):
        where = f"argument {key + 1}" if isinstance(key, int) else key
        if a is None and bool((e != 0).any()):
            _fail(f"{call}   [gradient of {where}]", "no gradient: your result does not depend on it through "
                  "autograd", describe(e), "no .detach(), .item(), .tolist() or torch.no_grad() on the way from the "
                  "input to the loss: a model trained with it learns nothing through it")
        a = torch.zeros_like(e) if a is None else a.detach().double().cpu()
        precision = torch.finfo(torch.promote_types(leaves[key].dtype, torch.float32)).eps
        tolerance = max(rtol, 1e4 * precision, 4 * torch.finfo(leaves[key].dtype).eps)
        check_close(a, e, call=f"{call}   [gradient of {where}, upstream gradient g = randn, not ones]",
                    rtol=tolerance, atol=tolerance * e.abs().max().item(),
                    hint="autograd through your result gives another gradient than the reference's: a detached or "
                         "clamped branch, a custom backward, or a constant that is not one" + (
                             f"; for this case: {hint}" if hint else ""))


def check_example(student_fn, args, expected, *, kwargs=None, hint="", rtol=1e-5, atol=5e-4,
                  forbidden=(), name=None):
    """A worked example: ``student_fn(*args, **kwargs)`` must equal ``expected`` (e.g. -log 0.7 = 0.357).

    The default atol of 5e-4 suits values quoted to three decimals. As in ``check_against_reference``, the call is
    made again on views of wider rows (``_check_on_wider_rows``).
    """
    name = name or getattr(student_fn, "__name__", "your function")
    kwargs = kwargs or {}
    call = describe_call(name, args, kwargs)
    got, _ = _run_student(student_fn, args, kwargs, forbidden, name, hint=hint)
    _check_kind(got, expected, call=call)
    check_close(got, expected, call=call, hint=hint, rtol=rtol, atol=atol)
    _check_on_wider_rows(student_fn, args, kwargs, expected, forbidden=forbidden, name=name, call=call, rtol=rtol,
                         atol=atol, hint=hint)


def call(student_fn, *args, forbidden=(), name=None, **kwargs):
    """``student_fn(*args, **kwargs)`` for a test that checks the result itself (a random mask, a statistic): on
    private copies of the inputs (their layout kept), under the exercise's from-scratch rules, checked to leave its
    inputs as it was given them. An exception the student's code raises becomes a failed check that names the call."""
    name = name or getattr(student_fn, "__name__", "your function")
    return _run_student(student_fn, args, kwargs, forbidden, name)[0]


def check_raises(student_fn, *args, error=ValueError, hint="", forbidden=(), name=None, **kwargs):
    """``student_fn(*args, **kwargs)`` must raise `error`, as its docstring promises for input outside its domain:
    a result, or another exception (a KeyError from a dict lookup), is a failed check that says which."""
    name = name or getattr(student_fn, "__name__", "your function")
    shown = describe_call(name, args, kwargs)
    try:
        with from_scratch(*forbidden, exercise=name):
            student_fn(*map(_clone, args), **{k: _clone(v) for k, v in kwargs.items()})
    except error:
        return
    except CheckFailed:
        raise
    except Exception as other:
        if _raised_by_stub(other):
            raise _student_error(other, name, shown) from None
        outcome = f"raised {type(other).__name__}: {other}"
    else:
        outcome = "returned a result"
    lines = [shown, f"  {outcome}", f"  expected: a {error.__name__}"] + ([f"  hint: {hint}"] if hint else [])
    raise CheckFailed("\n".join(lines))


# ---------------------------------------------------------------- Triton kernels, for a GPU

def check_compiles(student_fn, cases, *, arch="sm_90", hint="", name=None):
    """``student_fn`` called on each case, (label, args) or (label, args, kwargs), must launch Triton kernels that
    Triton's compiler accepts for `arch`, compiled here whether or not this machine has a GPU
    (course_lib.triton_compile), and that, where they run in Triton's interpreter, load and store only inside the
    tensors they are given. The interpreter runs a kernel as Python: it accepts what the compiler refuses, and
    reads past the end of a tensor without a word. A kernel that spills registers to local memory passes, told so."""
    from . import triton_compile  # imports triton: only a notebook with kernels gets here
    name = name or getattr(student_fn, "__name__", "your function")
    calls = []
    with triton_compile.launches() as made:
        for label, args, kwargs in map(_unpack, cases):
            calls.append(f"{describe_call(name, args, kwargs)} [{label}]")
            launched = len(made)
            _run_student(student_fn, args, kwargs, (), name, call=calls[-1], hint=hint)
            if len(made) == launched:
                _fail(calls[-1], "no Triton kernel was launched", "a launch kernel[grid](...) of a @triton.jit kernel",
                      hint)
    call = "\n".join(calls)
    for result in triton_compile.compile_described(made, arch):
        if result["error"]:
            lines = [call, f"  launched {result['kernel']}, which Triton's compiler rejects for {arch}:",
                     f"    {result['error']}",
                     "  expected: kernels that compile for a GPU (the interpreter runs a kernel as Python and accepts "
                     "what the compiler does not: break, Python lists, float() of a tensor, globals that are not "
                     "constexpr)"]
            raise CheckFailed("\n".join(lines + ([f"  hint: {hint}"] if hint else [])))
        spills = (f"and spills {result['spill_bytes']} bytes a thread to local memory: slower on a GPU, no points "
                  f"lost (fewer live values, or a smaller BLOCK, keep it in registers)") if result["spill_bytes"] \
            else "no spills"
        print(f"{result['kernel']} compiles for {arch} ({result['configuration']}): {result['registers']} registers "
              f"a thread, {spills}")


# ---------------------------------------------------------------- test inputs

def logits_cases(num_classes=5, rows=6, seed=0, dtype=torch.float32):
    """Labelled logits of shape (rows, num_classes): ordinary, large, extreme and masked."""
    g = torch.Generator().manual_seed(seed)
    ordinary = torch.randn(rows, num_classes, generator=g, dtype=dtype)
    extreme = ordinary.clone()
    extreme[:, 0], extreme[:, -1] = 1e4, -1e4
    masked = ordinary.clone()
    masked[:, 1::2] = -math.inf
    return [
        ("ordinary logits", ordinary),
        ("large logits (x 50)", ordinary * 50),
        ("extreme logits (+-1e4)", extreme),
        ("masked logits (-inf entries)", masked),
        ("a single row", ordinary[:1]),
        ("float64 logits", ordinary.double() * 10),
    ]


def random_targets(logits, seed=0, ignore_index=None, ignore_fraction=0.0):
    """Integer targets for ``logits`` (..., C), avoiding -inf logits; optionally some set to ignore_index."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(logits.shape, generator=g).masked_fill(logits == -math.inf, -1.0)
    targets = scores.argmax(-1)
    if ignore_index is not None and ignore_fraction > 0:
        drop = torch.rand(targets.shape, generator=g) < ignore_fraction
        targets = targets.masked_fill(drop, ignore_index)
    return targets


def random_distributions(shape, seed, zeros=0.0, scale=3.0, dim=-1, dtype=torch.float32):
    """Distributions along ``dim`` (softmax of scaled normals), a fraction ``zeros`` of entries exactly 0.

    The largest entry of each distribution is never zeroed, so every distribution stays valid.
    """
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(shape, generator=g, dtype=torch.float64)
    if zeros:
        drop = torch.rand(shape, generator=g, dtype=torch.float64) < zeros
        logits = logits.masked_fill(drop & (logits < logits.amax(dim, keepdim=True)), -math.inf)
    return torch.softmax(logits, dim).to(dtype)


def dyadic_distributions(rows, seed, dtype, num_classes=6):
    """(rows, num_classes) distributions with entries k/64: exact in float16 and bfloat16, summing to exactly 1."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, num_classes, (rows, 64), generator=g)
    counts = torch.zeros(rows, num_classes).scatter_add_(1, draws, torch.ones(rows, 64))
    return (counts / 64).to(dtype)


# ---------------------------------------------------------------- gradients

def check_gradient(grad_fn, loss_fn, cases, *, hint="", rtol=1e-5, atol=1e-7, forbidden=(), name=None):
    """Compare an analytic gradient ``grad_fn(x, *rest)`` with autograd of ``loss_fn(x, *rest)`` wrt x.

    cases: iterable of (label, args) or (label, args, kwargs); x = args[0] is a floating tensor.
    forbidden: as in ``check_against_reference`` (e.g. "backward", "grad" to forbid autograd). Each case is also
    given as views of wider rows (``_check_on_wider_rows``).
    """
    name = name or getattr(grad_fn, "__name__", "your gradient")
    for case in cases:
        label, args, kwargs = _unpack(case)
        x = args[0].detach().clone().requires_grad_(True)
        loss_fn(x, *args[1:], **kwargs).backward()
        call = f"{describe_call(name, args, kwargs)}   [case: {label}]"
        got, _ = _run_student(grad_fn, args, kwargs, forbidden, name, call, hint=hint)
        check_close(got, x.grad, call=call, hint=hint, rtol=rtol, atol=atol)
        _check_on_wider_rows(grad_fn, args, kwargs, x.grad, forbidden=forbidden, name=name, call=call, rtol=rtol,
                             atol=atol, hint=hint)


def check_gradcheck(fn, *inputs, hint="", name=None):
    """Finite-difference check of autograd through ``fn`` on float64 copies of ``inputs``."""
    name = name or getattr(fn, "__name__", "your function")
    xs = [x.detach().double().requires_grad_(x.is_floating_point()) for x in inputs]
    try:
        ok = torch.autograd.gradcheck(fn, xs, eps=1e-6, atol=1e-5, raise_exception=False)
    except Exception as error:  # a function that breaks autograd is a failed check, with its reason
        if _raised_by_stub(error):
            raise _student_error(error, name, describe_call(name, xs)) from None
        ok, hint = False, f"{type(error).__name__}: {error}. {hint}"
    if not ok:
        _fail(describe_call(name, xs), "gradients that disagree with finite differences",
              "autograd gradients equal to finite differences", hint)


@contextlib.contextmanager
def replacing_globals(student_fn, **replacements):
    """Inside the block, names the student's function looks up as globals are ``replacements``.

    So an exercise that calls an earlier one is not failed for the earlier one's bug. Works on a
    function defined in this process (its ``__globals__``) and on the grader kernel's stand-in for
    a function that lives in the student's own process (which ships the replacements with each call).
    """
    if hasattr(student_fn, "replaced_names"):
        with student_fn.replaced_names(replacements):
            yield
    else:
        with names_replaced(student_fn.__globals__, replacements):
            yield


@contextlib.contextmanager
def names_replaced(namespace, replacements):
    """``namespace`` (a dict of globals) holds ``replacements`` inside the block, and its own values after."""
    missing = object()
    saved = {name: namespace.get(name, missing) for name in replacements}
    namespace.update(replacements)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


# ---------------------------------------------------------------- from-scratch enforcement

class FromScratchViolation(CheckFailed):
    """Code graded as from scratch called what it must not, or ran out of the checks' sight."""


ACTIVE_RULES = []  # (forbidden, exercise) of each from_scratch block now open, innermost last


# ATen operations whose name is not the public one they implement (the rest are matched by their own name)
_ATEN_NAMES = {"_log_softmax": "log_softmax", "_softmax": "softmax", "cross_entropy_loss": "cross_entropy",
               "nll_loss_forward": "nll_loss", "nll_loss2d_forward": "nll_loss", "nll_loss_nd": "nll_loss",
               "log_sigmoid_forward": "log_sigmoid"}
AUTOGRAD = ("backward", "grad")  # forbidding either forbids every way to run autograd's backward pass


def _canonical(name):
    """One spelling per op: torch.special.x is exported as special_x, x_ is x in place, x.default an overload."""
    name = name.split(".")[0].removeprefix("special_").rstrip("_") or name
    return _ATEN_NAMES.get(name, name)


class _TorchCallRecorder(TorchFunctionMode):
    """Sees every torch function and Tensor method called while active, whatever name it was called by."""

    def __init__(self, names):
        super().__init__()
        self.names, self.seen, self.inside = {_canonical(n) for n in names}, [], 0
        self.running = 0  # calls under way: this mode is off the stack while they run (it is not switched off)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        forbidden = _canonical(getattr(func, "__name__", "")) in self.names
        if forbidden:
            self.seen.append(_public_name(func))
        self.inside += forbidden  # the operations it dispatches to are this call, already recorded
        self.running += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.inside -= forbidden
            self.running -= 1


class _AtenOpRecorder(TorchDispatchMode):
    """Sees the ATen operation every call dispatches to, however it was reached (torch.ops.aten.x.default,
    torch.special.expit -> sigmoid, F.cross_entropy -> log_softmax and nll_loss), and autograd's backward pass."""

    def __init__(self, torch_calls):
        super().__init__()
        self.torch_calls, self.seen = torch_calls, []
        self.autograd = bool(torch_calls.names & set(AUTOGRAD))

    @classmethod
    def _should_skip_dynamo(cls):  # else torch wraps the handler for torch.compile, importing torch._dynamo (seconds)
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.torch_calls.inside:
            name = func.overloadpacket.__name__
            if _canonical(name) in self.torch_calls.names:
                self.seen.append(f"torch.ops.aten.{name}")
            if self.autograd and torch._C._current_graph_task_id() != -1:
                self.seen.append("autograd's backward pass")
        return func(*args, **(kwargs or {}))


def _public_name(func):
    """The name a student would recognise: torch.logsumexp, Tensor.logsumexp, torch.special.logsumexp."""
    qualname = getattr(func, "__qualname__", func.__name__)
    module = getattr(func, "__module__", None) or ""
    if isinstance(func, torch._ops.OpOverload):
        return f"torch.ops.aten.{func.__name__}"
    if qualname.startswith(("TensorBase.", "Tensor.")):
        return "Tensor." + func.__name__
    if module == "torch._C._special":
        return "torch.special." + func.__name__.removeprefix("special_")
    if module.startswith(("torch.nn.", "torch.autograd")):
        return f"{module}.{func.__name__}"
    return "torch." + func.__name__


TORCH_DIR = os.path.dirname(torch.__file__)
# the batch grader's own code (beside course_lib), which starts the processes a graded call runs in
GRADER_DIR = os.path.join(os.path.dirname(REFERENCE_DIR), "autograde") + os.sep


@functools.cache
def _libraries():
    """Where the standard library and installed packages live: code there runs on behalf of whoever called it."""
    import sysconfig
    paths = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(sorted(p for p in paths if p)) + ("<frozen ",)


@functools.cache
def _off_switches():
    """Builtins (and torch's Python helpers) that would take the code after them out of the recorders' sight:
    another thread or process runs unrecorded, and the profile hook and torch's mode stacks can be emptied."""
    import _posixsubprocess
    import _thread
    from torch.utils import _python_dispatch
    builtins = {sys.setprofile: "sys.setprofile", _thread.start_new_thread: "a new thread",
                _posixsubprocess.fork_exec: "a new process", torch._C._pop_torch_function_stack: "torch's mode stack",
                torch._C._pop_torch_dispatch_stack: "torch's mode stack"}
    builtins.update({getattr(os, name): "a new process" for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp")
                     if hasattr(os, name)})
    builtins.update({getattr(_thread, name): "a new thread" for name in ("start_joinable_thread",)
                     if hasattr(_thread, name)})
    helpers = {_python_dispatch._disable_current_modes.__wrapped__.__code__: "torch's mode stack",
               torch.overrides._pop_mode_temporarily.__wrapped__.__code__: "torch's mode stack"}
    return {id(f): label for f, label in builtins.items()}, helpers  # by identity: not every callable hashes


def _call_recorder(functions, seen, escapes, torch_calls):
    """A profile hook recording calls into course_lib's references (not grading) or given Python functions;
    and, for what the student's own code calls (directly or through the standard library, not what torch
    does as it works, which switches its own modes off and on): every off switch, and any call made with
    torch's modes off (torch._C.DisableTorchFunction, torch._C._DisableTorchDispatch)."""
    codes = {getattr(f, "__code__", None) for f in functions} - {None}
    builtins, helpers = _off_switches()
    trusted, libraries = (TORCH_DIR, REFERENCE_DIR, GRADER_DIR), _libraries()

    def by_student(caller):  # the first frame outside the libraries is the student's, unless it is trusted
        while caller is not None:
            file = caller.f_code.co_filename
            if file.startswith(trusted):
                return False
            if not file.startswith(libraries):
                return True
            caller = caller.f_back
        return False

    watched = {}  # (code, module) -> whether a call to it is recorded: decided once, not on every call

    def recorded(code, module):
        # lambdas and comprehensions (<lambda>, <listcomp>) only run inside a function that is itself seen
        public = not os.path.basename(code.co_filename).startswith("_") and not code.co_name.startswith(("_", "<"))
        in_reference = code.co_filename.startswith(REFERENCE_DIR) and public and not is_student_module(module)
        return in_reference or code in codes

    switch_of, helper_of = builtins.get, helpers.get
    function_modes_on = torch._C._is_torch_function_mode_enabled
    dispatch_excluded, python_key = torch._C._dispatch_tls_is_dispatch_key_excluded, torch._C.DispatchKey.Python

    def hook(frame, event, arg):
        # Called on every call the block makes (millions, in Triton's interpreter), so the cheap tests come first and
        # the stack is only walked (who made the call?) for an off switch or a call with torch's modes off. Modes off:
        # torch's function modes (other than while our own runs a call, which pops itself) or its dispatch modes.
        if event == "c_call":
            switch = switch_of(id(arg))
        elif event == "call":
            switch = helper_of(frame.f_code)
        else:
            return
        if switch or (not function_modes_on() and not torch_calls.running) or dispatch_excluded(python_key):
            caller = frame if event == "c_call" else frame.f_back
            ours = event == "call" and frame.f_code.co_filename == __file__  # a recorder, called with itself popped
            if not ours and by_student(caller):
                escapes.append(switch or "torch with its modes switched off")
        if event == "call":
            key = frame.f_code, frame.f_globals.get("__name__", "")
            verdict = watched.get(key)
            if verdict is None:
                verdict = watched[key] = recorded(*key)
            if verdict:
                seen.append(f"{key[1] or '?'}.{key[0].co_name}")
    return hook


@contextlib.contextmanager
def from_scratch(*forbidden, exercise="this exercise"):
    """Fail if code run inside the block calls a forbidden function, or runs code out of the recorders' sight.

    forbidden: torch op names ("logsumexp", "log_softmax", "cross_entropy", ...) matched on every
    torch alias of that op and on the ATen operation any call dispatches to; "backward" or "grad"
    forbid autograd's backward pass however it is started (Tensor.backward, torch.autograd.grad,
    torch.func.grad, ...); Python functions are matched by identity of their code. The course's
    reference implementations (course_lib but the student's edition, ``edition.STUDENT``) are always
    forbidden, and so are a new thread or process and switching the recorders off: what runs there
    would not be seen.
    """
    names = {f for f in forbidden if isinstance(f, str)}
    functions = [f for f in forbidden if not isinstance(f, str)]
    seen, escapes = [], []
    previous = sys.getprofile()
    torch_calls = _TorchCallRecorder(names)
    aten_ops = _AtenOpRecorder(torch_calls)
    hook = _call_recorder(functions, seen, escapes, torch_calls)
    sys.setprofile(hook)
    ACTIVE_RULES.append((forbidden, exercise))  # for code that runs the student's function in another process
    try:
        with torch_calls, aten_ops:
            yield
            if sys.getprofile() is not hook:
                escapes.append("the profile hook")
    finally:
        ACTIVE_RULES.pop()
        sys.setprofile(previous)
    if escapes:
        raise FromScratchViolation(
            f"{exercise} must run where the from-scratch check can see it, but it used "
            f"{', '.join(sorted(set(escapes)))}.\n"
            f"  hint: compute the answer in the function itself, in this thread, without switching checks off.")
    calls = sorted(set(torch_calls.seen + aten_ops.seen + seen))
    if calls:
        raise FromScratchViolation(
            f"{exercise} must be written from scratch, but it called {', '.join(calls)}.\n"
            f"  hint: build it from elementary operations (exp, log, max, sum, indexing) instead.")


# ---------------------------------------------------------------- the notebook's own cells

def is_stub(fn, _seen=None):
    """Whether `fn`, or an exercise it calls by a global name (a function, or a method of a class defined beside
    it), is still the release's stub: a function whose body only raises NotImplementedError. Returns the stub's
    name, or None when everything it calls is written."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    if set(code.co_names) == {"NotImplementedError"}:
        return fn.__name__
    seen = _seen if _seen is not None else {id(fn)}
    for name in _globals_read(code):
        called = getattr(fn, "__globals__", {}).get(name)
        # a class defined beside the function (an autograd.Function, say) is as written as its methods
        methods = [getattr(m, "__func__", m) for m in vars(called).values()] \
            if isinstance(called, type) and called.__module__ == fn.__module__ else [called]
        for method in methods:
            if callable(method) and hasattr(method, "__code__") and id(method) not in seen:
                seen.add(id(method))
                stub = is_stub(method, seen)
                if stub:
                    return stub if method is called else f"{called.__name__}.{stub}"
    return None


def _globals_read(code):
    """The global names a code object (and the lambdas and comprehensions inside it) reads."""
    names = [i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"]
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            names += _globals_read(const)
    return names


def demo_steps(steps, graded):
    """How many steps a demonstration cell trains: `steps` where a person runs the notebook, `graded` while nbgrader
    executes it to grade it (nbgrader sets NBGRADER_EXECUTION then). Nothing a demonstration computes is graded: the
    grader only needs its code to run, on the student's functions, as it would for them.

        STEPS = grading.demo_steps(1500, graded=100)
    """
    return graded if os.environ.get("NBGRADER_EXECUTION") else steps


def written(*functions, exercise=None):
    """For a cell of the notebook that uses exercises: True when all of them are written; otherwise print one
    line naming what to write first ("skipped until you write Exercise 3, `log_softmax`") and return False.

        if grading.written(log_softmax, exercise="Exercise 3"):
            ...
    """
    for fn in functions:
        stub = is_stub(fn)
        if stub:
            label = f"{exercise}, `{stub}`" if exercise and stub == fn.__name__ else f"`{stub}`"
            print(f"skipped until you write {label}")
            return False
    return True
