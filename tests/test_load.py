"""Runtime load polling: parsers on the runtimes' own formats, HTTP sources against real loopback
servers (a canned-answer HTTP server, and llama-cpp-python's real ``llama_cpp.server``), and the
poller's schedule on a ManualClock.

The response texts below follow the formats the runtimes document and emit: llama.cpp's C++
server (``tools/server/README.md``: ``GET /slots``, ``GET /metrics``; HELP/TYPE/value lines as its
``handle_metrics`` writes them), vLLM's V1 ``/metrics`` (``docs/design/metrics.md``; every series
labelled ``model_name``, and ``engine`` since data parallelism) and Ollama's ``GET /api/ps``
(``docs/api.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hybridgate.clock import ManualClock
from hybridgate.config import load_config_text
from hybridgate.health.live import LiveHealth
from hybridgate.health.load import (
    RECHECK_ABSENT_S,
    LlamaCppServerLoad,
    LoadPoller,
    LoadReading,
    OllamaLoad,
    RuntimeLoad,
    VLLMLoad,
    parse_llamacpp_metrics,
    parse_llamacpp_slots,
    parse_ollama_ps,
    parse_vllm_metrics,
    scan_prometheus,
)
from hybridgate.health.predictor import prior
from hybridgate.health.snapshot import DeploymentState
from tests.support.processes import ManagedProcess, free_port

LLAMACPP_METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 4113
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 25.512
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 2210
# HELP llamacpp:tokens_predicted_seconds_total Predict process time
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total 47.03
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 2231
# HELP llamacpp:n_tokens_max Largest observed n_tokens.
# TYPE llamacpp:n_tokens_max counter
llamacpp:n_tokens_max 812
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 161.215
# HELP llamacpp:predicted_tokens_seconds Average generation throughput in tokens/s.
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds nan
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 4
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 7
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode gauge
llamacpp:n_busy_slots_per_decode 3.87
"""


def _slot(slot_id: int, processing: bool) -> dict[str, object]:
    return {
        "id": slot_id,
        "id_task": 135 if processing else -1,
        "n_ctx": 65536,
        "speculative": False,
        "is_processing": processing,
        "params": {"n_predict": -1, "seed": 4294967295, "temperature": 0.8, "top_k": 40, "stream": True},
        "next_token": {"has_next_token": True, "has_new_line": False, "n_remain": -1, "n_decoded": 136},
    }


LLAMACPP_SLOTS = orjson.dumps([_slot(i, i < 3) for i in range(4)])
LLAMACPP_SLOTS_OLD = orjson.dumps(
    [{"id": 0, "state": 1, "n_ctx": 2048}, {"id": 1, "state": 0, "n_ctx": 2048}]
)

_MODEL = 'model_name="meta-llama/Llama-3.1-8B-Instruct"'
VLLM_METRICS = f"""\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",{_MODEL}}} 8.0
vllm:num_requests_running{{engine="1",{_MODEL}}} 6.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",{_MODEL}}} 3.0
vllm:num_requests_waiting{{engine="1",{_MODEL}}} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",{_MODEL}}} 0.71
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{engine="0",{_MODEL}}} 27453.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{{engine="0",finished_reason="stop",{_MODEL}}} 1.0
vllm:request_success_total{{engine="0",finished_reason="length",{_MODEL}}} 131.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.001",{_MODEL}}} 0.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.005",{_MODEL}}} 0.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.5",{_MODEL}}} 118.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",{_MODEL}}} 132.0
vllm:time_to_first_token_seconds_count{{engine="0",{_MODEL}}} 132.0
vllm:time_to_first_token_seconds_sum{{engine="0",{_MODEL}}} 41.3
"""

OLLAMA_PS = orjson.dumps(
    {
        "models": [
            {
                "name": "mistral:latest",
                "model": "mistral:latest",
                "size": 5137025024,
                "digest": "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "7.2B",
                    "quantization_level": "Q4_0",
                },
                "expires_at": "2024-06-04T14:38:31.83753-07:00",
                "size_vram": 5137025024,
            }
        ]
    }
)


# ---------------------------------------------------------------------------- parsers


def test_llamacpp_metrics_give_the_running_and_deferred_requests() -> None:
    assert parse_llamacpp_metrics(LLAMACPP_METRICS) == LoadReading(running=4, waiting=7, loaded=True)


def test_llamacpp_slots_give_the_slots_and_the_busy_ones() -> None:
    assert parse_llamacpp_slots(LLAMACPP_SLOTS) == LoadReading(running=3, slots=4, loaded=True)
    assert parse_llamacpp_slots(LLAMACPP_SLOTS_OLD) == LoadReading(running=1, slots=2, loaded=True)


def test_vllm_metrics_are_summed_over_engines() -> None:
    assert parse_vllm_metrics(VLLM_METRICS) == LoadReading(running=14, waiting=3, loaded=True)


