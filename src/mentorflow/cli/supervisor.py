"""Run several commands as one: all start together, and one Ctrl-C (or one exit) stops all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def run_together(commands: dict[str, list[str]], *, grace: float = 10.0) -> int:
    """Start every command; when one exits or a signal arrives, stop the rest; return a code."""
    processes = {name: subprocess.Popen(argv) for name, argv in commands.items()}
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(
                    f"mentorflow up: {name} exited with {process.returncode}; stopping the rest",
                    file=sys.stderr,
                )
                exit_code = process.returncode or 1
                stopping = True
        time.sleep(0.2)
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    return exit_code
