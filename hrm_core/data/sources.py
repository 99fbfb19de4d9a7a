"""Where bars come from. Every source returns the normalised frame of :mod:`hrm_core.data.readers`.

Sources: ``sample`` (S&P 500 and NASDAQ daily bars shipped with the ``arch`` package, no network),
``csv`` / ``parquet`` / ``s3`` (a file or a folder of files, local or ``s3://``) and ``yfinance``
(extra ``live``). S3 access goes through any boto3-style client handed in by the caller, so the
library needs no credentials logic of its own.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from hrm_core.core.config import DataConfig
from hrm_core.core.errors import DataError
from hrm_core.data.readers import normalise_frame, read_ohlcv_bytes

SUFFIXES = {"csv": (".csv",), "parquet": (".parquet", ".pq"), "s3": (".csv", ".parquet", ".pq")}


class Source(Protocol):
    """Anything that can produce normalised OHLCV bars."""

    def load(self) -> pd.DataFrame: ...


@dataclass(frozen=True)
class SampleSource:
    """Real daily bars 1999–2018 for ``SP500`` and ``NASDAQ`` from the ``arch`` package."""

    symbols: tuple[str, ...] = ("SP500", "NASDAQ")

    def load(self) -> pd.DataFrame:
        from arch.data import nasdaq, sp500

        loaders = {"SP500": sp500.load, "NASDAQ": nasdaq.load}
        unknown = [s for s in self.symbols if s not in loaders]
        if unknown:
            raise DataError("sample", "unknown sample symbol (known: SP500, NASDAQ)", unknown[0])
        frames = [
            normalise_frame(loaders[s]().reset_index(), f"arch.data.{s.lower()}", default_symbol=s)
            for s in self.symbols
        ]
        return pd.concat(frames, ignore_index=True)


PARALLEL_BYTES = 32 * 2**20
"""From this much data a source is parsed by one process per core. Measured on 2 cores: a worker
takes about a second to start (it imports pandas) and a megabyte of daily-bar CSV about 90 ms to
parse, so two workers save time from about 30 MB on."""

_LAST_FILES_LOAD: dict[str, Any] = {}
"""The last file load of this process and the versions of its files: a run discovers the symbols
and then ingests the same files, and a 3 M-row CSV took minutes to parse twice. Callers must not
mutate the frame ``FileSource.load`` returns."""


@dataclass(frozen=True)
class FileSource:
    """A CSV/parquet file or a folder of them, on local disk or under an ``s3://`` URI.

    The symbol is the file's stem unless the file has a ``symbol`` column. ``files`` limits the
    load to those of the path's files (a production ingest run reads only its symbols' files).
    """

    path: str
    kind: str = "csv"
    s3_client: Any = None
    files: tuple[str, ...] = ()

    def load(self) -> pd.DataFrame:
        suffixes = SUFFIXES[self.kind]
        if self.path.startswith("s3://"):
            files = _S3Files(self.path, self.s3_client)
        else:
            files = _LocalFiles(Path(self.path))
        names = [n for n in files.list() if n.lower().endswith(suffixes)]
        if self.files:
            wanted = set(self.files)
            names = [n for n in names if n in wanted]
        if not names:
            raise DataError(
                self.path,
                f"no data files found (expected {' or '.join(suffixes)})",
                f"found: {files.list()[:5] or 'nothing'}",
            )
        fingerprint = (self.kind, tuple(files.version(name) for name in names))
        if _LAST_FILES_LOAD.get("fingerprint") != fingerprint:
            frames = _read_files(files, names)
            _LAST_FILES_LOAD.update(fingerprint=fingerprint, bars=pd.concat(frames, ignore_index=True))
        return _LAST_FILES_LOAD["bars"]


def _read_files(files: _LocalFiles | _S3Files, names: list[str]) -> list[pd.DataFrame]:
    """Each file read here and parsed once, in parallel across the cores when there is enough data
    to pay for the workers. Workers are spawned, not forked: the caller (Dagster, DuckDB, torch)
    holds threads, and a fork of a process with threads can deadlock in the child."""
    payloads = [files.read(name) for name in names]
    workers = min(os.cpu_count() or 1, len(names))
    if workers < 2 or sum(len(p) for p in payloads) < PARALLEL_BYTES:
        return [read_ohlcv_bytes(payload, name) for payload, name in zip(payloads, names, strict=True)]
    chunk = max(1, len(names) // (4 * workers))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(read_ohlcv_bytes, payloads, names, chunksize=chunk))


@dataclass(frozen=True)
class YFinanceSource:
    """Bars downloaded with yfinance (extra ``live``); offline it fails with a clear message."""

    symbols: tuple[str, ...]
    interval: str = "1d"
    start: str | None = None
    end: str | None = None

    def load(self) -> pd.DataFrame:
        try:
            import yfinance
        except ImportError as exc:
            raise DataError(
                "yfinance", "yfinance is not installed", "pip install 'hrm-trading[live]'"
            ) from exc
        frames = []
        for symbol in self.symbols:
            try:
                bars = yfinance.Ticker(symbol).history(
                    interval=self.interval, start=self.start, end=self.end, auto_adjust=False
                )
            except Exception as exc:  # network errors surface as many types
                raise DataError(f"yfinance:{symbol}", "download failed (offline?)", str(exc)) from exc
            if bars.empty:
                raise DataError(f"yfinance:{symbol}", "no bars returned (offline or unknown symbol?)", symbol)
            frames.append(normalise_frame(bars.reset_index(), f"yfinance:{symbol}", default_symbol=symbol))
        return pd.concat(frames, ignore_index=True)


def make_source(config: DataConfig, s3_client: Any = None, files: tuple[str, ...] = ()) -> Source:
    """Build the source a :class:`DataConfig` names (of a file source, only ``files`` if given)."""
    if config.source == "sample":
        return SampleSource(tuple(config.symbols) if config.symbols else SampleSource.symbols)
    if config.source == "yfinance":
        return YFinanceSource(tuple(config.symbols or ()), config.interval, config.start, config.end)
    return FileSource(str(config.path), config.source, s3_client, files)


class _LocalFiles:
    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise DataError(str(path), "path does not exist", str(path.resolve()))
        self.path = path

    def list(self) -> list[str]:
        if self.path.is_file():
            return [str(self.path)]
        return sorted(str(p) for p in self.path.iterdir() if p.is_file())

    def read(self, name: str) -> bytes:
        return Path(name).read_bytes()

    def version(self, name: str) -> tuple:
        stat = Path(name).stat()
        return name, stat.st_size, stat.st_mtime_ns


class _S3Files:
    def __init__(self, uri: str, client: Any) -> None:
        if client is None:
            raise DataError(uri, "an s3:// path needs an S3 client (configure the s3 resource)")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        self.bucket, self.prefix, self.client = bucket, prefix, client

    def list(self) -> list[str]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        except Exception as exc:  # botocore's error classes are generated at run time
            raise DataError(f"s3://{self.bucket}/{self.prefix}", "cannot list S3 objects", str(exc)) from exc
        return sorted(f"s3://{self.bucket}/{key}" for key in keys if not key.endswith("/"))

    def read(self, name: str) -> bytes:
        key = name.removeprefix(f"s3://{self.bucket}/")
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def version(self, name: str) -> tuple:
        key = name.removeprefix(f"s3://{self.bucket}/")
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        return name, head["ContentLength"], head["ETag"]
