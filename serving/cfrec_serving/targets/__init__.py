"""Serving targets: a local folder (``folder``) or an S3-protocol bucket (``s3_store``), behind
the one interface of ``target``."""
