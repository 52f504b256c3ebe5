"""transformer package."""
