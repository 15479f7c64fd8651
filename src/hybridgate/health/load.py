"""Runtime load polling: read a local runtime's own account of its queue.

The gateway knows only the requests *it* sent. A runtime shared with other clients, or one that
batches (vLLM, llama.cpp's server with ``--parallel``), knows better; for ``openai``-type
deployments configured with ``load:`` this polls it every ``interval_s``:

- ``llamacpp-server``: ``GET /slots`` (on by default; ``--no-slots`` turns it off) for the slots
  and how many are busy, and ``GET /metrics`` (with ``--metrics``) for
  ``llamacpp:requests_processing`` and ``llamacpp:requests_deferred`` (the queue);
- ``vllm``: ``GET /metrics`` for ``vllm:num_requests_running`` and ``vllm:num_requests_waiting``
  (summed over engines);
- ``ollama``: ``GET /api/ps`` for whether the model is loaded (warm) or not (cold); no queue.

An endpoint that answers 404/405/501 is remembered as absent and asked again only every
:data:`RECHECK_ABSENT_S` (llama-cpp-python's ``llama_cpp.server`` has neither ``/slots`` nor
``/metrics``). Readings go to :meth:`LiveHealth.record_load
<hybridgate.health.live.LiveHealth.record_load>`; a failed poll is recorded as such and its
numbers are not used.

Prometheus text is scanned for the few gauges wanted rather than fully parsed: vLLM's
``/metrics`` is ~1,000 lines of histograms, which a full parse (``prometheus_client.parser``)
takes ~25 ms of event-loop time to read, against ~0.4 ms for the scan.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass

import orjson

from hybridgate.backends.transport import HTTPTransport, ProtocolError
from hybridgate.clock import Clock
from hybridgate.config.schema import GatewayConfig, OpenAIDeployment
from hybridgate.health.live import LiveHealth

RECHECK_ABSENT_S = 60.0
_ABSENT = frozenset({404, 405, 501})
LLAMACPP_PROCESSING = "llamacpp:requests_processing"
LLAMACPP_DEFERRED = "llamacpp:requests_deferred"
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"


@dataclass(frozen=True, slots=True)
class LoadReading:
    """A runtime's own account of its load; None where it does not say."""

    ok: bool = True  # False: the poll failed (``detail`` says why) and the numbers are unknown
    running: int | None = None  # requests it is processing
    waiting: int | None = None  # requests queued inside it, waiting for a slot
    slots: int | None = None  # requests it can process at once
    loaded: bool | None = None  # the model is resident in memory (warm)
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------- parsers (pure)


def scan_prometheus(text: str, names: Collection[str]) -> dict[str, float]:
    """The value of each of ``names`` in Prometheus text format, summed over its label sets.

    Names absent from the text are absent from the result; NaN samples are skipped.
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        for name in names:
            if not line.startswith(name):
                continue
            rest = line[len(name) :]
            if rest[:1] == "{":
                rest = rest[rest.rindex("}") + 1 :]
            elif rest[:1] not in (" ", "\t"):
                continue  # a longer name that starts with this one
            fields = rest.split()
            if not fields:
                raise ValueError(f"no value for {name!r}")
            value = float(fields[0])
            if not math.isnan(value):
                out[name] = out.get(name, 0.0) + value
    return out


def parse_llamacpp_slots(body: bytes) -> LoadReading:
    """llama.cpp server's ``GET /slots``: a list of slots, each ``is_processing`` (older servers:
    ``state`` 0 idle, 1 processing)."""
    slots = orjson.loads(body)
    if not isinstance(slots, list):
        raise ValueError("/slots did not answer a list")
    busy = 0
    for slot in slots:
        if not isinstance(slot, dict):
            raise ValueError("/slots: a slot is not an object")
        processing = slot.get("is_processing")
        busy += bool(processing) if processing is not None else slot.get("state", 0) != 0
    return LoadReading(running=busy, slots=len(slots) or None, loaded=True)


def parse_llamacpp_metrics(text: str) -> LoadReading:
    """llama.cpp server's ``GET /metrics`` (``--metrics``): requests processing and deferred."""
    found = scan_prometheus(text, (LLAMACPP_PROCESSING, LLAMACPP_DEFERRED))
    if not found:
        raise ValueError("no llamacpp:requests_* gauges in /metrics")
    return LoadReading(
        running=_count(found.get(LLAMACPP_PROCESSING)),
        waiting=_count(found.get(LLAMACPP_DEFERRED)),
        loaded=True,
    )


def parse_vllm_metrics(text: str) -> LoadReading:
    """vLLM's ``GET /metrics``: requests running and waiting (summed over engines and models)."""
    found = scan_prometheus(text, (VLLM_RUNNING, VLLM_WAITING))
    if not found:
        raise ValueError("no vllm:num_requests_* gauges in /metrics")
    return LoadReading(
        running=_count(found.get(VLLM_RUNNING)), waiting=_count(found.get(VLLM_WAITING)), loaded=True
    )


def parse_ollama_ps(body: bytes, model: str) -> LoadReading:
    """Ollama's ``GET /api/ps``: the models loaded in memory. ``model`` without a tag means ``:latest``."""
    data = orjson.loads(body)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ValueError("/api/ps did not answer {'models': [...]}")
    wanted = _ollama_name(model)
    names = {
        _ollama_name(str(m.get(key, ""))) for m in models if isinstance(m, dict) for key in ("name", "model")
    }
    return LoadReading(loaded=wanted in names, detail="" if wanted in names else f"{model} not loaded (cold)")


def _ollama_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _count(value: float | None) -> int | None:
    return None if value is None else max(0, round(value))


