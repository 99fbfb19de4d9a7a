"""A warehouse of immutable Parquet objects that takes parallel writers (the production profile).

Why not the DuckDB file: a DuckDB file has one writer process, and step pods on different nodes
share no file system. DuckLake or DuckDB's httpfs would read Parquet on S3 directly, but their
extensions must be downloaded at run time for DuckDB 2.x (the offline extension wheels on PyPI
stop at 1.5), so this layout needs no extension: pyarrow moves the objects and an in-memory
DuckDB runs the same SQL as the local warehouse.

Layout under the root (a folder, or ``s3://bucket/prefix``)::

    data/<schema>.<table>/<partition>-<uuid>.parquet     written once, never changed
    commits/<time_ns>-<uuid>.json                         {"run_id", "tables": {table: {partition: entry}}}

A table's partition is a symbol (``_all`` for a table without a ``symbol`` column, or an empty
table); an entry is ``{"object", "rows", "hash"}``, or ``null`` when the partition was deleted.
A table holds, for each partition, the entry of the newest commit that names it. So:

- writers of different symbols never write the same object or lose each other's rows;
- a commit is one object written after its data objects: a writer killed before it leaves the
  warehouse exactly as it was, and its orphan data objects are never read;
- a run's commits carry its run id, so :meth:`Lake.revert_run` undoes a failed run as a whole.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.fs as pafs

from hrm_core.core.errors import ConfigError
from hrm_core.data.warehouse import SCHEMAS

ALL = "_all"
"""The partition of a table without a ``symbol`` column, and of an empty table."""
Fingerprint = dict[str, dict[str, dict | None]]
"""table -> partition -> entry (``object``, ``rows``, ``hash``), as in a commit."""


@dataclass(frozen=True)
class Lake:
    """The lake at ``root``; ``endpoint_url`` points S3 at an S3-compatible server (e.g. the local
    stack's); objects read are kept in ``cache_dir`` (they never change, so the cache never goes
    stale)."""

    root: str
    cache_dir: Path
    endpoint_url: str | None = None

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if self.root.startswith("s3://"):
            bucket_and_prefix = self.root.removeprefix("s3://").rstrip("/")
            options = {"endpoint_override": self.endpoint_url} if self.endpoint_url else {}
            if self.endpoint_url and self.endpoint_url.startswith("http://"):
                options["scheme"] = "http"
            return pafs.S3FileSystem(**options), bucket_and_prefix
        if "://" in self.root:
            raise ConfigError(
                f"warehouse {self.root!r}: use a folder or s3://bucket/prefix, e.g. s3://hrm/warehouse"
            )
        Path(self.root).mkdir(parents=True, exist_ok=True)
        return pafs.LocalFileSystem(), str(Path(self.root).resolve())

    # --- reading -------------------------------------------------------------------------------
    def commits(self) -> list[dict]:
        """Every commit, oldest first."""
        fs, base = self._fs()
        selector = pafs.FileSelector(f"{base}/commits", allow_not_found=True)
        infos = sorted(
            (i for i in fs.get_file_info(selector) if i.path.endswith(".json")), key=lambda i: i.base_name
        )
        found = []
        for info in infos:
            with fs.open_input_stream(info.path) as stream:
                found.append({**json.loads(stream.read()), "key": info.path})
        return found

    def current(self) -> Fingerprint:
        """Each table's live partitions: the newest commit's entry per partition, deletions dropped."""
        tables: Fingerprint = {}
        for commit in self.commits():
            for table, partitions in commit["tables"].items():
                tables.setdefault(table, {}).update(partitions)
        return {t: {k: e for k, e in parts.items() if e is not None} for t, parts in tables.items()}

    def load_into(self, con: duckdb.DuckDBPyConnection) -> Fingerprint:
        """Create the warehouse's schemas and its live tables in ``con``; return what was loaded."""
        fs, base = self._fs()
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        loaded = self.current()
        for table, partitions in loaded.items():
            if not partitions:
                continue
            files = [self._local_copy(fs, f"{base}/{entry['object']}") for entry in partitions.values()]
            con.execute(
                f"CREATE TABLE {table} AS SELECT * FROM read_parquet(?, union_by_name = true)", [files]
            )
        return loaded

    def _local_copy(self, fs: pafs.FileSystem, path: str) -> str:
        if isinstance(fs, pafs.LocalFileSystem):
            return path
        local = self.cache_dir / path.replace("/", "__")
        if not local.exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = local.with_suffix(f".{uuid.uuid4().hex}.tmp")
            pafs.copy_files(
                path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
            )
            tmp.replace(local)
        return str(local)

    # --- writing -------------------------------------------------------------------------------
    def commit(self, con: duckdb.DuckDBPyConnection, loaded: Fingerprint, run_id: str = "") -> dict | None:
        """Write every partition of ``con``'s warehouse tables that differs from ``loaded``, then one
        commit naming them; return the commit (None when nothing changed)."""
        fs, base = self._fs()
        now = _fingerprints(con)
        changes: Fingerprint = {}
        for table in sorted(set(now) | set(loaded)):
            before, after = loaded.get(table, {}), now.get(table, {})
            changed = {}
            for key, (rows, digest) in after.items():
                old = before.get(key)
                if old is None or (old["rows"], old["hash"]) != (rows, digest):
                    changed[key] = {
                        "object": self._write_partition(con, fs, base, table, key),
                        "rows": rows,
                        "hash": digest,
                    }
            changed.update({key: None for key in before if key not in after})
            if changed:
                changes[table] = changed
        if not changes:
            return None
        commit = {"run_id": run_id, "time": time.time(), "tables": changes}
        name = f"commits/{time.time_ns():020d}-{uuid.uuid4().hex}.json"
        self._put(fs, f"{base}/{name}", json.dumps(commit).encode())
        return commit

    def _write_partition(self, con, fs: pafs.FileSystem, base: str, table: str, key: str) -> str:
        name = f"data/{table}/{key}-{uuid.uuid4().hex}.parquet"
        where = "" if key == ALL else "WHERE symbol = ?"
        with tempfile.TemporaryDirectory() as tmp:
            local = f"{tmp}/part.parquet"
            con.execute(
                f"COPY (SELECT * FROM {table} {where}) TO '{local}' (FORMAT parquet)",
                [] if key == ALL else [key],
            )
            fs.create_dir(f"{base}/data/{table}", recursive=True)
            pafs.copy_files(
                local, f"{base}/{name}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
            )
        return name

    def _put(self, fs: pafs.FileSystem, path: str, payload: bytes) -> None:
        """Write one object atomically: S3 puts are atomic; a folder gets a temp file and a rename."""
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        target = path if not isinstance(fs, pafs.LocalFileSystem) else f"{path}.{uuid.uuid4().hex}.tmp"
        with fs.open_output_stream(target) as out:
            out.write(payload)
        if target != path:
            fs.move(target, path)

    def revert_run(self, run_id: str) -> int:
        """Delete every commit of ``run_id`` (a failed run's writes); return how many."""
        fs, _ = self._fs()
        mine = [c["key"] for c in self.commits() if run_id and c.get("run_id") == run_id]
        for key in mine:
            fs.delete_file(key)
        return len(mine)


def _fingerprints(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, tuple[int, str]]]:
    """Rows and an order-free content hash per partition of every table in the warehouse schemas."""
    tables = con.execute(
        "SELECT schema_name || '.' || table_name, list_contains(list(column_name), 'symbol') "
        "FROM duckdb_columns() WHERE database_name = current_database() AND NOT internal "
        "AND schema_name IN (SELECT unnest(?)) AND (schema_name, table_name) IN "
        "(SELECT (schema_name, table_name) FROM duckdb_tables() WHERE NOT temporary) GROUP BY ALL",
        [list(SCHEMAS)],
    ).fetchall()
    found: dict[str, dict[str, tuple[int, str]]] = {}
    for table, has_symbol in tables:
        key = "symbol" if has_symbol else f"'{ALL}'"
        rows = con.execute(
            f"SELECT {key}, count(*), sum(hash(t)::HUGEINT)::VARCHAR FROM {table} t GROUP BY ALL"
        ).fetchall()
        found[table] = {str(k): (int(n), str(h)) for k, n, h in rows} or {ALL: (0, "0")}
    return found
