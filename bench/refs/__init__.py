"""Reference servers started as subprocesses by the bench runner (not imported by it)."""
