"""Where the local profile keeps each store under ``HRM_HOME``: one source for the resources and
for ``predict``'s fast path, which opens them without Dagster or MLflow."""

WAREHOUSE_FILE = "warehouse.duckdb"
REGISTRY_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
SERVED_DIR = "served"
