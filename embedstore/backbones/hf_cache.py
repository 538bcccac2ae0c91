"""Finding model snapshots in the local Hugging Face cache, never over the network."""

from __future__ import annotations

import os
from pathlib import Path


def hub_cache_dir() -> Path:
    """The hub cache directory, resolved from the environment now (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "huggingface" / "hub"


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot directory of a model repo at its cached 'main' revision, or None if not cached."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, local_files_only=True, cache_dir=str(hub_cache_dir()))
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError; bad repo ids raise ValueError
        return None
    return Path(path)


def cached_file(repo_id: str, filename: str, repo_type: str = "model", revision: str = "main") -> Path | None:
    """One file of a repo in the local hub cache (refs/<revision> -> snapshots/<commit>/<filename>), or None.

    `revision` may be a branch, a tag or a commit hash, as in the cache's own layout. Never downloads.
    """
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            repo_id, filename, cache_dir=str(hub_cache_dir()), revision=revision, repo_type=repo_type
        )
    except ValueError:  # a malformed repo id
        return None
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None
