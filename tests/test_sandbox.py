"""autograde.sandbox: a student's process cannot read the course's secrets, write outside its
working directory, reach the network or take unbounded memory; a protection the machine cannot
give is reported, and the others still apply."""
import os
import subprocess
import sys

import pytest

from autograde import sandbox

PROTECTIONS = sandbox.available()

ATTEMPT = r"""
def attempt(name, action):
    try:
        action()
        print(name, "allowed")
    except Exception as error:
        print(name, "denied", type(error).__name__)
"""
PROBE = ATTEMPT + r"""
import os, socket, sys
attempt("read_solutions", lambda: open(sys.argv[1]).read(10))
attempt("list_repo", lambda: os.listdir(sys.argv[2]))
attempt("write_outside", lambda: open(sys.argv[3], "w").write("x"))
attempt("write_inside", lambda: open("inside.txt", "w").write("x"))
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", 9), timeout=2))
attempt("allocate_6GiB", lambda: bytearray(6 << 30))
attempt("signal_outside", lambda: os.kill(int(sys.argv[4]), 0))  # signal 0: only asks if we may
import course_lib.grading
print("course_lib", "allowed")
"""


# what autograde.student_kernel does first, before any student code: then the probe, as a student's cell
SANDBOX_THEN_PROBE = """
import os, sys
from autograde import sandbox
workdir, memory_mb = sys.argv[1], int(sys.argv[2])
sandbox.prepare_workdir(workdir)
os.chdir(workdir)
print("skipped", repr("; ".join(sandbox.apply(workdir, memory_mb, 60, 16))))
sys.argv = sys.argv[2:]
exec(open("probe.py").read())
"""


def run_sandboxed(tmp_path, memory_mb=2048):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "probe.py").write_text(PROBE)
    outside = tmp_path / "outside.txt"
    secret = sandbox.REPO / "solutions" / "01_mle_and_nll" / "01_mle_and_nll.ipynb"
    done = subprocess.run([sys.executable, "-c", SANDBOX_THEN_PROBE, str(workdir), str(memory_mb),
                           str(secret), str(sandbox.REPO), str(outside), str(os.getpid())],
                          capture_output=True, text=True, cwd=sandbox.REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    verdicts = dict(line.split(maxsplit=1)[:2] for line in done.stdout.splitlines())
    skipped = verdicts.pop("skipped")
    verdicts = {k: v.split()[0] for k, v in verdicts.items()}
    return verdicts, skipped, outside


@pytest.mark.skipif(PROTECTIONS["landlock"] is not None, reason=f"no Landlock here: {PROTECTIONS['landlock']}")
def test_the_student_cannot_read_the_course_or_write_outside_its_directory(tmp_path):
    verdicts, _, outside = run_sandboxed(tmp_path)
    assert verdicts["read_solutions"] == "denied" and verdicts["list_repo"] == "denied"
    assert verdicts["write_outside"] == "denied" and not outside.exists()
    assert verdicts["write_inside"] == "allowed" and verdicts["course_lib"] == "allowed"


@pytest.mark.skipif(sandbox._landlock_abi() < 6, reason="Landlock signal scoping needs ABI 6 (Linux 6.12)")
def test_the_student_cannot_signal_processes_outside_the_sandbox(tmp_path):
    assert run_sandboxed(tmp_path)[0]["signal_outside"] == "denied"


@pytest.mark.skipif(PROTECTIONS["network"] is not None, reason=f"no user namespaces here: {PROTECTIONS['network']}")
def test_the_student_has_no_network(tmp_path):
    assert run_sandboxed(tmp_path)[0]["tcp"] == "denied"


def test_memory_is_limited_and_skipped_protections_are_reported(tmp_path):
    verdicts, skipped, _ = run_sandboxed(tmp_path, memory_mb=2048)
    assert verdicts["allocate_6GiB"] == "denied"
    for name, reason in PROTECTIONS.items():
        assert (name in skipped) == (reason is not None), \
            f"{name}: available() says {reason!r}, apply() says {skipped!r}"


CALLS_PROBE = ATTEMPT + r"""
import socket, sys
from autograde import sandbox
skipped = sandbox.apply(sys.argv[1], 2048, 60, 16, calls=True)
attempt("read_reference", lambda: open(sys.argv[2]).read(10))
attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX))
attempt("socketpair", socket.socketpair)
attempt("write_inside", lambda: open(sys.argv[1] + "/inside.txt", "w").write("x"))
"""


@pytest.mark.skipif(PROTECTIONS["landlock"] or PROTECTIONS["seccomp"], reason=f"protections missing: {PROTECTIONS}")
def test_the_process_running_graded_calls_can_read_no_reference_and_open_no_socket(tmp_path):
    reference = sandbox.REPO / "course_lib" / "mle.py"
    done = subprocess.run([sys.executable, "-c", CALLS_PROBE, str(tmp_path), str(reference)], capture_output=True,
                          text=True, cwd=sandbox.REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    verdicts = dict(line.split()[:2] for line in done.stdout.splitlines())
    assert verdicts == {"read_reference": "denied", "unix_socket": "denied", "socketpair": "denied",
                        "write_inside": "allowed"}, done.stdout
