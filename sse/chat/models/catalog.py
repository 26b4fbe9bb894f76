"""The models a server offers: each conversation picks one, the first is the default.

Labels come from the upstream's model listing where it has one (see
`listing`), asked lazily on the first `listing()` and kept; a listing that
fails is asked again after `_RETRY_S`, and meanwhile every model keeps its
own label. The echo model lists itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from sse.chat.models.base import Model
from sse.errors import ModelError

__all__ = ["ModelCatalog"]

log = logging.getLogger("ssechat.chat")

# Asks an upstream for the labels of the given ids (see OpenAIModel.upstream_labels).
LabelSource = Callable[[Collection[str]], Awaitable[dict[str, str]]]
# A listing that does not answer in this long leaves the labels as they are.
_LISTING_TIMEOUT_S = 5.0
# After a failed listing, how long until it is asked again.
_RETRY_S = 60.0


class ModelCatalog:
    """The offered models by id, in order; their labels; one connection pool to close."""

    def __init__(self, models: Sequence[Model], labels: LabelSource | None = None) -> None:
        if not models:
            raise ValueError("a catalog needs at least one model")
        self._models = {model.name: model for model in models}
        if len(self._models) != len(models):
            raise ValueError("two models of a catalog have one name")
        self._default = models[0]
        self._source = labels
        self._upstream: dict[str, str] = {}
        self._asked_at: float | None = None  # monotonic; None: never asked
        self._known = labels is None  # no source: the labels are the models' own
        self._lock = asyncio.Lock()

    @property
    def default(self) -> Model:
        """The model of a conversation that picked none."""
        return self._default

    @property
    def ids(self) -> tuple[str, ...]:
        """The models' ids, the default first."""
        return tuple(self._models)

    @property
    def free(self) -> bool:
        """Whether every reply costs nothing (the echo model): no budget, no ceiling."""
        return all(model.free for model in self._models.values())

    def get(self, model_id: str | None) -> Model:
        """The model `model_id` names; the default for None or an id no longer offered."""
        if model_id is None:
            return self._default
        return self._models.get(model_id, self._default)

    def offers(self, model_id: str) -> bool:
        """Whether `model_id` is one of the offered models."""
        return model_id in self._models

    def label(self, model_id: str) -> str | None:
        """What the page shows for `model_id`; None for a model not offered (any more)."""
        model = self._models.get(model_id)
        if model is None:
            return None
        return self._upstream.get(model_id, model.label)

    def labels(self) -> dict[str, str]:
        """Every offered model's label, by id."""
        return {model_id: self.label(model_id) or model_id for model_id in self._models}

    async def listing(self) -> list[dict[str, str]]:
        """`[{"id", "label"}]`, the default first, asking the upstream for labels once."""
        await self._learn_labels()
        return [{"id": model_id, "label": label} for model_id, label in self.labels().items()]

    async def _learn_labels(self) -> None:
        if self._known or self._source is None:
            return
        async with self._lock:
            now = time.monotonic()
            if self._known or (self._asked_at is not None and now - self._asked_at < _RETRY_S):
                return
            self._asked_at = now
            try:
                async with asyncio.timeout(_LISTING_TIMEOUT_S):
                    self._upstream = await self._source(self.ids)
            except (ModelError, TimeoutError) as exc:
                log.warning("model labels are their ids for now: %s", exc or "no answer in time")
                return
            self._known = True

    async def aclose(self) -> None:
        """Release what the models hold (siblings share one pool: closing one closes it)."""
        await self._default.aclose()
