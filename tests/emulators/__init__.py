"""Local emulators of external platform APIs, for tests (see shared/design PLATFORMS.md)."""
