# The course's front door. `make demo` and `make test` set up what they need on a fresh machine:
# the active virtual/conda environment if there is one, else .venv (which sees system packages,
# so a torch already installed on the machine is reused rather than downloaded again).

PYTHON ?= python3
TORCH ?= torch==2.13.0
ENV_PREFIX := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))
ifeq ($(ENV_PREFIX),)
  ENV_PREFIX := .venv
  PY := .venv/bin/python
else
  PY := python
endif
SETUP := $(ENV_PREFIX)/.llm-losses-course-installed

.PHONY: setup demo test test-fast release lab grade clean

setup: $(SETUP)

$(SETUP): pyproject.toml
	@test -x $(PY) || command -v $(PY) >/dev/null || $(PYTHON) -m venv --system-site-packages .venv
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	@touch $@

demo: setup  ## execute solutions, release, autograde a sample class, print grades
	$(PY) -m autograde.demo

test: setup  ## every test: course_lib, notebooks, release, nbgrader end to end, mutants
	$(PY) -m pytest

test-fast: setup  ## course_lib and grading helpers only (seconds)
	$(PY) -m pytest -m "not slow"

release: setup  ## regenerate notebooks/ from solutions/ after editing a solution notebook
	$(PY) -c "from autograde import pipeline; [pipeline.release(a) for a in pipeline.assignments()]"

grade: setup  ## grade a class: make grade ASSIGNMENT=01_mle_and_nll SUBMISSIONS=path/to/folder-or.zip [ARGS=--workers 4]
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade ASSIGNMENT=NN_name SUBMISSIONS=folder-or-zip [ARGS=...]"; exit 2; }
	$(PY) -m autograde.batch $(ASSIGNMENT) $(SUBMISSIONS) $(ARGS)

lab: setup  ## JupyterLab on the student notebooks
	$(PY) -m jupyter lab --notebook-dir=notebooks

clean:
	rm -rf build .pytest_cache autograde/gradebook.db autograde/submitted autograde/autograded autograde/feedback
