"""The load stage: the YAML documents of one config directory, read and not yet checked.

A config directory holds ``experiment.yaml`` and ``trials.yaml`` (required, not
empty), and optionally ``base.yaml`` (shared settings) and ``env.yaml`` (this
machine: workspace, execution). Each file is parsed by
:func:`~expman.config.loading.load_yaml` (key lines kept, hostile input refused);
nothing here looks at what the documents say: that is the validate stage's job.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from expman.config.loading import YamlDocument, load_yaml
from expman.errors import ConfigError

EXPERIMENT_FILE = "experiment.yaml"
BASE_FILE = "base.yaml"
TRIALS_FILE = "trials.yaml"
ENV_FILE = "env.yaml"


@dataclass(frozen=True, slots=True)
class ConfigSources:
    """The parsed files of a config directory (``base`` and ``env`` when present)."""

    root: Path
    experiment: YamlDocument
    trials: YamlDocument
    base: YamlDocument | None = None
    env: YamlDocument | None = None

    @property
    def documents(self) -> Mapping[str, YamlDocument]:
        """Every document present, by file name (``experiment.yaml``, ...)."""
        docs = (self.experiment, self.base, self.trials, self.env)
        return {d.path.name: d for d in docs if d is not None}


def read_config_dir(config_dir: str | os.PathLike[str]) -> ConfigSources:
    """Parse the files of ``config_dir``; a missing required file is a ConfigError."""
    root = Path(config_dir)
    kind = _kind(root)
    if kind != "directory":
        raise ConfigError(
            f"{_describe(kind)}: not a directory with experiment.yaml, base.yaml and trials.yaml",
            file=root,
        )
    return ConfigSources(
        root=root,
        experiment=_required(root / EXPERIMENT_FILE),
        trials=_required(root / TRIALS_FILE),
        base=_optional(root / BASE_FILE),
        env=_optional(root / ENV_FILE),
    )


def _kind(path: Path) -> str:
    """``file``, ``directory``, ``missing``, ``other`` or why it cannot be looked at."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as exc:  # an unreadable folder above it, a name too long, a loop
        return f"cannot be read: {exc.strerror or type(exc).__name__}"
    except ValueError:  # a NUL in the path (from Python; argv cannot hold one)
        return "cannot be a path: it holds a NUL character"
    if stat.S_ISDIR(mode):
        return "directory"
    return "file" if stat.S_ISREG(mode) else "other"


def _describe(kind: str) -> str:
    return {
        "missing": "does not exist",
        "file": "is a file",
        "directory": "is a directory",
        "other": "is not a regular file",
    }.get(kind, kind)


def _required(path: Path) -> YamlDocument:
    kind = _kind(path)
    if kind == "missing":
        raise ConfigError("required file is missing", file=path)
    if kind != "file":
        raise ConfigError(f"{_describe(kind)}; expected a YAML file", file=path)
    doc = load_yaml(path)
    if doc.data is None:
        raise ConfigError("file is empty", file=path)
    return doc


def _optional(path: Path) -> YamlDocument | None:
    kind = _kind(path)
    if kind == "missing":
        return None
    if kind != "file":
        raise ConfigError(f"{_describe(kind)}; expected a YAML file (or none)", file=path)
    return load_yaml(path)
