"""Wire formats: OpenAI chat completions and Anthropic messages, parsed into and rendered from
:mod:`hybridgate.types`, in both directions (as a server and as a client of an upstream)."""
