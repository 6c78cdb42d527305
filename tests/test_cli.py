"""The `parakeet` command: transcribe on a checkpoint directory, batch options."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from model import load_model
from pipeline.batch import config_from_args
from pipeline.cli import build_parser, main


@pytest.fixture(scope="module")
def wav_files(speechlike, tmp_path_factory) -> list[Path]:
    directory = tmp_path_factory.mktemp("audio")
    paths = []
    for index, clip in enumerate(speechlike[:2]):
        paths.append(directory / f"clip{index}.flac")
        soundfile.write(paths[-1], clip, 16000)
    return paths


@pytest.mark.parametrize("kind", ["ctc", "tdt"])
def test_text_and_json_match_the_api(kind, small_checkpoint, small_tdt_checkpoint, wav_files, capsys) -> None:
    directory = str((small_checkpoint if kind == "ctc" else small_tdt_checkpoint).directory)
    expected = load_model(directory).transcribe(wav_files)
    assert main(["transcribe", *map(str, wav_files), "--model", directory]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{path}: {transcript.text}" for path, transcript in zip(wav_files, expected)]

    assert main(["transcribe", str(wav_files[0]), "--model", directory, "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["text"] == expected[0].text
    assert payload["duration"] == pytest.approx(expected[0].duration)
    assert [w["word"] for w in payload["words"]] == [w.word for w in expected[0].words]


def test_subtitles(small_checkpoint, wav_files, capsys) -> None:
    assert main(["transcribe", str(wav_files[1]), "--model", str(small_checkpoint.directory), "--format", "vtt"]) == 0
    assert capsys.readouterr().out.startswith("WEBVTT\n")


def test_bad_file_is_a_clear_error_not_a_traceback(small_checkpoint, tmp_path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "transcribe", str(bad), "--model", str(small_checkpoint.directory)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"parakeet: error: {bad}: cannot decode audio")
    assert "Traceback" not in result.stderr


def test_batch_bucket_options_reach_the_job_config() -> None:
    args = build_parser().parse_args(["batch", "--input", "in", "--output", "out", "--batch-sizes", "2,16",
                                      "--frame-counts", "500,1500", "--context-seconds", "1.5"])
    config = config_from_args(args)
    assert (config.buckets.batch_sizes, config.buckets.frame_counts, config.context_seconds) == ((2, 16), (500, 1500), 1.5)


def test_batch_rejects_bad_buckets_before_starting(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["batch", "--input", "in", "--output", "out", "--batch-sizes", "4,x"])
    assert "expected comma-separated whole numbers, got '4,x'" in capsys.readouterr().err
    assert main(["batch", "--input", "in", "--output", "out", "--frame-counts", "2000,1000"]) == 2
    assert "bucket frame_counts must be distinct positive numbers in increasing order" in capsys.readouterr().err
