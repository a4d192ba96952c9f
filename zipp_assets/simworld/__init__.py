"""A synthetic Reddit in the exact format of the real dumps, with planted truth.

It lets every stage be tested and demonstrated offline: taste communities with their subreddits,
visual styles and demographic mixes; users with one to three communities and heavy-tailed
activity; image posts whose pixels follow the poster's styles; and the dirt of real dumps.
"""

from zipp_assets.simworld.world import WorldConfig, generate_world

__all__ = ["WorldConfig", "generate_world"]
