"""Offline bulk transcription: a Ray Data job over parquet audio datasets.

    parakeet batch --input clips.parquet --output transcripts/          # local Ray, or the cluster at RAY_ADDRESS
    ray job submit --working-dir . -- python -m pipeline.batch --input s3://bucket/clips/ --output s3://bucket/out/

read the row groups (pipeline.parquet_input) -> featurize (CPU tasks) -> encode (an autoscaling pool of GPU or CPU
actors, fixed-shape buckets) -> decode (CPU tasks; a transducer's greedy loop runs here, batched over a task's rows)
-> write_parquet. Every input row gives exactly one output row: one that cannot be transcribed carries its `error`.
Re-running with the same --output skips the ids already written there. --hotwords bias every row's decoding,
--hotwords-column names a column of each row's own (a list of phrases, or one comma-separated string), added to
them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from model import checkpoint
from model.audio import SAMPLE_RATE, AudioSource
from model.decoding import DecodingOptions, decoding_options
from model.stages import Buckets, Decoder, Encoder, Featurizer, default_dtype
from model.windows import DEFAULT_CONTEXT_SECONDS, Window
from pipeline.options import add_decoding_arguments, decoding_arguments, split_hotwords
from pipeline.parquet_input import RowGroup, filesystem_of, read_row_groups, row_groups
from pipeline.resources import (
    DEVICES,
    check_threads,
    cpu_threads,
    encoder_resources,
    resolve_device,
    start_ray,
)

if TYPE_CHECKING:
    from ray.data import Dataset  # the module imports Ray only where a job runs

WORD_TYPE = pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64())])
NO_ERROR = ""  # between the stages errors are strings (an all-null column would not keep its type); null on output
WINDOW_FIELDS = ("offset", "keep_start", "keep_end", "frames")  # columns of a row's (windows, 4) `windows` array
FEATURIZE_ROWS = 64  # rows per featurize task
# CPUs each task asks for: reading, cutting (row_blocks), decoding and writing a quarter, featurizing half, so that
# beside a CPU encoder actor they all fit on a small machine at once (a task waiting for the stages after it holds
# its CPU meanwhile) and rows stream to the output instead of waiting for the last read.
LIGHT_TASK_CPUS = 0.25
FEATURIZE_TASK_CPUS = 0.5


@dataclass(frozen=True)
class BatchConfig:
    input: str
    output: str
    audio_column: str = "audio"
    id_column: str = "id"
    model: str | None = None  # checkpoint directory; None: the embedded default model
    device: str = "auto"  # auto: cuda when the Ray cluster has GPUs, else cpu
    encoders: int = 1  # the encoder actor pool grows from 1 to this many actors (one GPU each on cuda)
    encoder_threads: int | None = None  # threads of an encoder actor on cpu, a batch each; None: the node's cores
    encoder_rows: int = 64  # rows per encoder call: their windows are sorted by length into the buckets
    batch_sizes: tuple[int, ...] = Buckets.batch_sizes
    frame_counts: tuple[int, ...] = Buckets.frame_counts
    context_seconds: float = DEFAULT_CONTEXT_SECONDS
    max_duration: float = 3600.0  # seconds; a longer row gets an error, found from its header before decoding
    rows_per_file: int = 1000  # most rows an output file holds (the last ones of a run fewer): what a kill can lose
    # Decoding (model.decoding.DecodingOptions): every row's hotwords, and a column of each row's own.
    hotwords: tuple[str, ...] = ()
    hotwords_column: str | None = None
    beam_size: int | None = None
    lm: str | None = None
    lm_alpha: float = DecodingOptions.lm_alpha
    lm_beta: float = DecodingOptions.lm_beta

    def __post_init__(self) -> None:
        Buckets(tuple(self.batch_sizes), tuple(self.frame_counts))  # validates them before any work starts
        check_threads("--encoder-threads", self.encoder_threads)
        object.__setattr__(self, "hotwords", tuple(self.hotwords))
        self.decoding()  # raises HotwordError (a ValueError) for hotwords out of bounds

    def decoding(self, row_hotwords: str = "") -> DecodingOptions:
        """A row's decoding options: the job's hotwords and the row's own (comma-separated)."""
        phrases = [*self.hotwords, *split_hotwords([row_hotwords])]
        return decoding_options(phrases, self.beam_size, self.lm, self.lm_alpha, self.lm_beta)

    @property
    def columns(self) -> list[str]:
        """The input's columns the job reads, the id first."""
        return [self.id_column, self.audio_column, *([self.hotwords_column] if self.hotwords_column else [])]

    @property
    def buckets(self) -> Buckets:
        return Buckets(tuple(self.batch_sizes), tuple(self.frame_counts))


