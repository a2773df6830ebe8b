"""Everything Dagster: assets, checks, the deployment gate, resources, the IO manager, sensors,
alerts and jobs. ``cfrec_assets.definitions`` puts them together."""
