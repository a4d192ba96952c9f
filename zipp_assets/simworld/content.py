"""The fixed lists a synthetic world is written from: taste communities, generic subreddits, filler
words, bot and user-name material, link domains."""

from __future__ import annotations

# (theme, words that name its subreddits and fill its comments)
THEMES = [
    ("film photography", ["analog", "film", "darkroom", "grain", "leica", "portra"]),
    ("mountain hiking", ["hiking", "summit", "trail", "alpine", "backpacking", "campsite"]),
    ("street food", ["streetfood", "ramen", "tacos", "noodles", "spicy", "market"]),
    ("pixel art", ["pixelart", "sprites", "retro", "8bit", "palette", "tileset"]),
    ("cyberpunk cities", ["cyberpunk", "neon", "nightcity", "synthwave", "rain", "skyline"]),
    ("gardening", ["gardening", "seedlings", "compost", "tomatoes", "succulents", "orchids"]),
    ("classic cars", ["classiccars", "muscle", "chrome", "restoration", "v8", "roadtrip"]),
    ("aquariums", ["aquariums", "reef", "cichlids", "shrimp", "planted", "bettas"]),
    ("interior design", ["interiors", "midcentury", "cozy", "minimal", "plants", "lighting"]),
    ("tattoo art", ["tattoos", "linework", "blackwork", "flash", "ink", "traditional"]),
    ("astronomy", ["astrophotography", "nebula", "telescope", "galaxy", "moon", "stars"]),
    ("knitting", ["knitting", "yarn", "sweater", "crochet", "pattern", "wool"]),
    ("skateboarding", ["skateboarding", "kickflip", "deck", "skatepark", "grind", "board"]),
    ("birdwatching", ["birding", "warbler", "raptors", "feeder", "owls", "migration"]),
    ("watercolor", ["watercolor", "painting", "brush", "wash", "sketchbook", "palette"]),
    ("mechanical keyboards", ["mechanicalkeyboards", "keycaps", "switches", "artisan", "thock", "pcb"]),
]
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
SUFFIXES = ["", "Porn", "Club", "Talk", "Pics", "Hub", "Daily", "Lovers"]
# Largest first: they are picked with Zipf weights by rank.
GENERIC_SUBREDDITS = ["AskReddit", "pics", "funny", "todayilearned", "news", "gaming", "mildlyinteresting", "aww"]
GENERIC_WORDS = (
    "the this really love looks great amazing think just like would nice first time what anyone know "
    "made today finally years every thanks where does best favorite beautiful".split()
)
NON_ASCII_SNIPPETS = ["café ☕", "naïve", "日本語", "😂😂", "Ünïcödé", "—", "façade", "¡olé!", "🔥", "Привет"]
BOT_NAMES = ["RemindMeBot", "WikiTextBot", "sneakpeek_bot", "RepostSleuthBot", "converter-bot"]
SYLLABLES = "ka lo mi ra ne su to vi ze ba do fu gi ho ju ly mo pa qu ri sa te un vo wa xi yo".split()
NEWS_DOMAINS = ["example-news.com", "dailyreport.net", "techwire.org"]
