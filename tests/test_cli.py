"""The command line is built from Config's fields: each option declared once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sse.cli import build_parser, config_from_args
from sse.config import Config, Option

# Set by the program itself, never by a flag: a secret from the environment,
# the half of --db that is a URL, and what a worker of --workers is told.
_NOT_FLAGS = {"db_url", "model_api_key", "reuse_port"}


def _parse(*argv: str, env: dict[str, str] | None = None) -> Config:
    env = env or {}
    return config_from_args(build_parser(env).parse_args(list(argv)), env)


def test_every_field_is_a_flag_or_set_by_the_program() -> None:
    unflagged = {
        f.name
        for f in dataclasses.fields(Config)
        if not isinstance(f.metadata.get("option"), Option)
    }
    assert unflagged == _NOT_FLAGS


def test_no_flags_give_the_embedded_defaults() -> None:
    assert _parse() == Config()


def test_each_flag_sets_its_field() -> None:
    config = _parse(
        "--port", "0", "--history-size", "7", "--ping-interval", "2.5",
        "--no-join-announcement", "--ws-compression", "shared", "--client-dir", "/tmp",
    )  # fmt: skip
    assert config.port == 0
    assert config.history_size == 7
    assert config.ping_interval_s == 2.5
    assert config.join_announcement is False
    assert config.ws_compression == "shared"
    assert config.client_dir == Path("/tmp")


def test_cors_origins_repeat_and_split_on_commas() -> None:
    config = _parse("--cors-origin", "https://a.example,https://b.example", "--cors-origin", "c")
    assert config.cors_origins == ("https://a.example", "https://b.example", "c")


def test_db_is_a_file_or_a_postgresql_url() -> None:
    assert _parse("--db", "chat.sqlite3").db_path == Path("chat.sqlite3")
    pg = _parse("--db", "postgresql://u@127.0.0.1/chat")
    assert pg.db_url == "postgresql://u@127.0.0.1/chat"
    assert pg.db_path == Config().db_path


def test_port_and_api_key_come_from_the_environment() -> None:
    config = _parse(env={"PORT": "4321", "OPENAI_API_KEY": "sk-test"})
    assert config.port == 4321
    assert config.model_api_key == "sk-test"
    assert "sk-test" not in repr(config)


def test_bad_choice_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser({}).parse_args(["--model", "gpt"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