def output_schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema(
        [
            ("id", id_type),
            ("text", pa.string()),
            ("words", pa.list_(WORD_TYPE)),
            ("duration", pa.float64()),
            ("model", pa.string()),
            ("error", pa.string()),
        ]
    )


def audio_source(cell: Any, name: str) -> AudioSource:
    """An audio cell: encoded bytes, a path, or the Hugging Face {"bytes", "path"} struct."""
    if isinstance(cell, dict):
        cell = cell.get("bytes") or cell.get("path")
    if cell is None or (isinstance(cell, (bytes, str)) and len(cell) == 0):
        raise ValueError(f"{name}: no audio (the cell is empty)")
    if not isinstance(cell, (bytes, str)):
        raise ValueError(
            f"{name}: the audio cell holds {type(cell).__name__}; expected bytes, a path or a {{bytes, path}} struct"
        )
    return cell


@functools.cache
def _featurizer(config: BatchConfig) -> Featurizer:
    return Featurizer.from_pretrained(config.model, config.buckets.max_frames, config.context_seconds)


def featurize_rows(batch: pa.Table, config: BatchConfig) -> dict[str, np.ndarray]:
    """Decode and featurize each row; a row that fails keeps its error and no windows."""
    featurizer = _featurizer(config)
    ids = batch.column(config.id_column).to_pylist()
    columns: dict[str, list] = {"id": ids, "duration": [], "error": [], "features": [], "windows": [], "hotwords": []}
    row_hotwords = batch.column(config.hotwords_column).to_pylist() if config.hotwords_column else [None] * len(ids)
    for row_id, cell, hotwords in zip(ids, batch.column(config.audio_column).to_pylist(), row_hotwords):
        name = f"row {row_id!r}"
        phrases, error = _row_hotwords(config, name, hotwords)
        if error:  # the row's answer is its error: nothing to featurize
            (features, windows), duration = _no_windows(featurizer), 0.0
        else:
            features, windows, duration, error = _featurize_row(featurizer, config, name, cell)
        columns["features"].append(features)
        columns["windows"].append(windows)
        columns["duration"].append(duration)
        columns["error"].append(error)
        columns["hotwords"].append(phrases)  # one string for the stages after: a row's options are decoding(it)
    return {column: _column(values) for column, values in columns.items()}


def _row_hotwords(config: BatchConfig, name: str, cell: Any) -> tuple[str, str]:
    """A row's hotwords cell (None, a list of phrases or one comma-separated string) -> (its phrases joined by
    commas, NO_ERROR), or ("", the row's error) when they cannot be used."""
    if not (cell is None or isinstance(cell, str) or isinstance(cell, list) and all(isinstance(i, str) for i in cell)):
        return "", f"{name}: {config.hotwords_column} must hold a list of strings or a string, got {cell!r}"
    phrases = ",".join(split_hotwords([cell] if isinstance(cell, str) else cell or []))
    if phrases:  # the job's own options were checked before Ray started: only the row's hotwords are new
        try:
            _decoder(config.model)[0].context_graph(config.decoding(phrases))
        except ValueError as err:
            return "", f"{name}: {err}"
    return phrases, NO_ERROR


def _featurize_row(
    featurizer: Featurizer, config: BatchConfig, name: str, cell: Any
) -> tuple[np.ndarray, np.ndarray, float, str]:
    """(all windows' features concatenated, the (windows, 4) layout, duration, error or NO_ERROR) of one row."""
    no_features, no_windows = _no_windows(featurizer)
    try:
        audio = featurizer(audio_source(cell, name), SAMPLE_RATE, name, max_seconds=config.max_duration)
    except Exception as err:  # any failure is this row's answer, never the job's end
        return no_features, no_windows, 0.0, str(err) if isinstance(err, ValueError) else f"{name}: {err!r}"
    if not audio.features:  # silence or a clip shorter than one frame: an empty transcript, not an error
        return no_features, no_windows, audio.duration, NO_ERROR
    layout = [(w.offset, w.keep_start, w.keep_end, len(f)) for w, f in zip(audio.windows, audio.features)]
    return np.concatenate(audio.features), np.array(layout, np.float64), audio.duration, NO_ERROR


def _no_windows(featurizer: Featurizer) -> tuple[np.ndarray, np.ndarray]:
    """The features and window layout of a row with nothing to encode."""
    return np.zeros((0, featurizer.features.config.feature_size), np.float32), np.zeros((0, len(WINDOW_FIELDS)))


