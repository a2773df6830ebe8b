"""The local data folder: download caches, model versions, and the default serving folder."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from cfrec_serving.artifacts import DEFAULT_DATA_DIR, serving_dir


class DataStore(dg.ConfigurableResource):
    """The local folder holding download caches and model versions, and the local serving folder.

    Tables handed between assets are the IO manager's (`io_manager.LocalIOManager`).
    """

    data_dir: str = Field(default=DEFAULT_DATA_DIR, description="Relative paths resolve against the working directory.")
    serving_dir_path: str | None = Field(
        default=None,
        description="The local serving folder: where deployed_model promotes versions unless serving.url "
        "names a bucket (default <data_dir>/serving).",
    )

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def tuning_dir(self) -> Path:
        """The Optuna studies and the latest study's result, which ``svd_model`` trains with."""
        return self.root / "tuning"

    @property
    def serving_dir(self) -> Path:
        return serving_dir(self.data_dir, self.serving_dir_path)
