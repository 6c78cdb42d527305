"""The Ray Data batch job on a local Ray: one output row per input row, row-level errors, resume, `ray job submit`."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import soundfile

from model import load_model
from pipeline import batch, resources
from pipeline.dataset import make_dataset
from recipe.sentences import sentence_pool
from recipe.synthesize import SEEN_VOICES, synthesize

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CLIPS = 200
# Rows no decoder can read, each with the start of the error it must carry.
CORRUPT = {
    "corrupt-text": (b"this is not audio", "row 'corrupt-text': cannot decode audio"),
    "corrupt-empty": (b"", "row 'corrupt-empty': no audio"),
    "corrupt-mp4": (b"\x00\x00\x00\x20ftypisom" + bytes(64), "row 'corrupt-mp4': MP4/M4A/AAC audio is not supported"),
}


def flac_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, format="FLAC")
    return buffer.getvalue()


def _clip(job: tuple[int, str]) -> bytes:
    index, text = job
    return flac_bytes(synthesize(text, SEEN_VOICES[index % len(SEEN_VOICES)]))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """CLIPS synthesised clips of 1-6 s, a truncated one and the CORRUPT rows, shuffled, in small row groups."""
    with Pool(2) as pool:
        clips = pool.map(_clip, enumerate(sentence_pool(CLIPS, seed=31)))
    audio = {f"clip-{i:03d}": data for i, data in enumerate(clips)}
    audio["corrupt-truncated"] = clips[0][:300]
    audio.update({row_id: data for row_id, (data, _) in CORRUPT.items()})
    ids = [list(audio)[i] for i in np.random.default_rng(0).permutation(len(audio))]
    path = tmp_path_factory.mktemp("batch") / "clips.parquet"
    pq.write_table(pa.table({"id": ids, "audio": [audio[i] for i in ids]}), path, row_group_size=25)
    return path, audio


@pytest.fixture(scope="module")
def local_ray():
    resources.local_ray(num_cpus=2, include_dashboard=False)  # fresh, even if a `ray start` cluster left its address
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def expected(dataset) -> dict[str, tuple[str, list[dict]]]:
    """model.transcribe on every good clip: text and words."""
    _, audio = dataset
    model = load_model()
    ids = [row_id for row_id in audio if row_id.startswith("clip-")]
    transcripts = model.transcribe([audio[i] for i in ids])
    return {
        i: (t.text, [{"word": w.word, "start": w.start, "end": w.end} for w in t.words])
        for i, t in zip(ids, transcripts)
    }


def read_output(directory: Path) -> dict[str, dict]:
    rows = pq.read_table(directory).to_pylist()
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "an id was written twice"
    return by_id


def test_every_row_answered_errors_kept_transcripts_match(dataset, local_ray, expected, tmp_path):
    path, audio = dataset
    counts = batch.run(
        batch.BatchConfig(
            input=str(path),
            output=str(tmp_path / "out"),
            frame_counts=(300, 600),
            context_seconds=1.0,
            encoder_rows=32,
            rows_per_file=50,
        )
    )
    rows = read_output(tmp_path / "out")
    assert set(rows) == set(audio) and counts == {"rows": len(audio), "errors": len(CORRUPT) + 1}
    sizes = [pq.read_metadata(file).num_rows for file in (tmp_path / "out").glob("*.parquet")]
    assert max(sizes) == 50 and sum(sizes) == len(audio), sizes  # at most --rows-per-file rows a file
    for row_id, (_, message) in CORRUPT.items():
        assert rows[row_id]["error"].startswith(message) and rows[row_id]["text"] is None
    assert rows["corrupt-truncated"]["error"].startswith("row 'corrupt-truncated': cannot decode audio")
    for row_id, (text, words) in expected.items():
        row = rows[row_id]
        assert row["error"] is None and row["model"] == "parakeet-ctc-default"
        assert (row["text"], row["words"]) == (text, words), row_id
        assert row["duration"] == pytest.approx(len(soundfile.read(io.BytesIO(audio[row_id]))[0]) / 16000)


def test_a_tdt_model_gives_its_offline_results(dataset, local_ray, small_tdt_checkpoint, tmp_path):
    """The rows of one parquet row group on a random TDT checkpoint: the greedy loop runs in the decode tasks."""
    path, audio = dataset
    subset = pq.read_table(path).slice(0, 25)
    pq.write_table(subset, tmp_path / "subset.parquet")
    directory = str(small_tdt_checkpoint.directory)
    batch.run(
        batch.BatchConfig(
            input=str(tmp_path / "subset.parquet"),
            output=str(tmp_path / "out"),
            model=directory,
            frame_counts=(300, 600),
            context_seconds=1.0,
        )
    )
    rows = read_output(tmp_path / "out")
    good = [row_id for row_id in subset.column("id").to_pylist() if row_id.startswith("clip-")]
    expected = load_model(directory).transcribe([audio[row_id] for row_id in good])
    assert set(rows) == set(subset.column("id").to_pylist()) and any(t.words for t in expected)
    for row_id, transcript in zip(good, expected):
        words = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
        assert (rows[row_id]["text"], rows[row_id]["words"], rows[row_id]["error"]) == (transcript.text, words, None)


def test_hugging_face_struct_and_path_cells(local_ray, expected, dataset, tmp_path):
    """The audio column may hold {bytes, path} structs (datasets' Audio feature) or file paths."""
    _, audio = dataset
    ids = ["clip-000", "clip-001", "clip-002"]
    for row_id in ids:
        (tmp_path / f"{row_id}.flac").write_bytes(audio[row_id])
    structs = [{"bytes": audio[ids[0]], "path": None}, {"bytes": None, "path": str(tmp_path / f"{ids[1]}.flac")}, None]
    pq.write_table(pa.table({"key": ids, "speech": structs}), tmp_path / "structs.parquet")
    make_dataset(tmp_path, tmp_path / "made" / "dataset.parquet")
    batch.run(
        batch.BatchConfig(
            input=str(tmp_path / "structs.parquet"),
            output=str(tmp_path / "out-structs"),
            audio_column="speech",
            id_column="key",
        )
    )
    batch.run(batch.BatchConfig(input=str(tmp_path / "made"), output=str(tmp_path / "out-made")))
    structs_out, made_out = read_output(tmp_path / "out-structs"), read_output(tmp_path / "out-made")
    assert [structs_out[i]["text"] for i in ids[:2]] == [expected[i][0] for i in ids[:2]]
    assert structs_out[ids[2]]["error"] == "row 'clip-002': no audio (the cell is empty)"
    assert {row_id: row["text"] for row_id, row in made_out.items()} == {f"{i}.flac": expected[i][0] for i in ids}


def test_one_block_is_cut_in_row_blocks_by_tasks_of_a_quarter_cpu(local_ray):
    """What every stage starts on: one large block cut in blocks of the rows asked for, by tasks that ask for a
    quarter of a CPU (Ray's repartition asks for a whole one, which stalled a 2-core node: BENCHMARKS.md)."""
    blocks = batch.row_blocks(ray.data.from_items([{"id": i} for i in range(200)], override_num_blocks=1), 64)
    assert blocks._logical_plan.dag.ray_remote_args == {"num_cpus": 0.25}
    assert [list(block["id"]) for block in blocks.iter_batches(batch_size=None)] == [
        list(range(start, min(start + 64, 200))) for start in range(0, 200, 64)
    ]


def test_every_row_group_of_every_file_is_read_less_the_written_ids(local_ray, tmp_path):
    """The row groups the driver listed, each read by a task of a quarter CPU; a file whose id column has another
    type is cast to the input's; rows already written are left out."""
    ids = [f"clip-{i:03d}" for i in range(300)]
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"id": ids[:200], "audio": [b"a"] * 200, "x": [0] * 200}), tmp_path / "in/a.parquet", row_group_size=90
    )
    other = pa.table({"id": pa.array(ids[200:], pa.large_string()), "audio": [b"b"] * 100, "x": [1] * 100})
    pq.write_table(other, tmp_path / "in/b.parquet")
    config = batch.BatchConfig(str(tmp_path / "in"), str(tmp_path / "out"))
    schema, groups = batch.check_input(config)
    assert schema.names == ["id", "audio"]
    assert [(Path(group.path).name, group.index, group.rows) for group in groups] == [
        ("a.parquet", 0, 90),
        ("a.parquet", 1, 90),
        ("a.parquet", 2, 20),
        ("b.parquet", 0, 100),
    ]
    dataset = batch.read_input(config.input, schema, groups, pa.array(ids[::2]))
    assert dataset._logical_plan.dag.ray_remote_args == {"num_cpus": 0.25}
    rows = dataset.take_all()
    assert {tuple(row) for row in rows} == {("id", "audio")}
    assert sorted(row["id"] for row in rows) == ids[1::2]
    assert {row["id"]: row["audio"] for row in rows} == {i: b"a" if int(i[5:]) < 200 else b"b" for i in ids[1::2]}


