"""A `reciprocam serve` subprocess for tests: loopback, free ports, started and stopped by PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

READY_WITHIN = 180  # seconds: imports, split and verification on a loaded 2-core machine
LISTENING = re.compile(r"^listening: REST http://(\S+):(\d+)(?:, gRPC (\S+):(\d+))?")


class Server:
    """``reciprocam serve ARGS`` on 127.0.0.1 with ports chosen by the system; ``lines`` collects its stdout."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        command = [sys.executable, "-m", "reciprocam_onnx.cli", "serve", *args]
        command += ["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=Path(__file__).resolve().parents[1],
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._ready = threading.Event()
        self.http = self.grpc = ""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_errors, daemon=True).start()
        if not self._ready.wait(READY_WITHIN) or self.process.poll() is not None:
            self.kill()
            raise RuntimeError(f"the server did not get ready: {self.lines} {self.errors}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            found = LISTENING.match(line)
            if found:
                self.http = f"{found[1]}:{found[2]}"
                self.grpc = f"{found[3]}:{found[4]}" if found[3] else ""
            if line.startswith("ready:"):
                self._ready.set()
        self._ready.set()  # it ended

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors.append(line.rstrip("\n"))

    @property
    def url(self) -> str:
        return f"http://{self.http}"

    def peak_rss_mb(self) -> float:
        """The server's peak resident memory so far (VmHWM), in MB."""
        return _status_kb(self.process.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return _status_kb(self.process.pid, "VmRSS") / 1024

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)
