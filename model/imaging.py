"""Pictures to RGB the way every image encoder here expects: transparency laid on white.

PIL's ``convert("RGB")`` drops the alpha channel and keeps whatever colour the
transparent pixels hold, often black: a clip-art PNG or an emoji would turn
into a black square. Decoding (training data and uploads alike) goes through
:func:`on_white` instead, so a transparent drawing looks as it does on a page.
"""

from __future__ import annotations

from PIL import Image


def on_white(image: Image.Image) -> Image.Image:
    """An RGB copy of ``image`` with any transparency composited onto white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")
