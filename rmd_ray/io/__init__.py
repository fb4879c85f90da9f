"""The I/O foundation, below every other layer: where bytes live and how they are written.

:mod:`.storage` reads and writes local paths and URIs (``s3://``, ``gs://``, ``file://``; any pyarrow
filesystem), :mod:`.location` parses those locations and resolves them to a filesystem, :mod:`.parts`
keeps a dataset as a directory of Parquet parts plus a manifest, and :mod:`.atomic` is the local
temporary-file-then-rename primitive every atomic writer builds on.
"""
