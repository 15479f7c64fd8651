"""Several server workers' expositions as one, each sample labelled with its worker.

Each worker renders its own registry (``generate_latest``: ``# HELP``, ``# TYPE``, then the
family's samples); a scrape answered by any worker returns all of them merged: the HELP and TYPE
lines once per family, the family's samples from every worker together (the text format requires
a family's samples to be contiguous), each with ``worker="<index>"`` added, so ``sum without
(worker)`` gives the gateway's totals. ``hybridgate_worker_up`` says which workers answered.

Worker 0's ``a_total{x="1"} 2.0`` and worker 1's ``a_total{x="1"} 3.0`` become
``a_total{worker="0",x="1"} 2.0`` and ``a_total{worker="1",x="1"} 3.0`` under one
``# HELP a_total`` / ``# TYPE a_total`` pair.
"""

from __future__ import annotations

from collections.abc import Sequence

WORKER_LABEL = "worker"
UP_FAMILY = "hybridgate_worker_up"
_UP_HELP = "1 when the server worker answered this scrape, 0 when it did not (restarting, or too slow)"


def with_worker(sample: str, worker: int) -> str:
    """``sample`` (one exposition line) with the ``worker`` label first among its labels."""
    brace = sample.find("{")
    space = sample.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        rest = sample[brace + 1 :]
        sep = "" if rest.startswith("}") else ","
        return f'{sample[: brace + 1]}{WORKER_LABEL}="{worker}"{sep}{rest}'
    return f'{sample[:space]}{{{WORKER_LABEL}="{worker}"}}{sample[space:]}'


def merge(expositions: Sequence[bytes | None]) -> bytes:
    """One exposition of every worker's (``expositions[i]`` is worker i's; None: it did not answer)."""
    headers: dict[str, list[str]] = {}  # family -> its HELP and TYPE lines, from the first worker with it
    samples: dict[str, list[str]] = {}
    for worker, text in enumerate(expositions):
        if text is None:
            continue
        family = ""
        first = False  # whether this worker is the first with the current family
        for line in text.decode().splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split(" ", 3)[2]
                if name != family:
                    family = name
                    first = family not in headers
                    samples.setdefault(family, [])
                    headers.setdefault(family, [])
                if first:
                    headers[family].append(line)
            elif line and not line.startswith("#"):
                samples.setdefault(family, []).append(with_worker(line, worker))
    lines: list[str] = []
    for family, header in headers.items():
        lines.extend(header)
        lines.extend(samples[family])
    lines.append(f"# HELP {UP_FAMILY} {_UP_HELP}")
    lines.append(f"# TYPE {UP_FAMILY} gauge")
    for worker, text in enumerate(expositions):
        lines.append(f'{UP_FAMILY}{{{WORKER_LABEL}="{worker}"}} {0.0 if text is None else 1.0}')
    return ("\n".join(lines) + "\n").encode()
