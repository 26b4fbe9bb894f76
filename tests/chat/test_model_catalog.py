"""Several models: --model-name parsed, the catalog's choices, the upstream listing's labels."""

from __future__ import annotations

from collections.abc import Collection

import pytest

from sse.chat.models.catalog import ModelCatalog
from sse.chat.models.echo import EchoModel
from sse.chat.models.factory import build_models
from sse.chat.models.listing import parse_listing
from sse.chat.models.openai import OpenAIModel
from sse.config import Config
from sse.errors import ConfigError, ModelError
from tests.support.fake_openai import FakeOpenAI


def test_model_name_offers_several_models_the_first_the_default() -> None:
    config = Config(model="openai", model_url="http://127.0.0.1:9/v1", model_name=" a, b ,c,")
    assert config.model_names == ("a", "b", "c")
    catalog = build_models(config)
    assert catalog.ids == ("a", "b", "c")
    assert catalog.default.name == "a"
    assert catalog.get("b").name == "b"
    # None, or a model no longer offered, is answered by the default.
    assert catalog.get(None).name == "a"
    assert catalog.get("gone").name == "a"
    assert not catalog.offers("gone")
    assert catalog.label("gone") is None
    assert not catalog.free


@pytest.mark.parametrize("names", ["a,a", ",".join(f"m{i}" for i in range(33)), " , "])
def test_model_name_refuses_repeats_too_many_and_none(names: str) -> None:
    with pytest.raises(ConfigError):
        Config(model="openai", model_url="http://127.0.0.1:9/v1", model_name=names)


def test_the_echo_model_is_its_own_catalog() -> None:
    catalog = build_models(Config())
    assert catalog.ids == ("echo",)
    assert catalog.free
    assert catalog.labels() == {"echo": "built-in echo model"}


def test_a_listing_gives_names_only_to_the_models_asked_about() -> None:
    body = (
        b'{"object": "list", "data": [{"id": "a", "name": "Model  A"}, {"id": "b"},'
        b' {"id": "c", "name": "C"}, "junk", {"id": "d", "name": 7}]}'
    )
    assert parse_listing(body, {"a", "b", "d"}) == {"a": "Model A"}
    for bad in (b"[]", b"{}", b"not json", b'{"data": {}}'):
        with pytest.raises(ValueError, match="the model listing"):
            parse_listing(bad, {"a"})


async def test_labels_are_asked_once_and_a_failed_listing_keeps_the_models_own() -> None:
    asked: list[Collection[str]] = []

    async def failing(ids: Collection[str]) -> dict[str, str]:
        asked.append(ids)
        raise ModelError("no listing here")

    catalog = ModelCatalog([EchoModel()], failing)
    for _ in range(3):
        listing = await catalog.listing()
        assert listing == [{"id": "echo", "label": "built-in echo model"}]
    assert len(asked) == 1  # not again within a minute


async def test_sibling_models_share_one_upstream_and_its_listing() -> None:
    async with FakeOpenAI() as fake:
        fake.models = [{"id": "m1", "name": "First"}, {"id": "m2", "name": "Second"}]
        first = OpenAIModel(url=fake.url, model_name="m1", api_key="sk-test")
        second = first.sibling("m2")
        catalog = ModelCatalog([first, second], first.upstream_labels)
        try:
            assert (first.name, second.name) == ("m1", "m2")
            assert await catalog.listing() == [
                {"id": "m1", "label": "First"},
                {"id": "m2", "label": "Second"},
            ]
            assert [r.target for r in fake.requests] == ["/v1/models"]
        finally:
            await catalog.aclose()