def _column(values: list) -> np.ndarray:
    """A batch column; arrays of different shapes go in an object array (Ray Data's ragged tensors)."""
    if values and isinstance(values[0], np.ndarray):
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column
    return np.array(values, dtype=object if any(isinstance(v, str) for v in values) else None)


class EncodeRows:
    """An encoder actor: all windows of a batch of rows, sorted by length into the fixed-shape buckets."""

    def __init__(self, config: BatchConfig, device: str) -> None:
        self.config = config
        self.encoder = self.load_encoder(config, device)
        if self.encoder.fixed_shapes:
            self.encoder.warm_up()

    def load_encoder(self, config: BatchConfig, device: str) -> Encoder:
        """On cuda compiled; on cpu eager, on all the node's cores unless told (cpu_threads(), as a Serve Encoder
        replica): the featurize tasks do a fifth of its work and run ahead of it, so a core kept for them would idle
        most of the job. A call's batches run side by side on its cores (model.stages.Encoder), one torch thread each
        in a 64-row call: beside the featurize tasks on the same cores that was faster than torch's threads on one
        batch, which wait for each other at every op (BENCHMARKS.md)."""
        if device == "cuda":
            return Encoder.from_pretrained(config.model, config.buckets, device, default_dtype(device), compile=True)
        threads = cpu_threads(config.encoder_threads)
        return Encoder.from_pretrained(config.model, config.buckets, device, default_dtype(device), threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [
            [features[start : start + frames] for start, frames in zip(_starts(layout[:, 3]), layout[:, 3].astype(int))]
            for features, layout in zip(batch["features"], batch["windows"])
        ]
        errors = list(batch["error"])
        per_row: list[list[np.ndarray]] = []
        scored = [self.config.decoding(hotwords).searches for hotwords in batch["hotwords"]]
        for row, outputs in enumerate(self.encoder.encode_isolating_failures(rows, scored)):
            if isinstance(outputs, Exception):
                errors[row] = errors[row] or f"row {batch['id'][row]!r}: encoder failed: {outputs!r}"
                outputs = []
            per_row.append(outputs)
        # Per row, its windows' outputs (CTC best ids or transducer frames) end to end, and each window's length.
        return {
            "id": batch["id"],
            "duration": batch["duration"],
            "error": _column(errors),
            "windows": batch["windows"],
            "hotwords": batch["hotwords"],
            "encoded": _column([np.concatenate(outputs) if outputs else np.zeros(0, np.int32) for outputs in per_row]),
            "encoded_lengths": _column([np.array([len(o) for o in outputs], np.int64) for outputs in per_row]),
        }


def _starts(frames: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(frames.astype(int))[:-1]]) if len(frames) else np.zeros(0, int)


@functools.cache
def _decoder(model: str | None) -> tuple[Decoder, str]:
    return Decoder.from_pretrained(model), checkpoint.model_name(model)


def decode_rows(batch: dict[str, np.ndarray], config: BatchConfig) -> pa.Table:
    """Encoder outputs -> text and timed words, all rows of the batch decoded together; error rows keep a null
    text."""
    decoder, model_name = _decoder(config.model)
    good = [row for row, error in enumerate(batch["error"]) if error == NO_ERROR]
    utterances = []
    for row in good:
        windows = [
            Window(int(offset), int(keep_start), keep_end) for offset, keep_start, keep_end, _ in batch["windows"][row]
        ]
        outputs = np.split(batch["encoded"][row], np.cumsum(batch["encoded_lengths"][row])[:-1])
        utterances.append((windows, outputs if windows else [], float(batch["duration"][row])))
    texts: list[str | None] = [None] * len(batch["error"])
    words: list[list[dict]] = [[] for _ in texts]
    options = [config.decoding(batch["hotwords"][row]) for row in good]
    for row, transcript in zip(good, decoder.decode_many(utterances, options)):
        texts[row] = transcript.text
        words[row] = [{"word": w.word, "start": w.start, "end": w.end} for w in transcript.words]
    ids = pa.array(list(batch["id"]))
    return pa.Table.from_arrays(
        [
            ids,
            pa.array(texts, pa.string()),
            pa.array(words, pa.list_(WORD_TYPE)),
            pa.array(batch["duration"].astype(np.float64)),
            pa.array([model_name] * len(ids), pa.string()),
            pa.array([error or None for error in batch["error"]], pa.string()),
        ],
        schema=output_schema(ids.type),
    )


