"""The Ray Serve app on the CPU config: HTTP formats, the handle API, batching, long audio and bad input."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile
import yaml

from model import load_model
from model.biasing import COMMON_WORDS
from model.decoding import decoding_options
from pipeline.formats import render, verbose_json
from recipe.metrics import word_error_rate
from recipe.synthesize import back_to_back
from tests.serving import encoder_batch_sizes, running_app

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

PORT = 8123
URL = f"http://127.0.0.1:{PORT}"
# Small buckets (6 and 12 s windows) so long audio is windowed, with 2 s of context at each seam: the embedded model
# needs that much (with 6 s windows and 1 s of context its windowed WER is 10 points above its per-clip WER). The
# encoder runs eagerly (the cpu default): compiling on 2 cores takes minutes; test_stages checks the compiled encoder
# against the eager one.
APP_OPTIONS = {
    "device": "cpu",
    "batch_sizes": [1, 8],
    "frame_counts": [600, 1200],
    "context_seconds": 2.0,
    "max_upload_mb": 1.0,
    "encoder_threads": 1,
    "ingress_replicas": 1,  # the 32 concurrent requests of the batching test meet in one ingress's encoder calls
}

pytestmark = pytest.mark.slow


def flac_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, format="FLAC")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def app():
    # 4 logical CPUs so the TDT app fits beside this one.
    with running_app(APP_OPTIONS, PORT, num_cpus=4) as handle:
        yield handle


@pytest.fixture(scope="module")
def model():
    return load_model()


def post(data: bytes, filename: str = "speech.flac", **fields) -> requests.Response:
    return requests.post(
        f"{URL}/v1/audio/transcriptions",
        files={"file": (filename, data)},
        data={"model": "parakeet", **fields},
        timeout=120,
    )


def test_every_response_format_matches_the_model(app, model, unseen_speech) -> None:
    for audio in unseen_speech[1][:3]:
        expected = model.transcribe(audio)[0]
        data = flac_bytes(audio)
        usage = {"type": "duration", "seconds": len(audio) / 16000}
        assert post(data).json() == {"text": expected.text, "usage": usage}
        for kind in ("text", "srt", "vtt"):
            answer = post(data, response_format=kind)
            assert answer.status_code == 200 and answer.text == render(expected, kind)
        answer = post(data, response_format="verbose_json", **{"timestamp_granularities[]": ["word", "segment"]})
        assert answer.json() == json.loads(json.dumps(verbose_json(expected, ("word", "segment"))))
        assert "words" not in post(data, response_format="verbose_json").json()


def test_handle_api_matches_the_model(app, model, unseen_speech) -> None:
    audio = unseen_speech[1][3]
    expected = model.transcribe(audio)[0]
    assert app.transcribe.remote(flac_bytes(audio)).result() == expected
    resampled = app.transcribe.remote(audio, 16000).result()
    assert resampled == expected


def test_concurrent_requests_are_batched_and_all_correct(app, model, unseen_speech) -> None:
    clips = [unseen_speech[1][i % 12] for i in range(32)]
    expected = [model.transcribe(clip)[0].text for clip in clips]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda clip: post(flac_bytes(clip)), clips))
    assert [a.status_code for a in answers] == [200] * 32
    assert [a.json()["text"] for a in answers] == expected
    batches, shared = encoder_batch_sizes()
    assert shared > 0, f"none of {batches} encoder batches held more than one window"


def test_long_audio_is_windowed_without_lost_or_doubled_words(app, model, unseen_speech) -> None:
    sentences, clips = unseen_speech[0][:16], unseen_speech[1][:16]
    audio = back_to_back(clips, pause_seconds=0.25)
    assert len(audio) > 4 * 1200 * 160  # more than four of the largest windows
    windowed = post(flac_bytes(audio), response_format="verbose_json", **{"timestamp_granularities[]": ["word"]}).json()
    # Seams may not cost accuracy against the same recording decoded in one pass, with no seams (the small model is
    # itself less accurate on many sentences at once than one at a time: see bench/long_audio_windows.py).
    reference, whole = " ".join(sentences), model.transcribe([audio])[0].text
    assert word_error_rate([reference], [windowed["text"]]) <= word_error_rate([reference], [whole]) + 0.05
    assert abs(len(windowed["text"].split()) - len(whole.split())) <= 0.1 * len(whole.split())
    starts = [w["start"] for w in windowed["words"]]
    assert starts == sorted(starts) and windowed["words"][-1]["end"] <= len(audio) / 16000 + 0.08


def test_a_tdt_model_serves_what_it_transcribes_offline(app, small_tdt_checkpoint, unseen_speech) -> None:
    """A second app, on a random TDT checkpoint: the transducer's frames go from the Encoder back to the ingress,
    which decodes concurrent requests as one batch."""
    from deployments.app import build_app

    directory = str(small_tdt_checkpoint.directory)
    handle = serve.run(build_app({**APP_OPTIONS, "model": directory}), name="parakeet-tdt", route_prefix="/tdt")
    try:
        clips = unseen_speech[1][:8]
        expected = load_model(directory).transcribe(clips)
        assert any(transcript.words for transcript in expected)
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda clip: requests.post(
                        f"{URL}/tdt/v1/audio/transcriptions",
                        files={"file": ("speech.flac", flac_bytes(clip))},
                        data={"response_format": "verbose_json", "timestamp_granularities[]": "word"},
                        timeout=120,
                    ),
                    clips,
                )
            )
        assert [a.json() for a in answers] == [json.loads(json.dumps(verbose_json(t, ("word",)))) for t in expected]
        assert handle.transcribe.remote(clips[0], 16000).result() == expected[0]
    finally:
        serve.delete("parakeet-tdt")


def test_bad_input_gets_its_status_and_message(app) -> None:
    answer = post(b"this is not audio at all", filename="notes.txt")
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("notes.txt: cannot decode audio")

    answer = post(b"\x00\x00\x00\x20ftypM4A " + bytes(64), filename="voice.m4a")
    assert answer.status_code == 415 and "MP4/M4A/AAC" in answer.json()["error"]["message"]

    answer = post(bytes(2 * 1024 * 1024), filename="big.wav")
    assert answer.status_code == 413 and "exceeds the limit" in answer.json()["error"]["message"]

    nan = io.BytesIO()
    soundfile.write(nan, np.full(1000, np.nan, np.float32), 16000, format="WAV", subtype="FLOAT")
    answer = post(nan.getvalue(), filename="nan.wav")
    assert (
        answer.status_code == 400
        and answer.json()["error"]["message"] == "nan.wav: audio contains NaN or infinite samples"
    )

    assert post(flac_bytes(np.zeros(16000, np.float32)), filename="b.flac", response_format="bogus").status_code == 400
    assert requests.post(f"{URL}/v1/audio/transcriptions", data={"model": "x"}, timeout=30).status_code == 400


def test_empty_and_silent_audio_give_empty_text(app) -> None:
    empty = io.BytesIO()
    soundfile.write(empty, np.zeros(0, np.float32), 16000, format="WAV")
    assert post(empty.getvalue(), filename="empty.wav").json()["text"] == ""
    assert post(flac_bytes(np.zeros(3 * 16000, np.float32))).json()["text"] == ""


def test_a_bad_window_fails_its_request_alone(app, unseen_speech) -> None:
    """Requests whose windows share a call (and a batch): the one with a misshapen window gets its error, the others
    their outputs; likewise for requests in concurrent calls."""
    encoder = serve.get_deployment_handle("Encoder", "parakeet")
    good, bad = np.zeros((300, 80), np.float32), np.zeros((300, 7), np.float32)
    message = "features must be a (frames, 80) array"
    first, failed, last = encoder.encode.remote([[good], [good, bad], [good, good]]).result()
    assert [output.shape for output in first + last] == [(38,)] * 3
    assert isinstance(failed, ValueError) and message in str(failed)
    calls = [encoder.encode.remote([windows]) for windows in ([good], [bad], [good])]
    [first], [failed], [last] = (call.result() for call in calls)
    assert [output.shape for output in first + last] == [(38,)] * 2
    assert isinstance(failed, ValueError) and message in str(failed)


def test_health_and_models(app) -> None:
    assert requests.get(f"{URL}/healthz", timeout=10).json() == {"status": "ok", "live_streams": 0}
    models = requests.get(f"{URL}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["parakeet-ctc-default"]


def test_serve_config_file_is_valid() -> None:
    from ray.serve.schema import ServeDeploySchema

    from deployments.config import AppConfig

    config = ServeDeploySchema.model_validate(
        yaml.safe_load((Path(__file__).parents[1] / "serve_config.yaml").read_text())
    )
    application = config.applications[0]
    assert config.http_options.host == "127.0.0.1"  # this machine only, unless the user opens it (with keys)
    assert application.import_path == "deployments.app:build_app"
    assert AppConfig.from_dict(application.args).buckets.max_frames == 3000
    assert {d.name for d in application.deployments} == {"Transcriber", "Encoder"}
    with pytest.raises(ValueError, match="unknown application option"):
        AppConfig.from_dict({"batch_size": 8})


# --- through OpenAI's own client ---


@pytest.fixture(scope="module")
def client():
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{URL}/v1", api_key="no key needed", max_retries=0, timeout=120)


def test_openai_sdk_gets_every_response_format(app, client, model, unseen_speech) -> None:
    from openai.types.audio import Transcription, TranscriptionVerbose

    audio = unseen_speech[1][3]
    expected = model.transcribe(audio)[0]
    upload = ("speech.flac", flac_bytes(audio))
    answer = client.audio.transcriptions.create(model="parakeet", file=upload)
    assert Transcription.model_validate(answer.model_dump()) == answer  # every field of the right type
    assert answer.text == expected.text and answer.usage.type == "duration"
    assert answer.usage.seconds == pytest.approx(len(audio) / 16000)
    for kind in ("text", "srt", "vtt"):
        assert client.audio.transcriptions.create(model="parakeet", file=upload, response_format=kind) == render(
            expected, kind
        )
    verbose = client.audio.transcriptions.create(
        model="parakeet", file=upload, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    strict = TranscriptionVerbose.model_validate(verbose.model_dump(), strict=True)
    assert strict.text == expected.text and [w.word for w in strict.words] == [w.word for w in expected.words]
    segments = strict.segments
    assert " ".join(segment.text for segment in segments) == expected.text
    assert [token for segment in segments for token in segment.tokens] == [t for w in expected.word_tokens for t in w]
    assert segments[-1].seek == round(segments[-1].start * 100) and segments[0].temperature == 0.0
    assert all(0.5 < segment.compression_ratio < 5 for segment in segments)
    assert client.models.list().data[0].id == "parakeet-ctc-default"


def test_openai_sdk_prompt_and_hotwords_bias_the_transcript(app, client, model, unseen_speech) -> None:
    """OpenAI's `prompt` as the SDK sends it, and our `hotwords` through the SDK's `extra_body`."""
    audio = unseen_speech[1][2]  # greedy decoding writes "enjoye" for its "enjoy"
    expected = model.transcribe(audio, hotwords=["enjoy", "princess"])[0].text
    assert expected != model.transcribe(audio)[0].text
    upload = ("speech.flac", flac_bytes(audio))
    prompted = client.audio.transcriptions.create(model="parakeet", file=upload, prompt="Did you enjoy the princess?")
    assert prompted.text == expected
    named = client.audio.transcriptions.create(model="parakeet", file=upload, extra_body={"hotwords": "enjoy,princess"})
    assert named.text == expected


def test_openai_sdk_streams_text_deltas(app, client, unseen_speech) -> None:
    from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent

    audio = back_to_back(unseen_speech[1][:8], pause_seconds=0.3)  # over two of the app's 12 s windows
    upload = ("long.flac", flac_bytes(audio))
    expected = client.audio.transcriptions.create(model="parakeet", file=upload).text
    *deltas, done = list(client.audio.transcriptions.create(model="parakeet", file=upload, stream=True))
    assert len(deltas) > 1 and all(TranscriptionTextDeltaEvent.model_validate(d.model_dump()) for d in deltas)
    assert TranscriptionTextDoneEvent.model_validate(done.model_dump()).text == expected
    assert "".join(delta.delta for delta in deltas) == expected


def test_openai_sdk_sees_errors_as_its_exceptions(app, client) -> None:
    import openai

    with pytest.raises(openai.BadRequestError, match="notes.txt: cannot decode audio"):
        client.audio.transcriptions.create(model="parakeet", file=("notes.txt", b"not audio"))
    with pytest.raises(openai.NotFoundError, match="translation is not supported"):
        client.audio.translations.create(model="parakeet", file=("speech.flac", flac_bytes(np.zeros(16000))))
    with pytest.raises(openai.BadRequestError, match="response_format must be json or text"):
        client.audio.transcriptions.create(
            model="parakeet", file=("speech.flac", flac_bytes(np.zeros(16000))), response_format="srt", stream=True
        )


@pytest.mark.parametrize(
    "fields, files, message",
    [
        ({"timestamp_granularities": "char", "response_format": "verbose_json"}, 1, "word and/or segment, got char"),
        ({"timestamp_granularities[]": "word"}, 1, "needs response_format=verbose_json, got json"),
        ({"stream": "true", "response_format": "verbose_json"}, 1, "response_format must be json or text"),
        ({"stream_format": "parakeet"}, 1, "stream_format needs stream=true"),
        ({"stream": "true", "stream_format": "sse"}, 1, "stream_format must be one of openai, parakeet, got 'sse'"),
        ({}, 2, "send one audio file per request, got 2 `file` fields"),
    ],
)
def test_contradictory_or_unsupported_fields_get_400(app, fields: dict, files: int, message: str) -> None:
    upload = [("file", (f"{index}.flac", flac_bytes(np.zeros(16000)))) for index in range(files)]
    answer = requests.post(f"{URL}/v1/audio/transcriptions", files=upload, data=fields, timeout=60)
    assert answer.status_code == 400 and message in answer.json()["error"]["message"], answer.text


def test_unknown_routes_answer_in_openais_error_shape(app) -> None:
    answer = requests.get(f"{URL}/v1/nothing-here", timeout=10)
    assert answer.status_code == 404 and set(answer.json()["error"]) == {"message", "type", "param", "code"}
    answer = requests.get(f"{URL}/v1/audio/transcriptions", timeout=10)
    assert answer.status_code == 405 and answer.json()["error"]["code"] == "method_not_allowed"


def test_hotwords_and_prompt_bias_the_transcript(app, model, unseen_speech) -> None:
    """The words greedy decoding missed, sent as `hotwords` or inside a `prompt`, decode as model.transcribe with
    those hotwords decodes them; and the handle API takes DecodingOptions."""
    texts, audios = unseen_speech
    greedy = [transcript.text for transcript in model.transcribe(audios)]
    changed = 0
    for text, audio, plain in zip(texts, audios, greedy):
        missed = [word for word in text.split() if word not in plain.split() and word not in COMMON_WORDS]
        if not missed:
            continue
        expected = model.transcribe(audio, hotwords=missed)[0].text
        assert post(flac_bytes(audio), hotwords=",".join(missed)).json()["text"] == expected
        assert post(flac_bytes(audio), prompt=f"About {' and '.join(missed)}.").json()["text"] == expected
        changed += expected != plain
    assert changed >= 3
    options = decoding_options(["rabbit:2"], beam_size=8)
    assert (
        app.transcribe.remote(audios[0], 16000, options=options).result()
        == model.transcribe(audios[0], hotwords=["rabbit:2"], beam_size=8)[0]
    )


@pytest.mark.parametrize(
    "fields, code, message",
    [
        ({"hotwords": "zürich"}, "invalid_hotwords", "hotword 'zürich': the model cannot spell 'ü'"),
        ({"hotwords": "rabbit:20"}, "invalid_hotwords", "hotword 'rabbit:20': weight must be in (0, 10], got 20"),
        ({"hotwords": ",".join(f"w{i}" for i in range(101))}, "invalid_hotwords", "101 hotwords given; at most 100"),
        ({"beam_size": "99"}, "invalid_request", "beam_size must be an integer from 1 to 16, got 99"),
    ],
)
def test_bad_hotwords_get_400(app, unseen_speech, fields: dict, code: str, message: str) -> None:
    answer = post(flac_bytes(unseen_speech[1][0]), **fields)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code
    assert answer.json()["error"]["message"] == message
