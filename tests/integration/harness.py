"""A real ComfyUI server for the integration tests: provision, start, talk to it over HTTP/websocket, stop.

Used by ``conftest.py``; also handy by hand::

    python -m tests.integration.harness   # starts a server on the tiny models until Ctrl-C
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from ..expected import MODEL_FOLDERS

REPO = Path(__file__).resolve().parents[2]
COMFY_DIR = Path(os.environ.get("COMFYUI_DIR", REPO / ".comfyui"))
ARTIFACTS = REPO / "test-artifacts"
PACK_NAME = "ComfyUI-InfiniteTalk"
# custom-node folder of the test server only: lets 0.3.75's Load CLIP / Load CLIP Vision take tiny files
TEST_PLUGINS = REPO / "tests" / "integration" / "comfy_plugins"


def ensure_comfyui() -> Path:
    """Provision ComfyUI into .comfyui/ (reused when already there) and link the pack into it."""
    if not (COMFY_DIR / "main.py").is_file() or not (COMFY_DIR / "custom_nodes" / PACK_NAME).exists():
        env = dict(os.environ, PYTHON=sys.executable, COMFYUI_DIR=str(COMFY_DIR))
        subprocess.run(["bash", str(REPO / "scripts" / "provision_comfyui.sh")], check=True, env=env)
    return COMFY_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_model_paths(path: Path, tiny: Path) -> Path:
    """extra_model_paths.yaml: the tiny ComfyUI tree (models/) and official tree (weights/)."""
    lines = ["infinitetalk_tiny:", f"  base_path: {tiny / 'models'}"]
    lines += [f"  {f}: {f}" for f in MODEL_FOLDERS]
    lines += ["infinitetalk_tiny_official:", f"  infinitetalk_weights: {tiny / 'weights'}"]
    lines += ["infinitetalk_test_plugins:", f"  custom_nodes: {TEST_PLUGINS}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class ComfyServer:
    """``python main.py --cpu`` in a subprocess with its own input/output/temp folders."""

    def __init__(
        self,
        workdir: Path,
        tiny: Path,
        port: int | None = None,
        model_paths: str | None = None,
        name: str = "",
        front_end: str | None = None,
    ):
        """``model_paths``: the text of an extra_model_paths.yaml (default: the tiny trees of ``tiny``).
        ``front_end``: a front end's static folder (``--front-end-root``; default COMFYUI_FRONT_END_ROOT, else
        the one ComfyUI pins)."""
        self.workdir = Path(workdir)
        self.tiny = Path(tiny).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.input_dir = self.workdir / "input"
        self.output_dir = self.workdir / "output"
        self.temp_dir = self.workdir / "temp"
        self.user_dir = self.workdir / "user"  # the pack's resumable run folders live here
        self.model_paths = model_paths
        self.front_end = front_end or os.environ.get("COMFYUI_FRONT_END_ROOT")
        self.log_path = ARTIFACTS / (f"comfyui-server-{name}.log" if name else "comfyui-server.log")
        self.client_id = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> ComfyServer:
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir, ARTIFACTS):
            d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "make_example_inputs.py"), str(self.input_dir)],
            check=True,
            capture_output=True,
        )
        yaml = self.workdir / "extra_model_paths.yaml"
        if self.model_paths is None:
            write_model_paths(yaml, self.tiny)
        else:
            yaml.write_text(self.model_paths)
        cmd = [
            sys.executable,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--extra-model-paths-config",
            str(yaml),
            "--disable-auto-launch",
            "--input-directory",
            str(self.input_dir),
            "--output-directory",
            str(self.output_dir),
            "--temp-directory",
            str(self.temp_dir),
            "--user-directory",
            str(self.user_dir),
            "--preview-method",
            "latent2rgb",
        ]
        # another front end, e.g. an unpacked newer comfyui-frontend-package (see docs/COMPAT.md)
        if self.front_end:
            cmd += ["--front-end-root", self.front_end]
        self._log = open(self.log_path, "a" if self.restarts else "w")  # a restart keeps the first log
        self.restarts += 1
        self.proc = subprocess.Popen(
            cmd, cwd=COMFY_DIR, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        self._log.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole server process group at once (no cleanup runs: a crash, a power cut)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- HTTP --------------------------------------------------------------------------------------
    def get(self, route: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + route, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def post(self, route: str, payload: dict | None = None, timeout: float = 30):
        data = json.dumps(payload or {}).encode()
        req = urllib.request.Request(
            self.url + route, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as err:
            raise PromptError(err.code, err.read().decode(errors="replace")) from err
        return json.loads(body) if body else None

    def queue(self, prompt: dict) -> str:
        """POST /prompt; returns the prompt id (raises PromptError with ComfyUI's validation message)."""
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600, on_message=None) -> dict:
        """Follow the run over the websocket until it ends; returns its /history entry."""
        import websocket

        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}", timeout=1
        )
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                entry = self.history(prompt_id)
                if entry is not None:  # history is written when the prompt has finished (or failed)
                    if on_message is not None:
                        _drain(ws, on_message)  # the run's last messages (interrupted, executed) too
                    return entry
                try:
                    raw = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if isinstance(raw, str):
                    msg = json.loads(raw)
                    if on_message is not None:
                        on_message(msg)
        finally:
            ws.close()
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s; see {self.log_path}")

    def history(self, prompt_id: str) -> dict | None:
        return (self.get(f"/history/{prompt_id}") or {}).get(prompt_id)

    def run(self, prompt: dict, timeout: float = 600, on_message=None) -> dict:
        return self.wait(self.queue(prompt), timeout, on_message)


def _drain(ws, on_message) -> None:
    """Hand the messages already sent to ``on_message``, until the socket stays quiet for its timeout (1 s)."""
    import websocket

    while True:
        try:
            raw = ws.recv()
        except (websocket.WebSocketTimeoutException, websocket.WebSocketConnectionClosedException):
            return
        if isinstance(raw, str):
            on_message(json.loads(raw))


class PromptError(RuntimeError):
    def __init__(self, status: int, body: str):
        super().__init__(f"POST /prompt answered {status}: {body[:2000]}")
        self.status, self.body = status, body


def output_files(entry: dict, root: Path) -> list[Path]:
    """Files listed in a /history entry's ui outputs (images/videos/audio), as paths under ``root``."""
    paths = []
    for node_out in entry.get("outputs", {}).values():
        for items in node_out.values():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and "filename" in item:
                    paths.append(root / item.get("subfolder", "") / item["filename"])
    return paths


def main() -> int:  # pragma: no cover - manual use
    tiny = Path(os.environ.get("INFINITETALK_TINY_DIR", REPO / ".cache" / "tiny"))
    ensure_comfyui()
    work = REPO / ".cache" / "manual-server"
    shutil.rmtree(work, ignore_errors=True)
    server = ComfyServer(work, tiny, port=int(os.environ.get("PORT", "8188"))).start()
    print(f"ComfyUI on {server.url} (Ctrl-C to stop)")
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
