"""Serving targets: ``target`` (promote, rollback, current manifest, versions; ``open_target``)
written once over two backends, a local folder (``folder``) or an S3-protocol bucket (``s3``,
through the boto3 client of ``s3_store``), following the rules and records of ``manifest``."""
