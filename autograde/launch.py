"""The one way a sandboxed process of a student's is started, and the one channel it is spoken to on.

Two roles run a student's code: the student's own ipykernel ("student") and the process that runs
a test's calls to the student's functions ("calls", autograde.call_server). Each start makes the
process a box of its own (autograde.sandbox.Box: bubblewrap's namespaces, a tmpfs working folder),
and the process gets into it

- warm, forked by the batch worker's autograde.zygote, when the grader kernel holds a descriptor
  for that role (the zygote gave it one; a student's process never has one): the fork joins the
  box's namespaces, or
- cold, as `python -m autograde.launch SETTINGS_JSON FD...`, which bubblewrap starts inside it;

and both ways end in the same `run(settings, descriptors)` in the new process: the sandbox's
limits, then the role. The grader and the process exchange bytes only over descriptors the grader
made before the process started: the channel (a socket pair; every frame read from the student is
bounded in size) and, for the student's ipykernel, one listening socket per ZMQ port, bound in the
grader's own folder, which the kernel serves on (ZMQ_USE_FD). No path in a folder the student can
write is read, written or connected to by the grader.
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from autograde import sandbox
from autograde.sandbox import Limits

ZYGOTE_ENV = "GRADER_ZYGOTE_FDS"  # set by the zygote in a grader kernel it forks: {"student": fd, "calls": fd}
_HEADER = struct.Struct("!Q")     # a frame: its length, then its bytes
HEADER_BYTES = _HEADER.size
KERNEL_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")  # the listeners' order


@dataclass
class Settings:
    """Everything a sandboxed process is started with, serialised once (JSON) whichever way it starts."""
    role: str                        # "student" or "calls"
    limits: Limits = field(default_factory=Limits)
    threads: int = 1                 # torch threads
    connection: dict = field(default_factory=dict)  # the student's ipykernel: its connection info (key, ports)
    workdir: str = ""                # its working folder, chosen by `start`: the box's tmpfs, or a fresh folder

    def dumps(self):
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text):
        values = json.loads(text)
        return cls(**dict(values, limits=Limits(**values["limits"])))


# ---------------------------------------------------------------- the channel: length-prefixed frames

class ChannelClosed(EOFError):
    pass


def send(sock, data: bytes, timeout: float = None):
    """One frame; TimeoutError if the peer takes none of it for `timeout` s (a process stuck in a loop)."""
    sock.settimeout(timeout)
    try:
        sock.sendall(_HEADER.pack(len(data)) + data)
    finally:
        sock.settimeout(None)


def receive(sock, limit: int, timeout: float = None, alive=lambda: True):
    """One frame of at most `limit` bytes; TimeoutError after `timeout` s, ChannelClosed if the peer went."""
    deadline = None if timeout is None else time.monotonic() + timeout
    size = _size(_exactly(sock, _HEADER.size, deadline, alive), limit)
    return _exactly(sock, size, deadline, alive)


def take_frame(buffer: bytearray, limit: int):
    """The first whole frame in `buffer` (bytes already received), removed from it; None while it is incomplete."""
    if len(buffer) < _HEADER.size:
        return None
    end = _HEADER.size + _size(buffer, limit)
    if len(buffer) < end:
        return None
    frame = bytes(buffer[_HEADER.size:end])
    del buffer[:end]
    return frame


def _size(header, limit):
    size, = _HEADER.unpack_from(header)
    if size > limit:
        raise ValueError(f"sent {size} bytes where at most {limit} were expected")
    return size


def _exactly(sock, size, deadline, alive):
    chunks, left = [], size
    while left:
        wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError("no answer in time")
        sock.settimeout(wait)
        try:
            chunk = sock.recv(min(left, 1 << 20))
        except socket.timeout:
            if not alive():
                raise ChannelClosed("the process exited") from None
            continue
        if not chunk:
            raise ChannelClosed("the process closed its channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def drain(sock):
    """Drop whatever the process sent unasked (a student can write to its end at any time)."""
    sock.setblocking(False)
    try:
        while sock.recv(1 << 20):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    finally:
        sock.setblocking(True)


# ---------------------------------------------------------------- starting a process

def die_with_parent():
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Started:
    """A Popen-like handle on a process the zygote forked (pid, poll, wait), told its status by the zygote."""

    def __init__(self, replies: socket.socket):
        self.replies = replies
        forked = self._message(timeout=60)
        if "pid" not in forked or forked["pid"] <= 0:
            raise ConnectionError("the zygote did not fork")
        self.pid = forked["pid"]
        self.returncode = None
        self.stdin = self.stdout = self.stderr = None

    def _message(self, timeout):
        self.replies.settimeout(timeout)
        try:
            data = self.replies.recv(4096)
        finally:
            self.replies.settimeout(None)
        if not data:
            return {"status": -9}  # the zygote is gone, and with it the process
        return json.loads(data)

    def poll(self):
        if self.returncode is None:
            try:
                self.returncode = self._message(timeout=0)["status"]
            except (BlockingIOError, socket.timeout):
                pass
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            self.returncode = self._message(timeout)["status"]
        return self.returncode

    def send_signal(self, number):
        if self.poll() is None:
            try:
                os.killpg(self.pid, number)
            except ProcessLookupError:  # forked a moment ago, not yet the leader of its own session
                os.kill(self.pid, number)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def terminate(self):
        self.send_signal(signal.SIGTERM)


class Sandboxed:
    """A started sandboxed process, as Popen has it (pid, poll, wait, kill): killing it closes its box, so every
    process the student started there ends, and removes a working folder made outside a box."""

    def __init__(self, process, box=None, scratch=None):
        self.process, self.box, self.scratch = process, box, scratch

    @property
    def pid(self):
        return self.process.pid

    @property
    def returncode(self):
        return self.process.returncode

    def poll(self):
        return self.process.poll()

    def wait(self, timeout=None):
        return self.process.wait(timeout)

    def kill(self):
        if self.box:
            self.box.close()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:  # forked a moment ago, not yet the leader of its own session
                os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def ask_zygote(descriptor: int, request: dict, fds=()):
    """Ask the zygote, on one of the descriptors it gave, to fork; `fds` travel to the child."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote = socket.socket(fileno=os.dup(descriptor))
    try:
        socket.send_fds(zygote, [json.dumps(request).encode()], [theirs.fileno(), *fds])
    finally:
        zygote.close()
        theirs.close()
    return Started(ours)


