"""The course installs one way: pyproject.toml's ranges, resolved once into requirements.lock, installed as locked.

pyproject.toml and environment.yml name the same ranges (for people who install the package into an
environment of their own); `make setup` and environment.yml install the exact versions of the lock,
which `make lock` makes and the suite has passed with.
"""
import re
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
# torch's CUDA build brings its own runtime libraries, pinned by torch itself; a CPU build has none
TORCH_BUILD_RUNTIME = re.compile(r"^(nvidia|cuda)-")


def _project_requirements():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _environment_yml_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return env, next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def _lock():
    """{name: [Requirement 'name==version ; marker', ...]}: one pin per name and Python range."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            requirement = Requirement(line)
            assert [str(s.operator) for s in requirement.specifier] == ["=="], f"not an exact pin: {line}"
            pins.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return pins


def _pin_here(pins, name):
    """The version the lock gives `name` on this Python and platform, or None."""
    applying = [r for r in pins.get(canonicalize_name(name), []) if r.marker is None or r.marker.evaluate()]
    assert len(applying) <= 1, f"the lock pins {name} twice for this environment: {applying}"
    return Version(next(iter(applying[0].specifier)).version) if applying else None


def test_environment_yml_names_the_same_dependencies_as_pyproject_and_installs_them_as_locked():
    env, pip = _environment_yml_pip()
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda
    assert "-e ." in pip, "environment.yml must install the course package itself"
    assert "-c requirements.lock" in pip, "environment.yml must install the locked versions"
    pip_requirements = sorted(r for r in pip if not r.startswith("-"))
    assert sorted(_project_requirements()) == pip_requirements  # same names and the same version ranges
    assert len({canonicalize_name(Requirement(r).name) for r in pip_requirements}) == len(pip_requirements)


def test_the_lock_pins_every_dependency_within_its_range():
    pins = _lock()
    _, pip = _environment_yml_pip()
    for line in _project_requirements() + [r for r in pip if not r.startswith("-")]:
        wanted = Requirement(line)
        locked = pins.get(canonicalize_name(wanted.name))
        assert locked, f"{wanted.name} is a dependency but requirements.lock has no pin for it: run `make lock`"
        for pin in locked:
            version = next(iter(pin.specifier)).version
            assert wanted.specifier.contains(version, prereleases=True), \
                f"requirements.lock pins {pin}, outside pyproject.toml's {wanted}: run `make lock`"
            assert wanted.marker is None or str(wanted.marker) in str(pin.marker), \
                f"pyproject.toml asks for {wanted}, but the lock installs {pin} beyond that marker"


def test_the_lock_leaves_torchs_cuda_runtime_to_the_torch_build_and_pins_the_makefiles_torch():
    pins = _lock()
    assert not [name for name in pins if TORCH_BUILD_RUNTIME.match(name)], \
        "a CPU machine would download torch's CUDA runtime: `make lock` leaves it out"
    makefile_torch = re.search(r"^TORCH \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert [str(r) for r in pins["torch"]] == [makefile_torch]
    assert "requirements.lock" in (ROOT / ".ci" / "run").read_text(), "CI installs the locked torch"


def _installed_closure(name="llm-losses-course"):
    """Every distribution `name` needs here, following requirements, their markers and extras."""
    seen, todo = {}, [(name, ())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in seen:
            continue
        distribution = metadata.distribution(name)
        seen[(key, extras)] = distribution
        for requirement in map(Requirement, distribution.requires or []):
            applies = any(requirement.marker is None or requirement.marker.evaluate({"extra": e})
                          for e in (extras or ("",)))
            if applies:
                todo.append((requirement.name, tuple(sorted(requirement.extras))))
    return {key: d for (key, _), d in seen.items() if key != "llm-losses-course"}


def test_the_environment_is_the_lock():
    """What `make setup` installed is what the lock says: no dependency outside it, none at another version."""
    pins = _lock()
    for key, distribution in sorted(_installed_closure().items()):
        if TORCH_BUILD_RUNTIME.match(key):
            continue
        installed, pinned = Version(distribution.version), _pin_here(pins, key)
        assert pinned is not None, f"{key} {installed} is installed but not in requirements.lock: run `make lock`"
        assert Version(installed.public) == pinned, \
            f"{key} is {installed} here, {pinned} in requirements.lock: run `make setup` (or `make lock`)"


def test_readme_commands_are_make_targets_and_ci_runs_the_test_command():
    readme, makefile = (ROOT / "README.md").read_text(), (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "lab", "lock", "test-latest", "release", "handout", "formgrader"):
        assert f"make {target}" in readme and re.search(rf"^{target}:", makefile, re.M)
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_the_modules_that_read_the_graded_class_are_graded_in_one_group():
    """conftest's group_of keeps them on one worker, so that the session grades its class once: a module that reads
    the fixture and is not named there would grade it again on another worker."""
    import ast
    import conftest
    readers = set()
    for path in sorted(ROOT.glob("tests/test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and "graded_class" in [a.arg for a in node.args.args]:
                readers.add(path.name)
    assert readers == set(conftest.GRADED_CLASS_MODULES), readers
