"""Backends: one protocol (:class:`~hybridgate.backends.base.Backend`), one module per adapter."""

from hybridgate.backends.base import Backend, Capabilities, ProbeResult

__all__ = ["Backend", "Capabilities", "ProbeResult"]
