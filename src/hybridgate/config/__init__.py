"""Configuration: the pydantic schema and the YAML loader (env interpolation, lint)."""

from hybridgate.config.loader import LoadedConfig, load_config, load_config_text
from hybridgate.config.schema import GatewayConfig

__all__ = ["GatewayConfig", "LoadedConfig", "load_config", "load_config_text"]
