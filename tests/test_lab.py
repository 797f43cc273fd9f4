"""`make lab` works: JupyterLab from this environment opens a chapter and runs gptmini in its kernel.

Starts the Jupyter server on 127.0.0.1 (a free port, a token, no browser, rooted at chapters/, as
`make lab` is), opens a chapter through the REST API, starts a python3 kernel session for it, runs a
cell over the kernel's websocket, and checks that the kernel is this environment's python, that
`gptmini` and `ipywidgets` import there, and that Lab loads the widgets extension. The server is
stopped whatever happens. Every wait has a deadline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
CHAPTER = "01_language_modeling.ipynb"
WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"
START_TIMEOUT = 60  # seconds for the server to answer /api/status
RUN_TIMEOUT = 60  # seconds for the kernel to start and run the cell

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("jupyterlab") is None,
        reason="JupyterLab is not installed in this environment (it is pinned in requirements.txt)",
    ),
]

CELL = """\
import json, sys
import gptmini, ipywidgets
print(json.dumps({"executable": sys.executable, "prefix": sys.prefix,
                  "gptmini": gptmini.__file__, "ipywidgets": ipywidgets.__version__}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, port: int, token: str):
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            kind = resp.headers.get("Content-Type", "")
        return json.loads(raw) if raw and "json" in kind else raw.decode()


@pytest.fixture
def server(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    # Keep the reader's own Jupyter settings out, and the runtime files and Lab workspaces out of the repo.
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_PREFER_ENV_PATH="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={CHAPTERS}",
        "--LabApp.extension_manager=readonly",  # the extension manager would search PyPI: localhost only
    ]
    if os.name == "posix" and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root
    log = open(tmp_path / "server.log", "w+b")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    srv = _Server(port, token)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                srv.request("GET", "/api/status", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the server did not answer within {START_TIMEOUT} s:\n{_tail(log)}"
                    ) from None
                time.sleep(0.25)
        yield srv
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _tail(log, n: int = 4000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-n:]


def _run_cell(srv: _Server, kernel_id: str, code: str) -> tuple[str, list[dict]]:
    """Send one execute_request over the kernel's websocket; return its stdout and any error outputs."""
    import websocket  # websocket-client, a dependency of jupyter_server

    url = f"ws://127.0.0.1:{srv.base.rsplit(':', 1)[1]}/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(url, header=[f"Authorization: token {srv.token}"], timeout=RUN_TIMEOUT)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": uuid.uuid4().hex,
                        "date": "",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        stdout, errors, replied, idle = [], [], False, False
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (replied and idle):
            ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(ws.recv())  # raises WebSocketTimeoutException past the deadline
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                stdout.append(content["text"])
            elif kind == "error":
                errors.append(content)
            elif kind == "execute_reply":
                replied = True
                if content["status"] != "ok":
                    errors.append(content)
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        return "".join(stdout), errors
    finally:
        ws.close()


def test_lab_runs_a_chapter_with_gptmini_in_this_environment(server):
    import gptmini

    # The chapter opens through the contents API, as Lab opens it.
    nb = server.request("GET", f"/api/contents/{CHAPTER}")
    assert nb["type"] == "notebook" and nb["content"]["cells"], nb.get("name")

    session = server.request(
        "POST",
        "/api/sessions",
        {"path": CHAPTER, "type": "notebook", "name": CHAPTER, "kernel": {"name": "python3"}},
    )
    try:
        out, errors = _run_cell(server, session["kernel"]["id"], CELL)
        assert not errors, errors
        seen = json.loads(out.strip().splitlines()[-1])
        # The kernel is this environment's python (in `make test`, .venv's), not some other one ...
        assert Path(seen["prefix"]).resolve() == Path(sys.prefix).resolve(), seen
        assert os.path.abspath(seen["executable"]) == os.path.abspath(sys.executable), seen
        # ... and it imports the same gptmini as the tests do, and ipywidgets 8.
        assert Path(seen["gptmini"]).resolve() == Path(gptmini.__file__).resolve(), seen
        assert seen["ipywidgets"].startswith("8."), seen
    finally:
        server.request("DELETE", f"/api/sessions/{session['id']}")
        assert session["id"] not in {s["id"] for s in server.request("GET", "/api/sessions")}

    # Lab's page loads the widgets extension, and the server serves its code.
    page = server.request("GET", "/lab")
    start = page.index('id="jupyter-config-data"')
    config = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    extensions = {e["name"]: e for e in config["federated_extensions"]}
    assert WIDGETS_EXTENSION in extensions, sorted(extensions)
    entry = extensions[WIDGETS_EXTENSION]["load"]
    code = server.request("GET", f"/lab/extensions/{WIDGETS_EXTENSION}/{entry}")
    assert "jupyter-widgets" in code
