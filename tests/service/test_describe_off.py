"""The default server without a language model loads nothing for /describe: no
projector, no language-model library, no weights. What it costs is the code that looks
for a language model (model/llm.py, about 20 KiB of resident memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import asyncio, json, sys
from pathlib import Path

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

from model import Embedder
from service.describe import load_describer
from service.settings import Settings

embedder = Embedder.from_checkpoint(sys.argv[1])
settings = Settings(llm=sys.argv[2])
before = set(sys.modules)
memory = rss()
service, why = load_describer(embedder, settings)
print(json.dumps({
    "service": service is not None,
    "why": why,
    "projector_loaded": embedder._projector is not None,
    "new_modules": sorted(m for m in set(sys.modules) - before if "llama" in m or "gguf" in m),
    "rss_kib": rss() - memory,
}))
"""


def _probe(checkpoint: Path, llm: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMEMBED_")}
    env |= {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(checkpoint), llm],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_without_a_language_model_describe_loads_nothing(describing_checkpoint):
    off = _probe(describing_checkpoint, "none")
    assert off.pop("rss_kib") < 100
    assert off == {
        "service": False,
        "why": "the language model is turned off (--llm none)",
        "projector_loaded": False,
        "new_modules": [],
    }


def test_with_one_the_projector_and_the_model_are_loaded(describing_checkpoint, tiny_llm_dir):
    on = _probe(describing_checkpoint, str(tiny_llm_dir))
    assert on["service"] and on["why"] is None and on["projector_loaded"]
    assert any("llama" in m for m in on["new_modules"]) and on["rss_kib"] > 1000
