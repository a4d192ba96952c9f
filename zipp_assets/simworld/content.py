"""The fixed lists a synthetic world is built from that are not language: taste community themes and
their visual-interest categories, non-ASCII dirt, bot and user-name material, link domains. Every word
the world writes comes from a phrasebook (`phrasebook`)."""

from __future__ import annotations

# The taste communities' themes. What they are called and talked about (subreddit names, topics)
# comes from the world's phrasebook (`phrasebook`); the themes themselves are the world's truth.
THEMES = (
    "film photography", "mountain hiking", "street food", "pixel art", "cyberpunk cities", "gardening",
    "classic cars", "aquariums", "interior design", "tattoo art", "astronomy", "knitting", "skateboarding",
    "birdwatching", "watercolor", "mechanical keyboards",
)
# The visual-interest category (of the paper's ten) each theme's pictures belong to.
THEME_VISUAL_INTEREST = {
    "film photography": "cinematic portrait photography",
    "mountain hiking": "nature, wildlife and animals",
    "street food": "people, family and lifestyle",
    "pixel art": "illustration and concept art",
    "cyberpunk cities": "sci-fi and robotics",
    "gardening": "nature, wildlife and animals",
    "classic cars": "products, logos and packaging",
    "aquariums": "nature, wildlife and animals",
    "interior design": "architecture and interior design",
    "tattoo art": "illustration and concept art",
    "astronomy": "sci-fi and robotics",
    "knitting": "fashion and beauty",
    "skateboarding": "people, family and lifestyle",
    "birdwatching": "nature, wildlife and animals",
    "watercolor": "illustration and concept art",
    "mechanical keyboards": "products, logos and packaging",
}
NON_ASCII_SNIPPETS = ["café ☕", "naïve", "日本語", "😂😂", "Ünïcödé", "—", "façade", "¡olé!", "🔥", "Привет"]
BOT_NAMES = ["RemindMeBot", "WikiTextBot", "sneakpeek_bot", "RepostSleuthBot", "converter-bot"]
SYLLABLES = "ka lo mi ra ne su to vi ze ba do fu gi ho ju ly mo pa qu ri sa te un vo wa xi yo".split()
NEWS_DOMAINS = ["example-news.com", "dailyreport.net", "techwire.org"]
