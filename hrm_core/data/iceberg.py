"""The production warehouse as Apache Iceberg tables (pyiceberg), queried with the local SQL.

Why Iceberg: step pods on different nodes write the warehouse at once, and a DuckDB file has one
writer. Iceberg gives what a shared warehouse needs and Spark, Trino and DuckDB already read:
atomic commits through a catalog (a SQL catalog on Postgres in the stack, SQLite in tests, or a
REST, Glue or Hive catalog by configuration), optimistic concurrency with conflict validation,
snapshots to read at, time travel and rollback.

How the pipeline uses it (:class:`Iceberg`): a connection is an in-memory DuckDB holding the
warehouse tables as of the snapshot current when it opened (``load_into``), so the assets run the
same SQL as on the local DuckDB file: every table, or, for a block that says which it reads and
which it writes, only those (the rest are not read, held or hashed; a table it only reads is a view
a write fails on, so no change is ever dropped unseen). When the block ends, each written table's
changed partitions go back in one commit that deletes those partitions and appends their rows
(``commit``), the rows sorted by symbol once and sliced into one set of files per partition.
pyiceberg's own ``overwrite`` filters the whole table once per partition, O(partitions x rows):
20 of the 22 s a 300-symbol feature build took went there. Tables are partitioned by ``symbol``
(identity), so writers of different symbols both land (pyiceberg refreshes and retries), while a
writer whose partitions another commit changed since it read fails loudly: Iceberg's serializable
validation finds the other's data files in the window, and :class:`ConflictError` says so — rows
are never silently lost. Each commit's snapshot carries the run id and the partitions it wrote, so
a failed or killed run is undone by restoring exactly those partitions as they were before it
(``revert_runs``), leaving every other writer's commits in place.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchNamespaceError,
    NoSuchTableError,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, In
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import PyArrowFileIO, pyarrow_to_schema, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.transforms import IdentityTransform
from pyiceberg.utils.properties import property_as_int
from sqlalchemy.exc import DBAPIError

from hrm_core.core.errors import HRMError
from hrm_core.data.warehouse import SCHEMAS

ALL = "_all"
"""The one partition of a table without a ``symbol`` column."""
RUN_ID = "hrm.run-id"
PARTITIONS = "hrm.partitions"
REVERTS = "hrm.reverts"
"""Snapshot summary properties: the run that wrote a snapshot, the partitions it wrote (JSON), and
the run a revert undid."""
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "20",  # writers of other symbols: refresh, validate, retry
    "commit.retry.min-wait-ms": "50",
    "commit.retry.max-wait-ms": "2000",
    "commit.manifest-merge.enabled": "true",  # manifests stay few, so a commit's cost does not grow
    "commit.manifest.min-count-to-merge": "20",
    "write.metadata.delete-after-commit.enabled": "true",  # old metadata JSON does not pile up
    "write.metadata.previous-versions-max": "20",
}
EXPIRED = -1
"""In a revert's plan: the snapshot before a run's write was expired (expiry unlinks parents)."""
SNAPSHOTS_VARIABLE = "iceberg_snapshots"
"""A connection's DuckDB variable holding the snapshots it loaded (JSON), for lineage."""
Snapshots = dict[str, int | None]
"""table name (``schema.table``) -> snapshot id (None: the table has no snapshot yet)."""


class ConflictError(HRMError):
    """Another writer changed the partitions this block read before it could commit."""


@dataclass
class Loaded:
    """What a connection read: the tables as loaded (their metadata pins the snapshot a commit
    validates from, and records what a model trained on) and, of those it may write, each
    partition's rows and content hash."""

    tables: dict[str, Table]
    fingerprints: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)

    def snapshots(self) -> Snapshots:
        return {name: _snapshot_id(table) for name, table in self.tables.items()}


