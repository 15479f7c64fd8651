"""The pure planner: filtering, prediction, ordering, governance, explanations.

No processes here: the planner is a function of (request, context, data profile, snapshot,
policy), so these tests build those values directly — including, with hypothesis, arbitrary
health snapshots — and check the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.config.governance import Sensitivity
from hybridgate.errors import (
    ContextLengthExceeded,
    ModelNotFound,
    NoRouteAvailable,
    PermissionDenied,
    SensitiveDataRefused,
)
from hybridgate.health.predictor import PerfEstimate, predict
from hybridgate.health.snapshot import DeploymentHealth, DeploymentState, HealthSnapshot
from hybridgate.policy.context import RequestContext
from hybridgate.policy.governance import DataProfile
from hybridgate.policy.planner import RoutePlan, estimate_prompt_tokens, plan_chat
from hybridgate.policy.table import Policy
from hybridgate.types import InferenceRequest, Message
from tests.support.policy import routing_policy

POLICY = routing_policy()
CLEAN = DataProfile()


def request(text: str = "hello", *, max_tokens: int | None = 64, model: str = "hybrid") -> InferenceRequest:
    return InferenceRequest(model=model, messages=(Message.of_text("user", text),), max_tokens=max_tokens)


def ctx(
    cls: str = "interactive",
    *,
    sensitivity: Sensitivity = "public",
    region: str = "us",
    latency_budget_ms: float | None = None,
    max_cost_usd: float | None = None,
) -> RequestContext:
    return RequestContext(cls, "t", sensitivity, region, latency_budget_ms, max_cost_usd)


def ready(overrides: Mapping[str, DeploymentHealth] | None = None, policy: Policy = POLICY) -> HealthSnapshot:
    states = {
        name: DeploymentHealth(DeploymentState.READY, "", spec.prior)
        for name, spec in policy.deployments.items()
    }
    states.update(overrides or {})
    return HealthSnapshot(states)


def busy(name: str, in_flight: int) -> DeploymentHealth:
    return DeploymentHealth(
        DeploymentState.READY, "", POLICY.deployments[name].prior._replace(in_flight=in_flight)
    )


def plan(
    req: InferenceRequest | None = None,
    context: RequestContext | None = None,
    data: DataProfile = CLEAN,
    snapshot: HealthSnapshot | None = None,
) -> RoutePlan:
    return plan_chat(req or request(), context or ctx(), data, snapshot or ready(), POLICY)


def test_local_first_stays_local_while_local_meets_the_budget() -> None:
    p = plan()
    assert p.candidates[0].placement == "local"
    assert p.candidates[0].deployment == "local-0", "the fastest, cheapest local runtime"
    assert p.explanation.summary.startswith("local-first: local-0 (local) meets")
    assert p.explanation.order[0] == "local-0"


def test_local_first_spills_to_cloud_when_the_local_queue_would_break_the_budget() -> None:
    queues = {f"local-{i}": busy(f"local-{i}", in_flight=40) for i in range(5)}
    p = plan(snapshot=ready(queues))
    first = p.candidates[0]
    assert first.placement == "cloud"
    assert "spill" in p.explanation.summary
    locals_ = [v for v in p.explanation.verdicts if v.placement == "local"]
    assert all(v.meets_budget is False for v in locals_)
    assert all(v.queue_wait_ms is not None and v.queue_wait_ms > 4000 for v in locals_)
    # the local runtimes stay in the plan as last resorts, after every cloud that meets the budget
    meets = {v.deployment for v in p.explanation.verdicts if v.meets_budget}
    order = [c.deployment for c in p.candidates]
    first_local = next(i for i, c in enumerate(p.candidates) if c.placement == "local")
    assert all(order.index(name) < first_local for name in meets)


def test_spill_point_follows_the_queue() -> None:
    # One local runtime: with a short queue it is first, with a long one the cloud is.
    def first_for(depth: int) -> str:
        others = {f"local-{i}": busy(f"local-{i}", 100) for i in range(1, 5)}
        snapshot = ready({**others, "local-0": busy("local-0", depth)})
        return plan(snapshot=snapshot).candidates[0].placement

    assert first_for(0) == "local"
    assert first_for(30) == "cloud"


def test_cloud_first_class_prefers_cloud_cheapest_first() -> None:
    p = plan(context=ctx("planning"))
    assert p.candidates[0].placement == "cloud"
    costs = [c.estimated_cost_usd or 0.0 for c in p.candidates if c.placement == "cloud"]
    assert costs == sorted(costs)


def test_local_only_class_never_plans_cloud() -> None:
    p = plan(context=ctx("perception"), req=request(max_tokens=4))
    assert {c.placement for c in p.candidates} == {"local"}
    assert {v.reason for v in p.explanation.verdicts if v.placement == "cloud"} == {"class is local-only"}


def test_sensitive_data_keep_local() -> None:
    p = plan(context=ctx("actuation"), data=DataProfile(kinds=frozenset({"email"})))
    assert {c.placement for c in p.candidates} == {"local"}
    rejected = [v for v in p.explanation.verdicts if v.placement == "cloud"]
    assert rejected
    assert all(v.reason.startswith("data governance: email: keep local") for v in rejected)


def test_sensitive_data_redact_sends_only_redacted_to_cloud() -> None:
    queues = {f"local-{i}": busy(f"local-{i}", 40) for i in range(5)}
    p = plan(data=DataProfile(kinds=frozenset({"payment_card"})), snapshot=ready(queues))
    assert p.needs_redaction
    assert all(c.redact == (c.placement == "cloud") for c in p.candidates)
    assert p.explanation.data.redact


def test_failed_scan_is_treated_as_sensitive_even_when_the_rule_says_redact() -> None:
    p = plan(data=DataProfile(scan_failed=True, reason="detector crashed"))
    assert {c.placement for c in p.candidates} == {"local"}
    assert "nothing reliable to redact" in p.explanation.data.rule


def test_declared_confidential_keeps_data_local_without_findings() -> None:
    p = plan(context=ctx(sensitivity="confidential"))
    assert {c.placement for c in p.candidates} == {"local"}


def test_refuse_rule_is_a_422_that_names_the_rule_not_the_value() -> None:
    policy = routing_policy()
    refusing = replace(
        policy,
        classes={
            **policy.classes,
            "interactive": policy.classes["interactive"].model_copy(update={"on_sensitive": "refuse"}),
        },
    )
    with pytest.raises(SensitiveDataRefused) as info:
        plan_chat(request(), ctx(), DataProfile(kinds=frozenset({"us_ssn"})), ready(), refusing)
    assert info.value.status == 422
    assert "us_ssn" in info.value.message
    assert "on_sensitive=refuse" in info.value.message


def test_residency_keeps_eu_data_in_eu() -> None:
    p = plan(context=ctx("planning", region="eu"))
    regions = {POLICY.deployments[c.deployment].capabilities.region for c in p.candidates}
    assert regions <= {"eu", "local"}
    assert any(v.reason.startswith("residency: region 'us'") for v in p.explanation.verdicts)


def test_cost_ceiling_drops_expensive_candidates() -> None:
    p = plan(context=ctx("planning", max_cost_usd=0.0005), req=request(max_tokens=800))
    assert all(c.estimated_cost_usd is not None and c.estimated_cost_usd <= 0.0005 for c in p.candidates)
    assert any("cost ceiling" in v.reason for v in p.explanation.verdicts)


def test_context_window_filters_and_fails_with_a_400_when_nothing_fits() -> None:
    long = request("word " * 5000, max_tokens=64)
    p = plan(req=long, context=ctx("planning"))
    assert {c.placement for c in p.candidates} == {"cloud"}
    with pytest.raises(ContextLengthExceeded):
        plan(req=request("word " * 5000, model="local"))


def test_unknown_model_and_forbidden_model() -> None:
    with pytest.raises(ModelNotFound):
        plan(req=request(model="nope"))
    policy = routing_policy()
    restricted = replace(
        policy,
        classes={**policy.classes, "batch": policy.classes["batch"].model_copy(update={"models": ["local"]})},
    )
    with pytest.raises(PermissionDenied):
        plan_chat(request(), ctx("batch"), CLEAN, ready(policy=policy), restricted)


def test_unhealthy_deployments_are_skipped_with_their_state() -> None:
    down = {f"local-{i}": DeploymentHealth(DeploymentState.FAILED, "worker exited") for i in range(5)}
    p = plan(snapshot=ready(down))
    assert p.candidates[0].placement == "cloud"
    assert any(v.reason == "failed: worker exited" for v in p.explanation.verdicts)
    with pytest.raises(NoRouteAvailable):
        plan(context=ctx("perception"), snapshot=ready(down))


def test_attempt_timeouts_come_from_the_budget() -> None:
    p = plan(context=ctx("actuation"), req=request(max_tokens=16))
    t = p.candidates[0].timeouts
    assert t.first_token <= 0.6  # 2 x the 300 ms time-to-first-token budget
    assert t.total <= max(1.5, 2 * (p.candidates[0].predicted_p95_s or 0))
    assert t.first_token <= t.total


def test_hedge_only_for_classes_that_allow_it() -> None:
    assert plan(context=ctx("interactive")).hedge is not None
    assert plan(context=ctx("actuation")).hedge is None


def test_hedge_waits_for_the_first_candidates_predicted_p95() -> None:
    p = plan(context=ctx("interactive"), req=request(max_tokens=400))
    assert p.hedge is not None
    head = p.candidates[0]
    # A stream is hedged when its first token is late; a whole answer only when the answer is,
    # which for 400 tokens is much later (hedging it at the first-token time would double most
    # requests).
    assert p.hedge.answer_s == pytest.approx(head.predicted_p95_s)
    assert p.hedge.first_token_s < p.hedge.answer_s / 2


def test_hedge_waits_for_the_tracked_first_token_p95_where_there_is_one() -> None:
    head = plan(context=ctx("interactive")).candidates[0].deployment
    base = POLICY.deployments[head].prior
    untracked = plan(context=ctx("interactive"))
    tracked = plan(
        context=ctx("interactive"),
        snapshot=ready(
            {
                head: DeploymentHealth(
                    DeploymentState.READY, "", base._replace(hedge_ttft_s=base.ttft_p95_s + 0.3)
                )
            }
        ),
    )
    assert tracked.candidates[0].deployment == head, "the tracked value moves the hedge, not the ranking"
    assert untracked.hedge is not None
    assert tracked.hedge is not None
    assert tracked.hedge.first_token_s == pytest.approx(untracked.hedge.first_token_s + 0.3)
    assert tracked.hedge.answer_s == pytest.approx(untracked.hedge.answer_s + 0.3)


def test_per_request_budget_overrides_the_class() -> None:
    p = plan(context=ctx("planning", latency_budget_ms=200.0))
    assert p.explanation.budget.p95_ms == 200.0
    assert p.explanation.budget.ttft_ms == 200.0


def test_deterministic() -> None:
    a = plan().explanation.to_dict()
    b = plan().explanation.to_dict()
    assert a == b


def test_explanation_lists_every_candidate_and_headers_are_ascii() -> None:
    p = plan()
    assert [v.deployment for v in p.explanation.verdicts] == list(POLICY.models["hybrid"].deployments)
    headers = p.explanation.headers()
    assert headers["x-hybridgate-class"] == "interactive"
    assert headers["x-hybridgate-route"].split(">")[0] == "local-0"
    assert all(32 <= ord(ch) < 127 for value in headers.values() for ch in value)


def test_planner_numbers_are_the_predictor_and_cost_model() -> None:
    # The planner inlines predict() and CostModel.estimate() for speed; they must agree.
    queues = {"local-2": busy("local-2", 3)}
    req = request("x " * 300, max_tokens=100)
    p = plan(req=req, context=ctx("batch", region="ap"), snapshot=ready(queues))
    prompt = estimate_prompt_tokens(req)
    snapshot = ready(queues)
    for c in p.candidates:
        spec = POLICY.deployments[c.deployment]
        perf = snapshot.of(c.deployment).perf or spec.prior
        expected = predict(perf, prompt, 100)
        cost = spec.cost.estimate(prompt, 100, 4 * (prompt + 100), "ap", expected.expected_s)
        assert c.predicted_s == pytest.approx(expected.expected_s)
        assert c.predicted_p95_s == pytest.approx(expected.p95_s)
        assert c.predicted_ttft_p95_s == pytest.approx(expected.ttft_p95_s)
        assert c.estimated_cost_usd == pytest.approx(cost.total)


# ----------------------------------------------------------------------------- property


perf = st.builds(
    PerfEstimate,
    ttft_p50_s=st.floats(0.001, 30),
    ttft_p95_s=st.floats(0.001, 120),
    tokens_per_s=st.floats(0.5, 500),
    prefill_tokens_per_s=st.floats(1, 20_000),
    concurrency=st.one_of(st.none(), st.integers(1, 8)),
    in_flight=st.integers(0, 200),
    service_s=st.floats(0.001, 60),
)
health = st.builds(
    DeploymentHealth,
    state=st.sampled_from(list(DeploymentState)),
    detail=st.just(""),
    perf=st.one_of(st.none(), perf),
)
snapshots = st.fixed_dictionaries({name: health for name in POLICY.deployments}).map(HealthSnapshot)
profiles = st.builds(
    DataProfile,
    kinds=st.frozensets(st.sampled_from(["email", "payment_card", "iban", "secret", "us_ssn"]), max_size=3),
    scan_failed=st.booleans(),
)
contexts = st.builds(
    RequestContext,
    workload_class=st.sampled_from(sorted(POLICY.classes)),
    tenant=st.just("t"),
    sensitivity=st.sampled_from(["public", "internal", "confidential", "restricted"]),
    region=st.sampled_from(["us", "eu", "ap", "unknown"]),
)


@settings(max_examples=400, deadline=None)
@given(snapshot=snapshots, data=profiles, context=contexts, max_tokens=st.integers(1, 2000))
def test_sensitive_content_never_reaches_a_cloud_candidate_unredacted(
    snapshot: HealthSnapshot, data: DataProfile, context: RequestContext, max_tokens: int
) -> None:
    try:
        p = plan_chat(request(max_tokens=max_tokens), context, data, snapshot, POLICY)
    except (NoRouteAvailable, ContextLengthExceeded, SensitiveDataRefused):
        return
    declared_high = context.sensitivity in ("confidential", "restricted")
    for candidate in p.candidates:
        if candidate.placement != "cloud":
            continue
        if data.scan_failed or declared_high:
            pytest.fail(
                f"{candidate.deployment}: cloud candidate for unscannable or declared-confidential data"
            )
        if data.kinds:
            assert candidate.redact, f"{candidate.deployment}: detected {set(data.kinds)} sent unredacted"
        if context.region == "eu":
            assert POLICY.deployments[candidate.deployment].capabilities.region == "eu"
