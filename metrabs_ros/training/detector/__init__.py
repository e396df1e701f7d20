"""Person detector training (see docs/detector.md)."""