@dataclass(frozen=True)
class Maintenance:
    """What a maintenance pass did, per table."""

    expired: dict[str, int]
    orphans_removed: dict[str, int]
    compacted: dict[str, int]
    kept: dict[str, list[int]]


@dataclass(frozen=True)
class Iceberg:
    """The warehouse's Iceberg catalog. ``properties`` are pyiceberg catalog properties (``type``,
    ``uri``, ``warehouse``, ``s3.endpoint``, ...); they are merged over ``PYICEBERG_CATALOG__HRM__*``
    environment variables and ``.pyiceberg.yaml``, so a REST, Glue or Hive catalog needs only
    configuration."""

    properties: dict[str, str] = field(repr=False)  # a catalog URI may carry a password
    name: str = "hrm"

    def catalog(self) -> Catalog:
        properties = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO", **self.properties}
        for _ in range(2):
            try:
                return load_catalog(self.name, **properties)
            except DBAPIError:  # a SQL catalog's first use creates its tables: another process won
                time.sleep(0.2)
        return load_catalog(self.name, **properties)

    # --- reading -------------------------------------------------------------------------------
    def tables(self) -> dict[str, Table]:
        """Every warehouse table (the namespaces are the warehouse's schemas)."""
        catalog = self.catalog()
        found = {}
        for schema in SCHEMAS:
            try:
                identifiers = catalog.list_tables(schema)
            except NoSuchNamespaceError:  # nothing written to this schema yet
                continue
            for identifier in identifiers:
                name = ".".join(identifier)
                found[name] = catalog.load_table(identifier)
        return found

    def _load(self, names: set[str]) -> dict[str, Table]:
        """The tables of ``names`` that exist, each loaded (its metadata only) from the catalog."""
        catalog = self.catalog()
        found = {}
        for name in sorted(names):
            try:
                found[name] = catalog.load_table(name)
            except (NoSuchTableError, NoSuchNamespaceError):  # not written yet
                continue
        return found

    def snapshots(self) -> Snapshots:
        """Each table's current snapshot id."""
        return Loaded(self.tables()).snapshots()

    def partition_rows(self, table: str, snapshot_id: int | None = None) -> dict[str, int]:
        """Rows per partition of ``table`` at ``snapshot_id`` (None: now), from its manifests (no
        data file is read)."""
        try:
            loaded = self.catalog().load_table(table)
            partitions = loaded.inspect.partitions(snapshot_id=snapshot_id).to_pylist()
        except NoSuchTableError:
            return {}
        return {(p["partition"] or {}).get("symbol") or ALL: p["record_count"] for p in partitions}

    def read(self, table: str, snapshot_id: int | None = None, symbols: list[str] | None = None) -> pa.Table:
        """``table`` as of ``snapshot_id`` (time travel; None: current), only ``symbols`` if given."""
        try:
            loaded = self.catalog().load_table(table)
        except NoSuchTableError:
            raise HRMError(f"warehouse table {table}: no such table in the Iceberg catalog") from None
        if snapshot_id is not None and loaded.metadata.snapshot_by_id(snapshot_id) is None:
            raise HRMError(f"warehouse table {table}: snapshot {snapshot_id} is no longer kept")
        row_filter = In("symbol", symbols) if symbols else AlwaysTrue()
        return loaded.scan(row_filter=row_filter, snapshot_id=snapshot_id).to_arrow()

    def load_into(
        self,
        con: duckdb.DuckDBPyConnection,
        reads: Collection[str] | None = None,
        writes: Collection[str] = (),
    ) -> Loaded:
        """Create the warehouse's schemas and its tables, as of now, in ``con``: every table, all
        writable, when ``reads`` is None (a block that does not say what it uses); otherwise only
        ``writes`` (tables the block may change, and read) and ``reads`` (tables it only reads).
        A table only read is a view over its rows on this connection: it is not copied or hashed,
        and a write to it fails instead of being dropped at commit. Only tables are fingerprinted,
        so ``commit`` hashes what the block could write and nothing else."""
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        if reads is None:
            loaded = Loaded(self.tables())
            writable = set(loaded.tables)
        else:
            loaded = Loaded(self._load(set(reads) | set(writes)))
            writable = set(writes)
        for name, table in loaded.tables.items():
            rows = (
                table.scan().to_arrow()
                if table.current_snapshot()
                else table.schema().as_arrow().empty_table()
            )
            if name in writable:
                con.register("iceberg_scan", rows)
                try:
                    con.execute(f"CREATE TABLE {name} AS SELECT * FROM iceberg_scan")
                finally:
                    con.unregister("iceberg_scan")
            else:
                scan = f"iceberg_read_{name.replace('.', '_')}"
                con.register(scan, rows)
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM {scan}")
        loaded.fingerprints = fingerprints(con)
        recorded = json.dumps(loaded.snapshots(), sort_keys=True).replace("'", "''")
        con.execute(f"SET VARIABLE {SNAPSHOTS_VARIABLE} = '{recorded}'")
        return loaded

    # --- writing -------------------------------------------------------------------------------
    def commit(self, con: duckdb.DuckDBPyConnection, loaded: Loaded, run_id: str = "") -> Snapshots:
        """Overwrite, table by table, the partitions of ``con``'s tables that differ from what was
        loaded; returns the new snapshot of each table written."""
        con = con.cursor()  # the block may have left a result unfetched on its connection
        now = fingerprints(con)
        written: Snapshots = {}
        catalog = None
        for name in sorted(set(now) | set(loaded.fingerprints)):
            before, after = loaded.fingerprints.get(name, {}), now.get(name, {})
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            table = loaded.tables.get(name)
            if table is None and name in now:  # new to this block: created even when empty
                catalog = catalog or self.catalog()
                empty = _iceberg_types(con.sql(f"SELECT * FROM {name} LIMIT 0").to_arrow_table())
                table = create_table(catalog, name, empty.schema)
                if changed and table.current_snapshot() and table.scan(row_filter=_where(changed)).count():
                    raise ConflictError(  # it read nothing there, so any rows there now are another's
                        f"warehouse table {name}: another writer created it with rows in partition(s) "
                        f"{', '.join(changed[:5])} while this run wrote them; nothing was written"
                    )
            if not changed:
                continue
            rows = _rows(con, name, changed) if name in now else None  # None: dropped in the block
            try:
                written[name] = _overwrite(
                    table, name, changed, rows, {RUN_ID: run_id, PARTITIONS: json.dumps(changed)}
                )
            except ConflictError as error:
                if not written:
                    raise
                raise ConflictError(  # no multi-table commit in pyiceberg: say what did land
                    f"{error}; tables this block committed before it: {', '.join(written)} "
                    "(reverting the run restores them)"
                ) from error
        return written

    def revert_runs(self, run_ids: list[str]) -> int:
        """Undo the commits of ``run_ids`` (a failed run and its ingest runs): each partition they
        wrote is put back as it was before their first write of it, unless a later commit of
        another writer rewrote it since (then that commit's rows stand). One commit per table,
        validated from the history it was planned on. Returns how many partitions were restored."""
        ours = set(run_ids) - {""}
        restored = 0
        for name, table in self.tables().items():
            history = list(reversed(list(ancestors_of(table.current_snapshot(), table.metadata))))
            if not ours or any(ours & set((s.summary.get(REVERTS) or "").split(",")) for s in history):
                continue  # nothing to undo, or undone already
            before: dict[str, int | None] = {}  # partition -> the snapshot before our first write
            for snapshot in history:
                parts = json.loads(snapshot.summary.get(PARTITIONS) or "[]")
                if snapshot.summary.get(RUN_ID) in ours:
                    if snapshot.parent_snapshot_id is None and (snapshot.sequence_number or 0) > 1:
                        before.update(dict.fromkeys(parts, EXPIRED))  # its parent expired (not the first)
                    for part in parts:
                        before.setdefault(part, snapshot.parent_snapshot_id)
                else:  # another writer rewrote it after us: nothing of ours is left there
                    for part in parts:
                        before.pop(part, None)
            if not before:
                continue
            old = []
            for parent in {s for s in before.values() if s is not None}:
                if parent == EXPIRED or table.metadata.snapshot_by_id(parent) is None:
                    raise HRMError(
                        f"warehouse table {name}: the snapshot {parent} from before run(s) "
                        f"{', '.join(sorted(ours))} has expired; they cannot be reverted"
                    )
                parts = sorted(p for p, s in before.items() if s == parent)
                old.append(table.scan(row_filter=_where(parts), snapshot_id=parent).to_arrow())
            parts = sorted(before)
            rows = pa.concat_tables(old, promote_options="default") if old else None
            properties = {REVERTS: ",".join(sorted(ours)), PARTITIONS: json.dumps(parts)}
            _overwrite(table, name, parts, rows, properties)
            restored += len(parts)
        return restored

    # --- maintenance ---------------------------------------------------------------------------
    def maintain(self, keep: set[int], older_than: timedelta, orphan_age: timedelta) -> Maintenance:
        """Compact partitions written in several files into one, expire snapshots older than
        ``older_than`` except the current ones and ``keep`` (those registered model versions name),
        and delete files no kept snapshot references that are older than ``orphan_age`` (younger
        ones may belong to a commit in flight)."""
        expired, orphans, compacted, kept = {}, {}, {}, {}
        now = datetime.now(UTC)
        for name, table in self.tables().items():
            try:
                compacted[name] = _compact(table, name)
            except ConflictError:  # a writer got there first: compact it next time
                compacted[name] = 0
            table = self.catalog().load_table(name)
            heads = {ref.snapshot_id for ref in table.metadata.refs.values()}  # main, branches, tags
            protected = keep | heads
            candidates = [
                s.snapshot_id
                for s in table.snapshots()
                if s.timestamp_ms < (now - older_than).timestamp() * 1000 and s.snapshot_id not in protected
            ]
            if candidates:
                table.maintenance.expire_snapshots().by_ids(candidates).commit()
            expired[name] = len(candidates)
            table = self.catalog().load_table(name)
            kept[name] = sorted(s.snapshot_id for s in table.snapshots())
            orphans[name] = _remove_orphans(table, now - orphan_age)
        return Maintenance(expired, orphans, compacted, kept)


