"""Where a student's process runs: a bubblewrap box of its own, then the limits it puts itself under.

Each process that runs a student's code (the student's ipykernel, the process for graded calls)
gets a `Box`: namespaces bubblewrap makes afresh for that one process (user, PID, IPC, network,
mount, UTS, cgroup; no user namespace may be made inside), holding

- a read-only view of what it needs: the system's libraries, this Python and its packages, and the
  course's few files it runs: the student's edition of course_lib (`course_lib.edition`), never a
  reference, and the modules that start it;
- a private tmpfs of `disk_mb` at /tmp, its working folder in it (HOME and TMPDIR too), and a small
  one as /dev/shm; the rest of the view is read-only;
- nothing else: not solutions/, the gradebook, other students' work or the grader's folders; no
  network (a loopback that is down); no process outside the box in sight.

The box ends when the grader closes it or dies (`--die-with-parent`): the end of its PID namespace
kills every process the student started in it, however detached, and its tmpfs and System V
objects go with it.

A process enters its box warm (forked by autograde.zygote, it joins the box's namespaces: `enter`)
or cold (bubblewrap starts it inside). Either way it then `restrict`s itself, before any code of
the student's: no capabilities; resource limits (address space, CPU seconds, size of a written
file, no core dumps); a seccomp filter refusing what no namespace bounds: memfd_create and System V
IPC (memory outside the address-space limit: cgroup v2 memory limits are not used, as the machines
this course is graded on have cgroup v1), and for the calls process every socket.

Where bubblewrap is missing or cannot make a user namespace, `problem()` says why; the batch then
refuses to grade unless told --unsafe-no-sandbox, and processes get `restrict` alone.
"""
import ctypes
import errno
import fcntl
import functools
import json
import os
import platform
import resource
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from course_lib import edition

REPO = Path(__file__).resolve().parent.parent
WORKDIR = "/tmp/student"  # the working folder's path inside a box, on the box's one writable tmpfs, /tmp
SHM_MB = 64            # the box's /dev/shm


@dataclass
class Limits:
    memory_mb: int = 4096          # address space of each student process (kernel, call server)
    cpu_seconds: int = 900         # CPU time for the whole notebook
    cell_seconds: float = 120.0    # wall time per cell (enforced by the grader kernel)
    notebook_seconds: float = 600.0  # wall time for all the student's cells together (ditto)
    file_mb: int = 256             # largest file the kernel may write, and largest frame it may send
    disk_mb: int = 512             # everything a process may write, together: its working folder's tmpfs
    output_kb: int = 256           # output of every kind a cell may send back before it is cut (ditto)
    grading_seconds: float = 1800.0  # wall time of nbgrader autograde on one submission, kernels' starts included
    feedback_seconds: float = 120.0  # wall time of nbgrader generate_feedback on one submission
    unsafe_no_sandbox: bool = False  # no box (a class you trust, on a machine without bubblewrap): limits only


class SandboxError(OSError):
    """A box could not be made; the message says why."""


# ---------------------------------------------------------------- the box

# What each role sees of the course, read-only: the student's edition of course_lib (course_lib.edition), never
# a reference, and the modules a cold start of that role runs.
_STARTS = ["autograde/__init__.py", "autograde/launch.py", "autograde/sandbox.py"]
_EDITION = ["course_lib/__init__.py", *(f"course_lib/{name}.py" for name in edition.STUDENT)]
_COURSE = {"student": [*_EDITION, *_STARTS, "autograde/student_kernel.py"],
           "calls": [*_EDITION, *_STARTS, "autograde/call_server.py"]}
_SYSTEM = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/opt", "/sys"]
_ETC = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "passwd", "group", "nsswitch.conf",
        "hosts", "mime.types", "fonts"]  # not all of /etc: a process mapped to root would read /etc/shadow


