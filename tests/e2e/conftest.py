"""End-to-end tests of `hearth serve` through the official `openai` and `ollama` Python SDKs.

One server runs for the whole session: a temporary store (HEARTH_MODELS) with the test model
added as `smollm2`, served on a free port of 127.0.0.1 with `-t 2 --parallel 2`.

Environment:
  HEARTH_BIN          the hearth binary (default: <repo>/target/release/hearth)
  HEARTH_FIXTURE_BIN  the fixture server (default: <repo>/target/release/hearth-fixture;
                      built by `cargo build --release -p hearth-testkit --bin hearth-fixture`)
  HEARTH_TEST_MODEL   the SmolLM2 GGUF (default: what scripts/fetch-model.sh prints)
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from e2e_support import MODEL, REPO, REQUEST_TIMEOUT, write_tiny_gguf

STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 30.0

# Settings of the environment that would change how the server behaves.
_SERVER_ENV_DROP = (
    "HEARTH_HOST",
    "HEARTH_NUM_PARALLEL",
    "HEARTH_MAX_QUEUE",
    "HEARTH_MAX_LOADED_MODELS",
    "HEARTH_MEMORY_BUDGET",
    "HEARTH_KEEP_ALIVE",
    "HEARTH_API_KEY",
    "HEARTH_ORIGINS",
    "HEARTH_CONTEXT_LENGTH",
    "HEARTH_LOG",
    "OLLAMA_HOST",
)

# Requests to 127.0.0.1 never go through a proxy.
for _var in ("NO_PROXY", "no_proxy"):
    _have = os.environ.get(_var, "")
    os.environ[_var] = ",".join(x for x in (_have, "127.0.0.1", "localhost") if x)


def _binary(env_var: str, default: Path, build_hint: str) -> Path:
    path = Path(os.environ.get(env_var) or default)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is not an executable; build it with `{build_hint}` or set {env_var}", pytrace=False)
    return path


def _test_model() -> Path:
    given = os.environ.get("HEARTH_TEST_MODEL")
    if given:
        path = Path(given)
    else:
        out = subprocess.run(
            [str(REPO / "scripts/fetch-model.sh")], check=True, capture_output=True, text=True, timeout=900
        )
        path = Path(out.stdout.strip().splitlines()[-1])
    if not path.is_file():
        pytest.fail(f"the test model {path} does not exist", pytrace=False)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain `text` (runners name their model file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@dataclass
class Server:
    url: str
    store: Path
    env: dict
    bin: Path
    log: Path
    process: subprocess.Popen


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> bool:
    """True once GET / answers 200; False if the server exited (e.g. the port was taken)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=SHUTDOWN_TIMEOUT)
    pytest.fail(f"hearth serve did not answer GET / within {STARTUP_TIMEOUT:.0f} s; its log:\n{_tail(log)}", pytrace=False)


@pytest.fixture(scope="session")
def model_path() -> Path:
    return _test_model()


