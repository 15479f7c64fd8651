"""The live dashboard in a real headless Chromium, against a real gateway with traffic flowing.

The gateway serves a local llama.cpp deployment and two SANDBOX clouds, one of which fails every
request (its breaker opens). The official openai SDK drives traffic from threads while the page
is open; the test then stops the traffic, waits for a scrape the page took afterwards, scrapes
/metrics itself and checks that every number the page shows is the one /metrics says, computing
the latency quantiles and burn rates with its own implementation of histogram_quantile. The page's
network requests are recorded: none may leave the gateway's origin.

Chromium is Debian's (`make sysdeps` installs it); Playwright drives it with
``executable_path`` and never downloads a browser.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.processes import ManagedProcess, eventually, start_gateway, start_sandbox

CHROMIUM = Path("/usr/bin/chromium")
KEY = "dashboard-client-key"
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
BUDGETS = {
    "interactive": {"p95_ms": 1500, "p99_ms": 4000, "ttft_ms": 800},
    "batch": {"p95_ms": 20000, "p99_ms": 40000, "ttft_ms": 10000},
    "idle": {"p95_ms": 1000, "p99_ms": 2000, "ttft_ms": 500},
}
PLACEMENT = {"local": "local", "cloud": "cloud", "broken": "cloud", "cut": "cloud"}
MEMORY_OUTCOMES = {"cache_hit", "cache_stale", "idempotent_replay", "memory"}


def _classes() -> str:
    placement = {"interactive": "local-first", "batch": "cloud-first", "idle": "local-first"}
    return "".join(
        f"  {name}:\n    placement: {placement[name]}\n"
        f"    latency: {{p95_ms: {b['p95_ms']}, p99_ms: {b['p99_ms']}, ttft_ms: {b['ttft_ms']}}}\n"
        for name, b in BUDGETS.items()
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[dict[str, Any]]:
    procs: list[ManagedProcess] = []
    try:
        cloud_proc, cloud_url = start_sandbox("test-fast", seed=21)
        procs.append(cloud_proc)
        broken_proc, broken_url = start_sandbox("test-fast", seed=22)
        procs.append(broken_proc)
        # Every request to "broken" fails: its breaker opens and stays open (cloud deployments
        # are not probed by default, and the open period outlasts the test).
        httpx.post(f"{broken_url}/sandbox/faults", json=[{"kind": "server_error", "status": 503}])
        # Streams of "cut" (same sandbox as "cloud", another model name) break after one token
        # and have nowhere to continue: each is a failed request the page must count.
        httpx.post(
            f"{cloud_url}/sandbox/faults",
            json=[{"kind": "stream_cut", "after_tokens": 1, "model": "sandbox-cut"}],
        )
        config = tmp_path_factory.mktemp("dashboard") / "gateway.yaml"
        config.write_text(
            f"""
version: 1
server:
  auth:
    api_keys: [{KEY}]
classes:
{_classes()}default_class: interactive
resilience:
  retry: {{retry_budget_min: 1000}}
deployments:
  local:
    type: llamacpp
    model_path: {models_dir / "tiny.gguf"}
    context_window: 2048
    n_threads: 1
    max_queue: 8
    probe: {{enabled: false}}  # a probe in flight would move in_flight between two scrapes
  cloud:
    type: openai
    base_url: {cloud_url}/v1
    api_key: {UPSTREAM_KEY}
    model: sandbox-cloud
    region: us
    price: {{input_per_mtok: 3000, output_per_mtok: 15000}}
  broken:
    type: openai
    base_url: {broken_url}/v1
    model: sandbox-broken
    region: us
    breaker: {{consecutive_failures: 2, open_s: 600, max_open_s: 600}}
  cut:
    type: openai
    base_url: {cloud_url}/v1
    model: sandbox-cut
    region: us
    breaker: {{consecutive_failures: 100000, min_requests: 100000}}
