"""The resources assets ask for. Their wiring per deployment lives in ``pipelines.resources``."""

import os
from pathlib import Path

import dagster as dg

from hrm_core.config import HRMConfig, load_config
from hrm_core.data.versioning import DatasetVersion, version_data

DEFAULT_CONFIG = "configs/hrm_cpu_small.yaml"


def hrm_home() -> Path:
    """The state folder: ``$HRM_HOME`` or ``.hrm`` in the current directory."""
    return Path(os.environ.get("HRM_HOME", ".hrm")).resolve()


class HRMSettings(dg.ConfigurableResource):
    """Which config preset a run uses, which source it reads, and where the project lives.

    ``source``, ``path`` and ``symbols`` override the preset's ``data`` section, so the CLI's
    ``--source csv --path P`` and the UI's launchpad change the input without editing YAML.
    """

    project_dir: str = "."
    config_path: str | None = DEFAULT_CONFIG
    source: str | None = None
    path: str | None = None
    symbols: list[str] | None = None

    def config(self) -> HRMConfig:
        data = {
            k: v for k, v in (("source", self.source), ("path", self.path), ("symbols", self.symbols)) if v
        }
        config_path = self.config_path
        if config_path and not Path(config_path).is_absolute():
            config_path = str(Path(self.project_dir) / config_path)
        return load_config(config_path, data=data)

    @property
    def data_dir(self) -> Path:
        return Path(self.project_dir) / "data"


class DvcResource(dg.ConfigurableResource):
    """Versions ``data/`` with DVC and pushes it to ``remote_url`` (a folder or an s3:// URI)."""

    project_dir: str = "."
    remote_url: str

    def version(self) -> DatasetVersion:
        return version_data(Path(self.project_dir), self.remote_url)
