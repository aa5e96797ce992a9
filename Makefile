# The course's front door. `make demo` and `make test` set up what they need on a fresh machine:
# the active virtual/conda environment if there is one, else .venv (which sees system packages,
# so a torch already installed on the machine is reused rather than downloaded again).
# They install the exact versions in requirements.lock, which `make lock` makes from pyproject.toml's ranges.

PYTHON ?= python3
TORCH ?= torch==2.13.0
UV ?= uv==0.13.9
LOCK := requirements.lock
LATEST := build/test-latest
ENV_PREFIX := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))
ifeq ($(ENV_PREFIX),)
  ENV_PREFIX := .venv
  PY := .venv/bin/python
else
  PY := python
endif
SETUP := $(ENV_PREFIX)/.llm-losses-course-installed
# Jupyter refuses to run as root unless told: say so where the user is root (a container, a CI machine)
AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: env setup demo test test-fast test-latest lock release handout slides gpu-check lab formgrader grade clean

setup: $(SETUP)

env:
	@test -x $(PY) || command -v $(PY) >/dev/null || $(PYTHON) -m venv --system-site-packages .venv

# torch first, where the machine has none, so that its CUDA runtime (not in the lock) comes with it;
# an installed build of the locked version (CPU, CUDA, ROCm) is kept
$(SETUP): pyproject.toml $(LOCK) | env
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)" -c $(LOCK)
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

demo: setup  ## release, grade a sample class of every assignment with the batch grader, print grades
	$(PY) -m autograde.demo

test: setup  ## every test: course_lib, notebooks, release, nbgrader end to end, mutants
	$(PY) -m pytest

test-fast: setup  ## course_lib and grading helpers only (seconds)
	$(PY) -m pytest -m "not slow"

# The next upstream change, seen before a new user sees it: the newest versions the ranges allow (torch
# stays $(TORCH), the course's build), in a throw-away venv. The one test that cannot hold is the lock's own.
test-latest:  ## the whole suite without the lock, against the newest releases pyproject.toml allows
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	echo "$(TORCH)" > $(LATEST)/torch.txt
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(LATEST)/torch.txt -e .
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/versions.txt
	$(LATEST)/bin/python -m pytest --deselect tests/test_packaging.py::test_the_environment_is_the_lock

# Upgrading: make lock, make test, make test-latest, then commit requirements.lock with what the suite needed.
# torch's CUDA runtime (nvidia-*, cuda-*) is left out: the torch build a machine installs brings its own.
lock: env  ## resolve requirements.lock again: the newest versions pyproject.toml's ranges allow, torch at $(TORCH)
	$(PY) -m pip install -q "$(UV)"
	@mkdir -p build
	echo "$(TORCH)" | $(PY) -m uv pip compile - --quiet --no-header --no-annotate \
	    --python-platform x86_64-manylinux_2_28 | grep -E '^(nvidia|cuda)-' | cut -d= -f1 > build/torch-cuda-runtime.txt
	echo "$(TORCH)" | $(PY) -m uv pip compile pyproject.toml - --universal --python-version 3.11 --upgrade --quiet \
	    --excludes build/torch-cuda-runtime.txt --custom-compile-command "make lock" --output-file $(LOCK)

release: setup  ## regenerate notebooks/ from solutions/ after editing a solution notebook (FORCE=1: over local changes)
	$(PY) -m autograde.release $(if $(FORCE),--force)

handout: setup  ## the student's edition, in build/handout: the release and course_lib without its references
	$(PY) -m autograde.handout

slides: setup  ## the class's slides and pages in build/slides, the answers in build/answers (offline, from the release)
	$(PY) -m autograde.slides

gpu-check: setup  ## every Triton kernel compiled for sm_80 and sm_90, no GPU needed: registers, spills, shared memory
	$(PY) benchmarks/gpu_check.py

grade: setup  ## grade a class: make grade ASSIGNMENT=01_mle_and_nll SUBMISSIONS=path/to/folder-or.zip [ARGS=--workers 4]
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade ASSIGNMENT=NN_name SUBMISSIONS=folder-or-zip [ARGS=...]"; exit 2; }
	$(PY) -m autograde.batch $(ASSIGNMENT) $(SUBMISSIONS) $(ARGS)

lab: setup  ## JupyterLab on the release notebooks, in this repository (students get `make handout`)
	$(PY) -m jupyter lab --notebook-dir=notebooks $(AS_ROOT)

# nbgrader finds its config in the folder it starts in, and runs the environment's `alembic`: start there,
# with that environment first on PATH, at the repository's root so that every notebook can be opened.
formgrader: setup  ## nbgrader's formgrader (assignments, manual grading, the gradebook) in JupyterLab [ARGS=--port=...]
	mkdir -p build/exchange
	cd autograde && PATH="$(abspath $(ENV_PREFIX))/bin:$$PATH" "$(abspath $(ENV_PREFIX))/bin/python" \
	    -m jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/formgrader $(AS_ROOT) $(ARGS)

clean:
	rm -rf build .pytest_cache autograde/gradebook.db autograde/submitted autograde/autograded autograde/feedback
