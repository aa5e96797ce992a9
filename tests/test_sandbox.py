"""autograde.sandbox: a student's process, in its box, cannot read the course's secrets, write outside its
working folder, fill the disk, reach the network, see or signal a process outside, take memory the limit
does not count, gain a capability or a new user namespace; the calls process also reads no reference and
opens no socket; and when the box closes, every process the student started in it ends. Each check runs
in both ways a process gets into its box: cold (bubblewrap starts it) and warm (a fork joins it)."""
import json
import os
import subprocess
import sys
import time

import pytest

from autograde import sandbox
from conftest import require_box

LIMITS = sandbox.Limits(memory_mb=2048, cpu_seconds=60, file_mb=16, disk_mb=40)

# Run in the box, right after sandbox.restrict (argv: role, where to write the verdicts, a secret, a pid outside).
PROBE = r"""
import ctypes, json, os, socket, sys, time
from pathlib import Path
role, out, secret, outside = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
repo = secret.parents[2]
libc = ctypes.CDLL(None, use_errno=True)
verdicts = {}
def attempt(name, action):
    try:
        action()
        verdicts[name] = "allowed"
    except Exception as error:
        verdicts[name] = "denied " + type(error).__name__
def refused_by_libc(result):
    if result < 0:
        raise OSError(ctypes.get_errno(), "refused")
def fill_disk():
    for i in range(4):  # 4 x 15 MB: each file under file_mb, all of them over disk_mb
        Path(f"fill{i}").write_bytes(b"x" * (15 << 20))
attempt("read_solutions", lambda: secret.read_text())
attempt("see_solutions", lambda: (repo / "solutions").stat())
attempt("write_outside", lambda: (repo / "escaped.txt").write_text("x"))
attempt("write_system", lambda: Path("/etc/escaped").write_text("x"))
attempt("write_inside", lambda: Path("inside.txt").write_text("x"))
attempt("write_tmp", lambda: Path("/tmp/inside.txt").write_text("x"))
attempt("fill_disk", fill_disk)
attempt("tcp", lambda: socket.create_connection(("127.0.0.1", 9), timeout=2))
attempt("allocate_6GiB", lambda: bytearray(6 << 30))
attempt("signal_outside", lambda: os.kill(outside, 0))
attempt("memfd", lambda: os.memfd_create("hidden"))
attempt("sysv_shm", lambda: refused_by_libc(libc.shmget(0, 1 << 20, 0o1600)))
attempt("user_namespace", lambda: refused_by_libc(libc.unshare(0x10000000)))
none_held = "CapEff:\t0000000000000000" in open("/proc/self/status").read()
attempt("capabilities", lambda: refused_by_libc(0 if none_held else -1))
attempt("course_lib_grading", lambda: __import__("course_lib.grading"))
attempt("read_reference", lambda: (repo / "course_lib" / "mle.py").read_text())
attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX))
attempt("socketpair", socket.socketpair)
detached = os.fork()
if detached == 0:  # a detached process, to outlive the probe if it can
    os.setsid()
    os.execv("/bin/sleep", ["sleep", "1234.5"])
while not open(f"/proc/{detached}/cmdline", "rb").read().startswith(b"sleep\0"):  # exec has happened
    time.sleep(0.01)
os.write(out, json.dumps(verdicts).encode())
time.sleep(600)  # held until the box closes
"""
# argv: limits, the probe, then the probe's own arguments; WARM plays the zygote, forking into a box
COLD = """
import json, sys
from autograde import sandbox
limits, probe = sandbox.Limits(**json.loads(sys.argv[1])), sys.argv[2]
sys.argv = sys.argv[2:]
sandbox.prepare_workdir(sandbox.WORKDIR)
sandbox.restrict(limits, calls=sys.argv[1] == "calls")
exec(probe)
"""
WARM = """
import json, os, sys, time
from autograde import sandbox
limits, probe = sandbox.Limits(**json.loads(sys.argv[1])), sys.argv[2]
sys.argv = sys.argv[2:]
box = sandbox.Box(sys.argv[1], limits)
namespaces = box.namespaces()
if os.fork() == 0:
    sandbox.enter(namespaces)
    sandbox.prepare_workdir(sandbox.WORKDIR)
    sandbox.restrict(limits, calls=sys.argv[1] == "calls")
    exec(probe)
    os._exit(0)
time.sleep(600)
"""


