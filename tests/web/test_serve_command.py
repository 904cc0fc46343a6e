"""`vram-ml serve` as a user starts it: a real process on 127.0.0.1 that answers the page and the
API; and the other commands never load the web stack."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends nothing), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_serve_answers_on_loopback():
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "vram_ml.cli", "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "vram-ml serve did not answer in 60 s"
                time.sleep(0.3)
        assert b"/static/app.js" in page
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/predict",
            data=json.dumps({"spec": {"model": "Qwen/Qwen2.5-0.5B"}}).encode(),
            headers={"content-type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert answer["peak_vram_bytes"] > 0
        address = _non_loopback_address()
        if address is not None:  # bound to loopback only: this machine's other address is closed
            with socket.socket() as outside:
                outside.settimeout(5)
                assert outside.connect_ex((address, port)) != 0
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_predict_does_not_load_the_web_stack():
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from vram_ml.cli import app\n"
            "r = CliRunner().invoke(app, ['predict', '--model', 'Qwen/Qwen2.5-7B', '--json'])\n"
            "assert r.exit_code == 0, r.output\n"
            "web = ('fastapi', 'uvicorn', 'starlette', 'torch')\n"
            "heavy = [m for m in web if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
