"""Run several commands as one: all start together, and one Ctrl-C (or one exit) stops all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from mentorflow.admin.player import DEMO_ORG
from mentorflow.app import create_app
from mentorflow.cli.demo import DEMO_EMAIL, DEMO_FLOW
from mentorflow.delivery.sinks import sink_types
from mentorflow.flows.document import load_document

#: Seconds between two looks at /healthz while the web server is not answering yet.
READY_POLL_SECONDS = 0.5


#: The platform credential whose absence makes a sink write JSON lines instead of sending.
def run_together(
    commands: dict[str, list[str]],
    *,
    grace: float = 10.0,
    quiet_stdout: Collection[str] = (),
    ready: Callable[[], bool] | None = None,
    announce: str = "",
) -> int:
    """Start every command; when one exits or a signal arrives, stop the rest; return a code.

    The standard output of the commands named in ``quiet_stdout`` is dropped (their standard
    error, where logging, warnings and tracebacks go, is kept). ``ready`` is polled until it
    returns true; then ``announce`` is printed, once.
    """
    processes = {
        name: subprocess.Popen(argv, stdout=subprocess.DEVNULL if name in quiet_stdout else None)
        for name, argv in commands.items()
    }
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    next_look = time.monotonic() if ready is not None else None
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(
                    f"mentorflow up: {name} exited with {process.returncode}; stopping the rest",
                    file=sys.stderr,
                )
                exit_code = process.returncode or 1
                stopping = True
        if not stopping and next_look is not None and time.monotonic() >= next_look:
            if ready is not None and ready():
                print(announce, flush=True)
                next_look = None
            else:
                next_look = time.monotonic() + READY_POLL_SECONDS
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


def run_up(command: list[str], host: str, port: int, *, verbose: bool = False) -> int:
    """Run ``command serve``, ``command worker`` and ``command beat`` until Ctrl-C.

    Once the web server answers, print where to go. Unless ``verbose``, the worker and the
    beat log warnings and errors only, and their banners are dropped.
    """
    config = create_app().config
    loglevel = [] if verbose else ["--loglevel", "WARNING"]
    base_url = f"http://{_connect_host(host)}:{port}"
    return run_together(
        {
            "web": [*command, "serve", "--host", host, "--port", str(port)],
            "worker": [*command, "worker", *loglevel],
            "beat": [*command, "beat", *loglevel],
        },
        quiet_stdout=() if verbose else ("worker", "beat"),
        ready=lambda: answers(f"{base_url}/healthz"),
        announce=where_to_go(base_url, config, verbose=verbose),
    )


def answers(url: str) -> bool:
    """Return whether an HTTP server answers ``url`` (with any status)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def where_to_go(base_url: str, config: Mapping[str, Any], *, verbose: bool = False) -> str:
    """Return the block printed once the web server answers: URLs, demo login, sink files."""
    instance = Path(config["INSTANCE_PATH"])
    demo = _demo_secrets(instance / "demo.json")
    login = f"   ({DEMO_EMAIL} / {demo['staff_password']})" if demo.get("staff_password") else ""
    lines = [
        "",
        f"mentorflow is up on {base_url}; Ctrl-C stops the web server, worker and beat",
        f"  console   {base_url}/admin/{login}",
    ]
    if demo:
        lines.append(f"  player    {base_url}/play/{DEMO_ORG}/{_demo_flow_slug()}")
        lines.append(f"  API       {base_url}/v1/orgs/{DEMO_ORG}")
    else:
        lines.append(f"  API       {base_url}/v1")
    lines.append(f"  API docs  {base_url}/v1/openapi.json")
    # Sinks without a platform key write JSON lines (an org's own key is not known here).
    files = [
        name
        for name in config["SINKS"]
        if name in sink_types and not config.get(sink_types[name].key_setting)
    ]
    for number, name in enumerate(files):
        label = "sinks" if number == 0 else ""
        lines.append(f"  {label:<9} {name:<8} {_shown(instance / f'outbox-{name}.jsonl')}")
    if files:
        lines.append("            (no credentials: one JSON line per event they would send)")
    if not verbose:
        lines.append("  logs      worker and beat: warnings and errors only (--verbose: all)")
    return "\n".join([*lines, ""])


def _connect_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _demo_secrets(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _demo_flow_slug() -> str:
    return str(load_document(DEMO_FLOW.read_bytes())["slug"])


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
