"""hybridgate: a hybrid local/cloud inference gateway for AI agents.

Agents call it like an OpenAI or Anthropic endpoint; for every request it decides where the
inference runs (a local runtime or a cloud API), carries the decision out, and accounts for it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
