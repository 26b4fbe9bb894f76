"""Command line, environment and config file, built from the `Option` of each `Config` field.

An option is declared once, on its field in `sse.config`; this module only
turns those declarations into an `argparse` parser, `SSECHAT_...` environment
variables and the keys of a TOML file, and merges them into a `Config`.

Precedence, highest first: a flag, then the environment (SSECHAT_PORT before
the older PORT), then the file given by --config (or SSECHAT_CONFIG), then the
field's default. Every value is checked where it was found, and an error names
the flag, variable or file key it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.metadata
import json
import math
import os
import re
import sys
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from sse.config import GROUPS, Config, Option
from sse.errors import ConfigError
from sse.io.workers import WORKER_ENV

__all__ = ["build_parser", "config_from_args", "parse_config", "render_config", "version"]

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
_ENV_LINE = (
    "Every option can also be set by an environment variable, SSECHAT_ and the "
    "option's name (SSECHAT_HISTORY_SIZE=500, SSECHAT_JOIN_ANNOUNCEMENT=false), or "
    "in the TOML file of --config (history-size = 500); a flag beats the "
    "environment, which beats the file."
)
_PREFIX = "SSECHAT_"
_CONFIG_ENV = "SSECHAT_CONFIG"
# Kept from before the SSECHAT_ variables; each loses to its SSECHAT_ twin.
_PORT_ENV = "PORT"
# The model's key is never an option: on the command line it would show in `ps`.
_API_KEY_ENV = "OPENAI_API_KEY"
_API_KEY_HINT = f" (the model's key is read from {_API_KEY_ENV} only)"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_MASK = "***"


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
        shown = getattr(action, "shown_default", None)
        if shown is None:
            return action.help
        # The parser's own default is SUPPRESS, so that a flag not given is absent
        # from the parsed namespace and the environment and file can fill it in.
        return f"{action.help} (default: {str(shown).replace('%', '%%')})"


_Field = tuple[dataclasses.Field[object], Option, object]


def _options() -> list[_Field]:
    """Every field that has a flag, with its `Option` and its type."""
    hints = typing.get_type_hints(Config)
    found = []
    for f in dataclasses.fields(Config):
        option = f.metadata.get("option")
        if isinstance(option, Option):
            found.append((f, option, hints[f.name]))
    return found


def _port_default(env: Mapping[str, str], default: int) -> int:
    value = env.get(_PORT_ENV, "")
    return int(value) if value.isdigit() else default


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; every option of `Config` has a flag, plus --config and --print-config."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="ssechat",
        description=f"{_DESCRIPTION} {_ENV_LINE}",
        formatter_class=_HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    groups = {name: parser.add_argument_group(name) if name else parser for name in GROUPS}
    for f, option, kind in _options():
        group = groups[option.group]
        shown: object = f.default
        kwargs: dict[str, typing.Any] = {"dest": f.name, "help": option.help}
        if option.metavar is not None:
            kwargs["metavar"] = option.metavar
        if option.choices is not None:
            kwargs["choices"] = option.choices
        if kind is bool:
            kwargs["action"] = "store_false" if option.negates else "store_true"
        elif typing.get_origin(kind) is tuple:
            # Repeatable, and each value may list several, comma separated.
            kwargs["action"] = "append"
            shown = None  # its help says the default
        else:
            if f.name == "port":
                shown = _port_default(env, typing.cast(int, shown))
            if option.to_fields is None:
                kwargs["type"] = _scalar(kind)
        action = group.add_argument(option.flag, **kwargs)
        action.shown_default = shown  # type: ignore[attr-defined]  # read by _HelpFormatter
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="read options from this TOML file, one key per option named like its flag "
        "without the leading -- (history-size = 500, join-announcement = false); flags and "
        f"SSECHAT_ variables beat it (also from {_CONFIG_ENV})",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the configuration these flags, variables and file make, as TOML with "
        "passwords and keys masked, and exit",
    )
    return parser


def _scalar(kind: object, option: Option | None = None) -> type:
    """The type a text value is converted to: int, float, Path or str (what `to_fields` takes)."""
    if option is not None and option.to_fields is not None:
        return str
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if args else kind
    return base if isinstance(base, type) and base in (int, float, Path) else str


_WANTED = {int: "an integer", float: "a number", Path: "a string", str: "a string"}


def _from_text(text: str, option: Option, kind: object) -> object:
    """A value written as text (an environment variable) as its field's type.

    Raises:
        ValueError: the text is not such a value.
    """
    if kind is bool:
        word = text.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ValueError(f"expected true or false, got {text!r}")
        return word in _TRUE
    if typing.get_origin(kind) is tuple:
        return tuple(item for item in text.split(",") if item)
    scalar = _scalar(kind, option)
    try:
        value: object = scalar(text)
    except ValueError:
        raise ValueError(f"expected {_WANTED[scalar]}, got {text!r}") from None
    return _chosen(value, option)


def _chosen(value: object, option: Option) -> object:
    if option.choices is not None and value not in option.choices:
        raise ValueError(f"expected one of {', '.join(option.choices)}, got {value!r}")
    return value


def _from_toml(value: object, option: Option, kind: object) -> object:
    """A value read from the TOML file as its field's type; no silent conversions.

    Raises:
        ValueError: the value has the wrong type.
    """
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {value!r}")
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str):
            value = value.split(",")  # like the flag and the variable
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(item for item in value if item)
        raise ValueError(f"expected a list of strings, got {value!r}")
    scalar = _scalar(kind, option)
    if isinstance(value, bool):
        pass  # TOML's true is no number
    elif scalar is int and isinstance(value, int):
        return value
    elif scalar is float and isinstance(value, int | float):
        return float(value)
    elif scalar in (str, Path) and isinstance(value, str):
        return _chosen(scalar(value), option)
    raise ValueError(f"expected {_WANTED[scalar]}, got {value!r}")


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_file(path: Path) -> dict[str, object]:
    """The TOML file's table.

    Raises:
        ConfigError: it cannot be read or is not TOML.
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None


