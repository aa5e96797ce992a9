"""The one line between what a student gets and the answer key, drawn here and read everywhere.

STUDENT names the modules of course_lib that compute no exercise's answer: the grading helpers, the
data sources, the small GPT, the memory counter. They are what the handout ships (`make handout`), what
a graded call may import (autograde.call_server, autograde.sandbox), what the student's kernel sees
when a class is graded, and what ``grading.from_scratch`` lets student code call. Every other module is
a reference implementation of graded functions: it stays with the instructor, the hidden tests and the
grader. A module moved across this line must be moved here, and only here.
"""
STUDENT = (
    "edition",          # this declaration
    "grading",          # the checks every test cell runs
    "_inputs",          # argument checks shared by the modules below and the references
    "corpus",           # tiny-shakespeare: a path, an environment variable or a verified download
    "markov",           # a Markov source whose entropy rate is known exactly
    "gpt",              # a tiny causal transformer
    "preference_data",  # synthetic preferences from a known reward, and a Bradley–Terry fit of a linear reward
    "memory_budget",    # PeakMemory: the bytes a block keeps alive, counted exactly
    "verifiable_task",  # a task with a checkable reward, a tiny policy that samples, a flawed learned reward
    "triton_compile",   # Triton kernels compiled for a GPU without one, and held to their tensors' memory
)


def is_student_module(name):
    """Whether `name` ("course_lib", "course_lib.grading", "grading") belongs to the student's edition."""
    short = name.removeprefix("course_lib").removeprefix(".")
    return short == "" or short.split(".")[0] in STUDENT


def refuse_references(modules, process):
    """Raise RuntimeError if `modules` (a process's sys.modules) holds a reference: a student's process never may."""
    loaded = sorted(m for m in modules if m.startswith("course_lib.") and not is_student_module(m))
    if loaded:
        raise RuntimeError(f"the course's references are already in {process}: {loaded}")
