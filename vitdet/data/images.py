"""Reading demo inputs: images as RGB uint8 arrays, video frames, and input listings.

Policy for files that are not plain 8-bit RGB (``read_image``):
- grayscale and palette images become 3 equal channels / their palette colours;
- 16-bit images are scaled to 8 bits (``round(v * 255 / 65535)``), never clipped;
- an alpha channel (RGBA, LA, palette transparency) is composited over white, as a viewer
  shows the picture on a page; the colours under fully transparent pixels are arbitrary;
- the EXIF orientation tag is applied, so arrays are upright as viewers show them;
- images above ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (89,478,485, e.g. 9459 x 9459, Pillow's
  decompression-bomb threshold) are refused before decoding, not downscaled: predictions are
  always in the coordinates of the file. Raise that PIL attribute to accept larger images;
- empty, truncated and non-image files, and pixel formats with no faithful 8-bit form (32-bit
  integer, float) raise ``ImageReadError`` naming the file and the reason.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageReadError",
    "VideoFrames",
    "expand_inputs",
    "is_video",
    "read_image",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageReadError(Exception):
    """An input that cannot be turned into an RGB picture; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def read_image(path: str | os.PathLike, *, upright: bool = True) -> np.ndarray:
    """Read an image file as an RGB array (H, W, 3) uint8; see the module policy.

    upright: apply the EXIF orientation (as viewers show the picture); False: the pixels as
    stored (what annotations made without EXIF handling refer to).
    """
    try:
        if os.stat(path).st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; refuse both alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decodes now: truncated data raises here, not later
                return _to_rgb(ImageOps.exif_transpose(image) if upright else image)
    except ImageReadError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageReadError(path, f"image too large, refusing to decode it ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageReadError(path, "not an image file (or a format Pillow cannot read)") from e
    except FileNotFoundError as e:
        raise ImageReadError(path, "no such file") from e
    except OSError as e:  # truncated or corrupt data, permissions, a directory
        raise ImageReadError(path, f"cannot decode: {e}") from e
    except (ValueError, SyntaxError, EOFError) as e:  # Pillow's corrupt-header errors
        raise ImageReadError(path, f"corrupt or unsupported image: {e}") from e


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB, by the module policy."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray16 = np.asarray(image).astype(np.uint32)
        gray = ((gray16 * 255 + 65535 // 2) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
        return np.repeat(gray[:, :, None], 3, axis=2)  # h w -> h w 3
    if image.mode in ("I", "F"):
        raise ValueError(f"pixel mode {image.mode!r} (32-bit integer or float) is not supported")
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"))


def is_video(path: str | os.PathLike) -> bool:
    """Whether a file is read as a video, by its extension (OpenCV also 'opens' still images)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


class VideoFrames:
    """The frames of a video file as RGB arrays (H, W, 3) uint8, read with OpenCV.

    ``fps`` and ``num_frames`` are the container's claims (``num_frames`` may be 0 or
    approximate); iteration stops at the first frame that cannot be decoded.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        if not os.path.isfile(path):
            raise ImageReadError(path, "no such file")
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ImageReadError(path, "cannot open as a video")
        self.path = str(path)
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        self.num_frames = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        self._capture = capture

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = self._capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            self._capture.release()


def expand_inputs(specs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Input files named by ``specs``, and the specs that named nothing.

    A spec is a file (kept whatever its extension), a directory (searched recursively for
    image and video extensions, sorted) or a glob pattern (``**`` recursive; matched files and
    directories are expanded as above). Files are listed once, in order of first mention.
    """
    found: dict[Path, None] = {}  # an ordered set
    unmatched = []
    for spec in specs:
        paths = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]
        files = [f for p in paths if os.path.exists(p) for f in _files_under(Path(p))]
        if not files:
            unmatched.append(spec)
        found.update(dict.fromkeys(files))
    return list(found), unmatched


def _files_under(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    extensions = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
