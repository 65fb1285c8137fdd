"""200 concurrent requests to a real server: every answer right, and batches did form."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np


def _batch_counts(metrics: str, modality: str) -> tuple[float, float]:
    """(number of batches, number of items) for a modality, from the batch-size histogram."""
    count = re.search(rf'mmembed_batch_size_count{{modality="{modality}"}} ([0-9.e+]+)', metrics)
    total = re.search(rf'mmembed_batch_size_sum{{modality="{modality}"}} ([0-9.e+]+)', metrics)
    return (float(count.group(1)), float(total.group(1))) if count and total else (0.0, 0.0)


def test_200_concurrent_requests_are_batched_and_answered_correctly(
    live_server, png_bytes, png_bytes_2, wav_bytes
):
    texts = [f"sentence number {i} about dogs and cats" for i in range(20)]
    files = [png_bytes, png_bytes_2, wav_bytes]

    async def main():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=live_server.url, timeout=120, limits=limits) as http:
            # The reference: each input alone, one request at a time.
            reference_text = [
                (await http.post("/embed", json={"text": t})).json()["embedding"] for t in texts
            ]
            reference_file = [
                (await http.post("/embed", files={"file": ("f", f)})).json()["embedding"]
                for f in files
            ]
            before = (await http.get("/metrics")).text

            async def one(i: int):
                if i % 4 == 3:
                    response = await http.post("/embed", files={"file": ("f", files[i % 3])})
                    return response, reference_file[i % 3]
                response = await http.post("/embed", json={"text": texts[i % 20]})
                return response, reference_text[i % 20]

            results = await asyncio.gather(*(one(i) for i in range(200)))
            after = (await http.get("/metrics")).text
            return results, before, after

    results, before, after = asyncio.run(main())
    assert len(results) == 200
    for response, expected in results:
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["embedding"], expected, atol=1e-5)

    batches_before, items_before = _batch_counts(before, "text")
    batches_after, items_after = _batch_counts(after, "text")
    batches, items = batches_after - batches_before, items_after - items_before
    assert items == 150
    assert batches < items, f"{items} texts in {batches} batches: none was larger than 1"
    bucket_1 = re.search(r'mmembed_batch_size_bucket{le="1.0",modality="text"} ([0-9.e+]+)', after)
    assert bucket_1 is not None and float(bucket_1.group(1)) < batches_after
