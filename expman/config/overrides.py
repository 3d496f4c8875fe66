"""Changes the caller makes over every trial: ``key=value`` override strings.

``overrides=["lr=1e-3", "execution.timeout=60"]``: values are parsed as YAML. A key
starting with ``execution.`` changes the execution settings, one starting with
``settings.`` (or any other key) the run settings. Execution changes get the same
checks as an ``execution`` block in a file; a mistake names ``<command line>`` and
the key (``execution.timeout``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from expman.config.loading import YamlDocument
from expman.config.schema import check_execution
from expman.config.specs import Layer
from expman.errors import ConfigError

COMMAND_LINE = Path("<command line>")


@dataclass(frozen=True, slots=True)
class CallerChanges:
    """Settings and execution changes from one of the caller's sources, as plain data."""

    origin: Path
    settings: Mapping[str, Any]
    execution: Mapping[str, Any]

    def layer(self) -> Layer:
        """The settings as the last layers of every trial."""
        doc = YamlDocument(self.origin, self.settings)
        return Layer(doc, "settings", self.settings, caller=True)

    def checked_execution(self) -> dict[str, Any]:
        """The execution changes, validated like an ``execution`` block in a file."""
        if not self.execution:
            return {}
        block = dict(self.execution)
        return check_execution(YamlDocument(self.origin, {"execution": block}), "execution", block)


def parse_overrides(overrides: Sequence[str]) -> CallerChanges:
    """Split ``KEY=VALUE`` strings into settings and execution changes."""
    settings: list[str] = []
    execution: list[str] = []
    for item in overrides:
        key, sep, _value = item.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(".") or key.endswith("."):
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. settings.lr=0.01)",
                file=COMMAND_LINE,
            )
        if key.startswith("execution."):
            execution.append(item[len("execution.") :])
        elif key.startswith("settings."):
            settings.append(item[len("settings.") :])
        else:
            settings.append(item)
    try:
        parsed_settings = OmegaConf.to_container(OmegaConf.from_dotlist(settings), resolve=False)
        parsed_execution = OmegaConf.to_container(OmegaConf.from_dotlist(execution), resolve=False)
    except Exception as exc:  # OmegaConf or the YAML parser under it (lr=[1,2)
        raise _override_error(overrides, exc) from None
    assert isinstance(parsed_settings, dict)
    assert isinstance(parsed_execution, dict)
    return CallerChanges(COMMAND_LINE, parsed_settings, parsed_execution)  # type: ignore[arg-type]


def _override_error(overrides: Sequence[str], exc: Exception) -> ConfigError:
    """A ConfigError naming the first override that does not parse on its own."""
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            OmegaConf.from_dotlist([item])
        except Exception as own:  # any parser failure is the user's value
            reason = str(own).splitlines()[0] if str(own) else type(own).__name__
            return ConfigError(
                f"override {item!r}: cannot parse value {value!r} ({reason});"
                " expected a YAML value (quote strings with brackets or colons)",
                file=COMMAND_LINE,
                key=key.strip(),
            )
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"cannot parse overrides: {reason}", file=COMMAND_LINE)