def test_ollama_ps_says_whether_the_model_is_warm() -> None:
    assert parse_ollama_ps(OLLAMA_PS, "mistral") == LoadReading(loaded=True)
    assert parse_ollama_ps(OLLAMA_PS, "mistral:latest").loaded is True
    cold = parse_ollama_ps(OLLAMA_PS, "llama3.2:1b")
    assert (cold.loaded, cold.detail) == (False, "llama3.2:1b not loaded (cold)")
    assert parse_ollama_ps(b'{"models": []}', "mistral").loaded is False


@pytest.mark.parametrize(
    "text",
    ["", "# only comments\n", 'vllm:kv_cache_usage_perc{engine="0"} 0.5\n'],
)
def test_metrics_without_the_gauges_are_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="gauges"):
        parse_vllm_metrics(text)


@pytest.mark.parametrize(
    ("body", "error"),
    [(b"not json", "expected"), (b'{"slots": []}', "did not answer a list"), (b"[1, 2]", "not an object")],
)
def test_malformed_slots_are_an_error(body: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):  # orjson's decode error is a ValueError too
        parse_llamacpp_slots(body)


def test_the_scan_matches_whole_names_and_skips_nan() -> None:
    text = (
        "x:waiting_total 5\n"  # a longer name that starts with a wanted one
        'x:waiting{reason="capacity",note="a } in a label"} 2\n'
        "x:waiting 1 1700000000000\n"  # with a timestamp
        "x:idle NaN\n"
    )
    assert scan_prometheus(text, ("x:waiting", "x:idle")) == {"x:waiting": 3.0}


@pytest.mark.parametrize("text", [LLAMACPP_METRICS, VLLM_METRICS])
def test_the_scan_agrees_with_the_reference_parser(text: str) -> None:
    reference: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.value == sample.value:  # not NaN
                reference[sample.name] = reference.get(sample.name, 0.0) + sample.value
    # Gauges and counters as the text names them (the reference parser adds _total to a counter
    # named without it, as llama.cpp's n_tokens_max is).
    names = [n for n in reference if not n.endswith(("_bucket", "_count", "_sum")) and f"\n{n} " in text]
    assert scan_prometheus(text, names) == {n: reference[n] for n in names}


# ---------------------------------------------------------------------------- HTTP sources


