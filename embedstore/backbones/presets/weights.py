"""Where a preset's weights are on this machine: --weights, an environment variable, or the HF cache.

Order: the path given (file, or a folder holding one of the preset's weight files), then
$EMBEDSTORE_WEIGHTS_<NAME> (same), then $EMBEDSTORE_WEIGHTS_DIR/<name>/, then the local Hugging Face cache
(HF_HUB_CACHE / HF_HOME / ~/.cache/huggingface/hub, the 'main' revision unless
$EMBEDSTORE_HF_REVISION names another). Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedstore.backbones.checkpoints import WEIGHT_SUFFIXES
from embedstore.backbones.hf_cache import cached_file, hub_cache_dir
from embedstore.backbones.presets.records import Preset
from embedstore.core.errors import BackboneError

DIR_ENV = "EMBEDSTORE_WEIGHTS_DIR"
REVISION_ENV = "EMBEDSTORE_HF_REVISION"


def in_path(preset: Preset, path: Path, what: str) -> Path:
    """The weights file at `path` (a file, or a folder with one of the preset's weight files)."""
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise BackboneError(
                f"{what} {str(path)!r} is not a weights file; use one of {', '.join(WEIGHT_SUFFIXES)}"
            )
        return path
    if path.is_dir():
        for name in preset.weight_files:
            if (path / name).is_file():
                return path / name
        raise BackboneError(
            f"{what} {str(path)!r} holds none of {', '.join(preset.weight_files)} for preset {preset.name!r}"
        )
    raise BackboneError(f"{what} {str(path)!r} does not exist")


def find_weights(preset: Preset, given: str | os.PathLike[str] | None = None) -> tuple[Path | None, str]:
    """(weights file, where it was found) or (None, the one-line message saying what to fetch)."""
    if given is not None:
        path = in_path(preset, Path(given).expanduser(), "weights path")
        return path, f"local file {path}"
    named = os.environ.get(preset.env_var)
    if named:
        path = in_path(preset, Path(named).expanduser(), f"${preset.env_var}")
        return path, f"${preset.env_var} {path}"
    folder = os.environ.get(DIR_ENV)
    if folder and (Path(folder).expanduser() / preset.name).is_dir():
        path = in_path(preset, Path(folder).expanduser() / preset.name, f"${DIR_ENV}/{preset.name}")
        return path, f"${DIR_ENV} {path}"
    revision = os.environ.get(REVISION_ENV) or "main"
    for name in preset.weight_files:
        found = cached_file(preset.repo, name, preset.repo_type, revision)
        if found is not None:
            return found, f"Hugging Face cache {found}"
    return None, missing_message(preset, revision)


def missing_message(preset: Preset, revision: str = "main") -> str:
    """What to fetch, from where, and how; whether the repository is gated."""
    files = " or ".join(preset.weight_files)
    gated = (
        f" (gated: accept the terms at {preset.url} and log in with a token, `huggingface-cli login`, first)"
        if preset.gated
        else ""
    )
    at = "" if revision == "main" else f" at revision {revision!r}"
    return (
        f"weights {files} of {preset.repo}{at} are not in the Hugging Face cache {hub_cache_dir()} and "
        f"embedstore never downloads; on a connected machine run `{preset.download_command}`{gated}, "
        f"or pass --weights FILE, or set ${preset.env_var}"
    )
