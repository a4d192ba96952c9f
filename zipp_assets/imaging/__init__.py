"""Image encoders and image generators, each behind one interface."""
