"""``dataset_version``: DVC versions the raw snapshots; training runs record the md5."""

import dagster as dg

from assets.resources import DvcResource
from assets.validation import clean_ohlcv


@dg.asset(deps=[clean_ohlcv], group_name="data", kinds={"dvc"})
def dataset_version(dvc: DvcResource) -> dg.MaterializeResult:
    """``dvc add data`` + ``dvc push``: the md5 of ``data/`` is the dataset's version."""
    version = dvc.version()
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version.md5),
        metadata={
            "data_version": version.md5,
            "files": version.files,
            "bytes": version.size,
            "remote": version.remote,
        },
    )
