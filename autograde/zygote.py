"""A warm parent for grader kernels and the students' sandboxed processes: torch, IPython and ipykernel
are imported once, then each process is a fork, ready in a fraction of the second or two a fresh
Python needs.

    python -m autograde.zygote FD     (a batch worker starts one, FD its end of a socket pair)

There is no path to connect to: requests arrive on descriptors, and the descriptor a request
arrives on decides what is forked.

- On FD, which only the batch worker holds: a grader kernel ({"connection_file", "env", "cwd"}),
  as autograde.provisioner asks when nbclient starts one. The fork gets two descriptors of its own,
  "student" and "calls" (autograde.launch finds them in GRADER_ZYGOTE_FDS).
- On a grader kernel's "student" descriptor: the student's ipykernel; on its "calls" descriptor:
  the process for graded calls ({"settings", "env", "namespaces": n}, with the process's descriptors, then
  n descriptors of the box it runs in). The fork joins the box (autograde.sandbox.enter) and
  becomes `autograde.launch.run`, exactly as a cold start does.

Every request carries (SCM_RIGHTS) a socket on which the zygote answers {"pid"}, then {"status"}
when that process exits (a negative status is the signal that killed it). A student's processes
hold no descriptor of the zygote's, so none of them can ask for anything; when a grader kernel
exits, every process forked for it is killed. The zygote stays single-threaded, so a fork is safe;
it dies with the worker, and each process with the zygote.
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys

from autograde import launch, sandbox

PRELOAD = ("torch", "numpy", "matplotlib", "matplotlib.pyplot", "IPython", "ipykernel.kernelapp",
           "ipykernel.ipkernel", "matplotlib_inline.backend_inline", "cloudpickle", "course_lib.grading",
           "course_lib.memory_budget", "autograde.grader_kernel", "autograde.student_kernel",
           "autograde.call_server")
SANDBOXED = ("student", "calls")


def _only(*keep):
    """In a fresh fork: its own session, stdio on /dev/null, and no descriptor but `keep`."""
    os.setsid()
    launch.die_with_parent()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _run_grader(request, descriptors):
    """In the fork: the grader kernel nbclient asked for, holding a descriptor per sandboxed role."""
    _only(*descriptors.values())
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[launch.ZYGOTE_ENV] = json.dumps(descriptors)
    os.chdir(request["cwd"])
    from autograde import grader_kernel
    grader_kernel.main(request["connection_file"])


def _run_sandboxed(role, request, fds):
    """In the fork: a student's process in its box, started as autograde.launch starts one cold."""
    _only(*fds)
    os.environ.clear()  # the asking grader kernel's environment, as a cold start gets it (not the zygote's own)
    os.environ.update(request["env"])
    settings = launch.Settings.loads(request["settings"])
    settings.role = role  # the descriptor decides, whatever the request says
    kept = len(fds) - request["namespaces"]
    if request["namespaces"]:
        sandbox.enter(fds[kept:], settings.workdir)  # returns in a fork inside the box
    launch.run(settings, fds[:kept])


def _preload_dynamo():
    """torch._dynamo, which an optimizer's first step imports (a second or more in every process that steps one), but
    not Triton, which dynamo imports where it can: Triton decides as it is imported whether its own @triton.jit helpers
    (tl.max, tl.sum) are interpreted, by TRITON_INTERPRET, which a notebook sets before it imports triton. So dynamo is
    imported with Triton out of reach, and torch's cached answer "Triton is not installed" is then forgotten."""
    import torch.utils._triton
    sys.modules["triton"] = None  # `import triton` raises ImportError while this stands
    try:
        import torch._dynamo  # noqa: F401
    finally:
        del sys.modules["triton"]
    torch.utils._triton.has_triton_package.cache_clear()


