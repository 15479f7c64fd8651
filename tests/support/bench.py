"""Running a benchmark script the way a person does, or loading it as a module, for its tests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, args: Sequence[str], out: Path, *, timeout: float) -> dict[str, Any]:
    """``python bench/<script> ARGS --json OUT``: it must exit 0 and name the JSON it wrote,
    which is returned."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert str(out) in proc.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def report_section(name: str, data: dict[str, Any]) -> tuple[str, list[tuple[str, str, bool | None]]]:
    """What ``make bench``'s page (bench/report.py) says of a benchmark's JSON: its Markdown and
    its judged targets (target, measured, met)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import _report_sections

    section = _report_sections.render(name, data, [])
    return section.markdown, [(t.target, t.measured, t.met) for t in section.targets]


def load_bench(script: str) -> ModuleType:
    """bench/<script> as a module (``_bench_<name>``), with bench/ on the path while it loads, as
    the scripts import ``_harness`` by name."""
    name = "_bench_" + Path(script).stem.lstrip("_")
    spec = importlib.util.spec_from_file_location(name, BENCH / script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module