models:
  chat: {{deployments: [local, cloud]}}
  fragile: {{deployments: [broken, cloud]}}
  cutting: {{deployments: [cut]}}
"""
        )
        gateway, url = start_gateway(config)
        procs.append(gateway)
        yield {"url": url, "procs": procs}
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is needed: run `make sysdeps` (as root)"
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield b
        finally:
            b.close()


# ---------------------------------------------------------------- traffic


@dataclass
class Traffic:
    """Requests from threads through the official SDK, until stopped (bounded in count and time)."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    cut: int = 0  # streams that ended with an error event, as they should
    failures: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for model, cls in (("chat", "interactive"), ("chat", "batch"), ("fragile", "batch")):
            t = threading.Thread(target=self._run, args=(model, cls), daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self._cut_streams, daemon=True)
        t.start()
        self.threads.append(t)

    def _cut_streams(self) -> None:
        client = openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=KEY,
            max_retries=0,
            timeout=60,
            default_headers={"X-Hybridgate-Class": "batch"},
        )
        for i in range(100):
            if self.stop.wait(0.2):  # a few a second, among the others
                return
            try:
                stream = client.chat.completions.create(
                    model="cutting",
                    messages=[{"role": "user", "content": f"long story {i}"}],
                    max_tokens=12,
                    stream=True,
                )
                for _ in stream:
                    pass
                self.failures.append("cutting: a cut stream ended as if complete")
            except openai.APIError:
                self.cut += 1

    def _run(self, model: str, cls: str) -> None:
        client = openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=KEY,
            max_retries=0,
            timeout=60,
            default_headers={"X-Hybridgate-Class": cls},
        )
        for i in range(400):
            if self.stop.is_set():
                return
            # Now and then a request with sensitive data (an email address; kept local, where
            # interactive traffic goes anyway), for the page's sensitive-data section.
            sensitive = cls == "interactive" and i % 4 == 0
            text = f"status report {i}" + (" for jane.doe@example.com" if sensitive else "")
            try:
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": text}], max_tokens=6
                )
                self.sent += 1
            except openai.APIError as exc:
                self.failures.append(f"{model}/{cls}: {exc}")

    def halt(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)
            assert not t.is_alive()


# ---------------------------------------------------------------- reading /metrics independently

Samples = dict[str, list[tuple[dict[str, str], float]]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Samples:
    out: Samples = defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m is not None, line
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
        out[m.group(1)].append((labels, float(m.group(3))))
    return out


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == x for k, x in match.items()))


def buckets(samples: Samples, family: str, cls: str) -> dict[float, float]:
    out: dict[float, float] = defaultdict(float)
    for labels, v in samples.get(f"{family}_bucket", []):
        if labels.get("class") == cls:
            out[float(labels["le"])] += v
    return out


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile, written independently of the page's."""
    if len(cumulative) < 2 or cumulative[-1][0] != math.inf or cumulative[-1][1] <= 0:
        return math.nan
    rank = q * cumulative[-1][1]
    for i, (le, count) in enumerate(cumulative):
        if count >= rank:
            if i == len(cumulative) - 1:
                return cumulative[-2][0]
            lower, below = (0.0, 0.0) if i == 0 else cumulative[i - 1]
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 0.0)
    return math.nan


def over(threshold: float, cumulative: list[tuple[float, float]]) -> float:
    """Share of observations above ``threshold``, interpolated within its bucket."""
    n = cumulative[-1][1]
    at_most = cumulative[-2][1]
    for i, (le, count) in enumerate(cumulative[:-1]):
        if le >= threshold:
            lower, below = (0.0, 0.0) if i == 0 else cumulative[i - 1]
            at_most = below + (count - below) * (threshold - lower) / (le - lower)
            break
    return max(0.0, 1 - at_most / n)


# ---------------------------------------------------------------- reading the page


