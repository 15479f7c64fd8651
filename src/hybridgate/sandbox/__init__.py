"""The SANDBOX provider: a stand-in cloud LLM API on loopback, for demos, tests and benchmarks.

It speaks the OpenAI and Anthropic wire formats, answers with synthetic pseudo-English (it is
not a model), imitates a cloud's latency from a profile calibrated on public figures, and
injects faults on demand. Every response is labelled ``x-hybridgate-sandbox: 1`` and every model
name it reports contains "sandbox". Reference: docs/sandbox.md.

    python -m hybridgate.sandbox --port 0 --profile cloud-typical --seed 1 --ready-file /tmp/ready.json

Modules: :mod:`.profile` (latency model), :mod:`.faults` (fault rules), :mod:`.server` (the HTTP
server), :mod:`.process` (running it as a child process), :mod:`.synth` (synthetic content),
:mod:`.openai_api` / :mod:`.anthropic_api` (the two wire formats).
"""

from hybridgate.sandbox.faults import FaultBook, FaultRule
from hybridgate.sandbox.process import SandboxProcess, SandboxStartError
from hybridgate.sandbox.profile import Profile, ProfileError, builtin_profiles, load_profile
from hybridgate.sandbox.server import SandboxServer

__all__ = [
    "FaultBook",
    "FaultRule",
    "Profile",
    "ProfileError",
    "SandboxProcess",
    "SandboxServer",
    "SandboxStartError",
    "builtin_profiles",
    "load_profile",
]
