"""``hybridgate bench local``: the real llama.cpp runtime (the gateway's supervised worker) on the
tiny model, measured with few repeats; the profile it writes must load as a simulator backend
profile, hold numbers consistent with its own samples, and say what was measured. Bad input
exits 2 with one clear line, never a traceback. Speed is not asserted: only that the numbers
are positive, ordered and consistent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from hybridgate.sim.calibrate import percentile
from hybridgate.sim.measure import pin_worker
from hybridgate.sim.models import load_profile
from hybridgate.types import Timeouts
from tests.conftest_local import chat, running_backend

TIMEOUTS = Timeouts(connect=10, first_token=60, idle=60, total=120)

LENGTHS = (16, 256, 1024)
REPEATS = 3
DECODE = 48


def _bench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hybridgate.cli", "bench", "local", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _small(out: Path, json_path: Path) -> list[str]:
    return [
        *("--repeats", str(REPEATS), "--cold-starts", "2", "--warmup", "1"),
        *("--prompt-lengths", ",".join(map(str, LENGTHS)), "--decode-tokens", str(DECODE)),
        *("--out", str(out), "--json", str(json_path)),
    ]


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> tuple[Path, dict[str, Any], str]:
    """One measurement through a configuration's deployment (n_threads 1, max_queue 5)."""
    work = tmp_path_factory.mktemp("bench-local")
    (work / "models").mkdir()
    (work / "models" / "tiny.gguf").write_bytes((models_dir / "tiny.gguf").read_bytes())
    config = {
        "version": 1,
        "server": {"auth": {"disabled": True}},
        "deployments": {
            "cloud": {"type": "sandbox", "profile": "test-fast"},
            "tiny": {"type": "llamacpp", "model_path": "models/tiny.gguf", "n_threads": 1, "max_queue": 5},
        },
        "models": {"m": {"deployments": ["tiny", "cloud"]}},
    }
    (work / "gateway.yaml").write_text(yaml.safe_dump(config))
    out, json_path = work / "profile.yaml", work / "bench.json"
    proc = _bench("-c", str(work / "gateway.yaml"), "--deployment", "tiny", *_small(out, json_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, orjson.loads(json_path.read_bytes()), proc.stdout


@pytest.mark.slow
def test_the_profile_validates_and_says_what_was_measured(measured: tuple[Path, dict[str, Any], str]) -> None:
    out, report, stdout = measured
    profile = load_profile(out)  # the simulator's own loader
    assert profile.name == "local-tiny"
    assert (profile.slots, profile.max_queue, profile.idle_unload_s) == (1, 5, None)
    text = "\n".join(profile.sources)
    machine = report["machine"]
    for fact in ("tiny.gguf", machine["cpu"], machine["llama_cpp_python"], report["date"], "n_threads 1"):
        assert fact in text, fact
    assert f"{REPEATS} short-prompt, {REPEATS * len(LENGTHS)} prefill" in text
    assert "2 cold starts" in text
    assert report["model"]["sha256"][:16] in text
    assert "tiny.gguf" in profile.description
    assert "bench local" in stdout
    assert str(out) in stdout


@pytest.mark.slow
def test_the_numbers_are_plausible_and_consistent(measured: tuple[Path, dict[str, Any], str]) -> None:
    out, report, _ = measured
    profile = load_profile(out)
    samples = report["samples"]
    assert len(samples["start_s"]) == 2
    assert len(samples["short"]) == REPEATS
    assert len(samples["prefill"]) == REPEATS * len(LENGTHS)
    assert len(samples["decode"]) == REPEATS
    assert samples["errors"] == 0
    # distributions: positive and ordered
    for spec in (profile.ttft, profile.decode_tps):
        assert spec.min is not None
        assert spec.max is not None
        assert spec.p95 is not None
        assert 0 < spec.min <= spec.median <= spec.p95 <= spec.max
    assert profile.prefill_tokens_per_s > 0
    assert report["fit"]["prefill_slope_s_per_token"] > 0
    assert profile.cold_start_s > 0
    assert profile.cold_start_s == pytest.approx(percentile(samples["start_s"], 0.5), rel=1e-3)
    # the worker's own token counts: longer prompts hold more tokens; answers are max_tokens long
    by_length = {n: [s["prompt_tokens"] for s in samples["prefill"] if s["planned"] == n] for n in LENGTHS}
    assert max(by_length[16]) < min(by_length[256]) <= max(by_length[256]) < min(by_length[1024])
    assert all(s["completion_tokens"] == DECODE for s in samples["decode"])
    for s in (*samples["short"], *samples["prefill"], *samples["decode"]):
        assert 0 < s["ttft_s"] <= s["total_s"]
    # the decode distribution is that of the samples
    rates = [(s["completion_tokens"] - 1) / (s["total_s"] - s["ttft_s"]) for s in samples["decode"]]
    assert profile.decode_tps.median == pytest.approx(percentile(rates, 0.5), rel=1e-3)
    assert profile.decode_tps.min == pytest.approx(min(rates), rel=1e-3)
    assert report["profile"] == profile.model_dump(mode="json")


@pytest.mark.slow
def test_a_model_file_works_too(tmp_path: Path, models_dir: Path) -> None:
    out, json_path = tmp_path / "p.yaml", tmp_path / "p.json"
    proc = _bench(
        "--model", str(models_dir / "tiny.gguf"), "--threads", "1", "--name", "mine", *_small(out, json_path)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    profile = load_profile(out)
    assert profile.name == "mine"
    assert profile.max_queue == 16  # the llamacpp deployment's default
    assert "--model" in "\n".join(profile.sources)


def _bad(tmp_path: Path, models_dir: Path) -> dict[str, list[str]]:
    config = tmp_path / "cloud-only.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "deployments": {"cloud": {"type": "sandbox", "profile": "test-fast"}},
                "models": {"m": {"deployments": ["cloud"]}},
            }
        )
    )
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"this is not a model")
    tiny = str(models_dir / "tiny.gguf")
    return {
        "not found": ["--model", str(tmp_path / "missing.gguf")],
        "comma-separated integers": ["--model", tiny, "--prompt-lengths", "a,b"],
        "two or more distinct": ["--model", tiny, "--prompt-lengths", "16,16"],
        "not both": ["--model", tiny, "-c", str(config)],
        "not a llamacpp chat deployment": ["-c", str(config), "--deployment", "cloud"],
        "name the llamacpp chat deployment": ["-c", str(config)],
        "invalid configuration": ["-c", str(not_gguf)],
        "does not fit the context": ["--model", tiny, "--prompt-lengths", "16,4000"],
        "did not start": ["--model", str(not_gguf), "--cold-starts", "1"],
        "--repeats": ["--model", tiny, "--repeats", "1"],
        "comma-separated CPU numbers": ["--model", tiny, "--worker-cpus", "one"],
        "this machine has CPUs": ["--model", tiny, "--worker-cpus", "9999"],
    }


