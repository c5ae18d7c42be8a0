"""Tables, plots and statistics built from run records only (never re-running anything)."""