def serve(descriptor):
    launch.die_with_parent()
    for name in PRELOAD:
        __import__(name)
    _preload_dynamo()
    worker = socket.socket(fileno=descriptor)
    routes = {worker.fileno(): ("grader", None, worker)}  # fd -> (role it serves, grader kernel pid, socket)
    children = {}  # pid -> (the socket to tell its status on, role, the grader kernel it was forked for)
    worker.send(b'{"ready": true}')
    while True:
        readable, _, _ = select.select([sock for _, _, sock in routes.values()], [], [], 0.1)
        for sock in readable:
            role, owner, _ = routes[sock.fileno()]
            try:
                message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 32)
            except OSError:
                message, fds = b"", []
            if not message:
                if role == "grader":
                    os._exit(0)  # the worker is gone
                del routes[sock.fileno()]
                sock.close()
                continue
            pid = _fork(role, message, fds, routes)
            if pid:
                children[pid] = (socket.socket(fileno=fds[0]), role, owner)
                _tell(children[pid][0], {"pid": pid})
        _reap(children, routes)


def _fork(role, message, fds, routes):
    """Fork what `role`'s descriptor serves; the pid, or None for a request that is not well formed."""
    try:
        request = json.loads(message)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        if role == "grader" and len(fds) != 1:
            raise ValueError("a grader kernel's request carries its reply socket alone")
        if role != "grader" and not (isinstance(request.get("namespaces"), int)
                                     and 0 <= request["namespaces"] <= len(fds) - 2):
            raise ValueError("a sandboxed process's request carries a reply socket, a channel and its box")
        if role != "grader" and not (isinstance(request.get("env"), dict)
                                     and all(isinstance(v, str) for v in request["env"].values())):
            raise ValueError("a sandboxed process's request carries its environment")
    except ValueError:
        for fd in fds:
            os.close(fd)
        return None
    if role == "grader":
        pairs = {r: socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for r in SANDBOXED}
        pid = os.fork()
        if pid == 0:
            try:
                _run_grader(request, {r: theirs.fileno() for r, (_, theirs) in pairs.items()})
            finally:
                os._exit(70)  # whatever happens, the child never returns into the zygote's loop
        for r, (ours, theirs) in pairs.items():
            theirs.close()
            routes[ours.fileno()] = (r, pid, ours)
    else:
        pid = os.fork()
        if pid == 0:
            try:
                _run_sandboxed(role, request, fds[1:])
            finally:
                os._exit(70)
        for fd in fds[1:]:
            os.close(fd)
    return pid


def _reap(children, routes):
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        if pid not in children:
            continue
        replies, role, _ = children.pop(pid)
        _tell(replies, {"status": -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)})
        replies.close()
        if role == "grader":  # its students' processes go with it, and its descriptors close
            for child, (_, _, owner) in children.items():
                if owner == pid:
                    _kill(child)
            for fd in [fd for fd, (_, owner, _) in routes.items() if owner == pid]:
                routes.pop(fd)[2].close()


def _tell(replies, message):
    try:
        replies.send(json.dumps(message).encode())
    except OSError:
        pass  # the asker is gone


def _kill(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- the batch worker's side

class Zygote:
    """The worker's handle: starts `python -m autograde.zygote` on a socket pair and asks it for grader kernels."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen([sys.executable, "-m", "autograde.zygote", str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        theirs.close()
        self.socket = ours
        ours.settimeout(180)
        try:
            ready = ours.recv(64)
        except socket.timeout:
            ready = b""
        ours.settimeout(None)
        self.ready = ready == b'{"ready": true}'

    def alive(self):
        return self.ready and self.process.poll() is None

    def grader_kernel(self, connection_file, env, cwd):
        return launch.ask_zygote(self.socket.fileno(), {"connection_file": connection_file, "env": env,
                                                        "cwd": cwd})


_worker_zygote = None


def for_this_worker():
    """This process's zygote, started on first use and again if it died; None if it cannot start."""
    global _worker_zygote
    if _worker_zygote is None or not _worker_zygote.alive():
        if _worker_zygote is not None:
            _worker_zygote.process.kill()
        _worker_zygote = Zygote()
    return _worker_zygote if _worker_zygote.alive() else None


if __name__ == "__main__":
    serve(int(sys.argv[1]))