def snapshots_of(con: duckdb.DuckDBPyConnection) -> str:
    """The snapshot of every table ``con`` loaded, as JSON (what a model version records to read
    its data back by time travel); empty for a connection to a DuckDB file."""
    return con.execute(f"SELECT getvariable('{SNAPSHOTS_VARIABLE}')").fetchone()[0] or ""


def _snapshot_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def create_table(catalog: Catalog, name: str, schema: pa.Schema) -> Table:
    """Create ``name`` with ``schema``, partitioned by symbol when it has one; a table another
    writer created meanwhile is loaded instead."""
    namespace = name.split(".")[0]
    try:
        catalog.create_namespace(namespace)
    except Exception:  # a writer in a race created it first (each catalog words that its own way)
        if not catalog.namespace_exists(namespace):
            raise
    try:
        with catalog.create_table_transaction(name, schema, properties=TABLE_PROPERTIES) as create:
            if "symbol" in schema.names:
                with create.update_spec() as spec:
                    spec.add_identity("symbol")
    except Exception:  # the same race for the table
        if not catalog.table_exists(name):
            raise
    return catalog.load_table(name)


def _where(parts: list[str]) -> BooleanExpression:
    """The rows of ``parts``: the whole table when it has no ``symbol`` column (one partition)."""
    return AlwaysTrue() if ALL in parts else In("symbol", parts)


