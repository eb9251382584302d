"""Reading one image file as the field does: RGB, 8 bits per channel, with errors that name the file.

- grayscale (L, 1), palette (P, with or without transparency), LA, RGBA, CMYK, YCbCr, LAB, HSV → RGB with
  Pillow's conversions (alpha dropped, as torchvision / timm loaders do);
- 16-bit grayscale (I;16*, I with values above 255) → 8 bits by scaling 0..65535 onto 0..255 (round(v / 257),
  torchvision's `convert_image_dtype`), never by clipping; 32-bit float (F) is clipped to 0..255;
- an empty file, a file that is not an image, a truncated image, a zero-size image or a decompression
  bomb → `DataMissingError` naming the file and the reason (never a traceback, never a silent skip).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import DataMissingError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S")


def bad_image(path: Path, why: str, dataset: str | None = None) -> DataMissingError:
    where = f"dataset '{dataset}': " if dataset else ""
    return DataMissingError(f"{where}cannot use image {path}: {why}")


def to_rgb(im: Image.Image) -> Image.Image:
    """A decoded image in any Pillow mode → an 8-bit RGB image."""
    import numpy as np
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in SIXTEEN_BIT_MODES or im.mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if im.mode == "I" and arr.size and arr.max() <= 255 and arr.min() >= 0:
            scaled = arr  # 8-bit values stored as 32-bit ints
        else:
            scaled = np.clip(arr, 0, 65535) / 257.0
        return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "F":
        arr = np.clip(np.asarray(im, dtype=np.float64), 0, 255)
        return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # Pillow's own advice for palette transparency; alpha is then dropped
    return im.convert("RGB")


def open_rgb(path: Path | str, dataset: str | None = None) -> Image.Image:
    """Decode `path` fully and return it as RGB, or raise DataMissingError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise bad_image(path, f"cannot read it ({exc.strerror or exc})", dataset) from None
    if size == 0:
        raise bad_image(path, "empty file (0 bytes)", dataset)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width <= 0 or im.height <= 0:
                    raise bad_image(path, f"zero-size image ({im.width}x{im.height})", dataset)
                im.load()  # decode now: a truncated file fails here, with its name
                rgb = to_rgb(im)
                rgb.load()
    except DataMissingError:
        raise
    except UnidentifiedImageError:
        raise bad_image(path, "not an image file Pillow can decode", dataset) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise bad_image(path, f"too many pixels ({exc})", dataset) from None
    except Exception as exc:  # noqa: BLE001 (a decoder may fail in any way on damaged bytes: name the file)
        raise bad_image(path, f"corrupt or truncated ({type(exc).__name__}: {exc})", dataset) from None
    if rgb.width <= 0 or rgb.height <= 0:
        raise bad_image(path, f"zero-size image ({rgb.width}x{rgb.height})", dataset)
    return rgb