def written_ids(output: str) -> pa.Array | None:
    """Ids already in the output's parquet files; a file an interrupted run left half-written is removed."""
    filesystem, root = filesystem_of(output)
    files = [
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        if info.type == pafs.FileType.File and info.path.endswith(".parquet")
    ]
    ids = []
    for path in files:
        try:
            ids.append(pq.read_table(path, columns=["id"], filesystem=filesystem).column("id"))
        except (pa.ArrowInvalid, OSError) as err:
            print(f"parakeet batch: removing {path}, left incomplete by an interrupted run ({err})", file=sys.stderr)
            filesystem.delete_file(path)
    return pa.chunked_array(ids).combine_chunks() if ids else None


def check_input(config: BatchConfig) -> tuple[pa.Schema, list[RowGroup]]:
    """Before Ray starts: the input can be read, has both columns, and every row has an id of its own (resuming
    skips the ids already written, so a repeated id would lose or repeat rows). Returns the schema of the columns
    the job reads (id first) and the input's row groups, from the footers this reads anyway; raises ValueError
    saying what is wrong."""
    try:
        filesystem, root = filesystem_of(config.input)
        source = pads.dataset(root, filesystem=filesystem, format="parquet")
        names = source.schema.names
        for option, column in (
            ("--audio-column", config.audio_column),
            ("--id-column", config.id_column),
            ("--hotwords-column", config.hotwords_column),
        ):
            if column is not None and column not in names:
                raise ValueError(f"{config.input} has no column {column!r} ({option}); its columns: {', '.join(names)}")
        ids = source.to_table(columns=[config.id_column]).column(config.id_column)
        groups = row_groups(source)
        schema = pa.schema([source.schema.field(column) for column in config.columns])
    except (OSError, pa.ArrowException) as err:  # FileNotFoundError, a file that is not parquet, a bad URI
        raise ValueError(f"cannot read --input {config.input}: {err}") from None
    if not len(ids):
        raise ValueError(f"{config.input} has no rows")
    if ids.null_count:
        raise ValueError(f"{config.input}: {ids.null_count} row(s) have no id (--id-column {config.id_column})")
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        first = repeated[0].as_py()
        raise ValueError(
            f"{config.input}: id {first['values']!r} is on {first['counts']} rows ({len(repeated)} id(s) repeated, "
            f"--id-column {config.id_column}); each row needs an id of its own, since resuming skips written ids"
        )
    return schema, groups


def run(config: BatchConfig, encode_rows: type[EncodeRows] = EncodeRows) -> dict[str, int]:
    """Transcribe config.input into parquet files under config.output; returns row counts of the output.

    `encode_rows` is the encoder actors' class (a benchmark's stand-in takes the model's work out)."""
    import ray

    schema, groups = check_input(config)
    options = config.decoding()
    if options.hotwords or options.lm_path:  # the job's own hotwords and language model, before Ray starts
        _decoder(config.model)[0].check(options)
    if not ray.is_initialized():
        start_ray()  # the cluster at RAY_ADDRESS (or the job's own), else a local one
    written = written_ids(config.output)
    if written is not None:
        print(f"parakeet batch: {len(written)} rows already in {config.output}; skipping them", file=sys.stderr)
    dataset = read_input(config.input, schema, groups, written)
    dataset = row_blocks(dataset, FEATURIZE_ROWS)
    device = resolve_device(config.device)
    (
        dataset.map_batches(
            featurize_rows,
            batch_size=FEATURIZE_ROWS,
            batch_format="pyarrow",
            fn_kwargs={"config": config},
            num_cpus=FEATURIZE_TASK_CPUS,
        )
        .map_batches(
            encode_rows,
            batch_size=config.encoder_rows,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.encoders),
            fn_constructor_kwargs={"config": config, "device": device},
            **encoder_resources(device),
        )
        .map_batches(
            decode_rows,
            batch_size=config.encoder_rows,
            batch_format="numpy",
            fn_kwargs={"config": config},
            num_cpus=LIGHT_TASK_CPUS,
        )
        .write_parquet(
            config.output,
            min_rows_per_file=config.rows_per_file,
            max_rows_per_file=config.rows_per_file,
            ray_remote_args={"num_cpus": LIGHT_TASK_CPUS},
        )
    )
    return summarize(config.output)


