"""ragar package."""
