"""The command line, built from the `Option` each `Config` field carries.

An option is declared once, on its field in `sse.config`; this module only
turns those declarations into an `argparse` parser and a parsed command line
back into a `Config`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from sse.config import GROUPS, Config, Option

__all__ = ["build_parser", "config_from_args", "parse_config", "version"]

_DISTRIBUTION = "ssechat"
# Beside the package in a checkout; an installed wheel has no such file next to it.
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

_DESCRIPTION = (
    "ssechat: a real-time chat server that pushes to browsers over Server-Sent "
    "Events. GET /events opens a stream; POST /send-message with "
    '{"message": "..."} broadcasts to every stream; /conversations/... holds '
    "chats with an assistant whose replies stream token by token; GET / serves "
    "the page."
)


def version() -> str:
    """This program's version: a checkout's pyproject.toml, else the installed metadata.

    The checkout is asked first: a release installed in the same environment must not
    speak for the code that runs. Neither found (the package copied by hand): "unknown".
    """
    try:
        project = tomllib.loads(_PYPROJECT.read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        project = {}
    if project.get("name") == _DISTRIBUTION and isinstance(project.get("version"), str):
        return str(project["version"])
    try:
        return importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the None of flags whose help says what their absence means."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _options() -> list[tuple[dataclasses.Field[object], Option, object]]:
    """Every field that has a flag, with its `Option` and its type."""
    hints = typing.get_type_hints(Config)
    found = []
    for f in dataclasses.fields(Config):
        option = f.metadata.get("option")
        if isinstance(option, Option):
            found.append((f, option, hints[f.name]))
    return found


def _port_default(env: Mapping[str, str], default: int) -> int:
    value = env.get("PORT", "")
    return int(value) if value.isdigit() else default


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; every option of `Config` has a flag."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="ssechat", description=_DESCRIPTION, formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    groups = {name: parser.add_argument_group(name) if name else parser for name in GROUPS}
    for f, option, kind in _options():
        group = groups[option.group]
        default = f.default
        kwargs: dict[str, typing.Any] = {"dest": f.name, "help": option.help}
        if option.metavar is not None:
            kwargs["metavar"] = option.metavar
        if option.choices is not None:
            kwargs["choices"] = option.choices
        if kind is bool:
            kwargs["action"] = "store_false" if option.negates else "store_true"
            group.add_argument(option.flag, **kwargs)
            continue
        if typing.get_origin(kind) is tuple:
            # Repeatable, and each value may list several, comma separated.
            kwargs["action"] = "append"
            group.add_argument(option.flag, **kwargs)
            continue
        if f.name == "port":
            default = _port_default(env, typing.cast(int, default))
        kwargs["default"] = str(default) if option.to_fields is not None else default
        if option.to_fields is None:
            kwargs["type"] = _scalar(kind)
        group.add_argument(option.flag, **kwargs)
    return parser


def _scalar(kind: object) -> type:
    """The type argparse converts a value to: int, float, Path or str."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args else kind
    return base if isinstance(base, type) and base in (int, float, Path) else str


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """The `Config` the parsed command line describes.

    Raises:
        ConfigError: a value is out of range.
    """
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for f, option, kind in _options():
        value = getattr(args, f.name)
        if typing.get_origin(kind) is tuple:
            if value is None:
                continue  # not given: the field's default
            value = tuple(item for arg in value for item in arg.split(",") if item)
        if option.to_fields is not None:
            values.update(option.to_fields(value))
            continue
        values[f.name] = value
    values["model_api_key"] = env.get("OPENAI_API_KEY") or None
    return Config(**values)  # type: ignore[arg-type]


def parse_config(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, Config]:
    """Parse `argv` (or the process's arguments) into a `Config`; exits with 2 on a bad one."""
    from sse.errors import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return parser, config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
