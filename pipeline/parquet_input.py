"""The batch job's input: the row groups of its parquet files, listed in the driver from the footers it reads
anyway, and read by tasks of this module, which imports pyarrow only: a Ray worker running a function of
pipeline.batch imports torch first (1.3 s on an idle core, about 3 s beside an encoder actor starting up)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq


@dataclass(frozen=True)
class RowGroup:
    """One row group of one of the input's parquet files."""

    path: str  # within the input's filesystem
    index: int
    rows: int


def filesystem_of(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a URI (s3://, gs://, ...) or a local path, and the path within it."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def row_groups(source: pads.FileSystemDataset) -> list[RowGroup]:
    """The row groups of every file of `source` that hold rows."""
    return [
        RowGroup(fragment.path, group.id, group.num_rows)
        for fragment in source.get_fragments()
        for group in fragment.row_groups
        if group.num_rows
    ]


def read_row_groups(
    groups: pa.Table, uri: str, schema: pa.Schema, rows: int, written: pa.Array | None
) -> Iterator[pa.Table]:
    """The columns of `schema` (the input's, whose types every file's are cast to) of the rows of `groups` (a table
    of RowGroup fields) in the input at `uri`, in tables of at most `rows` rows, a large row group never held whole;
    rows whose id (the first column) is in `written` left out."""
    filesystem, _ = filesystem_of(uri)
    for path, index in zip(groups.column("path").to_pylist(), groups.column("index").to_pylist()):
        with filesystem.open_input_file(path) as file:
            for batch in pq.ParquetFile(file).iter_batches(rows, row_groups=[index], columns=schema.names):
                table = pa.Table.from_batches([batch]).cast(schema)
                yield table if written is None else drop_written(table, schema.names[0], written)


def drop_written(table: pa.Table, id_column: str, written: pa.Array) -> pa.Table:
    ids = table.column(id_column)
    return table.filter(pc.invert(pc.is_in(ids, value_set=written.cast(ids.type))))
