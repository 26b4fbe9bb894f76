"""Flags, SSECHAT_ variables and the --config file are built from Config's fields.

Each option is declared once; its flag, variable and file key all come from it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from sse.cli import build_parser, config_from_args, parse_config, render_config
from sse.config import Config, Option
from sse.errors import ConfigError

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


# Each option once: its flag, its variable, its key in the file, and for each
# place a value, then what the fields it sets hold when that place wins.
_LAYERS = [
    pytest.param(
        ["--history-size", "30"], ("SSECHAT_HISTORY_SIZE", "20"), "history-size = 10",
        {"history_size": (10, 20, 30)}, id="int",
    ),
    pytest.param(
        ["--ping-interval", "3.5"], ("SSECHAT_PING_INTERVAL", "2.5"), "ping-interval = 1",
        {"ping_interval_s": (1.0, 2.5, 3.5)}, id="float",
    ),
    pytest.param(
        ["--no-join-announcement"], ("SSECHAT_JOIN_ANNOUNCEMENT", "yes"),
        "join-announcement = false", {"join_announcement": (False, True, False)}, id="bool",
    ),
    pytest.param(
        ["--ws-compression", "per-connection"], ("SSECHAT_WS_COMPRESSION", "shared"),
        'ws-compression = "off"', {"ws_compression": ("off", "shared", "per-connection")},
        id="choice",
    ),
    pytest.param(
        ["--cors-origin", "https://flag.example"],
        ("SSECHAT_CORS_ORIGIN", "https://env.example,https://env2.example"),
        'cors-origin = ["https://file.example"]',
        {"cors_origins": (
            ("https://file.example",),
            ("https://env.example", "https://env2.example"),
            ("https://flag.example",),
        )},
        id="tuple",
    ),
    pytest.param(
        ["--client-dir", "/flag"], ("SSECHAT_CLIENT_DIR", "/env"), 'client-dir = "/file"',
        {"client_dir": (Path("/file"), Path("/env"), Path("/flag"))}, id="path",
    ),
    pytest.param(
        ["--db", "postgresql://flag@127.0.0.1/chat"], ("SSECHAT_DB", "env.sqlite3"),
        'db = "postgresql://file@127.0.0.1/chat"',
        {
            "db_url": ("postgresql://file@127.0.0.1/chat", None, "postgresql://flag@127.0.0.1/chat"),
            "db_path": (Config().db_path, Path("env.sqlite3"), Config().db_path),
        },
        id="db split into db_path and db_url",
    ),
    pytest.param(
        ["--port", "4000"], ("SSECHAT_PORT", "3002"), "port = 3001",
        {"port": (3001, 3002, 4000)}, id="port",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "var", "line", "expected"), _LAYERS)
def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(
    tmp_path: Path,
    flag: list[str],
    var: tuple[str, str],
    line: str,
    expected: dict[str, tuple[object, object, object]],
) -> None:
    file = tmp_path / "ssechat.toml"
    file.write_text(line + "\n")
    env = dict([var])
    layers = {
        "default": _parse(),
        "file": _parse("--config", str(file)),
        "env over file": _parse("--config", str(file), env=env),
        "flag over env": _parse("--config", str(file), *flag, env=env),
    }
    for name, (in_file, in_env, in_flag) in expected.items():
        got = {layer: getattr(config, name) for layer, config in layers.items()}
        assert got == {
            "default": getattr(Config(), name),
            "file": in_file,
            "env over file": in_env,
            "flag over env": in_flag,
        }, name


def test_ssechat_port_beats_port() -> None:
    assert _parse(env={"PORT": "4321", "SSECHAT_PORT": "4322"}).port == 4322
    assert _parse("--port", "4323", env={"PORT": "4321", "SSECHAT_PORT": "4322"}).port == 4323


def test_the_file_can_also_come_from_ssechat_config(tmp_path: Path) -> None:
    file = tmp_path / "ssechat.toml"
    file.write_text("history-size = 9\n")
    assert _parse(env={"SSECHAT_CONFIG": str(file)}).history_size == 9


def test_empty_variables_count_as_not_set() -> None:
    assert _parse(env={"SSECHAT_HISTORY_SIZE": "", "SSECHAT_REDIS_URL": ""}) == Config()


def test_every_option_has_its_own_variable_and_key() -> None:
    options = [f.metadata["option"] for f in dataclasses.fields(Config) if "option" in f.metadata]
    assert len({o.env_var for o in options}) == len({o.key for o in options}) == len(options)
    assert {"SSECHAT_CONFIG", "SSECHAT_WORKER"}.isdisjoint(o.env_var for o in options)
    joined = next(o for o in options if o.negates)
    assert (joined.flag, joined.key, joined.env_var) == (
        "--no-join-announcement", "join-announcement", "SSECHAT_JOIN_ANNOUNCEMENT",
    )  # fmt: skip


def _refusal(tmp_path: Path, text: str | None = None, **env: str) -> str:
    argv = []
    if text is not None:
        file = tmp_path / "ssechat.toml"
        file.write_text(text)
        argv = ["--config", str(file)]
    with pytest.raises(ConfigError) as refused:
        _parse(*argv, env=env)
    return str(refused.value).replace(str(tmp_path), "DIR")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        (
            "histroy-size = 5\n", {},
            "DIR/ssechat.toml: histroy-size: unknown key (did you mean history-size?)",
        ),
        (
            "history_size = 5\n", {},
            "DIR/ssechat.toml: history_size: unknown key; keys are the flag names without the "
            "leading --: write history-size",
        ),
        (
            "no-join-announcement = true\n", {},
            "DIR/ssechat.toml: no-join-announcement: unknown key; keys are the flag names "
            "without the leading --: write join-announcement = false",
        ),
        ("[listening]\nport = 1\n", {}, "DIR/ssechat.toml: listening: unknown key"),
        (
            None, {"SSECHAT_HISTORY_SIZ": "5"},
            "environment variable SSECHAT_HISTORY_SIZ: no such option "
            "(did you mean SSECHAT_HISTORY_SIZE?)",
        ),
        (
            'model-api-key = "sk-1"\n', {},
            "DIR/ssechat.toml: model-api-key: unknown key "
            "(the model's key is read from OPENAI_API_KEY only)",
        ),
        (
            None, {"SSECHAT_MODEL_API_KEY": "sk-1"},
            "environment variable SSECHAT_MODEL_API_KEY: no such option "
            "(the model's key is read from OPENAI_API_KEY only)",
        ),
        (
            None, {"SSECHAT_NO_JOIN_ANNOUNCEMENT": "1"},
            "environment variable SSECHAT_NO_JOIN_ANNOUNCEMENT: no such option "
            "(write SSECHAT_JOIN_ANNOUNCEMENT=false)",
        ),
    ],
)  # fmt: skip
def test_a_key_or_variable_that_names_no_option_is_refused(
    tmp_path: Path, text: str | None, env: dict[str, str], message: str
) -> None:
    assert _refusal(tmp_path, text, **env) == message


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('history-size = "5"\n', {}, "history-size: expected an integer, got '5'"),
        ("history-size = 5.5\n", {}, "history-size: expected an integer, got 5.5"),
        ("history-size = true\n", {}, "history-size: expected an integer, got True"),
        ('ping-interval = "1s"\n', {}, "ping-interval: expected a number, got '1s'"),
        ('join-announcement = "no"\n', {}, "join-announcement: expected true or false"),
        ("cors-origin = [1]\n", {}, "cors-origin: expected a list of strings"),
        ('model = "gpt"\n', {}, "model: expected one of echo, openai, got 'gpt'"),
        ("db = 5\n", {}, "db: expected a string, got 5"),
        ("history-size = \n", {}, "DIR/ssechat.toml: not valid TOML"),
        (None, {"SSECHAT_HISTORY_SIZE": "many"},
         "environment variable SSECHAT_HISTORY_SIZE: expected an integer, got 'many'"),
        (None, {"SSECHAT_JOIN_ANNOUNCEMENT": "maybe"},
         "environment variable SSECHAT_JOIN_ANNOUNCEMENT: expected true or false, got 'maybe'"),
        (None, {"SSECHAT_LOG_LEVEL": "loud"},
         "environment variable SSECHAT_LOG_LEVEL: expected one of debug, info, warning, error"),
        (None, {"PORT": "http"}, "environment variable PORT: expected an integer, got 'http'"),
        (None, {"SSECHAT_PING_INTERVAL": "nan"}, "ping_interval_s must be positive, got nan"),
        (None, {"SSECHAT_MAX_FLUSH_DELAY": "nan"}, "max_flush_delay_s must not be negative"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_refused_naming_its_key(
    tmp_path: Path, text: str | None, env: dict[str, str], message: str
) -> None:
    assert message in _refusal(tmp_path, text, **env)


def test_an_out_of_range_value_is_refused_naming_where_it_came_from(tmp_path: Path) -> None:
    assert _refusal(tmp_path, SSECHAT_HISTORY_SIZE="0") == (
        "history_size must be positive, got 0 (history-size from SSECHAT_HISTORY_SIZE)"
    )
    assert _refusal(tmp_path, "history-bytes = 4096\n", SSECHAT_HISTORY_TOTAL_BYTES="1024") == (
        "history_bytes (4096) must not exceed history_total_bytes (1024): one channel cannot "
        "hold more than all of them (history-bytes from DIR/ssechat.toml; "
        "history-total-bytes from SSECHAT_HISTORY_TOTAL_BYTES)"
    )
    assert _refusal(tmp_path, "port = 70000\n") == (
        "port must be 0..65535, got 70000 (port from DIR/ssechat.toml)"
    )


def test_a_refusal_exits_two_with_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSECHAT_MAX_BODY_BYTES", "-1")
    with pytest.raises(SystemExit) as exited:
        parse_config([])
    assert exited.value.code == 2
    assert (
        "max_body_bytes must be positive, got -1 (max-body-bytes from SSECHAT_MAX_BODY_BYTES)"
        in (capsys.readouterr().err)
    )


def test_print_config_masks_passwords_and_the_api_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SSECHAT_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    with pytest.raises(SystemExit) as exited:
        parse_config(["--print-config", "--db", "postgresql://chat:pgpass@127.0.0.1/chat"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for secret in ("hunter2", "sk-very-secret", "pgpass"):
        assert secret not in out
    printed = tomllib.loads(out)
    assert printed["redis-url"] == "redis://:***@127.0.0.1:6379/0"
    assert printed["db"] == "postgresql://chat:***@127.0.0.1/chat"
    assert "# OPENAI_API_KEY is set: ***" in out.splitlines()


def test_print_config_has_one_key_per_option_and_reads_back_as_the_same_config(
    tmp_path: Path,
) -> None:
    config = _parse(
        "--history-size", "5", "--no-join-announcement", "--cors-origin", "https://a,https://b",
        "--ws-compression", "shared", "--db", "elsewhere.sqlite3", "--max-flush-delay", "0",
    )  # fmt: skip
    text = render_config(config)
    options = [f.metadata["option"] for f in dataclasses.fields(Config) if "option" in f.metadata]
    keys = [line.lstrip("# ").split(" ")[0].rstrip(":") for line in text.splitlines()]
    assert keys == [o.key for o in options]
    file = tmp_path / "printed.toml"
    file.write_text(text)
    assert _parse("--config", str(file)) == config
