"""One process per data directory: a second opener is refused, naming the holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from index import VectorStore
from index.errors import StoreLocked

REPO_ROOT = Path(__file__).resolve().parents[2]

TRY_OPEN = textwrap.dedent(
    """
    import sys
    from index import VectorStore
    from index.errors import StoreLocked
    try:
        VectorStore.open(sys.argv[1]).close()
    except StoreLocked as exc:
        print(f"locked {exc.holder_pid} {exc}")
    else:
        print("opened")
    """
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from index import VectorStore
    store = VectorStore.open(sys.argv[1])
    print("holding", flush=True)
    time.sleep(60)
    """
)


def _run(code: str, directory: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def test_second_process_is_refused_with_holder_pid(tmp_path, unit_vectors):
    with VectorStore.open(tmp_path) as store:
        store.add(unit_vectors(1)[0], modality="text", id="kept")
        out, _ = _run(TRY_OPEN, tmp_path).communicate(timeout=60)
        word, pid, message = out.split(" ", 2)
        assert word == "locked" and int(pid) == os.getpid()
        assert str(tmp_path.resolve()) in message and f"process {os.getpid()}" in message
        assert store.get("kept").id == "kept"  # the refused opener changed nothing
    out, _ = _run(TRY_OPEN, tmp_path).communicate(timeout=60)
    assert out.strip() == "opened"


def test_second_open_in_the_same_process_is_refused(tmp_path):
    with VectorStore.open(tmp_path):
        with pytest.raises(StoreLocked, match=str(os.getpid())):
            VectorStore.open(tmp_path)
    VectorStore.open(tmp_path).close()


def test_lock_of_a_killed_holder_is_released(tmp_path):
    holder = _run(HOLD, tmp_path)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreLocked) as caught:
            VectorStore.open(tmp_path)
        assert caught.value.holder_pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    with VectorStore.open(tmp_path) as store:
        assert store.count() == 0