def _file_layer(path: Path, fields: Sequence[_Field]) -> dict[str, tuple[object, str]]:
    """Field name -> (value, where) for each key of the file.

    Raises:
        ConfigError: a key names no option, or its value has the wrong type.
    """
    by_key = {option.key: (f, option, kind) for f, option, kind in fields}
    # Field names and the --no-... spelling are refused with the right key, not guessed at.
    aliases = {f.name: option.key for f, option, _ in fields}
    aliases |= {o.flag.removeprefix("--"): o.key for _, o, _ in fields if o.negates}
    layer: dict[str, tuple[object, str]] = {}
    for key, value in _read_file(path).items():
        where = f"{path}: {key}"  # errors name the key; a value's source is the file
        if key not in by_key:
            if key in aliases and aliases[key] != key:
                hint = f"; keys are the flag names without the leading --: write {aliases[key]}"
                if key.startswith("no-"):
                    hint += f" = {str(not value).lower() if isinstance(value, bool) else 'false'}"
            elif "api-key" in key or "api_key" in key:
                hint = _API_KEY_HINT
            else:
                hint = _suggest(key, list(by_key))
            raise ConfigError(f"{where}: unknown key{hint}")
        f, option, kind = by_key[key]
        try:
            layer[f.name] = (_from_toml(value, option, kind), str(path))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return layer


def _env_layer(env: Mapping[str, str], fields: Sequence[_Field]) -> dict[str, tuple[object, str]]:
    """Field name -> (value, where) for each SSECHAT_ variable (and PORT); empty ones are unset.

    Raises:
        ConfigError: a SSECHAT_ variable names no option, or its value is not of the option's type.
    """
    by_var = {option.env_var: (f, option, kind) for f, option, kind in fields}
    known = {*by_var, _CONFIG_ENV, WORKER_ENV}
    negated = {
        _PREFIX + o.flag.removeprefix("--").upper().replace("-", "_"): o.env_var
        for _, o, _ in fields
        if o.negates
    }
    for name in sorted(env):
        if name.startswith(_PREFIX) and name not in known:
            if name in negated:
                hint = f" (write {negated[name]}=false)"
            elif "API_KEY" in name:
                hint = _API_KEY_HINT
            else:
                hint = _suggest(name, sorted(known))
            raise ConfigError(f"environment variable {name}: no such option{hint}")
    layer: dict[str, tuple[object, str]] = {}
    names = [(_PORT_ENV, "port")] + [(var, f.name) for var, (f, _, _) in by_var.items()]
    for name, field_name in names:  # SSECHAT_PORT comes after PORT, so it wins
        text = env.get(name, "")
        if not text:
            continue
        _, option, kind = next(entry for entry in fields if entry[0].name == field_name)
        try:
            layer[field_name] = (_from_text(text, option, kind), name)
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}: {exc}") from None
    return layer


