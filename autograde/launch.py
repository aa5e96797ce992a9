"""The one way a sandboxed process of a student's is started, and the one channel it is spoken to on.

Two roles run a student's code: the student's own ipykernel ("student") and the process that runs
a test's calls to the student's functions ("calls", autograde.call_server). Either is started

- warm, forked by the batch worker's autograde.zygote, when the grader kernel holds a descriptor
  for that role (the zygote gave it one; a student's process never has one), or
- cold, as `python -m autograde.launch FD SETTINGS_JSON`, FD being its end of the channel;

and both ways end in the same `run(settings, descriptor)` in the new process: a working directory of
its own, the sandbox, then the role. The grader and the process exchange bytes only over the
channel, a socket pair the grader made before the process started, and every frame read from the
student is bounded in size. No file in a folder the student can write is read or written by the
grader; the one thing it opens there is the student's ipykernel's ZMQ sockets, in a folder made
afresh for each start of the kernel, before any code of the student's has run.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from autograde.sandbox import Limits

ZYGOTE_ENV = "GRADER_ZYGOTE_FDS"  # set by the zygote in a grader kernel it forks: {"student": fd, "calls": fd}
_HEADER = struct.Struct("!Q")     # a frame: its length, then its bytes
HEADER_BYTES = _HEADER.size


@dataclass
class Settings:
    """Everything a sandboxed process is started with, serialised once (JSON) whichever way it starts."""
    role: str                        # "student" or "calls"
    workdir: str                     # a fresh private folder, made by the grader for this process only
    limits: Limits = field(default_factory=Limits)
    threads: int = 1                 # torch threads
    connection_file: str = ""        # the student's ipykernel: its ZMQ connection file

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


def start(settings: Settings):
    """Start a sandboxed process (warm if a zygote serves its role here); returns (handle, channel)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        zygotes = json.loads(os.environ.get(ZYGOTE_ENV, "{}"))
        if settings.role in zygotes:
            try:
                return ask_zygote(zygotes[settings.role], {"settings": settings.dumps()}, [theirs.fileno()]), ours
            except (OSError, ValueError, KeyError):
                pass  # the zygote is gone: start cold
        env = {k: v for k, v in os.environ.items() if k != ZYGOTE_ENV}
        process = subprocess.Popen([sys.executable, "-m", "autograde.launch", str(theirs.fileno()), settings.dumps()],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True, pass_fds=[theirs.fileno()], env=env)
        return process, ours
    finally:
        theirs.close()


def run(settings: Settings, descriptor: int):
    """In the new process, started either way: the role, sandboxed, on the channel it inherited."""
    from autograde import sandbox
    die_with_parent()  # the zygote, or the grader kernel that started it cold
    sandbox.prepare_workdir(settings.workdir)
    os.chdir(settings.workdir)
    channel = socket.socket(fileno=descriptor)
    if settings.role == "student":
        from autograde import student_kernel
        student_kernel.run(settings, channel)
    elif settings.role == "calls":
        from autograde import call_server
        call_server.run(settings, channel)
    else:
        raise ValueError(f"no such role: {settings.role!r}")


if __name__ == "__main__":
    run(Settings.loads(sys.argv[2]), int(sys.argv[1]))
    os._exit(0)
