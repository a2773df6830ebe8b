"""The pipeline's steps without Dagster: MovieLens files and downloads, TMDB mapping, catalog,
combining, training, tuning, ranking metrics, memory estimates and the records assets hand on."""
