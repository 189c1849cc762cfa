"""Clients generated from the live /v1/openapi.json walk the demo flow against a real server.

openapi-python-client generates a Python package from the document a running `mentorflow
serve` publishes; examples/walk_flow.py walks the demo flow with it, and the tests below make
it meet a 409 (a stale tab) and a 422 (a bad answer) with typed fields only. openapi-typescript
generates TypeScript types from the same document; clients/ts/walk.ts is type-checked against
them (tsc, strict: a loose field fails to compile) and then run with node. The docs page at
/v1/docs serves Swagger UI from the installed package.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import re
import signal
import subprocess
import sys
import time
import types
import typing
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import free_port, service_missing

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MENTORFLOW = str(BIN / "mentorflow")
EXAMPLE = REPO / "examples" / "walk_flow.py"
PYTHON_CONFIG = REPO / "clients" / "python" / "config.yaml"
TS_DIR = REPO / "clients" / "ts"
TS_BIN = TS_DIR / "node_modules" / ".bin"
ORG, FLOW = "demo", "rafael-tats"
#: Each operationId of the document, as the generated Python client names its module.
OPERATION_MODULES = {
    "getPublishedFlow": "get_published_flow",
    "startSession": "start_session",
    "getSession": "get_session",
    "submitStep": "submit_step",
    "submitStepBatch": "submit_step_batch",
    "goBack": "go_back",
    "getSessionContext": "get_session_context",
    "getJob": "get_job",
    "downloadJobFile": "download_job_file",
}
STEP_TYPES = 12
# Generating, compiling and walking are bounded; each is well under these on a busy machine.
GENERATE_TIMEOUT = 120
WALK_TIMEOUT = 120


@dataclass
class LiveApi:
    base_url: str
    pk: str

    def openapi(self, folder: Path) -> Path:
        """Save the server's OpenAPI document in ``folder``; return its path."""
        path = folder / "openapi.json"
        with urllib.request.urlopen(f"{self.base_url}/v1/openapi.json", timeout=10) as response:
            path.write_bytes(response.read())
        return path


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """A real `mentorflow serve` (gunicorn) over a SQLite instance with the demo seeded."""
    instance = tmp_path_factory.mktemp("clients-instance")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MENTORFLOW_INSTANCE_PATH": str(instance),
        "MENTORFLOW_WEB_CONCURRENCY": "2",
    }
    for name in ("MENTORFLOW_DATABASE_URL", "MENTORFLOW_BROKER_URL"):
        env.pop(name, None)
    subprocess.run([MENTORFLOW, "db", "upgrade"], env=env, check=True, capture_output=True)
    demo = subprocess.run(
        [MENTORFLOW, "demo", "--base-url", base_url],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    pk = re.search(r"publishable key +(pk_\S+)", demo.stdout).group(1)
    log = (instance / "server.log").open("ab")
    process = subprocess.Popen(
        [MENTORFLOW, "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base_url}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("the server did not come up within 30 s") from None
                time.sleep(0.2)
        yield LiveApi(base_url, pk)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def python_client_path(live_api: LiveApi, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate the Python client from the live document; return the folder to import from."""
    folder = tmp_path_factory.mktemp("python-client")
    output = folder / "mentorflow-client"
    generated = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(live_api.openapi(folder)),
            "--config",
            str(PYTHON_CONFIG),
            "--output-path",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    # Anything the generator could not type it reports as a warning and leaves out or loose.
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout
    return output


@pytest.fixture(scope="module")
def python_client(python_client_path: Path) -> Iterator[types.ModuleType]:
    """The generated package, imported, with the example that walks a flow with it."""
    sys.path.insert(0, str(python_client_path))
    try:
        yield importlib.import_module("mentorflow_client")
    finally:
        sys.path.remove(str(python_client_path))
        for name in [name for name in sys.modules if name.startswith("mentorflow_client")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def walk_example(python_client: types.ModuleType) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("walk_flow_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_hints(models: types.ModuleType, cls: type) -> dict[str, object]:
    """Return a generated model's field annotations, resolved."""
    namespace = {**vars(sys.modules[cls.__module__]), **vars(models)}
    return typing.get_type_hints(cls, globalns=namespace)


def loose_parts(hint: object) -> list[object]:
    """Return the parts of an annotation that type nothing: Any, or a bare dict/object."""
    if hint is typing.Any or hint is object:
        return [hint]
    return [part for arg in typing.get_args(hint) for part in loose_parts(arg)]


def test_generated_python_client_names_each_operation_and_types_its_fields(python_client):
    api = importlib.import_module("mentorflow_client.api")
    modules = {
        name.rsplit(".", 1)[-1]
        for _, name, _ in pkgutil.walk_packages(api.__path__, "mentorflow_client.api.")
    }
    assert set(OPERATION_MODULES.values()) <= modules

    models = importlib.import_module("mentorflow_client.models")
    session = model_hints(models, models.Session)
    assert session["id"] is str
    assert session["version"] is int
    assert session["current_step_id"] == str | None
    assert model_hints(models, models.SessionCreated)["token"] is str
    step = model_hints(models, models.SessionState)["step"]
    variants = [arg for arg in typing.get_args(step) if arg is not type(None)]
    assert len(variants) == STEP_TYPES, step
    problem = model_hints(models, models.Problem)
    assert problem["status"] is int
    assert problem["type_"] is str
    assert "detail" in problem
    conflict = model_hints(models, models.SessionConflict)
    assert conflict["session"] is models.Session
    assert conflict["step"] == step

    walked = [models.Session, models.Progress, models.SessionState, models.SessionCreated]
    walked += [models.SessionConflict, models.Problem, models.StepSubmission, *variants]
    for cls in walked:
        for name, hint in model_hints(models, cls).items():
            if name != "additional_properties":
                assert not loose_parts(hint), f"{cls.__name__}.{name}: {hint}"

    submit_step = importlib.import_module(_operation(modules, "submit_step"))
    go_back = importlib.import_module(_operation(modules, "go_back"))
    start_session = importlib.import_module(_operation(modules, "start_session"))
    # Headers are arguments of the one call they belong to, never the client's.
    assert {"idempotency_key", "if_match"} <= set(
        inspect.signature(submit_step.sync_detailed).parameters
    )
    assert {"idempotency_key", "if_match"} <= set(
        inspect.signature(go_back.sync_detailed).parameters
    )
    assert "idempotency_key" in inspect.signature(start_session.sync_detailed).parameters


def _operation(modules: set[str], name: str) -> str:
    api = importlib.import_module("mentorflow_client.api")
    for _, full_name, _ in pkgutil.walk_packages(api.__path__, "mentorflow_client.api."):
        if full_name.endswith(f".{name}"):
            return full_name
    raise AssertionError(f"no module {name} in {sorted(modules)}")


def test_python_example_walks_the_demo_flow(live_api, python_client_path):
    walked = subprocess.run(
        [sys.executable, str(EXAMPLE), live_api.base_url, ORG, FLOW, live_api.pk],
        env={**os.environ, "PYTHONPATH": str(python_client_path)},
        capture_output=True,
        text=True,
        timeout=WALK_TIMEOUT,
    )
    assert walked.returncode == 0, walked.stderr
    lines = walked.stdout.strip().splitlines()
    steps = len(lines) - 2  # the flow's title, then one line a step, then the outcome
    assert lines[-1] == f"completed: {steps} of {steps} steps"


def test_python_client_rerenders_a_409_and_reads_a_422(live_api, python_client, walk_example):
    models = importlib.import_module("mentorflow_client.models")
    api = importlib.import_module("mentorflow_client.api")
    modules = {name for _, name, _ in pkgutil.walk_packages(api.__path__, "")}
    submit_step = importlib.import_module(_operation(modules, "submit_step"))
    get_session = importlib.import_module(_operation(modules, "get_session"))
    created = walk_example.start(live_api.base_url, ORG, FLOW, live_api.pk)
    first = models.SessionState(session=created.session, step=created.step)
    session_id = first.session.id

    def submit(client, step_id, answer, version):
        return submit_step.sync_detailed(
            org=ORG,
            session_id=session_id,
            client=client,
            body=models.StepSubmission(step_id=step_id, answer=answer),
            idempotency_key=str(uuid.uuid4()),
            if_match=f'"{version}"',
        )

    with python_client.AuthenticatedClient(
        base_url=live_api.base_url, token=created.token
    ) as client:
        # A bad answer: a typed problem naming the field, and nothing saved.
        invalid = submit(client, first.step.id, ["no-such-option"], first.session.version)
        assert invalid.status_code == 422
        assert isinstance(invalid.parsed, models.Problem)
        assert invalid.parsed.status == 422
        assert isinstance(invalid.parsed.detail, str)
        assert "answer" in invalid.parsed.errors.to_dict()
        unchanged = get_session.sync(org=ORG, session_id=session_id, client=client)
        assert unchanged.session.version == first.session.version
        assert unchanged.session.answers.to_dict() == {}

        second = walk_example.answer(client, ORG, first)
        assert second.step.id != first.step.id

        # Another tab still shows the first step: the 409 carries where the session is.
        stale = submit(
            client, first.step.id, walk_example.example_answer(first.step), first.session.version
        )
        assert stale.status_code == 409
        assert isinstance(stale.parsed, models.SessionConflict)
        assert stale.parsed.type_ == "urn:mentorflow:problem:step-conflict"
        assert stale.parsed.session.version == second.session.version
        assert stale.parsed.step.id == second.step.id
        # ...and the example re-renders from it instead of failing.
        assert walk_example.answer(client, ORG, first).step.id == second.step.id

        # The right step at a version this tab no longer has: a typed 412 problem.
        old = submit(
            client, second.step.id, walk_example.example_answer(second.step), first.session.version
        )
        assert old.status_code == 412
        assert isinstance(old.parsed, models.Problem)
        assert old.parsed.type_ == "urn:mentorflow:problem:version-mismatch"


def test_typescript_types_type_check_and_walk_the_demo_flow(live_api, tmp_path):
    if not (TS_BIN / "tsc").exists():
        service_missing("clients/ts/node_modules is missing (make install runs npm ci there)")
    types_file = tmp_path / "mentorflow.d.ts"
    generated = subprocess.run(
        [
            str(TS_BIN / "openapi-typescript"),
            str(live_api.openapi(tmp_path)),
            "-o",
            str(types_file),
        ],
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    out = tmp_path / "out"
    tsconfig = {
        "extends": str(TS_DIR / "tsconfig.json"),
        "compilerOptions": {"outDir": str(out), "paths": {"mentorflow-api": [str(types_file)]}},
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(tsconfig))
    compiled = subprocess.run(
        [str(TS_BIN / "tsc"), "-p", str(tmp_path / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
    )
    # The walk and the player's JSDoc-typed client, strict: an untyped field fails here.
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    (out / "package.json").write_text('{"type": "module"}')

    walked = subprocess.run(
        [
            "node",
            str(out / "clients" / "ts" / "walk.js"),
            live_api.base_url,
            ORG,
            FLOW,
            live_api.pk,
        ],
        capture_output=True,
        text=True,
        timeout=WALK_TIMEOUT,
    )
    assert walked.returncode == 0, walked.stderr
    summary = json.loads(walked.stdout.strip().splitlines()[-1])
    assert summary["invalid"] == {"status": 422, "fields": ["answer"]}
    assert summary["conflict"]["status"] == 409
    assert summary["conflict"]["type"] == "urn:mentorflow:problem:step-conflict"
    session = summary["session"]
    assert session["status"] == "completed"
    assert session["completed"] == session["total"] > 1


def test_docs_page_and_its_assets_come_from_this_server(client):
    page = client.get("/v1/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert "script-src 'self';" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert links
    assert all(link.startswith("/v1/") for link in links), links
    assert 'data-spec-url="/v1/openapi.json"' in html
    for link in links:
        with client.get(link) as asset:
            assert asset.status_code == 200, link
            assert len(asset.data) > 100
    assert client.get("/v1/docs/assets/swagger-initializer.js").status_code == 404
