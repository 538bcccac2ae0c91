"""L3, keeping a store well: `check` (and repair), `info`, `upgrade` of older store formats, and `labels`
(importing task labels, with its options in `label_options`)."""
