"""One measured subprocess (the worker, the Quix contender): started in its own session with its
output in a log file, its CPU time and peak RSS read from /proc, stopped with SIGTERM. `spawn`
also starts the integration tests' workers (`tests/integration/harness.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from streams.config import REPO_ROOT


def spawn(
    command: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO_ROOT
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session (so a kill reaches its children) with its stdout and
    stderr in `log_path`; the bench's processes and the integration tests' workers start so."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@dataclass
class MeasuredProcess:
    """Base of the bench's process wrappers; `spawn` starts it, the rest reads or stops it."""

    proc: subprocess.Popen[bytes] | None = field(default=None, kw_only=True)
    log_path: Path | None = field(default=None, kw_only=True)
    name: str = field(default="process", kw_only=True)
    """What `check_alive` and the errors call it."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        """Start `command` from the checkout with its stdout and stderr in `log_path`."""
        self.log_path = log_path
        self.proc = spawn(command, env, log_path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"{self.name} exited {code}:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0

    def peak_rss_kib(self) -> int:
        """VmHWM: the resident set's high-water mark over the process's life."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the worker and Quix both commit on the way out), SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.to_thread(self.proc.wait, 10)
        return self.proc.returncode

    def tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
