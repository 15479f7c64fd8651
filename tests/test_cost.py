"""The cost model: cloud tokens and egress, local hardware and energy, price lookup."""

from __future__ import annotations

import pytest

from hybridgate.config import load_config_text
from hybridgate.cost import PRICES_AS_OF, build_cost_models, default_price

CONFIG = """
version: 1
pricing:
  egress_usd_per_gb: {default: 0.09, "eu->us": 0.05}
  local: {hardware_usd_per_hour: 0.36, watts: 100, energy_usd_per_kwh: 0.36}
  models:
    my-model: {input_per_mtok: 1.0, output_per_mtok: 2.0}
deployments:
  gpt: {type: openai, model: gpt-4o-mini-2024-07-18, region: us}
  mine: {type: openai, model: my-model, region: us}
  mystery: {type: openai, model: something-new, region: us}
  box: {type: llamacpp, model_path: x.gguf}
  edge: {type: llamacpp, model_path: x.gguf, local_cost: {hardware_usd_per_hour: 0, watts: 0}}
models:
  m: {deployments: [gpt, mine, mystery, box, edge]}
"""


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    return dict(build_cost_models(load_config_text(CONFIG, env={}).config))


def test_cloud_tokens_with_cached_prompt_and_family_price(models: dict[str, object]) -> None:
    from hybridgate.cost.model import CostModel

    gpt = models["gpt"]
    assert isinstance(gpt, CostModel)
    cost = gpt.actual(1_000_000, 400_000, 1_000_000, 0, "us", seconds=3.0)
    # gpt-4o-mini: 600k uncached x 0.15 + 400k cached x 0.075 + 1M out x 0.60 (USD per M)
    assert cost.tokens == pytest.approx(0.09 + 0.03 + 0.60)
    assert cost.compute == 0
    assert cost.priced


def test_configured_price_and_unknown_model(models: dict[str, object]) -> None:
    from hybridgate.cost.model import CostModel

    mine, mystery = models["mine"], models["mystery"]
    assert isinstance(mine, CostModel)
    assert isinstance(mystery, CostModel)
    assert mine.estimate(1_000_000, 1_000_000, 0, "us", 1.0).tokens == pytest.approx(3.0)
    unknown = mystery.estimate(1000, 1000, 0, "us", 1.0)
    assert unknown.total == 0
    assert not unknown.priced, "a missing price is flagged, not silently free"


def test_egress_by_region_pair(models: dict[str, object]) -> None:
    from hybridgate.cost.model import CostModel

    gpt = models["gpt"]
    assert isinstance(gpt, CostModel)
    assert gpt.estimate(0, 0, 10**9, "eu", 1.0).egress == pytest.approx(0.05)
    assert gpt.estimate(0, 0, 10**9, "ap", 1.0).egress == pytest.approx(0.09)


def test_local_is_not_free(models: dict[str, object]) -> None:
    from hybridgate.cost.model import CostModel

    box, edge = models["box"], models["edge"]
    assert isinstance(box, CostModel)
    assert isinstance(edge, CostModel)
    # (0.36 USD/h hardware + 0.1 kW x 0.36 USD/kWh) / 3600 s = 0.000110 USD per second
    cost = box.actual(500, 0, 200, 10**6, "us", seconds=10.0)
    assert cost.compute == pytest.approx(10 * 0.396 / 3600)
    assert cost.tokens == 0
    assert cost.egress == 0, "nothing leaves the device"
    assert edge.actual(500, 0, 200, 0, "us", seconds=10.0).total == 0


def test_price_table_is_dated_and_matches_by_longest_prefix() -> None:
    assert PRICES_AS_OF.count("-") == 2
    mini = default_price("gpt-4o-mini-2024-07-18")
    full = default_price("gpt-4o-2024-11-20")
    assert mini is not None
    assert full is not None
    assert mini.input_per_mtok < full.input_per_mtok
    assert default_price("no-such-model") is None