def _merge(first: LoadReading, second: LoadReading) -> LoadReading:
    """Two readings of one runtime (/slots and /metrics): the second's numbers where it has them."""
    return LoadReading(
        running=second.running if second.running is not None else first.running,
        waiting=second.waiting if second.waiting is not None else first.waiting,
        slots=second.slots if second.slots is not None else first.slots,
        loaded=second.loaded if second.loaded is not None else first.loaded,
    )


# --------------------------------------------------------------------------- sources (HTTP)


class RuntimeLoad:
    """Reads one runtime's load over HTTP; :meth:`read` never raises."""

    kind = ""

    def __init__(
        self,
        base_url: str,
        clock: Clock,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 2.0,
        model: str = "",
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self._clock = clock
        self._headers = {"Accept": "*/*", **(headers or {})}
        self._transport = HTTPTransport(base_url, max_connections=2, connect_timeout=timeout_s)
        self._absent: dict[str, float] = {}  # path -> when it was found absent (monotonic)

    async def read(self) -> LoadReading:
        try:
            return await self._read()
        except (OSError, ProtocolError, ValueError) as exc:  # refused, reset, DNS, timeout; bad body
            return LoadReading(ok=False, detail=f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def _read(self) -> LoadReading:
        raise NotImplementedError

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path``: (status, body). An absent endpoint is (404, b"") without asking, for a while."""
        found_absent = self._absent.get(path)
        if found_absent is not None and self._clock.monotonic() - found_absent < RECHECK_ABSENT_S:
            return 404, b""
        until = asyncio.get_running_loop().time() + self.timeout_s
        head = self._transport.request_head("GET", path, self._headers)
        response = await self._transport.request(head, b"", until=until)
        try:
            body = await response.read(until)
        finally:
            response.release()
        if response.status in _ABSENT:
            self._absent[path] = self._clock.monotonic()
        else:
            self._absent.pop(path, None)
        return response.status, body

    async def aclose(self) -> None:
        await self._transport.aclose()


class LlamaCppServerLoad(RuntimeLoad):
    """llama.cpp's C++ server: ``/slots`` for the slot count, ``/metrics`` for the deferred queue."""

    kind = "llamacpp-server"

    async def _read(self) -> LoadReading:
        readings: list[LoadReading] = []
        missing: list[str] = []
        status, body = await self.get("/slots")
        if status == 200:
            readings.append(parse_llamacpp_slots(body))
        elif status in _ABSENT:
            missing.append("/slots")
        else:
            raise ValueError(f"/slots answered {status}")
        status, body = await self.get("/metrics")
        if status == 200:
            readings.append(parse_llamacpp_metrics(body.decode()))
        elif status in _ABSENT:
            missing.append("/metrics")
        else:
            raise ValueError(f"/metrics answered {status}")
        if not readings:
            return LoadReading(detail=f"the runtime reports no load ({' and '.join(missing)} absent)")
        return readings[0] if len(readings) == 1 else _merge(readings[0], readings[1])


class VLLMLoad(RuntimeLoad):
    kind = "vllm"

    async def _read(self) -> LoadReading:
        status, body = await self.get("/metrics")
        if status != 200:
            raise ValueError(f"/metrics answered {status}")
        return parse_vllm_metrics(body.decode())


class OllamaLoad(RuntimeLoad):
    kind = "ollama"

    async def _read(self) -> LoadReading:
        status, body = await self.get("/api/ps")
        if status != 200:
            raise ValueError(f"/api/ps answered {status}")
        return parse_ollama_ps(body, self.model)


SOURCES: Mapping[str, type[RuntimeLoad]] = {
    LlamaCppServerLoad.kind: LlamaCppServerLoad,
    VLLMLoad.kind: VLLMLoad,
    OllamaLoad.kind: OllamaLoad,
}


# --------------------------------------------------------------------------- the poller


class LoadPoller:
    """Polls every configured runtime on its own interval and records what it says; ``run()``
    until cancelled (then it closes its connections)."""

    def __init__(
        self, sources: Mapping[str, tuple[RuntimeLoad, float]], health: LiveHealth, clock: Clock
    ) -> None:
        self.sources = dict(sources)
        self.health = health
        self._clock = clock

    @classmethod
    def from_config(cls, config: GatewayConfig, health: LiveHealth, clock: Clock) -> LoadPoller:
        """A source for each deployment with ``load:``; its URL defaults to the deployment's base
        URL without ``/v1``."""
        sources: dict[str, tuple[RuntimeLoad, float]] = {}
        for name, dep in config.deployments.items():
            load = dep.load
            if load is None:
                continue
            openai = dep if isinstance(dep, OpenAIDeployment) else None
            url = load.url or (openai.base_url.removesuffix("/v1") if openai is not None else None)
            if url is None:
                continue  # no base URL to start from (not an openai-type deployment): load.url is needed
            key = openai.api_key if openai is not None else None
            headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
            model = openai.model if openai is not None else ""
            sources[name] = (SOURCES[load.kind](url, clock, headers=headers, model=model), load.interval_s)
        return cls(sources, health, clock)

    async def poll(self, name: str) -> LoadReading:
        """Read one runtime now and record the reading."""
        source, _ = self.sources[name]
        reading = await source.read()
        self.health.record_load(name, reading)
        return reading

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for name in self.sources:
                    group.create_task(self._loop(name), name=f"load-poll-{name}")
        finally:
            for source, _ in self.sources.values():
                await source.aclose()

    async def _loop(self, name: str) -> None:
        _, interval = self.sources[name]
        while True:
            started = self._clock.monotonic()
            await self.poll(name)
            await self._clock.sleep(interval - (self._clock.monotonic() - started))
