"""A warm parent for students' kernels: torch, IPython and ipykernel are imported once, then each
sandboxed kernel is a fork, ready in a fraction of the second or two a fresh Python needs.

    python -m autograde.zygote SOCKET     (a batch worker starts one and keeps it for all its students)

Protocol, one JSON line each way on a Unix socket: a request, then {"pid"}, then {"status"} when
that kernel exits (a negative status is the signal that killed it). Two kinds of request:

- {"role": "grader", "connection_file", "env", "cwd", "launcher"} from kernel_launcher.py, which
  nbclient started as the grader kernel: the fork becomes autograde.grader_kernel;
- {"role": "student", "connection_file", "workdir", "limits"} from a grader kernel: the fork
  sandboxes itself and becomes the student's ipykernel;
- {"role": "calls", "workdir", "limits"} from a grader kernel: the fork becomes the
  autograde.call_server that runs the test cells' calls to the student's functions.

The zygote stays single-threaded, so a fork is safe. A request from inside a sandbox (a student's
kernel or any of its descendants) is refused, as is a grader request from any kernel: a student
could otherwise ask for a kernel with a laxer working directory or limits. The zygote dies with
the worker that started it, and each kernel with the zygote.
"""
import json
import os
import select
import signal
import socket
import sys

from autograde import sandbox

PRELOAD = ("torch", "numpy", "matplotlib", "matplotlib.pyplot", "IPython", "ipykernel.kernelapp",
           "ipykernel.ipkernel", "matplotlib_inline.backend_inline", "cloudpickle", "course_lib.grading",
           "course_lib.memory_budget", "autograde.grader_kernel", "autograde.call_server")
ROLES = ("student", "grader", "calls")


def _die_with_parent():
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _ancestors(pid):
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return
        yield pid


def _child(request):
    """In a forked child: its own session, no inherited sockets, a prepared working directory."""
    os.setsid()
    _die_with_parent()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 4096)  # the zygote's listening and client sockets stay with the zygote
    workdir, limits = request["workdir"], sandbox.Limits(**request["limits"])
    sandbox.prepare_workdir(workdir)
    os.chdir(workdir)
    return workdir, limits


def _run_calls(request):
    """In the forked child: become the call server (it sandboxes itself once the grader is connected)."""
    from autograde import call_server
    workdir, limits = _child(request)
    call_server.run(workdir, limits, request.get("threads", 1))
    os._exit(0)


def _run_kernel(request):
    """In the forked child: sandbox this process, then become the student's ipykernel."""
    workdir, limits = _child(request)
    skipped = sandbox.apply(workdir, limits.memory_mb, limits.cpu_seconds, limits.file_mb)
    if skipped:
        with open(os.path.join(workdir, "sandbox-skipped.txt"), "w") as handle:
            handle.write("\n".join(skipped))
    import torch
    torch.set_num_threads(request.get("threads", 1))  # after the sandbox: a new user namespace needs one thread
    from ipykernel.kernelapp import IPKernelApp
    app = IPKernelApp.instance()
    app.initialize(["-f", request["connection_file"], "--HistoryManager.hist_file=:memory:",
                    "--IPKernelApp.matplotlib=inline"])
    app.start()
    os._exit(0)


def _run_grader(request):
    """In the forked child: become the grader kernel nbclient asked for, through kernel_launcher.py."""
    _die_with_parent()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 4096)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    _exit_with(request["launcher"])
    from autograde.grader_kernel import GraderKernel
    from ipykernel.kernelapp import IPKernelApp
    IPKernelApp.launch_instance(kernel_class=GraderKernel, argv=["-f", request["connection_file"]])
    os._exit(0)


def _exit_with(pid):
    """nbclient holds the launcher, not this kernel: when it kills the launcher, this kernel goes too."""
    import threading
    watched = os.pidfd_open(pid)

    def watch():
        select.select([watched], [], [])
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def serve(path):
    _die_with_parent()
    for name in PRELOAD:
        __import__(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # the socket appears only once the imports are done
    kernels = {}  # pid -> (the client socket to tell when it exits, "student" or "grader")
    clients = []
    while True:
        readable, _, _ = select.select([listener] + clients, [], [], 0.1)
        for ready in readable:
            if ready is listener:
                clients.append(listener.accept()[0])
                continue
            line = ready.recv(65536)
            clients.remove(ready)
            credentials = ready.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            peer = int.from_bytes(credentials[:4], "little")
            try:
                request = json.loads(line)
                role = request.get("role", "student")
            except ValueError:
                request, role = None, None
            lineage = [peer, *_ancestors(peer)]
            sandboxed = any(kernels.get(p, (None, None))[1] in ("student", "calls") for p in lineage)
            from_a_kernel = any(p in kernels for p in lineage)
            if request is None or sandboxed or role not in ROLES or (role == "grader" and from_a_kernel):
                ready.close()
                continue
            pid = os.fork()
            if pid == 0:
                try:
                    {"grader": _run_grader, "student": _run_kernel, "calls": _run_calls}[role](request)
                finally:
                    os._exit(70)  # whatever happens, the child never returns into this loop
            kernels[pid] = (ready, role)
            ready.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        while kernels:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            client, _ = kernels.pop(pid, (None, None))
            if client:
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                try:
                    client.sendall(json.dumps({"status": code}).encode() + b"\n")
                except OSError:
                    pass
                client.close()


class ForkedKernel:
    """The Popen-like handle the grader kernel holds on a kernel the zygote forked for it."""

    def __init__(self, path, request):
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.connect(path)
        self.socket.sendall(json.dumps(request).encode() + b"\n")
        self.socket.settimeout(30)
        self.buffer = b""
        self.pid = self._message()["pid"]
        self.returncode = None

    def _message(self):
        while b"\n" not in self.buffer:
            chunk = self.socket.recv(4096)
            if not chunk:
                return {"status": -9}  # the zygote is gone, and with it the kernel
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def poll(self):
        if self.returncode is None:
            self.socket.settimeout(0)
            try:
                self.returncode = self._message()["status"]
            except (BlockingIOError, socket.timeout):
                pass
            finally:
                self.socket.settimeout(30)
        return self.returncode

    def wait(self):
        if self.returncode is None:
            self.socket.settimeout(None)
            self.returncode = self._message()["status"]
        return self.returncode


if __name__ == "__main__":
    serve(sys.argv[1])
