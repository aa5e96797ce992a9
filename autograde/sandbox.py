"""The limits a student's process puts itself under, first thing (autograde.launch runs it), in this order:

- a private working directory: HOME, TMPDIR and matplotlib's cache all point into it;
- resource limits (setrlimit): address space, CPU seconds, size of a written file, no core dumps;
- no network: a new user and network namespace (only a loopback that is down);
- a filesystem allow-list (Landlock): read the system, Python and `course_lib`; write only the
  working directory. `solutions/`, the gradebook and other students' submissions are out of reach.

The process that runs a test's calls to the student's functions (`autograde.call_server`) gets the
same, minus `course_lib` (the course's reference implementations), plus no sockets at all
(seccomp): it keeps the one connection to the grader it was given, and can open no other.

The kernel talks to the grader over Unix sockets in the working directory and over the channel it
was started with (autograde.launch), which cross the network namespace. Every protection is tried
on its own: one the machine cannot give (an old kernel, user namespaces disabled) is reported by
`available()` and skipped, the rest still apply.
"""
import ctypes
import errno
import os
import platform
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Limits:
    memory_mb: int = 4096          # address space of each student process (kernel, call server)
    cpu_seconds: int = 900         # CPU time for the whole notebook
    cell_seconds: float = 120.0    # wall time per cell (enforced by the grader kernel)
    notebook_seconds: float = 600.0  # wall time for all the student's cells together (ditto)
    file_mb: int = 256             # largest file the kernel may write
    output_kb: int = 256           # output a cell may send back before it is cut (ditto)


# ---------------------------------------------------------------- protections, each on its own

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_READ = 1 | 4 | 8                      # execute, read file, read directory
_WRITE = (1 << 15) - 1 & ~_READ        # write, remove, make files/dirs/sockets/links, refer, truncate
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000


def _landlock_abi():
    abi = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, 1)
    return abi if abi > 0 else 0


def _no_new_privileges():
    """PR_SET_NO_NEW_PRIVS: required to restrict this process (Landlock, seccomp) without privileges."""
    if _libc.prctl(38, 1, 0, 0, 0) < 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def restrict_files(readable, writable):
    """Landlock: from now on this process (and its children) may only read `readable` and write `writable`."""
    abi = _landlock_abi()
    if abi < 3:
        raise OSError("Landlock ABI >= 3 is needed (Linux >= 6.2)")
    handled = _READ | _WRITE
    net = 1 | 2 if abi >= 4 else 0     # bind and connect TCP: refused as well
    scoped = 1 | 2 if abi >= 6 else 0  # no signals to (and no abstract sockets of) processes outside the sandbox
    attr = (ctypes.c_uint64 * 3)(handled, net, scoped)
    size = 24 if scoped else 16 if net else 8
    ruleset = _libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    for paths, access in ((readable, _READ), (writable, _READ | _WRITE)):
        for path in paths:
            if not os.path.exists(path):
                continue
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            rights = access if os.path.isdir(path) else access & (1 | 2 | 4 | (1 << 14))  # file-only rights
            rule = PathBeneath(rights, fd)
            if _libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0) < 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            os.close(fd)
    _no_new_privileges()
    if _libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)


def cut_network():
    """A new user namespace (mapping our own uid) and a new, empty network namespace."""
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) < 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER | CLONE_NEWNET) failed")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


# socket, socketpair, bind, listen, accept, connect, accept4 on each architecture's system-call table
_SOCKET_CALLS = {"x86_64": (0xC000003E, (41, 53, 49, 50, 43, 42, 288)),
                 "aarch64": (0xC00000B7, (198, 199, 200, 201, 202, 203, 242))}


def block_sockets():
    """seccomp: from now on this process (and its children) can make, accept or connect no socket."""
    if platform.machine() not in _SOCKET_CALLS:
        raise OSError(f"no seccomp filter for {platform.machine()}")
    arch, calls = _SOCKET_CALLS[platform.machine()]

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
    _no_new_privileges()
    if _libc.prctl(22, 2, ctypes.byref(Program(len(program), filters)), 0, 0) < 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def limit_resources(memory_mb, cpu_seconds, file_mb):
    for name, value in ((resource.RLIMIT_AS, memory_mb << 20), (resource.RLIMIT_CPU, cpu_seconds),
                        (resource.RLIMIT_FSIZE, file_mb << 20), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(name, (value, value))


def readable_paths(course_lib=True):
    """What a student's kernel needs to read: the system, this Python and its packages, course_lib."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    prefixes |= {p for p in sys.path if p and os.path.isdir(p) and not Path(p).resolve().is_relative_to(REPO)}
    system = ["/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/sys", "/dev/urandom", "/dev/random",
              "/dev/zero", "/dev/shm", "/opt"]
    return sorted(prefixes) + system + ([str(REPO / "course_lib")] if course_lib else [])


def available():
    """{protection: None if it works here, else the reason it does not} — probed in a child process."""
    import subprocess
    found = {}
    for name, code in (("landlock", "restrict_files([], [])"), ("network", "cut_network()"),
                       ("rlimits", "limit_resources(4096, 60, 16)"), ("seccomp", "block_sockets()")):
        done = subprocess.run([sys.executable, "-c", f"from autograde.sandbox import *; {code}"],
                              capture_output=True, text=True, cwd=REPO)
        found[name] = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["failed"])[-1]
    return found


# ---------------------------------------------------------------- a sandboxed process

def prepare_workdir(workdir):
    """HOME, TMPDIR, MPLCONFIGDIR inside `workdir`, and a sys.path entry that holds only course_lib."""
    workdir = Path(workdir)
    for sub in ("home", "tmp", "mpl", "path"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    link = workdir / "path" / "course_lib"
    if not link.exists():
        link.symlink_to(REPO / "course_lib")
    os.environ.update(HOME=str(workdir / "home"), TMPDIR=str(workdir / "tmp"), MPLCONFIGDIR=str(workdir / "mpl"),
                      PYTHONPATH=str(workdir / "path"), PYTHONNOUSERSITE="1")
    for secret in [k for k in os.environ if k.startswith(("JUPYTER_", "NBGRADER", "GRADER_"))]:
        del os.environ[secret]


def apply(workdir, memory_mb, cpu_seconds, file_mb, calls=False):
    """Every protection this machine can give, to this process from now on; returns those it could not.

    calls: for the process running a test's calls: no course_lib, no sockets.
    """
    skipped = []
    protections = [("network", cut_network),
                   ("landlock", lambda: restrict_files(readable_paths(course_lib=not calls), [str(workdir), "/dev/null"])),
                   ("rlimits", lambda: limit_resources(memory_mb, cpu_seconds, file_mb))]
    for name, protect in protections + ([("seccomp", block_sockets)] if calls else []):
        try:
            protect()
        except (OSError, ValueError) as error:
            skipped.append(f"{name}: {error}")
    return skipped

