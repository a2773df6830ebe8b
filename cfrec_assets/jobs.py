"""Named jobs: what `make materialize` and the production queue launch."""

import dagster as dg

train_and_deploy = dg.define_asset_job(
    "train_and_deploy",
    selection=dg.AssetSelection.all(),
    description="Every asset and check: download, map, combine, train, cross-validate, and deploy "
    "through the blocking checks (the same as 'Materialize all').",
)

ALL_JOBS = [train_and_deploy]