@pytest.fixture(scope="session")
def server(tmp_path_factory, model_path) -> Server:
    hearth = _binary("HEARTH_BIN", REPO / "target/release/hearth", "cargo build --release -p hearth")
    home = tmp_path_factory.mktemp("hearth")
    store = home / "models"
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROP}
    env["HEARTH_MODELS"] = str(store)
    # HEARTH_E2E_LOG: the servers' HEARTH_LOG (their logs are in each test's temporary folder).
    if os.environ.get("HEARTH_E2E_LOG"):
        env["HEARTH_LOG"] = os.environ["HEARTH_E2E_LOG"]
    added = subprocess.run(
        [str(hearth), "add", str(model_path), "--name", MODEL, "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert added.returncode == 0, f"hearth add failed ({added.returncode}):\n{added.stdout}{added.stderr}"

    log = home / "serve.log"
    for _attempt in range(3):
        url = f"http://127.0.0.1:{_free_port()}"
        host = url.removeprefix("http://")
        with open(log, "ab") as log_file:
            proc = subprocess.Popen(
                [str(hearth), "serve", "--host", host, "-t", "2", "--parallel", "2"],
                env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            )
        if _wait_until_up(proc, url, log):
            break
    else:
        pytest.fail(f"hearth serve exited before answering (code {proc.returncode}); its log:\n{_tail(log)}", pytrace=False)

    yield Server(url=url, store=store, env=env, bin=hearth, log=log, process=proc)

    _stop(proc, log, "hearth serve")
    # Its runners (children that hold the models) are gone too.
    deadline = time.monotonic() + 10
    while (left := _processes_mentioning(str(store))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"runner processes outlived the server: {left}"


@pytest.fixture(scope="session")
def url(server) -> str:
    return server.url


@pytest.fixture(scope="session")
def oai(url):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=REQUEST_TIMEOUT, max_retries=0)


@pytest.fixture(scope="session")
def oll(url):
    import ollama

    return ollama.Client(host=url, timeout=REQUEST_TIMEOUT)


@pytest.fixture(scope="session")
def http(url):
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as c:
        yield c


@dataclass
class Registry:
    reference: str  # HOST:PORT/library/tiny:1, as hearth-fixture printed it
    process: subprocess.Popen


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """hearth-fixture serving the Ollama model `library/tiny:1` on 127.0.0.1."""
    fixture_bin = _binary(
        "HEARTH_FIXTURE_BIN",
        REPO / "target/release/hearth-fixture",
        "cargo build --release -p hearth-testkit --bin hearth-fixture",
    )
    model = tmp_path_factory.mktemp("registry") / "tiny.gguf"
    write_tiny_gguf(model)
    proc = subprocess.Popen(
        [str(fixture_bin), "--file", str(model), "--ollama", "library/tiny:1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue = queue.Queue()

    def read_stdout():
        for out in proc.stdout:
            lines.put(out.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read_stdout, daemon=True).start()
    seen, reference, line = [], None, None
    deadline = time.monotonic() + 30
    try:
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None or line == "ready":
                break
            seen.append(line)
            key, _, value = line.partition(" ")
            if key == "ollama":
                reference = value.split()[0]
    except queue.Empty:
        pass
    if reference is None or line != "ready":
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail(f"hearth-fixture did not announce an Ollama model and `ready`; it printed {seen}", pytrace=False)
    yield Registry(reference=reference, process=proc)
    proc.terminate()
    proc.wait(timeout=10)


def _serve(hearth: Path, env: dict, log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`hearth serve ARGS` on a free port of 127.0.0.1 (three tries: a port can be taken
    between finding it and binding it); the process and its URL once GET / answers."""
    for _attempt in range(3):
        url = f"http://127.0.0.1:{_free_port()}"
        with open(log, "ab") as log_file:
            proc = subprocess.Popen(
                [str(hearth), "serve", "--host", url.removeprefix("http://"), "-t", "2", "--parallel", "2", *args],
                env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            )
        if _wait_until_up(proc, url, log):
            return proc, url
    pytest.fail(f"hearth serve exited before answering (code {proc.returncode}); its log:\n{_tail(log)}", pytrace=False)


@contextlib.contextmanager
def serving(server: Server, log: Path, *args: str) -> Iterator[str]:
    """Another `hearth serve ARGS` on the session server's store, like it (-t 2 --parallel 2),
    for tests that need a server of their own; its URL. It must exit cleanly on SIGTERM."""
    proc, url = _serve(server.bin, server.env, log, *args)
    try:
        yield url
    finally:
        _stop(proc, log, " ".join(["hearth serve", *args]))


def _stop(proc: subprocess.Popen, log: Path, what: str) -> None:
    """SIGTERM, then it must exit cleanly within SHUTDOWN_TIMEOUT (else it is killed and the test fails)."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=SHUTDOWN_TIMEOUT)
        pytest.fail(f"{what} did not exit within {SHUTDOWN_TIMEOUT:.0f} s of SIGTERM; its log:\n{_tail(log)}", pytrace=False)
    assert code == 0, f"{what} exited with {code} after SIGTERM; its log:\n{_tail(log)}"


@pytest.fixture(scope="session")
def serve_another(server, tmp_path_factory):
    """`serve_another(*ARGS)`: a context manager for another server (see `serving`), its log
    in a temporary folder of its own."""

    def start(*args: str):
        return serving(server, tmp_path_factory.mktemp("serve") / "serve.log", *args)

    return start


@pytest.fixture(scope="module")
def keyed_url(serve_another) -> str:
    """A second server on the session's store that requires API_KEY (`--api-key`)."""
    from e2e_support import API_KEY

    with serve_another("--api-key", API_KEY) as url:
        yield url


@pytest.fixture(scope="session")
def anth(url):
    import anthropic

    return anthropic.Anthropic(base_url=url, api_key="x", timeout=REQUEST_TIMEOUT, max_retries=0)
