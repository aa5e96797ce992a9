"""The student's own ipykernel: where every cell of the notebook that is not a test cell runs.

Role "student" of autograde.launch, started warm by the zygote or cold, either way in a fresh
working directory: the sandbox first (autograde.sandbox), then ipykernel on the connection file the
grader wrote, then, its sockets bound, a report of what the sandbox could not apply on the channel.
The channel stays open for `autograde/student_side.py`, which sends the student's functions on it
when a test calls them; the grader reads from it only what it asked for, bounded in size.
"""
import json

from autograde import launch, sandbox

CHANNEL = None  # this kernel's end of the channel to the grader


def send_to_grader(data: bytes):
    launch.send(CHANNEL, data)


def run(settings, channel):
    global CHANNEL
    CHANNEL = channel
    limits = settings.limits
    skipped = sandbox.apply(settings.workdir, limits.memory_mb, limits.cpu_seconds, limits.file_mb)
    import torch
    torch.set_num_threads(settings.threads)  # after the sandbox: a new user namespace needs one thread
    from ipykernel.kernelapp import IPKernelApp
    app = IPKernelApp.instance()
    app.initialize(["-f", settings.connection_file, "--HistoryManager.hist_file=:memory:",
                    "--IPKernelApp.matplotlib=inline"])
    # its sockets are bound now: the grader connects on this word (a client that connects earlier and
    # hears no heartbeat for a second takes the kernel for dead)
    launch.send(channel, json.dumps({"skipped": skipped}).encode())
    app.start()
