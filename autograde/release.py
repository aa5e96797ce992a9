"""`make release`: solutions/ -> notebooks/, the committed release, never over changes made there.

notebooks/ is what nbgrader generates from solutions/ (a test checks it has not drifted). It is also the
folder people open, and `nbgrader generate_assignment --force` deletes an assignment's folder before
writing it: an edited notebook or an added file would be gone. So the release is generated elsewhere
first (a private workspace), and copied into notebooks/ only where git has nothing there that differs
from the last commit; otherwise it stops, naming the files, unless told to overwrite them (FORCE=1).
nbgrader itself (plain commands, the formgrader's Generate) releases into build/release
(autograde/nbgrader_config.py), never into notebooks/.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from autograde import course


class UnsavedChanges(RuntimeError):
    """The release folder holds changes git does not have: releasing would overwrite them."""


def local_changes(folder):
    """Files under `folder` that differ from git's last commit (changed, added or deleted), as paths relative to
    the repository; None when `folder` is not in a git checkout (its changes cannot be known)."""
    folder = Path(folder)
    where = folder if folder.exists() else folder.parent
    top = subprocess.run(["git", "-C", str(where), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode:
        return None
    status = subprocess.run(["git", "-C", top.stdout.strip(), "status", "--porcelain", "--untracked-files=all",
                             "--", str(folder.resolve())], capture_output=True, text=True, check=True)
    return [line[3:] for line in status.stdout.splitlines()]


def publish(assignment, release=course.RELEASE, force=False):
    """Release `assignment` into `release`/<assignment>, refusing to replace changes git does not have there."""
    target = Path(release) / assignment
    changes = local_changes(target) if target.exists() else []
    if not force and changes is None:
        raise UnsavedChanges(f"{target} is not in a git checkout, so its changes cannot be checked; "
                             f"FORCE=1 replaces it")
    if not force and changes:
        listed = "\n  ".join(changes)
        raise UnsavedChanges(f"{target} has changes that are not committed; releasing would overwrite them:\n"
                             f"  {listed}\ncommit or move them, or run `make release FORCE=1` to overwrite")
    with tempfile.TemporaryDirectory(prefix="release-") as scratch:
        workspace = course.Workspace(root=Path(scratch), release=Path(scratch) / "release")
        course.release(assignment, workspace)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(workspace.release / assignment, target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", help="default: every assignment")
    parser.add_argument("--force", action="store_true", help="overwrite changes in notebooks/")
    args = parser.parse_args(argv)
    names = args.assignments or course.assignments()
    try:
        for assignment in names:
            publish(assignment, force=args.force)
            print(f"released {assignment} -> {(course.RELEASE / assignment).relative_to(course.ROOT)}/")
    except UnsavedChanges as error:
        sys.exit(f"make release: {error}")


if __name__ == "__main__":
    main()
