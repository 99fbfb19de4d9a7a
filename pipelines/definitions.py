"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

import dagster as dg

from assets.features import features_finite, features_point_in_time
from assets.splits import splits_purged_and_embargoed
from pipelines.jobs import DATA_ASSETS, daily_ingest_schedule, data_job
from pipelines.resources import resources_for_profile


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """Definitions with the resources of the current profile, or the ``resources`` given (tests)."""
    return dg.Definitions(
        assets=DATA_ASSETS,
        asset_checks=[features_finite, features_point_in_time, splits_purged_and_embargoed],
        jobs=[data_job],
        schedules=[daily_ingest_schedule],
        resources=resources if resources is not None else resources_for_profile(),
    )


defs = build_definitions()
