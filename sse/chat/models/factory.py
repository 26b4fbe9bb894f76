"""Build the models the configuration names."""

from __future__ import annotations

from sse.chat.models.base import Model
from sse.chat.models.catalog import ModelCatalog
from sse.chat.models.echo import EchoModel
from sse.config import Config

__all__ = ["build_models"]


def build_models(config: Config) -> ModelCatalog:
    """Every model of `--model-name`, the first the default; the echo model alone.

    The OpenAI client is imported only when chosen. The upstream's models
    share one connection pool.
    """
    if config.model == "openai":
        from sse.chat.models.openai import OpenAIModel

        assert config.model_url is not None, "Config checks it"
        first, *others = config.model_names
        model = OpenAIModel(
            url=config.model_url,
            model_name=first,
            api_key=config.model_api_key,
            connect_timeout_s=config.model_connect_timeout_s,
            read_timeout_s=config.model_read_timeout_s,
            max_tokens=config.model_max_tokens,
        )
        models: list[Model] = [model, *(model.sibling(name) for name in others)]
        return ModelCatalog(models, model.upstream_labels)
    return ModelCatalog([EchoModel(delay_s=config.echo_delay_s, max_pieces=config.echo_max_pieces)])
