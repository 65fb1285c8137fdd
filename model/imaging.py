"""Pictures to RGB the way every image encoder here expects: transparency laid on white.

PIL's ``convert("RGB")`` drops the alpha channel and keeps whatever colour the
transparent pixels hold, often black: a clip-art PNG or an emoji would turn
into a black square. Decoding (training data and uploads alike) goes through
:func:`on_white` instead, so a transparent drawing looks as it does on a page.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from model.errors import InvalidInput


def on_white(image: Image.Image) -> Image.Image:
    """An RGB copy of ``image`` with any transparency composited onto white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def check_images(images: Sequence[Image.Image]) -> list[Image.Image]:
    """``images`` as a list, each a PIL image with pixels (InvalidInput naming the first
    that is not)."""
    if isinstance(images, Image.Image) or not isinstance(images, Sequence):
        raise InvalidInput(f"images must be a list of PIL images; got {type(images).__name__}")
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise InvalidInput(f"image {i} must be a PIL image; got {type(image).__name__}")
        if image.width < 1 or image.height < 1:
            raise InvalidInput(f"image {i} has no pixels ({image.width}x{image.height})")
    return list(images)
