"""The Spark trainer: MLlib ALS on the training table, embedded (``local[*]``), on a standalone
master (``spark://``) or through a Spark Connect server (``sc://``). Dagster-free.

``session``: opening a session with clear errors (no Java, an unreachable cluster); ``als``: the
hand-off, the fit, scoring and K-fold cross-validation, and the factors as ``cf_model.npz``
arrays. pyspark is the optional ``[spark]`` extra: it is imported only when Spark is used.
"""
