"""Reading images into HxWx3 uint8 RGB arrays, whatever the file holds.

Handles EXIF orientation, grayscale, palette, RGBA/LA (composited on black, as PIL's
``convert('RGB')`` drops alpha), CMYK, and 16-bit or float images (rescaled by their
actual range to 8 bits). Anything that cannot be read raises :class:`ImageReadError`
with a one-line reason meant for ``failures.jsonl``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Above this many pixels an image is refused rather than decoded (memory safety);
# PIL's own bomb guard sits at 2 * 89.5 MP, which we replace by this explicit check.
DEFAULT_MAX_PIXELS = 200_000_000

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


class ImageReadError(Exception):
    """An input image could not be used; ``str(err)`` is a one-line reason."""


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` after EXIF orientation, without decoding pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ImageReadError(_reason(path, err)) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _reason(path, err: Exception) -> str:
    p = Path(path)
    if not p.exists():
        return f"file not found: {p}"
    if p.is_dir():
        return f"is a directory, not an image: {p}"
    if p.stat().st_size == 0:
        return f"empty file (0 bytes): {p}"
    if isinstance(err, UnidentifiedImageError):
        return f"not a readable image file: {p}"
    if isinstance(err, PermissionError):
        return f"permission denied: {p}"
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"could not decode image ({msg}): {p}"


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Rescale a high-bit-depth array to uint8 by its dtype range (or data range for float)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        hi = 65535.0 if arr.max(initial=0) <= 65535 else float(arr.max())
        return np.clip(arr.astype(np.float64) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arr.dtype.kind == "f":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if hi <= 1.0 and lo >= 0.0:
            lo, hi = 0.0, 1.0
        scale = (hi - lo) or 1.0
        return np.clip((np.nan_to_num(arr) - lo) / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read ``path`` as an HxWx3 uint8 RGB array, EXIF orientation applied.

    Raises :class:`ImageReadError` for missing, empty, truncated, non-image or too-large files.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = old
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageReadError(
                    f"image too large ({w}x{h} = {w * h / 1e6:.0f} MP > {max_pixels / 1e6:.0f} MP limit;"
                    f" downscale it or raise max_pixels): {path}"
                )
            im.load()  # truncated files fail here
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                arr = _to_uint8(np.asarray(im))
                arr = np.repeat(arr[..., None], 3, axis=2)
            elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                arr = np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
            else:
                arr = np.asarray(im.convert("RGB"))
    except ImageReadError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageReadError(_reason(path, err)) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"unexpected decoded shape {arr.shape}: {path}")
    return np.ascontiguousarray(arr)
