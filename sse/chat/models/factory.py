"""Build the model the configuration names."""

from __future__ import annotations

from sse.chat.models.base import Model
from sse.chat.models.echo import EchoModel
from sse.config import Config

__all__ = ["build_model"]


def build_model(config: Config) -> Model:
    """The model for `config.model`; the OpenAI client is imported only when chosen."""
    if config.model == "openai":
        from sse.chat.models.openai import OpenAIModel

        assert config.model_url is not None, "Config checks it"
        assert config.model_name is not None, "Config checks it"
        return OpenAIModel(
            url=config.model_url,
            model_name=config.model_name,
            api_key=config.model_api_key,
            connect_timeout_s=config.model_connect_timeout_s,
            read_timeout_s=config.model_read_timeout_s,
            max_tokens=config.model_max_tokens,
        )
    return EchoModel(delay_s=config.echo_delay_s, max_pieces=config.echo_max_pieces)
