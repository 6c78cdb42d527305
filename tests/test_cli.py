"""The `parakeet` command: transcribe on a checkpoint directory (every input answered, in order), output formats,
clean errors and exits, batch options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile

from cli.main import build_parser, main
from model import load_model
from pipeline.batch import config_from_args
from pipeline.formats import render


@pytest.fixture(scope="module")
def wav_files(speechlike, tmp_path_factory) -> list[Path]:
    directory = tmp_path_factory.mktemp("audio")
    paths = []
    for index, clip in enumerate(speechlike[:2]):
        paths.append(directory / f"clip{index}.flac")
        soundfile.write(paths[-1], clip, 16000)
    return paths


def parakeet(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, **options)


@pytest.mark.parametrize("kind", ["ctc", "tdt"])
def test_text_and_json_match_the_api(kind, small_checkpoint, small_tdt_checkpoint, wav_files, capsys) -> None:
    directory = str((small_checkpoint if kind == "ctc" else small_tdt_checkpoint).directory)
    expected = load_model(directory).transcribe(wav_files)
    assert main(["transcribe", *map(str, wav_files), "--model", directory]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{path}: {transcript.text}" for path, transcript in zip(wav_files, expected)]

    assert main(["transcribe", *map(str, wav_files), "--model", directory, "--format", "json"]) == 0
    payloads = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [payload["file"] for payload in payloads] == list(map(str, wav_files))
    for payload, transcript in zip(payloads, expected):
        assert payload["text"] == transcript.text
        assert payload["duration"] == pytest.approx(transcript.duration)
        assert [w["word"] for w in payload["words"]] == [w.word for w in transcript.words]


def test_subtitles_of_several_files_go_one_file_each(small_checkpoint, wav_files, tmp_path, capsys) -> None:
    directory = str(small_checkpoint.directory)
    assert main(["transcribe", str(wav_files[1]), "--model", directory, "--format", "vtt"]) == 0
    assert capsys.readouterr().out.startswith("WEBVTT\n")
    assert main(["transcribe", *map(str, wav_files), "--model", directory, "--format", "srt"]) == 2
    assert "srt of several files needs --output-dir DIR" in capsys.readouterr().err
    out = tmp_path / "subtitles"
    assert (
        main(["transcribe", *map(str, wav_files), "--model", directory, "--format", "srt", "--output-dir", str(out)])
        == 0
    )
    expected = load_model(directory).transcribe(wav_files)
    for path, transcript in zip(wav_files, expected):
        assert (out / f"{path.stem}.srt").read_text() == render(transcript, "srt")
    assert capsys.readouterr().out == ""


def test_every_input_gets_its_answer_in_order(small_checkpoint, wav_files, tmp_path) -> None:
    """Good files around a directory, a missing file, random bytes and text: the good ones are transcribed, each bad
    one gets one error line naming it (no decoder chatter, no traceback), and the exit code says some failed."""
    noise = tmp_path / "noise.mp3"
    noise.write_bytes(os.urandom(4096))
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio")
    files = [str(wav_files[0]), str(tmp_path), str(noise), str(tmp_path / "missing.wav"), str(notes), str(wav_files[1])]
    result = parakeet("transcribe", *files, "--model", str(small_checkpoint.directory))
    expected = load_model(small_checkpoint.directory).transcribe(wav_files)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{wav_files[0]}: {expected[0].text}", f"{wav_files[1]}: {expected[1].text}"]
    assert result.stderr.splitlines() == [
        f"parakeet: error: {tmp_path}: is a directory, not an audio file",
        f"parakeet: error: {noise}: cannot decode audio: Format not recognised.",
        f"parakeet: error: {tmp_path / 'missing.wav'}: no such audio file",
        f"parakeet: error: {notes}: cannot decode audio: Format not recognised.",
        "parakeet: 4 of 6 files failed",
    ]
    as_json = parakeet("transcribe", *files[:3], "--model", str(small_checkpoint.directory), "--format", "json")
    payloads = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(p["file"], "error" in p) for p in payloads] == [(files[0], False), (files[1], True), (files[2], True)]
    assert payloads[1]["error"] == f"{tmp_path}: is a directory, not an audio file"


def test_a_closed_pipe_ends_quietly(small_checkpoint, wav_files) -> None:
    """`parakeet transcribe ... | head -0`: the reader is gone before the first line."""
    read, write = os.pipe()
    os.close(read)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "transcribe", *map(str, wav_files), "--model", str(small_checkpoint.directory)],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.parametrize("moment", ["importing", "transcribing"])
def test_ctrl_c_ends_quietly(moment, small_checkpoint, wav_files) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "transcribe",
            *map(str, wav_files * 3000),
            "--model",
            str(small_checkpoint.directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if moment == "importing":
        time.sleep(0.3)  # inside main(), which imports torch and Ray lazily (a second or more)
    else:
        assert process.stdout.readline().startswith(str(wav_files[0]))  # the first transcript, of 6000
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert stderr == "parakeet: interrupted\n"
    # 130, or death by SIGINT (what a shell also shows as 130): CPython re-raises the signal at exit when it landed
    # in code that a C extension ran while importing (torch does), even though main() caught it.
    assert process.returncode in (130, -signal.SIGINT)


def test_a_bad_checkpoint_is_one_line(tmp_path) -> None:
    result = parakeet("transcribe", "x.wav", "--model", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"parakeet: error: {tmp_path}/config.json: file is missing")
    assert len(result.stderr.splitlines()) == 1


def test_hotwords_reach_the_model_and_bad_ones_are_one_line(unseen_speech, tmp_path, capsys) -> None:
    """`--hotwords` (repeatable, comma-separated) and `--beam-size` give what Parakeet.transcribe gives; hotwords
    the model cannot use, or a language model that is not there, are one error line."""
    path = tmp_path / "speech.flac"
    soundfile.write(path, unseen_speech[1][2], 16000)
    expected = load_model().transcribe(path, hotwords=["enjoy", "princess:2"], beam_size=8)[0]
    assert main(["transcribe", str(path), "--hotwords", "enjoy", "--hotwords", "princess:2", "--beam-size", "8"]) == 0
    assert capsys.readouterr().out == render(expected, "text")
    missing = tmp_path / "none.arpa"
    for option, message in (
        (["--hotwords", "zürich"], "parakeet: error: hotword 'zürich': the model cannot spell 'ü'"),
        (["--hotwords", "a:0"], "parakeet: error: hotword 'a:0': weight must be in (0, 10], got 0"),
        (["--lm", str(missing)], f"parakeet: error: language model {missing}: no such file"),
    ):
        result = parakeet("transcribe", str(path), *option)
        assert result.returncode == 2 and result.stderr.splitlines() == [message], result.stderr
    assert main(["batch", "--input", str(path), "--output", str(tmp_path / "out"), "--hotwords", "x:11"]) == 2
    assert capsys.readouterr().err.strip() == "parakeet: error: hotword 'x:11': weight must be in (0, 10], got 11"


def test_batch_bucket_options_reach_the_job_config() -> None:
    args = build_parser().parse_args(
        [
            "batch",
            "--input",
            "in",
            "--output",
            "out",
            "--batch-sizes",
            "2,16",
            "--frame-counts",
            "500,1500",
            "--context-seconds",
            "1.5",
        ]
    )
    config = config_from_args(args)
    assert (config.buckets.batch_sizes, config.buckets.frame_counts, config.context_seconds) == (
        (2, 16),
        (500, 1500),
        1.5,
    )


def test_batch_options_default_to_the_job_config() -> None:
    from pipeline.batch import BatchConfig

    args = build_parser().parse_args(["batch", "--input", "in", "--output", "out"])
    assert config_from_args(args) == BatchConfig(input="in", output="out")


def test_batch_rejects_bad_buckets_before_starting(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["batch", "--input", "in", "--output", "out", "--batch-sizes", "4,x"])
    assert "expected comma-separated whole numbers, got '4,x'" in capsys.readouterr().err
    assert main(["batch", "--input", "in", "--output", "out", "--frame-counts", "2000,1000"]) == 2
    assert "bucket frame_counts must be distinct positive numbers in increasing order" in capsys.readouterr().err
    assert main(["batch", "--input", "in", "--output", "out", "--encoder-threads", "0"]) == 2
    assert "--encoder-threads must be at least 1, got 0" in capsys.readouterr().err


def test_batch_input_is_checked_before_ray_starts(tmp_path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def batch_error(path: Path, *options: str) -> str:
        assert main(["batch", "--input", str(path), "--output", str(tmp_path / "out"), *options]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    missing = tmp_path / "missing.parquet"
    assert batch_error(missing).startswith(f"parakeet: error: cannot read --input {missing}:")
    (tmp_path / "text.parquet").write_text("not parquet")
    assert batch_error(tmp_path / "text.parquet").startswith("parakeet: error: cannot read --input")
    table = pa.table({"id": ["a", "b", "a", "c", "c", "a"], "audio": [b""] * 6})
    pq.write_table(table, tmp_path / "repeated.parquet")
    assert batch_error(tmp_path / "repeated.parquet") == (
        f"parakeet: error: {tmp_path / 'repeated.parquet'}: id 'a' is on 3 rows (2 id(s) repeated, --id-column id); "
        "each row needs an id of its own, since resuming skips written ids"
    )
    assert batch_error(tmp_path / "repeated.parquet", "--audio-column", "wav") == (
        f"parakeet: error: {tmp_path / 'repeated.parquet'} has no column 'wav' (--audio-column); its columns: id, audio"
    )
    pq.write_table(pa.table({"id": ["a", None], "audio": [b"", b""]}), tmp_path / "null.parquet")
    assert batch_error(tmp_path / "null.parquet").endswith("1 row(s) have no id (--id-column id)")
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


@pytest.mark.slow
def test_serve_prints_how_to_reach_its_ray(tmp_path) -> None:
    import re

    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", "8129"], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        lines = []
        while not any(line.startswith("parakeet: Ray dashboard") for line in lines):
            lines.append(server.stderr.readline())
            assert lines[-1] or server.poll() is None, "".join(lines)
        assert any(line.startswith("parakeet: serving on http://127.0.0.1:8129 ") for line in lines)  # loopback
        commands = re.findall(r"`([^`]+)`", lines[-1])
        assert [command.split(" --address")[0] for command in commands] == [
            "RAY_AUTH_MODE=token serve status",
            "RAY_AUTH_MODE=token ray status",
        ]
        status = subprocess.run(commands[0], shell=True, capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and "parakeet:\n    status: RUNNING" in status.stdout, status.stderr[-2000:]
        nodes = subprocess.run(commands[1], shell=True, capture_output=True, text=True, timeout=120)
        assert nodes.returncode == 0 and "Active:" in nodes.stdout, nodes.stderr[-2000:]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)
