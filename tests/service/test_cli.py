"""The `mmembed` command, run in-process through `main([...])`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from service.cli import build_parser, main


def lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_embed_text_and_files_print_json_lines(capsys, tmp_path, png_bytes, wav_bytes):
    (tmp_path / "photo.jpg").write_bytes(png_bytes)  # the name lies; the bytes decide
    (tmp_path / "speech.wav").write_bytes(wav_bytes)
    code = main(
        [
            "embed",
            "--preset",
            "tiny",
            "--dims",
            "64",
            "--text",
            "hello",
            str(tmp_path / "photo.jpg"),
            str(tmp_path / "speech.wav"),
        ]
    )
    assert code == 0
    rows = lines(capsys)
    assert [r["modality"] for r in rows] == ["text", "image", "audio"]
    # each row says what it embedded: the text itself, or the file's path
    assert [r["input"] for r in rows] == [
        "hello",
        str(tmp_path / "photo.jpg"),
        str(tmp_path / "speech.wav"),
    ]
    for row in rows:
        assert row["dims"] == 64 and abs(np.linalg.norm(row["embedding"]) - 1) < 1e-5


def test_index_add_then_search_then_stats(capsys, tmp_path, png_bytes):
    data = tmp_path / "data"
    (tmp_path / "a.png").write_bytes(png_bytes)
    common = ["--preset", "tiny", "--data-dir", str(data)]
    assert main(["index", "add", *common, str(tmp_path / "a.png"), "--metadata", '{"k": 1}']) == 0
    assert main(["index", "add", *common, "--text", "a caption", "--id", "cap"]) == 0
    added = lines(capsys)
    assert [r["modality"] for r in added] == ["image", "text"]
    assert added[1]["id"] == "cap"

    assert main(["index", "search", *common, str(tmp_path / "a.png"), "--k", "2"]) == 0
    hits = lines(capsys)
    assert hits[0]["id"] == added[0]["id"] and hits[0]["score"] > 0.999
    assert hits[0]["metadata"]["k"] == 1 and hits[0]["metadata"]["source"].endswith("a.png")
    assert hits[0]["text"] is None
    assert {hit["id"]: hit["text"] for hit in hits}["cap"] == "a caption"

    assert main(["index", "stats", "--data-dir", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 2


def test_words_given_where_a_file_goes_are_pointed_to_text(capsys, tmp_path):
    """`index search 'a red circle'` names no file: the error says how to search by text."""
    common = ["--preset", "tiny", "--data-dir", str(tmp_path / "data")]
    assert main(["index", "search", *common, "a red circle"]) != 0
    err = capsys.readouterr().err
    assert "cannot read a red circle: No such file or directory" in err
    assert "--text 'a red circle'" in err
    assert main(["embed", "--preset", "tiny", str(tmp_path / "gone.wav")]) != 0
    assert "--text" not in capsys.readouterr().err  # a missing file is just missing


def test_index_add_keeps_a_preview_of_each_file_as_a_folder_add_does(
    capsys, tmp_path, png_bytes, wav_bytes, monkeypatch
):
    """A file added by name gets a thumbnail or a clip (what the page shows and what
    `index reembed` embeds again from), unless previews are turned off."""
    import io

    import soundfile as sf
    from PIL import Image

    from index import VectorStore
    from index.errors import PreviewNotFound

    (tmp_path / "a.png").write_bytes(png_bytes)
    (tmp_path / "b.wav").write_bytes(wav_bytes)
    data = tmp_path / "data"
    files = [str(tmp_path / "a.png"), str(tmp_path / "b.wav")]
    assert main(["index", "add", "--preset", "tiny", "--data-dir", str(data), *files]) == 0
    image, audio = lines(capsys)
    with VectorStore.open(data) as store:
        thumbnail = store.get_preview(image["id"])
        clip = store.get_preview(audio["id"])
    assert thumbnail.media_type.startswith("image/")
    assert Image.open(io.BytesIO(thumbnail.data)).size == Image.open(io.BytesIO(png_bytes)).size
    samples, _ = sf.read(io.BytesIO(clip.data))
    expected, _ = sf.read(io.BytesIO(wav_bytes))
    assert clip.media_type.startswith("audio/") and abs(len(samples) / len(expected) - 1) < 0.2

    monkeypatch.setenv("MMEMBED_PREVIEWS", "false")
    bare = tmp_path / "bare"
    assert main(["index", "add", "--preset", "tiny", "--data-dir", str(bare), files[0]]) == 0
    [plain] = lines(capsys)
    with VectorStore.open(bare) as store, pytest.raises(PreviewNotFound):
        store.get_preview(plain["id"])


def test_index_add_a_folder_skips_what_it_cannot_read(capsys, tmp_path, png_bytes, wav_bytes):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "a.png").write_bytes(png_bytes)
    (photos / "b.wav").write_bytes(wav_bytes)
    (photos / "notes.txt").write_text("not media")
    (photos / "sub" / "c.png").write_bytes(png_bytes)
    common = ["--preset", "tiny", "--data-dir", str(tmp_path / "data")]
    assert main(["index", "add", *common, str(photos), "--metadata", '{"album": "x"}']) == 0
    out, err = capsys.readouterr()
    added = [json.loads(line) for line in out.splitlines()]
    assert [(r["modality"], r["source"]) for r in added] == [
        ("image", str(photos / "a.png")),
        ("audio", str(photos / "b.wav")),
    ]
    assert f"skipped {photos / 'notes.txt'}: unrecognised file type" in err
    assert "2 added, 1 skipped; the index now holds 2 items" in err

    assert main(["index", "add", *common, str(photos / "sub"), "--recursive"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == str(photos / "sub" / "c.png")
    assert main(["index", "add", *common, str(photos), "-r"]) == 0  # sub/ included now
    assert len(capsys.readouterr().out.splitlines()) == 3

    assert main(["index", "add", *common, str(photos / "sub"), str(photos / "gone")]) == 0
    assert f"skipped {photos / 'gone'}: no such file or folder" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("no")
    assert main(["index", "add", *common, str(tmp_path / "junk")]) == 1
    assert main(["index", "add", *common, str(photos), "--id", "x"]) == 1
    assert "--id and --text cannot be used with folders" in capsys.readouterr().err


def test_bad_inputs_are_one_line_errors(capsys, tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"not media at all")
    assert main(["embed", "--preset", "tiny", str(tmp_path / "junk.bin")]) == 1
    assert "unrecognised file type" in capsys.readouterr().err
    assert main(["embed", "--preset", "tiny", str(tmp_path / "missing.png")]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert main(["embed", "--preset", "tiny", "--text", " "]) == 1
    assert "empty" in capsys.readouterr().err
    code = main(
        [
            "index",
            "add",
            "--preset",
            "tiny",
            "--data-dir",
            str(tmp_path),
            "--text",
            "x",
            "--metadata",
            "[1]",
        ]
    )
    assert code == 1 and "JSON object" in capsys.readouterr().err


def test_serve_refuses_unsafe_or_impossible_settings(capsys, tmp_path):
    assert main(["serve", "--preset", "tiny", "--host", "0.0.0.0"]) == 1
    assert "MMEMBED_API_KEYS" in capsys.readouterr().err
    assert main(["serve", "--port", "0"]) == 2
    assert "invalid settings: port" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_download_offline_says_what_to_do(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["download", "--modalities", "text", "--cache-dir", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "sentence-transformers/all-MiniLM-L6-v2" in err and "MMEMBED_" in err


def test_download_skips_local_folders_and_demo_encoders(capsys, tmp_path):
    assert main(["download", "--modalities", "text", "--text-encoder", str(tmp_path)]) == 0
    assert "local folder" in capsys.readouterr().out
    assert main(["download", "--preset", "tiny"]) == 0
    assert "nothing to download" in capsys.readouterr().out


def test_download_names_the_releases_packaged_image_encoder(capsys):
    assert main(["download", "--modalities", "image"]) == 0
    out = capsys.readouterr().out
    assert "image: efficientnet-lite0 is installed" in out and "efficientnet_lite0" in out


def test_every_serve_option_has_a_flag():
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    flags = {a.dest for a in serve._actions}
    assert {"host", "port", "preset", "checkpoint", "data_dir", "device", "log_level"} <= flags


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["index", "add", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0 and "usage: mmembed" in capsys.readouterr().out


MODEL_FLAGS = {
    "--preset",
    "--checkpoint",
    "--text-encoder",
    "--image-encoder",
    "--audio-encoder",
    "--audio-decoder",
    "--modalities",
    "--device",
    "--dtype",
    "--torch-threads",
    "--audio-window",
}
MODEL_COMMANDS = [
    ["serve"],
    ["embed"],
    ["index", "add"],
    ["index", "search"],
    ["download"],
    ["train"],
    ["eval"],
    ["data", "features"],
    ["data", "compare-windows"],
]
ALL_COMMANDS = [
    *MODEL_COMMANDS,
    ["index", "stats"],
    ["index", "export"],
    ["index", "import"],
    ["data", "spoken"],
    ["data", "synthetic"],
]


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def _model_group(text: str) -> list[str]:
    """The flags listed under the help's 'model' heading, in order."""
    block = text.split("\nmodel (", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^  (--[a-z-]+)", block, re.M)


def test_top_level_help_lists_every_command(capsys):
    listed = set(re.findall(r"^    ([a-z-]+)\s", _help([], capsys), re.M))
    assert {argv[0] for argv in ALL_COMMANDS} <= listed


@pytest.mark.parametrize("argv", ALL_COMMANDS, ids=" ".join)
def test_each_help_fits_on_a_screen(argv, capsys):
    text = _help(argv, capsys)
    assert len(text.splitlines()) <= 40, f"mmembed {' '.join(argv)} --help:\n{text}"


def test_every_model_command_has_the_same_model_flags(capsys):
    """Same names, same order, same help (so the same defaults) on every command."""
    groups = {" ".join(argv): _model_group(_help(argv, capsys)) for argv in MODEL_COMMANDS}
    first = groups["serve"]
    assert set(first) == MODEL_FLAGS
    for command, flags in groups.items():
        assert flags == first, f"mmembed {command} has model flags {flags}, serve has {first}"
    parser = build_parser()
    required = {"eval": ["--data", "t.jsonl"], "data": ["--data", "t.jsonl", "--cache-dir", "c"]}
    for argv in MODEL_COMMANDS:
        extra = required.get(argv[0], [])
        args = parser.parse_args(
            [*argv, *extra, "--modalities", "audio,text", "--torch-threads", "2"]
        )
        assert (args.modalities, args.torch_threads, args.preset) == ("audio,text", 2, None)


def test_embed_checks_text_like_the_http_api(capsys, monkeypatch):
    """The CLI decodes through service.inputs: the text length limit applies here too."""
    monkeypatch.setenv("MMEMBED_MAX_TEXT_CHARS", "5")
    assert main(["embed", "--preset", "tiny", "--text", "too long a text"]) == 1
    assert "text 0: text is 15 characters; the limit is 5" in capsys.readouterr().err


def test_torch_threads_is_applied_when_the_model_is_built(monkeypatch, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # so that the 1 below can only come from the flag
        assert main(["embed", "--preset", "tiny", "--torch-threads", "1", "--text", "hi"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_index_export_then_import_into_postgres_and_back(capsys, tmp_path, postgres_url):
    data, dump, back = tmp_path / "data", tmp_path / "items.jsonl", tmp_path / "back.jsonl"
    common = ["--preset", "tiny", "--data-dir", str(data)]
    for n in range(3):
        assert main(["index", "add", *common, "--text", f"caption {n}", "--id", f"c{n}"]) == 0
    assert main(["index", "export", "--data-dir", str(data), "--output", str(dump)]) == 0
    assert "exported 3 items" in capsys.readouterr().err
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [row["id"] for row in rows] == ["c0", "c1", "c2"]
    assert rows[0]["text"] == "caption 0" and rows[0]["metadata"] == {}
    assert len(rows[0]["vector"]) == 512
    assert main(["index", "import", str(dump), "--index-url", postgres_url]) == 0
    assert "imported 3 items" in capsys.readouterr().err
    assert main(["index", "import", str(dump), "--index-url", postgres_url]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["index", "import", str(dump), "--index-url", postgres_url, "--replace"]) == 0
    assert main(["index", "stats", "--index-url", postgres_url]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["backend"] == "postgres" and stats["count"] == 3
    assert main(["index", "export", "--index-url", postgres_url, "-o", str(back)]) == 0
    again = [json.loads(line) for line in back.read_text().splitlines()]
    assert [(r["id"], r["text"], r["metadata"]) for r in again] == [
        (r["id"], r["text"], r["metadata"]) for r in rows
    ]


def test_index_commands_name_an_unreachable_database(capsys):
    url = "postgresql://postgres@127.0.0.1:1/nowhere"
    assert main(["index", "stats", "--index-url", url]) == 1
    assert "cannot reach PostgreSQL at 127.0.0.1:1/nowhere" in capsys.readouterr().err