def _rows(con: duckdb.DuckDBPyConnection, name: str, parts: list[str]) -> pa.Table:
    """The rows of ``parts`` of ``name`` in ``con``, in types Iceberg has."""
    if ALL in parts:
        return _iceberg_types(con.sql(f"SELECT * FROM {name}").to_arrow_table())
    query = f"SELECT * FROM {name} WHERE symbol IN (SELECT unnest(?)) ORDER BY symbol"
    return _iceberg_types(con.sql(query, params=[parts]).to_arrow_table())


WIDER = {
    pa.uint8(): pa.int16(),
    pa.uint16(): pa.int32(),
    pa.uint32(): pa.int64(),
    pa.uint64(): pa.decimal128(20, 0),
}
"""Iceberg has no unsigned integers: each is stored in the smallest signed type holding all its values
(DuckDB's ``hash`` is a UBIGINT; it reads back as DECIMAL(20, 0), which compares equal)."""


def _iceberg_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind) and kind.unit == "ns":  # Iceberg v2 keeps microseconds, as DuckDB does
        return pa.timestamp("us", kind.tz)
    return WIDER.get(kind, kind)


def _iceberg_types(rows: pa.Table) -> pa.Table:
    schema = pa.schema([f.with_type(_iceberg_type(f.type)) for f in rows.schema])
    return rows.cast(schema, safe=False)  # unsafe only for nanoseconds, which are dropped


