"""Per-rule settings for ``ngrad compare``, one TOML file per data set (see docs/compare.md)."""
