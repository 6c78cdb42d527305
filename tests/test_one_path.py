"""One path through the model for every runner: the Python API, the CLI, the HTTP endpoint, the batch job and a
stream whose windows match the offline ones give the same text for a recording of over ten minutes, and "" for
digital silence."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import soundfile

from cli.stream import realtime_url, stream_audio
from model import load_model
from model.audio import load_audio
from model.stages import Buckets
from model.windows import DEFAULT_CONTEXT_SECONDS
from pipeline import batch
from pipeline.streaming import StreamSettings
from recipe.synthesize import back_to_back
from tests.serving import running_app

ray = pytest.importorskip("ray")

PORT = 8127
URL = f"http://127.0.0.1:{PORT}"
# The defaults everywhere (30 s windows, 2 s of context), except a backlog that lets a test stream run 100x real time.
APP_OPTIONS = {"device": "cpu", "encoder_threads": 1, "stream_max_backlog_s": 3600.0}
WINDOW_SECONDS = Buckets().max_frames / 100  # 10 ms feature frames
# Stream windows equal to the offline ones: each commits the middle of a 30 s window, 2 s of context on each side.
OFFLINE_WINDOWS = StreamSettings(
    chunk_seconds=WINDOW_SECONDS - 2 * DEFAULT_CONTEXT_SECONDS,
    left_context_seconds=DEFAULT_CONTEXT_SECONDS,
    lookahead_seconds=DEFAULT_CONTEXT_SECONDS,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recordings(unseen_speech, tmp_path_factory) -> dict[str, Path]:
    """FLAC files: over ten minutes of speech (the 36 unseen sentences six times over, each time in another order),
    and 2 s of digital silence. All runners read the same 16-bit samples."""
    directory = tmp_path_factory.mktemp("one_path")
    rng = np.random.default_rng(3)
    clips = [unseen_speech[1][i] for _ in range(6) for i in rng.permutation(len(unseen_speech[1]))]
    speech = back_to_back(clips, pause_seconds=0.3)
    assert len(speech) > 600 * 16000
    paths = {"speech": directory / "long.flac", "silence": directory / "silence.flac"}
    soundfile.write(paths["speech"], speech, 16000)
    soundfile.write(paths["silence"], np.zeros(32000, np.float32), 16000)
    return paths


@pytest.fixture(scope="module")
def app():
    with running_app(APP_OPTIONS, PORT, num_cpus=6) as handle:  # room for the batch job's tasks beside the app
        yield handle


def over_http(path: Path) -> str:
    answer = requests.post(
        f"{URL}/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())}, timeout=600
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["text"]


def by_cli(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "transcribe", str(path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.removesuffix("\n")


def by_batch_job(path: Path, output: Path) -> str:
    dataset = output.with_suffix(".parquet")
    pq.write_table(pa.table({"id": ["clip"], "audio": [path.read_bytes()]}), dataset)
    assert batch.run(batch.BatchConfig(input=str(dataset), output=str(output))) == {"rows": 1, "errors": 0}
    return pq.read_table(output).column("text")[0].as_py()


def streamed(path: Path) -> str:
    async def done() -> str:
        events = [
            event
            async for _, event in stream_audio(
                realtime_url(f"ws://127.0.0.1:{PORT}/v1/realtime", OFFLINE_WINDOWS), load_audio(path), 100.0
            )
        ]
        assert events[-1]["type"] == "done", events[-1]
        return events[-1]["text"]

    return asyncio.run(done())


def every_runner(path: Path, output: Path) -> dict[str, str]:
    return {
        "model.transcribe": load_model().transcribe(path)[0].text,
        "parakeet transcribe": by_cli(path),
        "HTTP": over_http(path),
        "batch job": by_batch_job(path, output),
        "stream": streamed(path),
    }


def test_a_long_recording_gives_the_same_text_everywhere(app, recordings, tmp_path) -> None:
    texts = every_runner(recordings["speech"], tmp_path / "speech")
    assert len(texts["model.transcribe"].split()) > 1000
    assert texts == {runner: texts["model.transcribe"] for runner in texts}


def test_digital_silence_gives_nothing_everywhere(app, recordings, tmp_path) -> None:
    assert every_runner(recordings["silence"], tmp_path / "silence") == dict.fromkeys(
        ["model.transcribe", "parakeet transcribe", "HTTP", "batch job", "stream"], ""
    )