def probe(role, warm):
    """The probe's verdicts, and whether a process it left behind survived the box's closing."""
    require_box()
    secret = sandbox.REPO / "solutions" / "01_mle_and_nll" / "01_mle_and_nll.ipynb"
    read, write = os.pipe()
    limits = json.dumps(LIMITS.__dict__)
    arguments = [limits, PROBE, role, str(write), str(secret), str(os.getpid())]
    if warm:  # the runner holds the box: its end closes it (--die-with-parent)
        runner = subprocess.Popen([sys.executable, "-c", WARM, *arguments], pass_fds=[write], cwd=sandbox.REPO)
        close = lambda: (runner.kill(), runner.wait())  # noqa: E731
    else:
        box = sandbox.Box(role, LIMITS, [sys.executable, "-c", COLD, *arguments], pass_fds=[write],
                          env=dict(os.environ, PYTHONPATH=str(sandbox.REPO)))
        close = box.close
    os.close(write)
    try:
        text = _read_json(read)
    finally:
        before = _sleepers()
        close()
    deadline = time.monotonic() + 10
    while _sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    return json.loads(text), before, _sleepers()


def _read_json(fd):
    data = b""
    deadline = time.monotonic() + 120
    while not data.rstrip().endswith(b"}"):
        assert time.monotonic() < deadline, f"the probe said nothing whole in time: {data!r}"
        chunk = os.read(fd, 1 << 16)
        assert chunk, f"the probe ended without its verdicts: {data!r}"
        data += chunk
    os.close(fd)
    return data.decode()


def _sleepers():
    """Processes left by a probe (sleep 1234.5), anywhere on this machine."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read() == b"sleep\x001234.5\x00":
                found.append(pid)
        except OSError:
            pass
    return found


BOTH_WAYS = pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])


@BOTH_WAYS
def test_the_students_kernel_sees_only_what_it_needs_and_writes_only_its_own_bounded_folder(warm):
    verdicts, _, _ = probe("student", warm)
    denied = [k for k in ("read_solutions", "see_solutions", "read_reference", "write_outside", "write_system",
                          "fill_disk", "tcp", "allocate_6GiB", "signal_outside", "memfd", "sysv_shm", "user_namespace")
              if not verdicts[k].startswith("denied")]
    allowed = [k for k in ("write_inside", "write_tmp", "capabilities", "course_lib_grading", "unix_socket",
                           "socketpair") if verdicts[k] != "allowed"]
    assert not denied and not allowed, f"allowed though it must not be: {denied}; refused: {allowed}\n{verdicts}"


@BOTH_WAYS
def test_the_calls_process_reads_no_reference_and_opens_no_socket(warm):
    verdicts, _, _ = probe("calls", warm)
    assert {k: verdicts[k].split()[0] for k in ("read_reference", "unix_socket", "socketpair", "course_lib_grading",
                                                "write_inside", "memfd", "sysv_shm")} == {
        "read_reference": "denied", "unix_socket": "denied", "socketpair": "denied", "course_lib_grading": "allowed",
        "write_inside": "allowed", "memfd": "denied", "sysv_shm": "denied"}, verdicts


@BOTH_WAYS
def test_every_process_started_in_a_box_ends_with_it(warm):
    _, before, after = probe("student", warm)
    assert before, "the probe's detached process never started: the test would prove nothing"
    assert not after, f"processes outlived their box: {after}"


def test_a_machine_without_bubblewrap_is_told_so(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(sandbox.SandboxError, match="bubblewrap is not installed"):
        sandbox.Box("calls", LIMITS)


def test_the_batch_refuses_to_grade_where_no_box_can_be_made_unless_told_the_class_is_trusted(tmp_path):
    (tmp_path / "in").mkdir()
    command = [sys.executable, "-m", "autograde.batch", "01_mle_and_nll", str(tmp_path / "in"), "--quiet",
               "--workspace", str(tmp_path / "course")]
    env = dict(os.environ, PATH="/nonexistent")  # no bwrap to find
    refused = subprocess.run(command, env=env, capture_output=True, text=True, cwd=sandbox.REPO, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "bubblewrap is not installed" in refused.stderr and "--unsafe-no-sandbox" in refused.stderr
    assert not (tmp_path / "course").exists(), "it refused, and yet it began"
    trusted = subprocess.run(command + ["--unsafe-no-sandbox"], env=env, capture_output=True, text=True,
                             cwd=sandbox.REPO, timeout=300)
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert "resource limits only" in trusted.stderr


def test_a_script_run_from_tmp_does_not_show_the_box_all_of_tmp(monkeypatch):
    monkeypatch.setattr(sys, "path", ["/tmp", "/", *sys.path])  # python /tmp/script.py puts /tmp first
    for role in ("student", "calls"):
        shown = sandbox.readable_paths(role)
        assert "/tmp" not in shown and "/" not in shown, shown