def readable_paths(role):
    """What a process of `role` reads: the system, this Python and its packages, its part of the course."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    # (not /tmp itself, where a script run from /tmp puts it on sys.path: it would show the box every user's files)
    prefixes |= {p for p in sys.path if p and os.path.isdir(p) and not Path(p).resolve().is_relative_to(REPO)
                 and Path(p).resolve() not in (Path("/"), Path("/tmp"))}
    paths = _SYSTEM + [f"/etc/{name}" for name in _ETC] + sorted(prefixes) + [str(REPO / p) for p in _COURSE[role]]
    return [p for p in paths if os.path.exists(p)]


def _bwrap_arguments(role, limits):
    paths = readable_paths(role)
    # /tmp first, so the views bound after it show through; a view under /tmp (a repository cloned there) gets a
    # small tmpfs of its own around it, made read-only once it is bound, so no folder of the course is writable
    under_tmp = sorted({os.path.join("/tmp", Path(p).relative_to("/tmp").parts[0])
                        for p in paths if Path(p).is_relative_to("/tmp")})
    arguments = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
                 "--hostname", "sandbox", "--size", str(limits.disk_mb << 20), "--tmpfs", "/tmp", "--dir", WORKDIR]
    for anchor in under_tmp:
        arguments += ["--size", str(1 << 20), "--tmpfs", anchor]
    for path in paths:
        arguments += ["--ro-bind", path, path]
    for anchor in under_tmp:
        arguments += ["--remount-ro", anchor]
    return arguments + ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm",
                        "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORKDIR]


_NS_GET_PARENT = 0xB702
_NAMESPACES = ("mnt", "ipc", "uts", "net", "cgroup", "pid")  # joined between the box's two user namespaces


class Box:
    """bubblewrap running `command` in fresh namespaces until `close()`. Without a command it runs a placeholder
    that holds the namespaces open, for a process the zygote forks to `enter` (its descriptors: `namespaces()`)."""

    def __init__(self, role, limits, command=None, pass_fds=(), env=None):
        info, ready = os.pipe(), os.pipe()
        if command is None:
            command = ["/bin/sh", "-c", f"echo > /proc/self/fd/{ready[1]}; exec sleep infinity"]  # any fd number
        try:
            self.process = subprocess.Popen(
                [*_bwrap_arguments(role, limits), "--info-fd", str(info[1]), "--", *command],
                pass_fds=[info[1], ready[1], *pass_fds], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            raise SandboxError("bubblewrap is not installed (no `bwrap` on PATH)") from None
        finally:
            os.close(info[1])
            os.close(ready[1])
        self._info, self._ready = info[0], ready[0]

    def namespaces(self, timeout=30):
        """Descriptors of the box's namespaces, in the order `enter` joins them, once its placeholder runs."""
        readable, _, _ = select.select([self._ready], [], [], timeout)
        if not readable or not os.read(self._ready, 1):
            self.process.kill()
            said = self.process.stderr.read().decode(errors="replace").strip()
            self.close()
            raise SandboxError(f"bubblewrap could not make a box ({said or 'it said nothing'})")
        child = json.loads(os.read(self._info, 1 << 16))["child-pid"]  # written, whole, before the command runs
        user = os.open(f"/proc/{child}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        outer = fcntl.ioctl(user, _NS_GET_PARENT)  # the box's own user namespace; `user` is the one inside it
        inner = [os.open(f"/proc/{child}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in _NAMESPACES]
        return [outer, *inner, user, os.open(f"/proc/{child}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]

    def close(self):
        """The box ends: bubblewrap's init dies with it, and with that every process in the PID namespace."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process.stderr.close()
        for fd in (self._info, self._ready):
            try:
                os.close(fd)
            except OSError:
                pass
        self._info = self._ready = -1


@functools.lru_cache(maxsize=None)
def problem():
    """None if a box can be made on this machine, else why not (probed once per process)."""
    try:
        box = Box("calls", Limits())
        try:
            for fd in box.namespaces():
                os.close(fd)
        finally:
            box.close()
    except SandboxError as error:
        return str(error)
    except OSError as error:
        return f"bubblewrap made a box this process cannot join ({error})"
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def enter(descriptors, workdir=WORKDIR):
    """In a fork of the zygote: join the box whose namespaces are `descriptors` (Box.namespaces), then fork again,
    as a PID namespace takes only children. This process waits and ends as its child does; the child returns,
    inside the box, in `workdir`."""
    outer, *namespaces, user, root = descriptors
    for fd in (outer, *namespaces, user):
        if _libc.setns(fd, 0) < 0:
            raise OSError(ctypes.get_errno(), "setns into the box failed")
    os.fchdir(root)
    os.chroot(".")  # the box's root, as bubblewrap pivoted to it
    os.chdir(workdir)
    for fd in descriptors:
        os.close(fd)
    child = os.fork()
    if child == 0:
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):  # die of the same signal, so the grader hears how the student's process ended
        if os.WTERMSIG(status) not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.waitstatus_to_exitcode(status))


# ---------------------------------------------------------------- what a process puts itself under

def prepare_workdir(workdir):
    """HOME, TMPDIR, MPLCONFIGDIR inside `workdir`, and a sys.path entry that holds only course_lib (in a box,
    only the student's edition of it is there to find)."""
    workdir = Path(workdir)
    for sub in ("home", "tmp", "mpl", "path"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    link = workdir / "path" / "course_lib"
    if not link.exists():
        link.symlink_to(REPO / "course_lib")
    os.environ.update(HOME=str(workdir / "home"), TMPDIR=str(workdir / "tmp"), MPLCONFIGDIR=str(workdir / "mpl"),
                      PYTHONPATH=str(workdir / "path"), PYTHONNOUSERSITE="1")
    # the grader's settings, and JPY_PARENT_PID: ipykernel would watch for a parent the box cannot see, and quit;
    # NBGRADER_EXECUTION stays: nbgrader documents it for notebooks to read (grading.demo_steps: 06, 09 and 10 train
    # their demonstrations briefly while graded)
    for name in [k for k in os.environ if k.startswith(("JUPYTER_", "NBGRADER", "GRADER_", "JPY_"))
                 and k != "NBGRADER_EXECUTION"]:
        del os.environ[name]


def drop_capabilities():
    """None left, and none to gain: a process that joined a box holds every capability inside it."""
    for capability in range(64):
        _libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP; numbers this kernel lacks fail, harmlessly
    _libc.prctl(47, 4, 0, 0, 0)               # PR_CAP_AMBIENT_CLEAR_ALL
    header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()  # v3; all sets empty
    if _libc.capset(header, data) < 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def limit_resources(memory_mb, cpu_seconds, file_mb):
    for name, value in ((resource.RLIMIT_AS, memory_mb << 20), (resource.RLIMIT_CPU, cpu_seconds),
                        (resource.RLIMIT_FSIZE, file_mb << 20), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(name, (value, value))


# system-call numbers per architecture: (audit arch, memory no limit counts, sockets)
_CALLS = {"x86_64": (0xC000003E, {"memfd_create": 319, "memfd_secret": 447, "shmget": 29, "msgget": 68,
                                  "semget": 64},
                     {"socket": 41, "socketpair": 53, "bind": 49, "listen": 50, "accept": 43, "connect": 42,
                      "accept4": 288}),
          "aarch64": (0xC00000B7, {"memfd_create": 279, "memfd_secret": 447, "shmget": 194, "msgget": 186,
                                   "semget": 190},
                      {"socket": 198, "socketpair": 199, "bind": 200, "listen": 201, "accept": 202, "connect": 203,
                       "accept4": 242})}


def refuse_calls(sockets):
    """seccomp: from now on this process (and its children) cannot make memory outside its address space
    (memfd_create, System V IPC), nor, with `sockets`, make, accept or connect a socket."""
    if platform.machine() not in _CALLS:
        raise OSError(f"no seccomp filter for {platform.machine()}")
    arch, memory, socket_calls = _CALLS[platform.machine()]
    calls = list(memory.values()) + (list(socket_calls.values()) if sockets else [])

    class Instruction(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Instruction))]

    load, equal, at_least, answer = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, refuse, n = 0x7FFF0000, 0x00050000 | errno.EACCES, len(calls)
    program = [Instruction(load, 0, 0, 4), Instruction(equal, 1, 0, arch), Instruction(answer, 0, 0, refuse),
               Instruction(load, 0, 0, 0),
               Instruction(at_least, n + 1, 0, 0x40000000)]  # x32 numbers: refused, never a way around the list
    program += [Instruction(equal, n - i, 0, call) for i, call in enumerate(calls)]
    program += [Instruction(answer, 0, 0, allow), Instruction(answer, 0, 0, refuse)]
    filters = (Instruction * len(program))(*program)
    if _libc.prctl(38, 1, 0, 0, 0) < 0:  # PR_SET_NO_NEW_PRIVS, which seccomp needs without privileges
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if _libc.prctl(22, 2, ctypes.byref(Program(len(program), filters)), 0, 0) < 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def restrict(limits, calls=False):
    """Every limit this machine can give, on this process from now on; returns those it could not.

    calls: for the process running a test's calls, which also opens no socket.
    """
    skipped = []
    for name, protect in (("capabilities", drop_capabilities),
                          ("rlimits", lambda: limit_resources(limits.memory_mb, limits.cpu_seconds, limits.file_mb)),
                          ("seccomp", lambda: refuse_calls(sockets=calls))):
        try:
            protect()
        except (OSError, ValueError) as error:
            skipped.append(f"{name}: {error}")
    return skipped