def _flag_layer(
    args: argparse.Namespace, fields: Sequence[_Field]
) -> dict[str, tuple[object, str]]:
    """Field name -> (value, flag) for each flag given on the command line."""
    layer: dict[str, tuple[object, str]] = {}
    for f, option, kind in fields:
        if not hasattr(args, f.name):
            continue  # not given: argparse.SUPPRESS leaves it out
        value = getattr(args, f.name)
        if typing.get_origin(kind) is tuple:
            value = tuple(item for arg in value for item in arg.split(",") if item)
        layer[f.name] = (value, option.flag)
    return layer


def _blame(message: str, sources: Mapping[str, tuple[str, str]]) -> str:
    """`message` with where each setting it names came from, when not from a default."""
    named = [
        f"{key} from {where}"
        for name, (key, where) in sources.items()
        if re.search(rf"(?<![\w-])({name}|--{key})\b", message)
    ]
    return f"{message} ({'; '.join(dict.fromkeys(named))})" if named else message


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    """The `Config` the parsed command line, the environment and the --config file describe.

    Raises:
        ConfigError: a key or variable names no option, a value has the wrong type
            or is out of range; the message says where it came from.
    """
    env = os.environ if env is None else env
    fields = _options()
    merged: dict[str, tuple[object, str]] = {}
    config_path = getattr(args, "config", None) or (
        Path(env[_CONFIG_ENV]) if env.get(_CONFIG_ENV) else None
    )
    if config_path is not None:
        merged |= _file_layer(config_path, fields)
    merged |= _env_layer(env, fields)
    merged |= _flag_layer(args, fields)
    values: dict[str, object] = {}
    sources: dict[str, tuple[str, str]] = {}
    by_name = {f.name: option for f, option, _ in fields}
    for name, (value, where) in merged.items():
        option = by_name[name]
        produced = option.to_fields(value) if option.to_fields is not None else {name: value}
        values |= produced
        sources |= dict.fromkeys([name, *produced], (option.key, where))
    values["model_api_key"] = env.get(_API_KEY_ENV) or None
    try:
        return Config(**values)  # type: ignore[arg-type]  # each value was checked against its field's type
    except ConfigError as exc:
        raise ConfigError(_blame(str(exc), sources)) from None


_QUERY_PASSWORD = re.compile(r"(?<=[?&]password=)[^&#]+")


def _mask(url: str) -> str:
    """`url` with its password, if any, as *** (also redis-py's ?password=, for unix://)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        url = url.replace(parts.netloc, f"{parts.username or ''}:{_MASK}@{host}", 1)
    return _QUERY_PASSWORD.sub(_MASK, url)


def _toml(value: object) -> str:
    """`value` as a TOML value; JSON's strings and numbers are TOML's too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf"  # TOML's spelling; JSON has none (NaN is refused by Config)
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value)


def render_config(config: Config) -> str:
    """`config` as the TOML of a --config file, one key per option, secrets masked."""
    every = dataclasses.fields(Config)
    secret = {f.name for f in every if not f.repr}
    lines = []
    for f, option, _ in _options():
        name = f.name
        # A field the flag sets instead of its own (--db's db_url), when set, is what it says.
        for other in every:
            if (
                other.metadata.get("set_by") == option.flag
                and getattr(config, other.name) is not None
            ):
                name = other.name
        value = getattr(config, name)
        if value is None:
            lines.append(f"# {option.key}: not set")
            continue
        if isinstance(value, str):
            # Any URL may carry a password; a secret that is no URL is not shown at all.
            masked = _mask(value)
            value = _MASK if name in secret and masked == value and "://" not in value else masked
        lines.append(f"{option.key} = {_toml(value)}")
    if config.model_api_key is not None:
        lines.append(f"# {_API_KEY_ENV} is set: {_MASK}")
    return "\n".join(lines) + "\n"


def parse_config(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, Config]:
    """Parse `argv` (or the process's arguments), the environment and --config into a `Config`.

    Exits with 2 on a bad one, and with 0 after printing it for --print-config.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    if getattr(args, "print_config", False):
        sys.stdout.write(render_config(config))
        sys.exit(0)
    return parser, config
