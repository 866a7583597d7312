"""Finding and loading DINO / DINOv2 weights: local file, local cache, hub, or a clear error.

Search order when no ``weights=PATH`` is given (each is the official file name, e.g.
``dino_vitbase8_pretrain.pth``):
  1. ``$SEG_SUITE_WEIGHTS/<file>`` (SEG_SUITE_WEIGHTS is a folder)
  2. ``~/.cache/seg_suite/weights/<file>``
  3. torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (where ``torch.hub.load`` of the
     official repos stores it)
  4. download from the official URL into (2), only if dl.fbaipublicfiles.com answers within a
     few seconds and neither SEG_SUITE_OFFLINE nor HF_HUB_OFFLINE is set.
Otherwise MissingWeightsError names the file, its URL, where to put it, and the offline backbone.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.features.backbones import HANDCRAFTED, BackboneConfig
from seg_suite.io.checkpoints import load_state_dict, strip_prefixes

_TRUTHY = {"1", "true", "yes", "on"}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "seg_suite" / "weights"


def candidate_paths(config: BackboneConfig) -> list[Path]:
    """Where a checkpoint for ``config`` is looked for, in order."""
    paths = []
    if os.environ.get("SEG_SUITE_WEIGHTS"):
        paths.append(Path(os.environ["SEG_SUITE_WEIGHTS"]).expanduser() / config.checkpoint_file)
    paths.append(default_cache_dir() / config.checkpoint_file)
    paths.append(Path(torch.hub.get_dir()) / "checkpoints" / config.checkpoint_file)
    return paths


def offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUTHY for v in ("SEG_SUITE_OFFLINE", "HF_HUB_OFFLINE"))


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """True when the URL's host resolves and accepts a TCP connection within ``timeout`` seconds.

    Name resolution has no timeout of its own, so it runs in a worker thread we stop waiting for.
    """
    host = urlparse(url).hostname
    if not host:
        return False

    def probe() -> bool:
        with socket.create_connection((host, 443), timeout=timeout):
            return True

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(probe).result(timeout=timeout + 1.0)
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
    finally:
        pool.shutdown(wait=False)


def missing_weights_message(config: BackboneConfig, searched: list[Path]) -> str:
    where = default_cache_dir()
    return (
        f"backbone {config.name} needs the weights file '{config.checkpoint_file}', not found "
        f"(looked in: {', '.join(str(p.parent) for p in searched)}). Download it from {config.url} "
        f"(listed at {config.page}) and put it in {where}/ (or in the folder named by $SEG_SUITE_WEIGHTS), "
        f"or pass --weights PATH; to run offline without any download use --backbone {HANDCRAFTED}"
    )


def resolve_weights(config: BackboneConfig) -> Path:
    """Return a local path to ``config``'s official checkpoint, downloading it if a hub answers."""
    searched = candidate_paths(config)
    for path in searched:
        if path.is_file():
            return path
    if not offline() and host_reachable(config.url):
        target = default_cache_dir() / config.checkpoint_file
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Writes to a temporary file and renames it, so a failed download leaves nothing behind.
            torch.hub.download_url_to_file(config.url, str(target), progress=True)
            return target
        except Exception as err:  # noqa: BLE001 - report as missing weights, with the reason
            raise MissingWeightsError(
                f"download of {config.url} failed ({err}). " + missing_weights_message(config, searched)
            ) from None
    raise MissingWeightsError(missing_weights_message(config, searched))


_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def adapt_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bring a DINO/DINOv2 checkpoint (official, or a training checkpoint's teacher) to our keys.

    Strips DDP's ``module.``; keeps only the ``backbone.`` part of a training wrapper (DINO's
    MultiCropWrapper, DINOv2's SSLMetaArch) and drops heads; turns DINOv2's FSDP block chunks
    ``blocks.<chunk>.<i>.`` into ``blocks.<i>.``.
    """
    sd = strip_prefixes(state_dict, ("module.",))
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    return {_CHUNKED_BLOCK.sub(r"blocks.\1.", k): v for k, v in sd.items()}


def _short(keys: list[str], n: int = 6, sort: bool = True) -> str:
    keys = sorted(keys) if sort else list(keys)
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint file into ``model`` strictly; UserError lists missing/unexpected/misshapen keys.

    Tolerated: an absent ``mask_token`` (unused at inference; timm's copies lack it) and a
    ``pos_embed`` for another square grid (it is interpolated per input anyway).
    """
    sd = adapt_state_dict(load_state_dict(path))
    own = model.state_dict()
    missing = [k for k in own if k not in sd and k != "mask_token"]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        raise UserError(f"{path} does not fit backbone {getattr(model, 'name', '?')}: " + "; ".join(parts))
    if "pos_embed" in sd and sd["pos_embed"].shape != own["pos_embed"].shape:
        n = sd["pos_embed"].shape[1] - 1
        if sd["pos_embed"].ndim == 3 and int(n**0.5) ** 2 == n and sd["pos_embed"].shape[-1] == own["pos_embed"].shape[-1]:
            model.pos_embed = torch.nn.Parameter(torch.empty_like(sd["pos_embed"]), requires_grad=False)
            own = model.state_dict()
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if bad:
        raise UserError(
            f"{path} does not fit backbone {getattr(model, 'name', '?')}: shape mismatch (file vs model) "
            f"{_short(bad, 3, sort=False)}; is it the checkpoint of another architecture?"
        )
    model.load_state_dict(sd, strict=False)
