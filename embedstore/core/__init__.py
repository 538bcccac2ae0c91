"""L0, the foundation every layer stands on; imports nothing of embedstore above it.

- `errors`: the error types and the one-line messages the CLI prints
- `schema`: the store's tables, keys and the embedding-table prefix
- `ids`: `IdLookup`, the one sorted tile-id lookup
- `validation`: option constraints, the one name rule, output files
- `tabular`: cells as written; `hooks`: test hooks for crash points
- `location`: a local path or an object-store URI behind one Path API, and the advisory lock
- `reports`: the `Report` protocol every verb's result answers
- `moved`: old import paths that warn for one release
"""