class CannedServer:
    """A real HTTP/1.1 server on loopback answering GETs from a table: path -> (status, body)."""

    def __init__(self, routes: Mapping[str, tuple[int, bytes]]) -> None:
        self.routes = dict(routes)
        self.hits: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                path = request_line.split(" ")[1]
                self.hits[path] += 1
                self.headers.append(
                    {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
                )
                status, body = self.routes.get(path, (404, b'{"detail":"Not Found"}'))
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s"
                    % (status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CannedServer]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def source(
    cls: type[RuntimeLoad], url: str, clock: ManualClock, model: str = ""
) -> AsyncIterator[RuntimeLoad]:
    load = cls(url, clock, model=model)
    try:
        yield load
    finally:
        await load.aclose()


async def test_llamacpp_server_source_merges_slots_and_metrics() -> None:
    routes = {"/slots": (200, LLAMACPP_SLOTS), "/metrics": (200, LLAMACPP_METRICS.encode())}
    async with (
        CannedServer(routes).running() as server,
        source(LlamaCppServerLoad, server.url, ManualClock()) as s,
    ):
        assert await s.read() == LoadReading(running=4, waiting=7, slots=4, loaded=True)


async def test_absent_endpoints_are_remembered_and_asked_again_later() -> None:
    clock = ManualClock()
    server = CannedServer({"/slots": (200, LLAMACPP_SLOTS)})
    async with server.running(), source(LlamaCppServerLoad, server.url, clock) as s:
        for _ in range(3):
            assert await s.read() == LoadReading(running=3, slots=4, loaded=True)
        assert server.hits == {"/slots": 3, "/metrics": 1}, "/metrics 404: not asked again"
        clock.advance(RECHECK_ABSENT_S)
        server.routes["/metrics"] = (200, LLAMACPP_METRICS.encode())  # restarted with --metrics
        assert (await s.read()).waiting == 7
        assert server.hits["/metrics"] == 2


async def test_vllm_and_ollama_sources() -> None:
    routes = {"/metrics": (200, VLLM_METRICS.encode()), "/api/ps": (200, OLLAMA_PS)}
    async with CannedServer(routes).running() as server:
        async with source(VLLMLoad, server.url, ManualClock()) as vllm:
            assert await vllm.read() == LoadReading(running=14, waiting=3, loaded=True)
        async with source(OllamaLoad, server.url, ManualClock(), model="phi3") as ollama:
            reading = await ollama.read()
            assert (reading.ok, reading.loaded) == (True, False)


async def test_a_failed_poll_is_a_reading_that_says_why() -> None:
    server = CannedServer({"/metrics": (500, b"boom")})
    async with server.running(), source(VLLMLoad, server.url, ManualClock()) as s:
        reading = await s.read()
    assert (reading.ok, reading.detail) == (False, "ValueError: /metrics answered 500")
    async with source(VLLMLoad, f"http://127.0.0.1:{free_port()}", ManualClock()) as s:
        refused = await s.read()
    assert not refused.ok
    assert "Connect" in refused.detail or "refused" in refused.detail.lower()


@pytest.mark.slow
async def test_llama_cpp_python_server_reports_no_load(llama_server: tuple[ManagedProcess, str]) -> None:
    """llama-cpp-python's server (unlike the C++ one) has neither /slots nor /metrics (nor /health):
    the source says so, without failing, and keeps to what the server does serve."""
    _, base_url = llama_server
    async with source(LlamaCppServerLoad, base_url, ManualClock()) as s:
        reading = await s.read()
        assert reading == LoadReading(detail="the runtime reports no load (/slots and /metrics absent)")
        status, body = await s.get("/v1/models")
        assert status == 200
        assert orjson.loads(body)["data"][0]["object"] == "model"


# ---------------------------------------------------------------------------- the poller


class ScriptedLoad(RuntimeLoad):
    """A source whose readings come from a script (the HTTP path is tested above)."""

    kind = "scripted"

    def __init__(self, clock: ManualClock, readings: Iterable[LoadReading]) -> None:
        super().__init__("http://127.0.0.1:9", clock)
        self.readings = list(readings)
        self.reads = 0

    async def _read(self) -> LoadReading:
        self.reads += 1
        return self.readings[min(self.reads, len(self.readings)) - 1]


async def test_the_poller_records_each_reading_on_its_interval() -> None:
    clock = ManualClock()
    health = LiveHealth({"vllm": prior("local", concurrency=4)}, clock=clock)
    health.set_state("vllm", DeploymentState.READY)
    busy = LoadReading(running=4, waiting=6, loaded=True)
    load = ScriptedLoad(
        clock, [busy, LoadReading(ok=False, detail="refused"), LoadReading(running=1, waiting=0)]
    )
    task = asyncio.ensure_future(LoadPoller({"vllm": (load, 1.0)}, health, clock).run())
    try:
        for _ in range(20):
            await asyncio.sleep(0)
        assert load.reads == 1
        entry = health.snapshot().of("vllm")
        assert entry.queue_depth == 6
        assert entry.loaded is True
        assert entry.perf is not None
        assert entry.perf.queued == 6
        clock.advance(1.0)
        for _ in range(20):
            await asyncio.sleep(0)
        assert load.reads == 2
        assert health.snapshot().of("vllm").queue_depth == 0, "a failed poll's numbers are dropped"
        assert health.describe("vllm")["runtime"] == LoadReading(ok=False, detail="refused").to_dict()
        clock.advance(1.0)
        for _ in range(20):
            await asyncio.sleep(0)
        assert load.reads == 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_sources_come_from_the_config() -> None:
    server = CannedServer({"/metrics": (200, VLLM_METRICS.encode()), "/api/ps": (200, OLLAMA_PS)})
    text = f"""
version: 1
deployments:
  vllm:
    type: openai
    base_url: {server.url}/v1
    api_key: ${{KEY}}
    model: meta-llama/Llama-3.1-8B-Instruct
    placement: local
    load: {{kind: vllm, interval_s: 0.5}}
  ollama:
    type: openai
    base_url: http://127.0.0.1:1/v1
    model: mistral
    placement: local
    load: {{kind: ollama, url: "{server.url}"}}
  plain:
    type: openai
    model: gpt-4o-mini
models:
  chat:
    deployments: [vllm, ollama, plain]
"""
    config = load_config_text(text, env={"KEY": "sk-local-key-123"}).config
    clock = ManualClock()
    health = LiveHealth({name: prior("local") for name in config.deployments}, clock=clock)
    poller = LoadPoller.from_config(config, health, clock)
    assert sorted(poller.sources) == ["ollama", "vllm"]
    vllm, interval = poller.sources["vllm"]
    assert (type(vllm), vllm.base_url, interval) == (VLLMLoad, server.url, 0.5)
    ollama, _ = poller.sources["ollama"]
    assert (type(ollama), ollama.base_url, ollama.model) == (OllamaLoad, server.url, "mistral")
    async with server.running():
        try:
            assert (await poller.poll("vllm")).waiting == 3
            assert server.headers[-1]["authorization"] == "Bearer sk-local-key-123"
            assert (await poller.poll("ollama")).loaded is True
            assert "authorization" not in server.headers[-1]
        finally:
            for source, _ in poller.sources.values():
                await source.aclose()
    assert health.snapshot().of("vllm").queue_depth == 3