def _overwrite(
    table: Table, name: str, parts: list[str], rows: pa.Table | None, properties: dict
) -> int | None:
    """Replace ``parts`` of ``table`` by ``rows`` (None: delete them) in one commit, validated from
    the snapshot ``table`` was loaded at; returns the new snapshot id. What ``Transaction.overwrite``
    does (a delete validated under the table's serializable isolation, then an append), with the
    data files written from ``rows`` split once (``_data_files``)."""
    try:
        with table.transaction() as transaction, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Delete operation did not match any records")
            if rows is not None and rows.schema.names != [f.name for f in table.schema().fields]:
                _mirror_columns(transaction, table, rows.schema)
            transaction.delete(_where(parts), snapshot_properties=properties)
            if rows is not None and rows.num_rows:
                files = _data_files(transaction.table_metadata, table.io, rows)
                with transaction.update_snapshot(snapshot_properties=properties).merge_append() as append:
                    for data_file in files:
                        append.append_data_file(data_file)
    except (ValidationException, CommitFailedException) as error:
        shown = ", ".join(parts[:5]) + (" ..." if len(parts) > 5 else "")
        raise ConflictError(
            f"warehouse table {name}: another writer committed partition(s) {shown} after this run "
            f"read them; this table was not written (rerun to apply it on top): {error}"
        ) from error
    return _snapshot_id(table)


