"""The schema's DuckDB types as Spark types: one function, and the staging rule.

Rows arrive from the executors JSON-typed (times and days as text, contract.md), so a table is
built in two steps: a *staging* schema where ``TIMESTAMP`` and ``DATE`` columns are strings, then
a ``SELECT`` that casts them (:func:`typed_select`) under the session's time zone, which the job
sets to UTC. Python ``datetime`` objects never cross into the JVM, so no local time zone applies.
"""

from __future__ import annotations

from pyspark.sql.types import (
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from msgwatch.analysis.schema import Columns

_TYPES: dict[str, type[DataType]] = {
    "VARCHAR": StringType,
    "TIMESTAMP": TimestampType,
    "DATE": DateType,
    "BIGINT": LongType,
    "INTEGER": IntegerType,
    "DOUBLE": DoubleType,
    "BOOLEAN": BooleanType,
}
_TEXT_STAGED = {"TIMESTAMP", "DATE"}


def spark_type(duckdb_type: str) -> DataType:
    """The Spark type of a DuckDB type name of :mod:`msgwatch.analysis.schema`."""
    try:
        return _TYPES[duckdb_type]()
    except KeyError:
        raise ValueError(f"no Spark type for DuckDB type {duckdb_type!r}") from None


def schema(columns: Columns) -> StructType:
    """The table's Spark schema."""
    return StructType([StructField(name, spark_type(kind), True) for name, kind in columns])


def staging_schema(columns: Columns) -> StructType:
    """The schema rows arrive in: times and days as strings."""
    return StructType(
        [
            StructField(name, StringType() if kind in _TEXT_STAGED else spark_type(kind), True)
            for name, kind in columns
        ]
    )


def typed_select(columns: Columns) -> list[str]:
    """SQL expressions turning a staged table into the typed one."""
    return [
        f"CAST(`{name}` AS {kind}) AS `{name}`" if kind in _TEXT_STAGED else f"`{name}`"
        for name, kind in columns
    ]


def text(column: str, alias: str | None = None) -> str:
    """A ``TIMESTAMP`` column as row text ``YYYY-MM-DD HH:MM:SS`` (UTC: the session's zone).

    Python never receives a Spark timestamp: PySpark would turn it into local time.
    """
    return f"date_format({column}, 'yyyy-MM-dd HH:mm:ss') AS `{alias or column}`"
