"""pyproject.toml and environment.yml install the same course; the front-door commands exist."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement):
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in conda and "pip" in conda
    assert "-e ." in pip, "environment.yml must install the course package itself"
    pip_requirements = sorted(r for r in pip if r != "-e .")
    assert sorted(project["dependencies"]) == pip_requirements  # same names and the same version ranges
    assert len({_name(r) for r in pip_requirements}) == len(pip_requirements)


def test_readme_commands_are_make_targets_and_ci_runs_the_test_command():
    readme, makefile = (ROOT / "README.md").read_text(), (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "lab"):
        assert f"make {target}" in readme and re.search(rf"^{target}:", makefile, re.M)
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