def shown(page: Page) -> dict[str, Any]:
    """Every number on the page, by where it is: raw data-value and the displayed text."""
    result: dict[str, Any] = page.evaluate(
        """() => {
        const read = (root) => {
          const out = {};
          for (const e of root.querySelectorAll('[data-metric]'))
            out[e.dataset.metric] = {value: e.dataset.value, text: e.textContent};
          return out;
        };
        const by = (selector, attr) => Object.fromEntries(
          [...document.querySelectorAll(selector)].map((e) => [e.getAttribute(attr), read(e)]));
        const scrape = document.getElementById('scrape');
        return {
          seq: Number(scrape.dataset.seq),
          mode: document.getElementById('mode').dataset.value,
          banner: document.getElementById('banner').dataset.state,
          classes: by('#classes [data-class]', 'data-class'),
          deployments: by('#deployments [data-deployment]', 'data-deployment'),
          cost: by('#cost [data-placement]', 'data-placement'),
          sensitive: read(document.getElementById('sensitive')),
        };
      }"""
    )
    return result


def num(cell: dict[str, str]) -> float:
    return float(cell["value"]) if cell["value"] not in ("", "NaN") else math.nan


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# ---------------------------------------------------------------- tests


def test_metrics_and_page_data_need_the_key_and_hold_no_secret(env: dict[str, Any]) -> None:
    url = env["url"]
    assert httpx.get(f"{url}/metrics").status_code == 401
    assert httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/dashboard/config.json").status_code == 401
    assert httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    page = httpx.get(f"{url}/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp
    config = httpx.get(f"{url}/dashboard/config.json", headers={"Authorization": f"Bearer {KEY}"})
    assert config.status_code == 200
    body = config.text
    assert config.json()["classes"]["interactive"]["p95_ms"] == BUDGETS["interactive"]["p95_ms"]
    assert config.json()["deployments"]["local"]["placement"] == "local"
    for secret in (KEY, UPSTREAM_KEY, "http://", "127.0.0.1"):
        assert secret not in body
    for asset in (
        "/dashboard",
        "/dashboard/prometheus.js",
        "/dashboard/dashboard.js",
        "/dashboard/dashboard.css",
    ):
        text = httpx.get(f"{url}{asset}").text
        assert KEY not in text
        # Nothing absolute: no scheme, no protocol-relative URL (a // comment is not a URL).
        assert not re.search(r"https?:|[\"'(]//", text), asset


@dataclass
class Seen:
    """What the page showed after the traffic stopped, and what the gateway said at that time."""

    page: dict[str, Any]  # shown()
    now: Samples  # our own scrape of /metrics
    base: Samples  # the scrape the page's window starts from
    readyz: dict[str, Any]
    sensitive: dict[str, str]  # the page's sensitive-data list: series -> raw value
    declared: set[str]  # metric families /metrics declares (a TYPE line), with samples or not


def watch(page: Page) -> list[str]:
    """Errors the page raises or logs. The browser logs each refused request (401) itself: those
    are expected; a request to another origin would be blocked by the CSP and logged here."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "status of 401" not in m.text else None,
    )
    return errors


def enter_key(page: Page) -> None:
    """No key yet: the page asks for one and shows no data; a wrong key is refused."""
    page.wait_for_selector("#key-form:not([hidden])", timeout=15000)
    assert page.is_hidden("#main")
    page.fill("#key-input", "not-a-key")
    page.click("#key-form button")
    page.wait_for_selector("#key-message:has-text('refused')", timeout=15000)
    page.fill("#key-input", KEY)
    page.click("#key-form button")
    page.wait_for_selector("#main:not([hidden])", timeout=15000)
    assert page.evaluate("sessionStorage.getItem('hybridgate.dashboard.key')") == KEY
    assert KEY not in page.url


def busy(page: Page) -> bool:
    """The page shows traffic of every kind the test sends."""
    s = shown(page)
    classes, deployments = s["classes"], s["deployments"]
    return (
        num(classes["interactive"]["local_count"]) >= 3
        and num(classes["batch"]["errors"]) >= 2
        and num(classes["batch"]["cloud_count"]) >= 10
        and num(classes["interactive"]["request_rate"]) > 0
        and num(classes["batch"]["request_rate"]) > 0
        and num(s["cost"]["cloud"]["cost_rate_per_hour"]) > 0
        and deployments["broken"]["breaker"]["value"] == "open"
        and num(classes["interactive"]["p95"]) > 0
    )


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tmp_path / name, ARTIFACTS / name)


def settle(page: Page, url: str) -> Seen:
    """Once the traffic has stopped: a scrape the page started afterwards, and our own."""
    seq = shown(page)["seq"]
    assert eventually(lambda: shown(page)["seq"] >= seq + 2, timeout=30, interval=0.1)
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return Seen(
        page=shown(page),
        now=parse_metrics(text),
        declared=set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE)),
        base=parse_metrics(page.evaluate("(hybridgateDashboard.windowBase() || {text: ''}).text")),
        readyz=httpx.get(f"{url}/readyz").json(),
        sensitive=page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#sensitive [data-series]')]"
            ".map((e) => [e.dataset.series, e.querySelector('[data-value]').dataset.value]))"
        ),
    )


def window_buckets(seen: Seen, family: str, cls: str) -> list[tuple[float, float]]:
    before = buckets(seen.base, family, cls)
    return sorted((le, c - before.get(le, 0.0)) for le, c in buckets(seen.now, family, cls).items())


def check_class(seen: Seen, cls: str, ttft_family: str | None) -> None:
    tile, now, budget = seen.page["classes"][cls], seen.now, BUDGETS[cls]
    assert num(tile["requests"]) == total(now, "hybridgate_requests_total", **{"class": cls}), cls
    split: dict[str, float] = defaultdict(float)
    failed = 0.0
    for labels, v in now.get("hybridgate_requests_total", []):
        if labels["class"] != cls:
            continue
        grew = v - total(seen.base, "hybridgate_requests_total", **labels)
        placement = labels.get("placement") or PLACEMENT.get(labels["deployment"], "other")
        kind = "memory" if labels["outcome"] in MEMORY_OUTCOMES else placement
        split[kind] += grew
        if kind != "memory" and labels["outcome"] != "ok":
            failed += grew
    assert num(tile["errors"]) == failed, cls
    for kind in ("local", "cloud", "memory"):
        assert num(tile[f"{kind}_count"]) == split[kind], (cls, kind)
    window = sum(split.values())
    latency = window_buckets(seen, "hybridgate_request_duration_seconds", cls)
    for q, metric in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert same(num(tile[metric]), quantile(q, latency)), (cls, metric, tile[metric])
    if window:
        assert same(num(tile["error_ratio"]), failed / window)
        assert same(num(tile["local_share"]), split["local"] / window)
        assert tile["local_share"]["text"] == f"{100 * split['local'] / window:.1f}%"
    slos = {
        labels["slo"] for labels, _ in now.get("hybridgate_slo_events_total", []) if labels["class"] == cls
    }
    if slos:  # the gateway's own SLO events: bad share in the window over the share allowed
        for slo in slos:
            bad, good = (
                total(now, "hybridgate_slo_events_total", slo=slo, good=g, **{"class": cls})
                - total(seen.base, "hybridgate_slo_events_total", slo=slo, good=g, **{"class": cls})
                for g in ("false", "true")
            )
            allowed = 1 - total(now, "hybridgate_slo_objective", slo=slo, **{"class": cls})
            want = bad / (bad + good) / allowed if bad + good else math.nan
            assert same(num(tile[f"burn_{slo}"]), want), (cls, slo, tile[f"burn_{slo}"])
    elif window:  # estimated from the latency histogram
        assert same(num(tile["burn_p95"]), over(budget["p95_ms"] / 1000, latency) / 0.05)
        assert same(num(tile["burn_p99"]), over(budget["p99_ms"] / 1000, latency) / 0.01)
    # A TTFT histogram per class, once /metrics has one; until then a dash, not a number.
    if ttft_family is None:
        assert tile["ttft_p95"]["text"] == "—"
    else:
        ttft = window_buckets(seen, ttft_family, cls)
        assert same(num(tile["ttft_p95"]), quantile(0.95, ttft)), (cls, tile["ttft_p95"])


def check_deployment(seen: Seen, name: str) -> None:
    row, now = seen.page["deployments"][name], seen.now
    for gauge in ("ready", "in_flight", "queued"):
        assert same(num(row[gauge]), total(now, f"hybridgate_deployment_{gauge}", deployment=name)), (
            name,
            gauge,
        )
    assert num(row["requests"]) == total(now, "hybridgate_requests_total", deployment=name)
    failed = sum(
        v
        for labels, v in now.get("hybridgate_requests_total", [])
        if labels["deployment"] == name and labels["outcome"] not in MEMORY_OUTCOMES | {"ok"}
    )
    assert num(row["errors"]) == failed
    health = seen.readyz["deployments"][name]["health"]
    assert row["state"]["value"] == health["state"]
    # The breaker's state from /metrics where it has it, else from /readyz.
    states = [
        labels["state"]
        for labels, v in now.get("hybridgate_breaker_state", [])
        if labels["deployment"] == name and v == 1
    ]
    assert row["breaker"]["value"] == (states[0] if states else health["breaker"]["state"])


def usd_text(v: float) -> str:
    return f"${v:.2f}" if v >= 100 else f"${v:.3f}" if v >= 1 else f"${v:.6f}"


def check_cost(seen: Seen) -> None:
    now = seen.now
    for placement in ("local", "cloud", "all"):
        row = seen.page["cost"][placement]
        where = {} if placement == "all" else {"placement": placement}
        usd = total(now, "hybridgate_cost_usd_total", **where)
        assert same(num(row["cost_total"]), usd), placement
        assert row["cost_total"]["text"] == usd_text(usd)
        for cell, direction in (("tokens_in", "prompt"), ("tokens_out", "completion")):
            assert num(row[cell]) == total(now, "hybridgate_tokens_total", direction=direction, **where)


def check_sensitive(seen: Seen) -> None:
    """Every series of a sensitive-data family, or a dash while /metrics has none."""
    families = {
        name: rows
        for name, rows in seen.now.items()
        if re.match(r"hybridgate_(sensitive|privacy|redact|data_guard|governance)", name)
        and not name.endswith("_created")
    }
    declared = any(
        re.match(r"hybridgate_(sensitive|privacy|redact|data_guard|governance)", f) for f in seen.declared
    )
    if not families:
        shown_value = seen.page["sensitive"]["sensitive"]
        assert (shown_value["value"], shown_value["text"][0]) == (("0", "0") if declared else ("", "—"))
    for name, rows in families.items():
        for labels, v in rows:
            key = name + "{" + " ".join(f"{k}={x}" for k, x in labels.items()) + "}"
            assert same(float(seen.sensitive[key]), v), key


def test_dashboard_shows_what_metrics_say_while_traffic_flows(
    env: dict[str, Any], browser: Browser, tmp_path: Path
) -> None:
    url = env["url"]
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors = watch(page)
    traffic = Traffic(url)
    try:
        page.goto(f"{url}/dashboard?refresh=0.5")
        enter_key(page)
        traffic.start()
        assert eventually(lambda: busy(page), timeout=120, interval=0.25), shown(page)
        screenshot(page, tmp_path, "dashboard.png")
        traffic.halt()
        assert traffic.sent > 0
        assert traffic.cut > 0
        assert not traffic.failures, traffic.failures[:5]
        seen = settle(page, url)
        screenshot(page, tmp_path, "dashboard-after.png")
    finally:
        traffic.halt()
        context.close()

    assert not errors, errors
    foreign = [r for r in requests if not r.startswith(url.rstrip("/") + "/")]
    assert not foreign, foreign
    assert any(r.endswith("/metrics") for r in requests)

    assert (seen.page["mode"], seen.page["banner"]) == ("0", "online")
    assert total(seen.now, "hybridgate_offline") == 0
    ttft_family = next(
        (
            name.removesuffix("_bucket")
            for name, rows in seen.now.items()
            if name.endswith("_bucket")
            and re.search("ttft|first_token", name)
            and any("class" in labels for labels, _ in rows)
        ),
        None,
    )
    for cls in BUDGETS:
        check_class(seen, cls, ttft_family)
    classes = seen.page["classes"]
    assert num(classes["idle"]["requests"]) == 0
    assert classes["idle"]["p95"]["text"] == "—"
    assert num(classes["interactive"]["local_count"]) > 0
    assert num(classes["batch"]["cloud_count"]) > 0
    assert num(classes["batch"]["errors"]) > 0
    for name in PLACEMENT:
        check_deployment(seen, name)
    deployments = seen.page["deployments"]
    assert (deployments["broken"]["state"]["value"], deployments["broken"]["breaker"]["value"]) == (
        "circuit_open",
        "open",
    )
    assert deployments["local"]["breaker"]["value"] == "closed"
    check_cost(seen)
    assert num(seen.page["cost"]["cloud"]["cost_total"]) > 0
    check_sensitive(seen)


def test_page_parser_and_quantiles_agree_with_python(env: dict[str, Any], browser: Browser) -> None:
    """The page's own Prometheus parser and histogram_quantile, on tricky input and random
    histograms, against the independent implementation above."""
    page = browser.new_page()
    try:
        page.goto(f"{env['url']}/dashboard")
        # page.evaluate is not subject to the page's CSP (wait_for_function's polling would be).
        assert eventually(lambda: page.evaluate("window.hybridgateDashboard !== undefined"), timeout=15)
        text = (
            "# HELP x_total a counter\n# TYPE x counter\n"
            'x_total{a="q\\"uote",b="back\\\\slash",c="line\\nbreak",d="{},= "} 3.5\n'
            "y +Inf\nz NaN\nw 1e-3 1700000000000\n"
        )
        parsed = page.evaluate(
            """(t) => { const p = hybridgateDashboard.parsePrometheus(t);
                return {x: p.samples.get('x_total'), y: String(p.samples.get('y')[0].value),
                        z: String(p.samples.get('z')[0].value), w: p.samples.get('w')[0].value,
                        type: p.types.get('x')}; }""",
            text,
        )
        assert parsed["x"] == [
            {"labels": {"a": 'q"uote', "b": "back\\slash", "c": "line\nbreak", "d": "{},= "}, "value": 3.5}
        ]
        assert (parsed["y"], parsed["z"], parsed["w"], parsed["type"]) == (
            "Infinity",
            "NaN",
            0.001,
            "counter",
        )
        rng = random.Random(7)
        les = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
        for _ in range(200):
            counts: list[float] = []
            running = 0.0
            for _le in [*les, math.inf]:
                running += rng.choice([0, 0, 1, 3, 10])
                counts.append(running)
            cumulative = list(zip([*les, math.inf], counts, strict=True))
            q = rng.choice([0.5, 0.9, 0.95, 0.99, 0.999])
            threshold = rng.choice([0.003, 0.2, 1.5, 7, 200])
            js = page.evaluate(
                """([q, t, b]) => { const buckets = b.map(([le, count]) =>
                     ({le: le === null ? Infinity : le, count}));
                   return [hybridgateDashboard.histogramQuantile(q, buckets),
                           hybridgateDashboard.fractionAbove(t, buckets)].map(String); }""",
                [q, threshold, [[None if le == math.inf else le, c] for le, c in cumulative]],
            )
            want_q, want_over = (
                quantile(q, cumulative),
                (over(threshold, cumulative) if counts[-1] else math.nan),
            )
            assert same(float(js[0]), want_q), (q, cumulative, js)
            assert same(float(js[1]), want_over), (threshold, cumulative, js)
    finally:
        page.close()


def test_dashboard_config_lists_every_class_and_deployment(env: dict[str, Any]) -> None:
    config = httpx.get(
        f"{env['url']}/dashboard/config.json", headers={"Authorization": f"Bearer {KEY}"}
    ).json()
    assert set(config["classes"]) == set(BUDGETS)
    assert {n: d["placement"] for n, d in config["deployments"].items()} == PLACEMENT
    assert config["models"] == {
        "chat": ["local", "cloud"],
        "fragile": ["broken", "cloud"],
        "cutting": ["cut"],
    }
    assert json.dumps(config).count("sk-") == 0


def test_without_client_auth_the_page_asks_for_no_key(tmp_path: Path, browser: Browser) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        """
version: 1
server: {auth: {disabled: true}}
deployments:
  cloud: {type: sandbox, profile: instant}
models:
  chat: {deployments: [cloud]}
"""
    )
    gateway, url = start_gateway(config)
    page = browser.new_page()
    try:
        page.goto(f"{url}/dashboard?refresh=0.5")
        page.wait_for_selector("#main:not([hidden])", timeout=15000)
        assert eventually(lambda: shown(page)["seq"] >= 1, timeout=15)
        assert page.is_hidden("#key-form")
        s = shown(page)
        assert s["deployments"]["cloud"]["ready"]["value"] == "1"
        assert s["classes"]["default"]["requests"]["value"] == "0"
    finally:
        page.close()
        gateway.stop()


def test_banner_turns_red_when_the_cloud_path_is_lost(
    env: dict[str, Any], browser: Browser, tmp_path: Path
) -> None:
    """Last in this module: it stops both clouds, then the gateway. Connection failures take the
    gateway offline: the page says so in red, with the reason /readyz gives and the flag /metrics
    gives. Once the gateway is gone, the page says its figures are no longer current."""
    url = env["url"]
    procs: list[ManagedProcess] = env["procs"]
    for proc in procs:
        if proc.name == "sandbox":
            proc.stop()
    client = openai.OpenAI(
        base_url=f"{url}/v1",
        api_key=KEY,
        max_retries=0,
        timeout=60,
        default_headers={"X-Hybridgate-Class": "batch"},
    )
    for i in range(10):  # cloud-first: each request fails to connect, then is served locally
        if httpx.get(f"{url}/readyz").json()["offline"]["offline"]:
            break
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=4
        )
    offline = httpx.get(f"{url}/readyz").json()["offline"]
    assert offline["offline"] is True
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"{url}/dashboard?refresh=0.5")
        page.fill("#key-input", KEY)
        page.click("#key-form button")
        page.wait_for_selector('#banner[data-state="offline"]', timeout=15000)
        metrics = parse_metrics(httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text)
        assert page.get_attribute("#mode", "data-value") == "1"
        assert total(metrics, "hybridgate_offline") == 1
        assert "OFFLINE" in page.inner_text("#mode")
        assert offline["reason"] in page.inner_text("#mode-detail")
        colour = page.evaluate("getComputedStyle(document.getElementById('banner')).backgroundColor")
        assert colour == "rgb(180, 35, 24)"  # --bad
        screenshot(page, tmp_path, "dashboard-offline.png")

        # The gateway itself goes away: the page must not keep showing its last figures as current.
        next(p for p in procs if p.name == "gateway").stop()
        page.wait_for_selector('#banner[data-state="stale"]', timeout=15000)
        assert page.inner_text("#mode") == "NO DATA"
        assert "scrape failed" in page.inner_text("#scrape")
        assert page.evaluate("document.getElementById('main').classList.contains('stale')")
        screenshot(page, tmp_path, "dashboard-stale.png")
    finally:
        context.close()
