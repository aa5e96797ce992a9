"""The student's own ipykernel: where every cell of the notebook that is not a test cell runs.

Role "student" of autograde.launch, started warm by the zygote or cold, either way in a box of its
own that holds the student's edition of course_lib (course_lib.edition), no reference: the sandbox's
limits first (autograde.sandbox), then ipykernel serving on the listening sockets the grader made for
it, then, those ready, a report of what the sandbox could not apply on the channel. The channel stays
open for `autograde/student_side.py`, which sends the student's functions on it when a test calls them;
the grader reads from it only what it asked for, bounded.
"""
import json
import os
import sys

import zmq

from autograde import launch, sandbox
from course_lib import edition

CHANNEL = None  # this kernel's end of the channel to the grader


def send_to_grader(data: bytes):
    launch.send(CHANNEL, data)


def serve_on(listeners, connection):
    """ipykernel binds each of its ZMQ sockets to an address; here each address is served on the listening
    socket the grader made for that port (ZMQ_USE_FD), so the kernel binds nothing the grader connects to."""
    by_address = {f"ipc://{connection['ip']}-{connection[port]}": fd
                  for port, fd in zip(launch.KERNEL_PORTS, listeners)}
    bind = zmq.Socket.bind

    def bind_to_listener(socket, address):
        if address in by_address:
            socket.setsockopt(zmq.USE_FD, by_address.pop(address))
        return bind(socket, address)

    zmq.Socket.bind = bind_to_listener


def run(settings, channel, listeners):
    global CHANNEL
    CHANNEL = channel
    edition.refuse_references(sys.modules, "the student's kernel")
    skipped = sandbox.restrict(settings.limits)
    import torch
    torch.set_num_threads(settings.threads)  # after the sandbox: joining a box needs one thread
    connection = dict(settings.connection, ip=os.path.join(settings.workdir, "kernel"))
    with open("kernel.json", "w") as file:
        json.dump(connection, file)
    serve_on(listeners, connection)
    from ipykernel.kernelapp import IPKernelApp
    app = IPKernelApp.instance()
    app.initialize(["-f", "kernel.json", "--HistoryManager.hist_file=:memory:", "--IPKernelApp.matplotlib=inline"])
    # its sockets are bound now: the grader connects on this word (a client that connects earlier and
    # hears no heartbeat for a second takes the kernel for dead)
    launch.send(channel, json.dumps({"skipped": skipped}).encode())
    app.start()
