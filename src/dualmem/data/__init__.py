"""Data sources, per-seed split manifests, and the task stream that reveals classes in order."""
