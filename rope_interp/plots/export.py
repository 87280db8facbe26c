"""Figures as image files for a paper: PNG, SVG or PDF through kaleido (≥ 1.0).

kaleido drives an installed Chrome or Chromium (Debian's `chromium` works); it is looked up
before any work, so a missing browser is one clear error, not a traceback after the analyses.
Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from rope_interp.errors import RopeInterpError
from rope_interp.utils.atomic import atomic_write

ImageFormat = Literal["png", "svg", "pdf"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    """The Chrome/Chromium that kaleido will drive (`BROWSER_PATH` first), or None."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit and Path(explicit).is_file():
        return explicit
    return next((path for name in _BROWSERS if (path := shutil.which(name))), None)


def check_image_export(fmt: str) -> None:
    """Raise `RopeInterpError` unless figures can be written as `fmt` on this machine."""
    if fmt not in IMAGE_FORMATS:
        raise RopeInterpError(f"--format takes one of {', '.join(IMAGE_FORMATS)}; got {fmt!r}.")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise RopeInterpError(
            "Writing figures as images needs kaleido >= 1.0: pip install 'kaleido>=1'."
        ) from None
    if find_browser() is None:
        raise RopeInterpError(
            "Writing figures as images needs Chrome or Chromium (kaleido drives it): install "
            "one (Debian: apt-get install chromium) or set BROWSER_PATH to its executable."
        )


def write_images(
    figures: Sequence[tuple[str, Any]],
    directory: str | Path,
    fmt: ImageFormat = "png",
    width: int = 900,
    height: int = 560,
    scale: float = 2.0,
) -> list[Path]:
    """Write each `(name, figure)` as `directory/name.fmt`; returns the paths, in order.

    All figures go through one browser session (`plotly.io.write_images`), so the cost of
    starting Chromium is paid once. Sizes are in CSS pixels; `scale` multiplies the raster
    resolution of PNGs (a 900×560 figure at scale 2 is 1800×1120 pixels).
    """
    import plotly.io as pio

    check_image_export(fmt)
    directory = Path(directory)
    paths = [directory / f"{name}.{fmt}" for name, _ in figures]
    if len(set(paths)) != len(paths):
        raise RopeInterpError("Figure names must be unique to be written as files.")
    with contextlib.ExitStack() as stack:
        temporary = [stack.enter_context(atomic_write(path)) for path in paths]
        pio.write_images(
            [figure for _, figure in figures],
            temporary,
            format=fmt,
            width=width,
            height=height,
            scale=scale,
        )
    return paths
