"""What nbclient starts as the grader kernel when the batch worker has a zygote: this process asks
the zygote to fork a warm grader kernel on the given connection file, then stands in for it until
it exits (passing on SIGINT and SIGTERM, and its exit status). Standard library only, run with
`python -I -S`, so it starts in milliseconds. If the zygote cannot serve, it becomes the grader
kernel the slow way.

    python -I -S kernel_launcher.py ZYGOTE_SOCKET CONNECTION_FILE
"""
import json
import os
import signal
import socket
import sys

zygote, connection = sys.argv[1], os.path.abspath(sys.argv[2])
try:
    client = socket.socket(socket.AF_UNIX)
    client.connect(zygote)
    client.sendall(json.dumps({"role": "grader", "connection_file": connection, "env": dict(os.environ),
                               "cwd": os.getcwd(), "launcher": os.getpid()}).encode() + b"\n")
    replies = client.makefile()
    pid = json.loads(replies.readline())["pid"]
except (OSError, ValueError, KeyError):
    os.execv(sys.executable, [sys.executable, "-m", "autograde.grader_kernel", "-f", connection])
for number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(number, lambda received, frame: os.kill(pid, received))
line = replies.readline()
status = json.loads(line)["status"] if line else 1
sys.exit(status if status >= 0 else 128 - status)
