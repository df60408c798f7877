"""Studies built on the trainer: runs of many configs, their aggregation, tables and plots."""
