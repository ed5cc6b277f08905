"""What every model family shares when it opens a directory: safe JSON/weight reading, dtypes, devices."""
