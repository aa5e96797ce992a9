"""autograde.zygote: students' kernels forked warm, each still sandboxed, and never able to ask for another."""
import os
import subprocess
import sys
import time

import pytest
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from autograde import sandbox
from autograde.zygote import ForkedKernel

pytestmark = pytest.mark.slow
REQUEST_FROM_INSIDE = '''
import json, socket, subprocess, sys
def ask(path):
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    client.sendall(json.dumps({"connection_file": "k.json", "workdir": "/", "limits": {}}).encode() + b"\\n")
    return "granted" if client.recv(100) else "refused"
print("kernel asks:", ask(PATH))
child = subprocess.run([sys.executable, "-c", f"import socket, json; c = socket.socket(socket.AF_UNIX); c.connect({PATH!r}); "
                        "c.sendall(b'{}\\\\n'); print('granted' if c.recv(100) else 'refused')"], capture_output=True, text=True)
print("its child asks:", child.stdout.strip() or child.stderr.strip()[-200:])
try:
    open(SECRET).read(1)
    print("secret read")
except OSError:
    print("secret refused")
'''


@pytest.fixture
def zygote(tmp_path):
    path = str(tmp_path / "zygote.socket")
    process = subprocess.Popen([sys.executable, "-m", "autograde.zygote", path], cwd=sandbox.REPO,
                               env=dict(os.environ, MPLCONFIGDIR=str(tmp_path)))
    deadline = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield path
    process.kill()
    process.wait()


def test_a_forked_kernel_runs_sandboxed_and_cannot_ask_the_zygote_for_another(zygote, tmp_path):
    workdir = tmp_path / "student"
    workdir.mkdir()
    connection = workdir / "kernel.json"
    write_connection_file(str(connection), transport="ipc", ip=str(workdir / "ipc"))
    kernel = ForkedKernel(zygote, {"connection_file": str(connection), "workdir": str(workdir),
                                   "limits": {"memory_mb": 4096}})
    client = BlockingKernelClient(connection_file=str(connection))
    client.load_connection_file()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    printed = []
    secret = sandbox.REPO / "solutions" / "01_mle_and_nll" / "01_mle_and_nll.ipynb"
    code = f"PATH = {zygote!r}\nSECRET = {str(secret)!r}\n" + REQUEST_FROM_INSIDE
    reply = client.execute_interactive(code, timeout=60, output_hook=lambda m: printed.append(
        m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    text = "".join(printed)
    assert reply["content"]["status"] == "ok", text
    assert "kernel asks: refused" in text and "its child asks: refused" in text, text
    if sandbox.available()["landlock"] is None:
        assert "secret refused" in text, text
    assert kernel.poll() is None
    os.killpg(kernel.pid, 9)
    assert kernel.wait() == -9
    client.stop_channels()


def test_a_request_from_outside_the_sandbox_is_served(zygote, tmp_path):
    kernel = ForkedKernel(zygote, {"connection_file": str(tmp_path / "no-such-dir" / "k.json"),
                                   "workdir": str(tmp_path / "w"), "limits": {}})
    assert kernel.pid > 0
    assert kernel.wait() != 0  # the kernel could not start (no connection file there) and its status is reported