def start(settings: Settings, listeners=()):
    """Start a sandboxed process in a box of its own (warm if a zygote serves its role here); returns (handle,
    channel). `listeners`: descriptors of the sockets it serves on (KERNEL_PORTS' order), made by the grader.
    Raises sandbox.SandboxError, saying why, if the box cannot be made."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    descriptors = [theirs.fileno(), *listeners]
    unsafe = settings.limits.unsafe_no_sandbox
    scratch = tempfile.mkdtemp(prefix=f"{settings.role}-") if unsafe else None
    settings.workdir = scratch or sandbox.WORKDIR
    try:
        env = {k: v for k, v in os.environ.items() if k != ZYGOTE_ENV}  # the same, started warm or cold
        zygotes = json.loads(os.environ.get(ZYGOTE_ENV, "{}"))
        if settings.role in zygotes:
            box = None if unsafe else sandbox.Box(settings.role, settings.limits)
            namespaces = box.namespaces() if box else []
            try:
                request = {"settings": settings.dumps(), "env": env, "namespaces": len(namespaces)}
                return Sandboxed(ask_zygote(zygotes[settings.role], request, descriptors + namespaces), box,
                                 scratch), ours
            except (OSError, ValueError, KeyError):
                if box:
                    box.close()  # the zygote is gone: start cold
            finally:
                for fd in namespaces:
                    os.close(fd)
        command = [sys.executable, "-m", "autograde.launch", settings.dumps(), *map(str, descriptors)]
        env["PYTHONPATH"] = str(sandbox.REPO)  # where `-m autograde.launch` is found (only its files, in a box)
        if unsafe:
            return Sandboxed(subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True,
                                              pass_fds=descriptors, env=env), None, scratch), ours
        box = sandbox.Box(settings.role, settings.limits, command, descriptors, env)
        return Sandboxed(box.process, box), ours
    except BaseException:
        ours.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        theirs.close()


def run(settings: Settings, descriptors):
    """In the new process, started either way: the role, on the channel (and listeners) it inherited."""
    die_with_parent()  # the zygote's fork that waits for it, or bubblewrap
    sandbox.prepare_workdir(settings.workdir)
    os.chdir(settings.workdir)
    channel = socket.socket(fileno=descriptors[0])
    if settings.role == "student":
        from autograde import student_kernel
        student_kernel.run(settings, channel, descriptors[1:])
    elif settings.role == "calls":
        from autograde import call_server
        call_server.run(settings, channel)
    else:
        raise ValueError(f"no such role: {settings.role!r}")


if __name__ == "__main__":
    run(Settings.loads(sys.argv[1]), [int(fd) for fd in sys.argv[2:]])
    os._exit(0)
