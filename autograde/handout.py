"""`make handout`: the student's edition of the course, built from this repository into build/handout/.

    build/handout/
      README.md          two commands: install, open JupyterLab
      pyproject.toml     the package `course_lib`: the student's edition of it, nothing more
      constraints.txt    the versions this course was tested with (requirements.lock)
      environment.yml    the same, for conda
      course_lib/        the modules course_lib.edition.STUDENT names: grading helpers, data, GPT, memory counter
      notebooks/NN_name/ the release (nbgrader's student version of solutions/)
      benchmarks/results/ the measured tables notebook 10 plots (cross_entropy_*)

The references (every other module of course_lib), solutions/, the hidden tests and the grader stay here.
The folder is rebuilt whole each time: it is something to hand out, not a place to work in, and a folder
of that name that this builder did not make is refused rather than replaced.
"""
import argparse
import re
import shutil
import tempfile
from pathlib import Path

from autograde import course
from course_lib import edition

HANDOUT = course.ROOT / "build" / "handout"
MARK = ".course-handout"  # what a folder this builder made holds
# What a student's JupyterLab needs: the notebooks' imports, and nbgrader for its Validate button.
DEPENDENCIES = ("torch", "numpy", "matplotlib", "jupyterlab", "ipykernel", "nbgrader", "triton")

INIT = '''"""course_lib, the student's edition: what the notebooks of "Loss Functions for LLMs" import.

{modules}

The exercises are yours to write: nothing here computes their answers.
"""
'''

README = """# Loss Functions for LLMs: the notebooks

Set up once (Python 3.10 or newer; a virtual environment is best), then open the notebooks:

```bash
python -m pip install -c constraints.txt -e .
python -m jupyter lab notebooks
```

Or with conda: `conda env create -f environment.yml && conda activate llm-losses`, then the second command.

Work through `notebooks/` in order. In each notebook, write the function in every cell marked
`# YOUR CODE HERE`, then run the test cell below it: it says at once what your function returned, what
was expected and a hint. *Run All* runs every cell; a cell that needs an exercise you have not written
yet prints `skipped until you write ...`, and Run All stops at the test cell of the first unfinished
exercise with one line naming it. The **Validate** button runs the whole notebook as the grader will.
Hidden tests, run when your work is graded, add edge cases (huge logits, masked classes, half precision).

Notebook 10, the GPU lab, needs Linux (Triton); its timed part needs an NVIDIA GPU. Everything else
runs on a laptop CPU.
"""


def _dependencies():
    """pyproject.toml's requirement for each dependency a student needs, as this repository states it."""
    text = (course.ROOT / "pyproject.toml").read_text()
    found = {}
    for line in re.findall(r'^\s*"([^"]+)",', text, flags=re.MULTILINE):
        name = re.match(r"[A-Za-z0-9_.-]+", line).group(0)
        if name in DEPENDENCIES:
            found[name] = line
    missing = set(DEPENDENCIES) - set(found)
    if missing:
        raise RuntimeError(f"pyproject.toml does not list {sorted(missing)}, which the handout needs")
    return [found[name] for name in DEPENDENCIES]


def _pyproject():
    requirements = "".join(f'    "{r}",\n' for r in _dependencies())
    return (f'[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "llm-losses-notebooks"\nversion = "0.1.0"\n'
            f'description = "Loss Functions for LLMs: the notebooks and their helpers"\n'
            f'requires-python = ">=3.10"\ndependencies = [\n{requirements}]\n\n'
            f'[tool.setuptools]\npackages = ["course_lib"]\n')


def _environment():
    pins = "".join(f"      - {r}\n" for r in _dependencies())
    return (f"# conda env create -f environment.yml && conda activate llm-losses\nname: llm-losses\n"
            f"channels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n{pins}"
            f"      - -c constraints.txt\n      - -e .\n")


def _module_lines():
    lines = []
    for name in edition.STUDENT:
        doc = (course.ROOT / "course_lib" / f"{name}.py").read_text().split('"""')[1].strip().splitlines()[0]
        lines.append(f"- ``{name}``: {doc}")
    return "\n".join(lines)


def build(dest=HANDOUT):
    """Write the student's edition to `dest` (replacing an earlier build there); returns `dest`."""
    dest = Path(dest)
    if dest.exists() and not (dest / MARK).exists():
        raise FileExistsError(f"{dest} exists and is not a handout this builder made: move it, or choose another "
                              f"folder; nothing was written")
    staging = Path(tempfile.mkdtemp(prefix="handout-", dir=dest.parent if dest.parent.exists() else None))
    package = staging / "course_lib"
    package.mkdir()
    for name in edition.STUDENT:
        shutil.copy2(course.ROOT / "course_lib" / f"{name}.py", package / f"{name}.py")
    (package / "__init__.py").write_text(INIT.format(modules=_module_lines()))
    for assignment in course.assignments():
        shutil.copytree(course.RELEASE / assignment, staging / "notebooks" / assignment,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    (staging / "benchmarks" / "results").mkdir(parents=True)
    for table in sorted((course.ROOT / "benchmarks" / "results").glob("cross_entropy_*")):
        shutil.copy2(table, staging / "benchmarks" / "results" / table.name)
    shutil.copy2(course.ROOT / "requirements.lock", staging / "constraints.txt")
    (staging / "pyproject.toml").write_text(_pyproject())
    (staging / "environment.yml").write_text(_environment())
    (staging / "README.md").write_text(README)
    (staging / MARK).write_text("built by autograde/handout.py; rebuilt whole by `make handout`\n")
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(dest)
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", default=HANDOUT, type=Path, help="where to build (default build/handout)")
    print(f"the student's edition: {build(parser.parse_args(argv).dest)}")


if __name__ == "__main__":
    main()