@pytest.mark.slow
def test_bad_input_exits_2_with_a_clear_line(tmp_path: Path, models_dir: Path) -> None:
    for expected, args in _bad(tmp_path, models_dir).items():
        proc = _bench(*args, "--out", str(tmp_path / "never.yaml"), timeout=120)
        assert proc.returncode == 2, (expected, proc.stdout, proc.stderr)
        assert expected in proc.stdout + proc.stderr, (expected, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr, expected
        assert not (tmp_path / "never.yaml").exists()


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin one")
async def test_the_worker_is_pinned_with_all_its_threads(models_dir: Path) -> None:
    """``--worker-cpus``: every thread of the real worker process, the generation thread included."""
    ours = os.sched_getaffinity(0)
    cpu = max(ours)
    async with running_backend(models_dir / "tiny.gguf") as backend:
        await backend.complete(chat("the and you"), TIMEOUTS)  # the generation thread exists by now
        pin_worker(backend, frozenset({cpu}))
        pid = backend.stats.pid
        assert pid is not None
        tasks = os.listdir(f"/proc/{pid}/task")
        assert len(tasks) >= 2
        for tid in tasks:
            assert os.sched_getaffinity(int(tid)) == {cpu}
        assert (await backend.complete(chat("the and you"), TIMEOUTS)).usage.completion_tokens > 0
    assert os.sched_getaffinity(0) == ours  # the gateway side stays where it was