@pytest.mark.parametrize(("asked", "threads"), [(None, os.cpu_count()), (1, 1)])
def test_a_cpu_encoder_actor_runs_a_batch_on_each_core_unless_told(asked, threads):
    """The embedded model's encoder too: unlike a Serve replica's, no core is kept for the featurize tasks, which
    run ahead of it; a call's batches run side by side on them (BENCHMARKS.md, the batch job)."""
    actor = batch.EncodeRows(batch.BatchConfig(input="in", output="out", encoder_threads=asked), "cpu")
    assert actor.encoder.threads == threads


def test_missing_column_is_named(dataset, local_ray, tmp_path):
    path, _ = dataset
    with pytest.raises(ValueError, match=r"has no column 'wav' \(--audio-column\); its columns: id, audio"):
        batch.run(batch.BatchConfig(input=str(path), output=str(tmp_path / "out"), audio_column="wav"))


def test_an_input_without_rows_is_named(tmp_path):
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "audio": pa.array([], pa.binary())}), tmp_path / "e.parquet"
    )
    with pytest.raises(ValueError, match=r"e.parquet has no rows"):
        batch.check_input(batch.BatchConfig(input=str(tmp_path / "e.parquet"), output=str(tmp_path / "out")))


def test_rerun_skips_written_ids_and_replaces_a_half_written_file(dataset, local_ray, tmp_path):
    """A first run over half the rows, a file cut short by a kill, then the whole input: every row exactly once."""
    path, audio = dataset
    table, output = pq.read_table(path), tmp_path / "out"
    pq.write_table(table.slice(0, 100), tmp_path / "first-half.parquet")
    config = {"output": str(output), "frame_counts": (300, 600), "context_seconds": 1.0}
    batch.run(batch.BatchConfig(input=str(tmp_path / "first-half.parquet"), **config))
    first = read_output(output)
    (output / "killed-mid-write.parquet").write_bytes(b"PAR1" + bytes(100))  # no footer: what a kill leaves
    counts = batch.run(batch.BatchConfig(input=str(path), **config))
    rows = read_output(output)
    assert set(rows) == set(audio) and counts["rows"] == len(audio)
    assert not (output / "killed-mid-write.parquet").exists()
    assert all(rows[row_id] == row for row_id, row in first.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(url, timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in {timeout:.0f} s")
        time.sleep(1)


@pytest.fixture(scope="module")
def started_cluster():
    """A `ray start --head` cluster with its dashboard (the job server): (its address, the env to reach it)."""
    gcs_port, dashboard_port = free_port(), free_port()
    # Every port its own: the module's local Ray already holds the default agent ports.
    agent_ports = [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]
    # A token left in ~/.ray by other tools would turn on dashboard auth; this throwaway cluster needs none.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            f"--port={gcs_port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            f"--dashboard-port={dashboard_port}",
            *agent_ports,
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        address = f"http://127.0.0.1:{dashboard_port}"
        wait_for(f"{address}/api/version", timeout=180)
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head takes its processes down with it
        head.wait(timeout=120)


def ray_job(address: str, env: dict[str, str], command: str, *args: str) -> subprocess.CompletedProcess:
    """`ray job COMMAND ARGS` against the cluster; the dashboard answers before its job agent is up: retried."""
    for _ in range(30):
        result = subprocess.run(
            ["ray", "job", command, f"--address={address}", *args], capture_output=True, text=True, timeout=900, env=env
        )
        if "No available agent" not in result.stderr:
            return result
        time.sleep(2)
    return result


def test_ray_job_submit_against_a_started_cluster(dataset, started_cluster, tmp_path):
    path, audio = dataset
    address, env = started_cluster
    submit = ray_job(
        address,
        env,
        "submit",
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "-m",
        "pipeline.batch",
        "--input",
        str(path),
        "--output",
        str(tmp_path / "out"),
    )
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "succeeded" in submit.stdout
    assert set(read_output(tmp_path / "out")) == set(audio)


def test_job_stopped_half_way_then_resubmitted(dataset, started_cluster, expected, tmp_path):
    """A job stopped while it writes files, then submitted again: every row exactly once, transcripts right."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    path, audio = dataset
    address, _ = started_cluster
    table, inputs, output = pq.read_table(path), tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for part, start in enumerate(range(0, len(table), 25)):
        pq.write_table(table.slice(start, 25), inputs / f"part-{part}.parquet")
    client = JobSubmissionClient(address)
    job = {
        "entrypoint": f"python -m pipeline.batch --input {inputs} --output {output} --encoder-rows 16 "
        "--rows-per-file 16",
        "runtime_env": {"working_dir": str(ROOT)},
    }
    first_run = client.submit_job(**job)
    deadline = time.monotonic() + 600
    while not list(output.glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.1)
    client.stop_job(first_run)
    while client.get_job_status(first_run) not in {JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED}:
        time.sleep(0.5)
    assert client.get_job_status(first_run) == JobStatus.STOPPED
    done = sum(pq.read_metadata(path).num_rows for path in output.glob("*.parquet") if _complete(path))
    assert 0 < done < len(audio), f"the stop was not half-way: {done} of {len(audio)} rows written"

    second_run = client.submit_job(**job)
    while client.get_job_status(second_run) not in {JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED}:
        time.sleep(1)
    logs = client.get_job_logs(second_run)
    assert client.get_job_status(second_run) == JobStatus.SUCCEEDED, logs[-3000:]
    assert f"{done} rows already in" in logs, logs[-3000:]
    rows = read_output(output)
    assert set(rows) == set(audio)
    assert {row_id: rows[row_id]["text"] for row_id in expected} == {row_id: t for row_id, (t, _) in expected.items()}


def _complete(path: Path) -> bool:
    try:
        pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError):
        return False
    return True


def test_hotwords_of_the_job_and_of_each_row(local_ray, unseen_speech, tmp_path):
    """--hotwords bias every row, --hotwords-column adds each row's own; a row whose hotwords cannot be spelled
    gets its error; every row's result is model.transcribe's with the same hotwords."""
    texts, audios = unseen_speech
    own = [texts[i].split()[-2:] if i % 3 else None for i in range(9)]
    ids = [f"s{i}" for i in range(9)] + ["bad"]
    cells = [flac_bytes(audio) for audio in audios[:9]] + [flac_bytes(audios[9])]
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ids, "audio": cells, "terms": own + [["zürich"]]}), path)
    config = batch.BatchConfig(
        input=str(path), output=str(tmp_path / "out"), hotwords=("december:2",), hotwords_column="terms"
    )
    assert batch.run(config) == {"rows": 10, "errors": 1}
    rows = read_output(tmp_path / "out")
    assert rows["bad"]["error"] == "row 'bad': hotword 'zürich': the model cannot spell 'ü'"
    model = load_model()
    for i in range(9):
        transcript = model.transcribe(audios[i], hotwords=["december:2", *(own[i] or [])])[0]
        words = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
        assert (rows[f"s{i}"]["text"], rows[f"s{i}"]["words"]) == (transcript.text, words)
    # A cell may also be one comma-separated string; anything else is the row's error, not the job's end.
    assert batch._row_hotwords(config, "row 'a'", "rabbit, painter:2") == ("rabbit,painter:2", "")
    refusal = "row 'b': terms must hold a list of strings or a string, got 7"
    assert batch._row_hotwords(config, "row 'b'", 7) == ("", refusal)
    with pytest.raises(ValueError, match="weight must be in"):
        batch.BatchConfig(input=str(path), output=str(tmp_path / "x"), hotwords=("december:20",))
    with pytest.raises(ValueError, match="no column 'missing' \\(--hotwords-column\\)"):
        batch.check_input(batch.BatchConfig(input=str(path), output=str(tmp_path / "x"), hotwords_column="missing"))
