"""A SANDBOX profile read by the simulator (``sandbox:`` backends): the mapping is exact.

The sandbox waits ``(ttft + prefill x prompt) x tail`` then ``1 / tps x time_scale`` per token;
the simulator's model of the converted profile must give the same times for the same underlying
draws (checked quantile by quantile, clipping included) and the same distributions (checked on
seeded samples), and the simulator must read the file a ``sandbox`` deployment serves.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybridgate.errors import ConfigError
from hybridgate.sandbox.profile import LogNormal, Profile
from hybridgate.sandbox.profile import load_profile as load_sandbox_profile
from hybridgate.sim.models import BackendModel, LogNormalDraw
from hybridgate.sim.sandbox_profile import backend_profile_of, load_sandbox_backend
from tests.support.sim import BACKENDS, SIM_EXAMPLES, actuation, scenario

VALIDATE_CLOUD = Path(__file__).resolve().parents[1] / "bench" / "sim" / "validate-cloud.yaml"


class _Z(random.Random):
    """A random source whose normal draws are all ``z`` (so both sides see the same quantile)."""

    def __init__(self, z: float) -> None:
        super().__init__(0)
        self.z = z

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        return mu + sigma * self.z

    def lognormvariate(self, mu: float, sigma: float) -> float:
        return math.exp(mu + sigma * self.z)


def _profile(time_scale: float, **extra: object) -> Profile:
    base = load_sandbox_profile("cloud-typical").model_dump()
    return Profile.model_validate({**base, "time_scale": time_scale, **extra})


@pytest.mark.parametrize("scale", [1.0, 0.1, 0.013])
@pytest.mark.parametrize("z", [-4.0, -1.0, 0.0, 0.7, 1.645, 3.0, 5.0])
def test_every_quantile_maps_exactly_clipping_included(scale: float, z: float) -> None:
    sandbox = _profile(scale)
    sim = backend_profile_of(sandbox)
    # time to first token on a short prompt: the sandbox's draw times the scale
    expected_ttft = sandbox.ttft.draw(_Z(z)) * scale
    assert LogNormalDraw(sim.ttft)(_Z(z)) == pytest.approx(expected_ttft, rel=1e-12)
    # decode: the sandbox waits 1/tps x scale between tokens
    expected_interval = scale / sandbox.decode_tps.draw(_Z(z))
    assert 1.0 / LogNormalDraw(sim.decode_tps)(_Z(z)) == pytest.approx(expected_interval, rel=1e-12)
    # prefill per prompt token
    assert 1000 / sim.prefill_tokens_per_s == pytest.approx(sandbox.prefill_s_per_token * 1000 * scale)
    assert sim.heavy_tail == sandbox.heavy_tail
    assert (sim.slots, sim.max_queue, sim.error_rate, sim.cold_start_s) == (None, None, 0.0, 0.0)


def test_clipping_bites_at_the_extremes() -> None:
    """The quantiles above are not all inside the clip range: the test covers both clips."""
    spec = _profile(1.0).decode_tps
    assert spec.min is not None
    assert spec.max is not None
    assert spec.draw(_Z(-5.0)) == spec.min
    assert spec.draw(_Z(5.0)) == spec.max


def test_the_same_distributions_on_seeded_samples() -> None:
    """Whole requests (tail, prefill, decode): the sandbox's timing and the simulator's draw of the
    converted profile agree in median, p95 and p99 (20,000 seeded draws each)."""
    sandbox = _profile(
        0.1, heavy_tail={"probability": 0.1, "factor_min": 3.0, "alpha": 1.5, "factor_max": 20}
    )
    model = BackendModel("cloud", backend_profile_of(sandbox))
    prompt, output = 800, 150
    sandbox_rng, sim_rng = random.Random(1), random.Random(2)
    real_ttft, real_total, sim_ttft, sim_total = [], [], [], []
    for _ in range(20_000):
        t = sandbox.draw_timing(sandbox_rng, prompt, sandbox.time_scale)
        real_ttft.append(t.ttft_s)
        real_total.append(t.ttft_s + (output - 1) * t.token_interval_s)
        timing = model.draw(sim_rng, prompt, output, 1.0)
        sim_ttft.append(timing.ttft_s)
        sim_total.append(timing.total_s)
    for real, sim in ((real_ttft, sim_ttft), (real_total, sim_total)):
        real.sort()
        sim.sort()
        for q in (0.5, 0.95, 0.99):
            i = int(q * len(real))
            assert sim[i] == pytest.approx(real[i], rel=0.05), q


def test_a_profile_that_cannot_be_converted_exactly_is_refused() -> None:
    with pytest.raises(ConfigError, match="time scale of 0"):
        backend_profile_of(_profile(0.0))
    faulty = _profile(1.0, faults=[{"kind": "server_error", "probability": 0.1}])
    with pytest.raises(ConfigError, match="standing faults"):
        backend_profile_of(faulty)


def test_builtin_names_and_relative_paths(tmp_path: Path) -> None:
    by_name = load_sandbox_backend("sandbox:cloud-typical", tmp_path)
    assert by_name.ttft == LogNormal(median=0.5, p95=0.725)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.yaml").write_text(VALIDATE_CLOUD.read_text())
    by_path = load_sandbox_backend("sandbox:profiles/mine.yaml", tmp_path)
    assert by_path.ttft.median == pytest.approx(0.025)  # the file's time_scale 0.05 applied
    assert by_path.decode_tps.median == pytest.approx(1700)
    with pytest.raises(ConfigError, match="unknown sandbox profile"):
        load_sandbox_backend("sandbox:no-such-profile", tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_sandbox_backend("sandbox:profiles/missing.yaml", tmp_path)


def test_a_workload_can_name_a_sandbox_profile(tmp_path: Path) -> None:
    backends = {**BACKENDS, "cloud-us": "sandbox:cloud-typical", "cloud-eu": f"sandbox:{VALIDATE_CLOUD}"}
    sc = scenario(tmp_path, [actuation(2.0)], backends=backends, requests=50)
    assert sc.profiles["cloud-us"] == backend_profile_of(load_sandbox_profile("cloud-typical"))
    assert sc.profiles["cloud-eu"].ttft.median == pytest.approx(0.025)


def test_a_bad_sandbox_backend_is_a_clear_cli_error(tmp_path: Path) -> None:
    workload = tmp_path / "workload.yaml"
    backends = {**BACKENDS, "cloud-us": "sandbox:no-such-profile"}
    workload.write_text(
        yaml.safe_dump({"model": "hybrid", "backends": backends, "classes": [actuation(2.0)]})
    )
    command = [sys.executable, "-m", "hybridgate.cli", "simulate", "-c", str(SIM_EXAMPLES / "gateway.yaml")]
    proc = subprocess.run(
        [*command, "-w", str(workload), "--no-progress", "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "backends.cloud-us -> sandbox:no-such-profile" in proc.stderr
    assert "unknown sandbox profile" in proc.stderr
    assert "Traceback" not in proc.stderr