def _data_files(metadata: TableMetadata, io: FileIO, rows: pa.Table) -> list[DataFile]:
    """Write ``rows`` as data files of the table ``metadata`` describes: sorted by the partition
    column once, each partition a slice (no copy) cut into files of about the target size.
    pyiceberg's writer filters the whole table once per partition instead (``write_file`` and
    ``WriteTask`` are its public pieces under that loop): 55 ms a partition at 1,000 symbols."""
    schema, spec = metadata.schema(), metadata.spec()
    task_schema = pyarrow_to_schema(
        rows.schema, name_mapping=schema.name_mapping, format_version=metadata.format_version
    )
    target = property_as_int(
        metadata.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    slices: list[tuple[PartitionKey | None, pa.Table]] = [(None, rows)]
    if not spec.is_unpartitioned():
        if len(spec.fields) != 1 or not isinstance(spec.fields[0].transform, IdentityTransform):
            raise HRMError(f"table {metadata.location}: only identity partitions on one column are written")
        column = schema.find_column_name(spec.fields[0].source_id)
        keys = rows[column]
        if pc.any(pc.less(keys[1:], keys[:-1])).as_py():  # not sorted yet (a block's rows are)
            rows = rows.sort_by(column)
        slices, start = [], 0
        for run in pc.value_counts(rows[column]).to_pylist():  # sorted, so in order and contiguous
            value = PartitionFieldValue(spec.fields[0], run["values"])
            slices.append((PartitionKey([value], spec, schema), rows.slice(start, run["counts"])))
            start += run["counts"]
    per_file = max(1, target * rows.num_rows // max(rows.nbytes, 1))  # rows of about the target size
    write_uuid, task_ids = uuid.uuid4(), itertools.count()
    tasks = (
        WriteTask(
            write_uuid,
            next(task_ids),
            task_schema,
            part.slice(start, per_file).to_batches(),
            partition_key=key,
        )
        for key, part in slices
        for start in range(0, part.num_rows, per_file)
    )
    return list(write_file(io, metadata, tasks))


def _mirror_columns(transaction, table: Table, schema: pa.Schema) -> None:
    """Give the table the block's columns, in the block's order: added, dropped, moved. A block
    that changes a table's columns changes every row, so it rewrites every partition; the order
    matters because the asset SQL inserts by position."""
    with transaction.update_schema() as update:
        update.union_by_name(schema)
        for gone in [f.name for f in table.schema().fields if f.name not in schema.names]:
            update.delete_column(gone)
    with transaction.update_schema() as update:
        update.move_first(schema.names[0])
        for previous, column in itertools.pairwise(schema.names):
            update.move_after(column, previous)


def _compact(table: Table, name: str) -> int:
    """Rewrite each partition kept in more than one data file as one file; returns how many."""
    if table.current_snapshot() is None:
        return 0
    files = table.inspect.files().to_pydict()
    per_partition: dict[str, int] = {}
    for partition in files["partition"]:
        key = partition.get("symbol", ALL) if partition else ALL
        per_partition[key] = per_partition.get(key, 0) + 1
    fragmented = sorted(k for k, n in per_partition.items() if n > 1)
    if not fragmented:
        return 0
    rows = table.scan(row_filter=_where(fragmented)).to_arrow()
    _overwrite(table, name, fragmented, rows, {"hrm.maintenance": "compact", PARTITIONS: json.dumps([])})
    return len(fragmented)


def _referenced(table: Table) -> set[str]:
    """Every file the table's kept metadata names: metadata JSONs, manifest lists, manifests, data."""
    io = table.io
    metadata = table.metadata
    found = {table.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    found.update(f.statistics_path for f in metadata.statistics)  # Puffin files other engines write
    found.update(f.statistics_path for f in metadata.partition_statistics)
    for snapshot in table.snapshots():
        found.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            found.add(manifest.manifest_path)
            found.update(
                e.data_file.file_path for e in manifest.fetch_manifest_entry(io, discard_deleted=False)
            )
    return {_path_only(p) for p in found}


def _path_only(location: str) -> str:
    return PyArrowFileIO.parse_location(location)[2]


def _remove_orphans(table: Table, before: datetime) -> int:
    """Delete files under the table's location that no kept snapshot references, older than ``before``."""
    scheme, netloc, base = PyArrowFileIO.parse_location(table.location())
    fs = table.io.fs_by_scheme(scheme, netloc)
    referenced = _referenced(table)
    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or info.path in referenced:
            continue
        if info.mtime is None or info.mtime.replace(tzinfo=info.mtime.tzinfo or UTC) >= before:
            continue  # young (or of unknown age): it may belong to a commit in flight
        fs.delete_file(info.path)
        removed += 1
    return removed


def fingerprints(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, tuple[int, str]]]:
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
        if any(k is None for k, _, _ in rows):
            raise HRMError(f"warehouse table {table}: rows without a symbol cannot be partitioned by it")
        found[table] = {str(k): (int(n), str(h)) for k, n, h in rows}
    return found