def read_input(uri: str, schema: pa.Schema, groups: list[RowGroup], written: pa.Array | None) -> Dataset:
    """The input's rows (the columns of `schema`, less those whose id, the first column, is in `written`): a task of
    LIGHT_TASK_CPUS for each row group check_input listed. Not Ray Data's read_parquet, which lists the files and
    reads their footers again, in a task and in a pool of actors (32 by default, each a new process), and reads a
    row group whole into one block before the 64-row cut (row_blocks) starts on it (BENCHMARKS.md, the job's start)."""
    import ray

    listed = ray.data.from_items([dataclasses.asdict(group) for group in groups])
    return listed.map_batches(
        read_row_groups,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"uri": uri, "schema": schema, "rows": FEATURIZE_ROWS, "written": written},
        num_cpus=LIGHT_TASK_CPUS,
    )


def row_blocks(dataset: Dataset, rows: int) -> Dataset:
    """`dataset` in blocks of `rows` rows: small blocks (a reader may put a large file, or many small ones, in one)
    let every stage start on a part of the input at once. Dataset.repartition(target_num_rows_per_block=rows) does
    this in tasks of a whole CPU, and one waiting for the stages after it to take its blocks holds that CPU: on a
    2-core node beside a CPU encoder actor no featurize task could then start (BENCHMARKS.md, the batch job's stall).
    Ray 2.60 has no public argument for the tasks' resources, so its (private) logical operator is built here with
    LIGHT_TASK_CPUS; tests/test_batch.py checks that it still cuts, so a Ray that moves it fails there."""
    from ray.data import Dataset
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import StreamingRepartition

    operator = StreamingRepartition(
        target_num_rows_per_block=rows,
        input_dependencies=[dataset._logical_plan.dag],
        ray_remote_args={"num_cpus": LIGHT_TASK_CPUS},
    )
    return Dataset._from_parent(dataset, LogicalPlan(operator, dataset.context))


def summarize(output: str) -> dict[str, int]:
    """Rows in the output and how many of them carry an error."""
    filesystem, root = filesystem_of(output)
    errors = pq.read_table(root, columns=["error"], filesystem=filesystem).column("error")
    return {"rows": len(errors), "errors": len(errors) - errors.null_count}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's options, one per BatchConfig field, with its defaults."""
    default = {field.name: field.default for field in dataclasses.fields(BatchConfig)}
    parser.add_argument("--input", required=True, help="parquet file, directory or URI (s3://, gs://, ...)")
    parser.add_argument("--output", required=True, help="directory or URI for the output parquet files")
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=default["device"],
        help="encoder device; auto uses GPUs when the cluster has them",
    )
    for name, kind, text in OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default[name], help=text)
    parser.add_argument("--hotwords-column", help="a column of each row's own hotwords (list, or comma-separated)")
    add_decoding_arguments(parser)


def int_list(text: str) -> tuple[int, ...]:
    """'1,4,8' -> (1, 4, 8), for the bucket options."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


# BatchConfig field, type, help: the job's other options.
OPTIONS = [
    ("audio_column", str, "encoded bytes, paths, or {bytes, path} structs"),
    ("id_column", str, "unique row ids: resuming skips those already written"),
    ("model", str, "checkpoint directory (default: embedded model)"),
    ("encoders", int, "most encoder actors (one GPU each on cuda)"),
    ("encoder_threads", int, "threads of an encoder actor on cpu, each encoding a batch (default: the node's cores)"),
    ("encoder_rows", int, "rows per encoder call (their windows are sorted by length into the buckets)"),
    ("rows_per_file", int, "most rows per output file; an interrupted job redoes at most the files not yet written"),
    ("max_duration", float, "seconds; longer rows get an error"),
    ("batch_sizes", int_list, "encoder batch buckets, comma-separated (default: %(default)s)"),
    ("frame_counts", int_list, "encoder window buckets in 10 ms feature frames; longer audio is windowed"),
    ("context_seconds", float, "overlap on each side of a window of long audio"),
]


def config_from_args(args: argparse.Namespace) -> BatchConfig:
    values = {**vars(args), **decoding_arguments(args)}
    return BatchConfig(**{field.name: values[field.name] for field in dataclasses.fields(BatchConfig)})


def execute(args: argparse.Namespace) -> int:
    """The job from parsed arguments, reporting what the output holds when it ends."""
    config = config_from_args(args)
    started = time.time()
    counts = run(config)
    print(
        f"parakeet batch: {counts['rows']} rows in {config.output} ({counts['errors']} with errors), "
        f"{time.time() - started:.0f} s",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.batch", description=__doc__.split("\n")[0])
    add_arguments(parser)
    try:
        return execute(parser.parse_args(argv))
    except ValueError as err:
        parser.exit(2, f"parakeet batch: error: {err}\n")


if __name__ == "__main__":
    # Ray pickles the stage functions by module: they must come from pipeline.batch, not __main__.
    from pipeline.batch import main as module_main

    sys.exit(module_main())
