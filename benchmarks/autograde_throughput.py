"""Grading throughput: plain, sequential `nbgrader autograde` against autograde.batch, on one class.

    python benchmarks/autograde_throughput.py [--students 40] [--workers N]

Builds a class of notebook-01 submissions (a quarter correct, a quarter partly wrong, a quarter
blank, an eighth cut off mid-file, an eighth whose first solution cell raises) and grades it twice,
each in a fresh course folder, autograde then feedback:

  plain   `nbgrader autograde 01_mle_and_nll` and `nbgrader generate_feedback` for the whole class
  batch   `python -m autograde.batch 01_mle_and_nll ...`: one job per student on N workers, each
          in the sandboxed grader kernel, merged into the gradebook

It prints both wall times and their ratio, checks every student's score is the same both ways,
and writes benchmarks/results/autograde_throughput.{md,json}.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograde import course, sample_class  # noqa: E402

A = "01_mle_and_nll"
MIX = (("reference", 0.25), ("partly_wrong", 0.25), ("untouched", 0.25), ("broken_json", 0.125), ("raises", 0.125))


def build_class(folder, students):
    notebook = f"{A}/{A}.ipynb"
    kinds = sample_class.write_class(A, course.SOLUTIONS / notebook, course.RELEASE / notebook, folder / "kinds")
    roster, counts = {}, [(kind, round(share * students)) for kind, share in MIX]
    for kind, count in counts:
        for i in range(count):
            roster[f"{kind}{i:02d}"] = kinds[kind]
    for student, path in roster.items():
        target = folder / "submitted" / student / A
        target.mkdir(parents=True)
        shutil.copy(path, target / f"{A}.ipynb")
        (target / "timestamp.txt").write_text("2026-11-23 12:00:00.000000 UTC")
    return roster


def scores(db_path, students):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{db_path}") as gb:
        got = {s.student.id: s.score for s in gb.find_assignment(A).submissions}
    return {s: got.get(s, 0.0) for s in students}


def plain(folder):
    workspace = course.Workspace(root=folder / "plain")
    shutil.copytree(folder / "submitted", workspace.dir("submitted"))
    course.release(A, workspace)
    start = time.perf_counter()
    workspace.nbgrader("autograde", A)          # fails for the cut-off notebooks, grades the rest
    workspace.nbgrader("generate_feedback", A)
    return time.perf_counter() - start, workspace.root / "gradebook.db"


def batch(folder, workers):
    root = folder / "batch"
    course.release(A, course.Workspace(root=root))
    command = [sys.executable, "-m", "autograde.batch", A, str(folder / "submitted"), f"--workspace={root}",
               "--quiet"] + ([f"--workers={workers}"] if workers else [])
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return seconds, root / "gradebook.db"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--workers", type=int, default=None, help="batch workers (default: all cores)")
    args = parser.parse_args()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        folder = Path(tmp)
        roster = build_class(folder, args.students)
        plain_seconds, plain_db = plain(folder)
        batch_seconds, batch_db = batch(folder, args.workers)
        plain_scores, batch_scores = scores(plain_db, roster), scores(batch_db, roster)
    differ = {s: (plain_scores[s], batch_scores[s]) for s in roster if plain_scores[s] != batch_scores[s]}
    info = {"command": "python benchmarks/autograde_throughput.py " + " ".join(sys.argv[1:]),
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}",
            "students": len(roster), "workers": args.workers or os.cpu_count(),
            "plain_seconds": round(plain_seconds, 1), "batch_seconds": round(batch_seconds, 1),
            "speedup": round(plain_seconds / batch_seconds, 2), "identical_grades": not differ, "differences": differ,
            "class_total": sum(batch_scores.values())}
    lines = [f"Autograding {info['students']} submissions of {A} ({info['machine']})", "",
             f"`{info['command']}`", "",
             "| grader | wall time (s) | per student (s) |", "|---|---|---|",
             f"| plain nbgrader autograde + generate_feedback, sequential | {info['plain_seconds']} | "
             f"{plain_seconds / len(roster):.2f} |",
             f"| autograde.batch, {info['workers']} workers, sandboxed | {info['batch_seconds']} | "
             f"{batch_seconds / len(roster):.2f} |", "",
             f"Speed-up: **{info['speedup']}×**. Identical grades: {'yes' if not differ else differ}."]
    print("\n".join(lines))
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "autograde_throughput.json").write_text(json.dumps(info, indent=1))
    (results / "autograde_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
