"""The persona studio: a small web app over the lake for browsing and editing personas and for the
human A/B study (issue 11). `python -m zipp_assets.studio` (or `make studio`) serves it on loopback."""
