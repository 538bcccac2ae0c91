"""L1, the store directory: the catalog of Lance tables, versions and tags, keyed writes, damage checks,
the embedding-table format and provenance, and the JSON records saved beside the tables.

- `catalog`: `Catalog`, the tables of one store (embedstore's own; the public object is `embedstore.Store`)
- `versions`: versions, tags, restore and compaction
- `keyed_writes`: upserts and insert-missing by key, exact under concurrent writers
- `damage`: what a damaged table looks like
- `embedding_tables`: embedding-table names, schema and the provenance they record
- `saved`: index manifests and head cards, read as plain JSON
"""
