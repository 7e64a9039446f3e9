"""Settings, paths, errors and small helpers every layer uses."""
