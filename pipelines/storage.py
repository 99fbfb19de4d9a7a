"""Where asset values that flow between steps are kept: one JSON file per run and asset.

Dagster's default IO manager pickles each value to ``storage/<asset>``: one file shared by every
run, so two runs at once read each other's values, and a pickle planted under ``HRM_HOME`` would
run its payload in the next run. Here each run writes under its own id, a step reads its own
run's value, and only an asset the run did not materialise is read from the run that last
materialised it (a re-execution from the UI). JSON cannot carry code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg


class RunJsonIOManager(dg.ConfigurableIOManager):
    """``<base_dir>/<run id>/<asset>.json`` for every value an asset returns."""

    base_dir: str

    def _path(self, run_id: str, key: dg.AssetKey) -> Path:
        return Path(self.base_dir) / run_id / f"{'__'.join(key.path)}.json"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        path = self._path(context.run_id, context.asset_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        path = self._path(context.step_context.run_id, key)
        if not path.exists():
            event = context.instance.get_latest_materialization_event(key)
            if event is None:
                raise dg.Failure(f"{key.to_user_string()} has never been materialised; run it first")
            path = self._path(event.run_id, key)
        if not path.exists():
            raise dg.Failure(
                f"{key.to_user_string()}: the value of its latest run is missing ({path}); "
                "materialise it again"
            )
        return json.loads(path.read_text())
