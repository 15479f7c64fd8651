"""The HTTP surface: OpenAI and Anthropic endpoints, models, health. A thin shell over Gateway."""

from hybridgate.api.app import create_app

__all__ = ["create_app"]
