"""autograde.zygote and autograde.provisioner: kernels forked warm, reached only through descriptors.

The test process plays the batch worker: nbclient's KernelManager starts the grader kernel through
the provisioner, which asks this process's zygote; a student cell then runs in a student kernel the
zygote forked on the grader kernel's own descriptor, and looks for any way back to the zygote.
"""
import json
import os
import socket
import time

import pytest
from jupyter_client import KernelManager

from autograde import job, launch, provisioner, zygote

pytestmark = pytest.mark.slow

LOOKS_FOR_THE_ZYGOTE = r'''
import os, socket, stat
print("its parent is out of sight:", os.getppid() == 0)
kinds = []
for fd in map(int, os.listdir("/proc/self/fd")):
    try:
        kinds.append(socket.socket(fileno=os.dup(fd)).type)
    except OSError:
        pass
print("holds a zygote descriptor:", socket.SOCK_SEQPACKET in kinds)
paths, seen = [], []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        words = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    seen.append(words[0].decode())
    paths += [w for w in words if w and os.path.exists(w) and stat.S_ISSOCK(os.stat(w).st_mode)]
print("socket paths in command lines:", len(paths))
print("processes in sight:", sorted(set(seen)))
'''


@pytest.fixture
def grader(tmp_path):
    job.write_kernel_spec(tmp_path, {"GRADER_LIMITS": json.dumps({"cell_seconds": 30}),
                                       "GRADER_EVENTS": str(tmp_path / "events.jsonl")})
    os.environ["JUPYTER_PATH"] = str(tmp_path)
    manager = KernelManager(kernel_name=job.KERNEL_NAME)
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield manager, client
    client.stop_channels()
    if manager.is_alive():
        manager.shutdown_kernel(now=True)
    del os.environ["JUPYTER_PATH"]


def test_a_student_kernel_forked_warm_has_no_way_to_the_zygote_and_ends_with_its_grader(grader):
    manager, client = grader
    assert isinstance(manager.provisioner, provisioner.ZygoteProvisioner)
    grader_parent = open(f"/proc/{manager.provisioner.pid}/stat").read().rsplit(")", 1)[1].split()[1]
    assert "autograde.zygote" in open(f"/proc/{grader_parent}/cmdline").read(), "the grader kernel was not forked"
    printed = []
    reply = client.execute_interactive(LOOKS_FOR_THE_ZYGOTE, timeout=120, output_hook=lambda m: printed.append(
        m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    text = "".join(printed)
    assert reply["content"]["status"] == "ok", text
    assert "its parent is out of sight: True" in text, text
    assert "holds a zygote descriptor: False" in text and "socket paths in command lines: 0" in text, text
    assert "autograde.zygote" not in text and "grader_kernel" not in text, text  # only its own box's processes
    waiting = [pid for pid in _children(int(grader_parent)) if pid != manager.provisioner.pid]
    students = [child for pid in waiting for child in _children(pid)]
    assert len(students) == 1, f"the zygote's forks {waiting} hold no student kernel (forked warm, in its box)"
    student = students[0]
    os.kill(manager.provisioner.pid, 9)  # the grader kernel dies without a word: its student's kernel goes too
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{student}") and "Z" not in open(f"/proc/{student}/stat").read().split()[2]:
        assert time.monotonic() < deadline, "the student's kernel outlived its grader kernel"
        time.sleep(0.1)


def _children(pid):
    found = []
    for other in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(open(f"/proc/{other}/stat").read().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(other))
        except OSError:
            pass
    return found


def test_a_request_not_well_formed_is_dropped_and_the_next_one_served(tmp_path):
    parent = zygote.Zygote()
    try:
        assert parent.alive()
        parent.socket.send(b'{"connection_file": "k.json"}')  # no socket to answer on: dropped
        parent.socket.send(b"not json at all")
        kernel = parent.grader_kernel(str(tmp_path / "k.json"), dict(os.environ), str(tmp_path))
        assert kernel.pid > 0 and kernel.poll() is None
        kernel.kill()
        assert kernel.wait(timeout=30) == -9  # and its end is reported
    finally:
        parent.process.kill()
        parent.process.wait()


def test_a_settings_object_survives_its_one_serialisation():
    settings = launch.Settings("student", launch.Limits(memory_mb=123, unsafe_no_sandbox=True), threads=2,
                               connection={"ip": "/tmp/k/ipc", "shell_port": 3, "key": "k"}, workdir="/tmp/w")
    assert launch.Settings.loads(settings.dumps()) == settings


def test_a_frame_larger_than_its_limit_is_refused_before_it_is_read():
    ours, theirs = socket.socketpair()
    launch.send(theirs, b"x" * 1000)
    with pytest.raises(ValueError, match="1000 bytes"):
        launch.receive(ours, limit=999, timeout=5)
    ours, theirs = socket.socketpair()
    theirs.sendall((100).to_bytes(8, "big") + b"cut short")  # the process died mid-frame
    theirs.close()
    with pytest.raises(launch.ChannelClosed):
        launch.receive(ours, limit=1 << 20, timeout=5)
    ours, theirs = socket.socketpair()
    with pytest.raises(TimeoutError):
        launch.receive(ours, limit=1 << 20, timeout=0.5)
