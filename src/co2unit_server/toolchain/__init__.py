"""The research toolchain: import into SQLite, plots, summary pages (`make` in database/)."""
