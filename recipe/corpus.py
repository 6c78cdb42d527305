"""Reading a parquet speech corpus (columns `audio`: encoded bytes, `text`) into 16 kHz waveforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from model.audio import decode_audio, resample


def read_parquet_audio(path: Path) -> tuple[list[np.ndarray], list[str]]:
    table = pq.read_table(path, columns=["audio", "text"])
    waveforms = []
    for index, data in enumerate(table.column("audio").to_pylist()):
        audio, rate = decode_audio(data, f"{path} row {index}")
        waveforms.append(resample(audio, rate))
    return waveforms, table.column("text").to_pylist()
