"""The drop folder: files dropped into an inbox are scored by the batch engine."""
