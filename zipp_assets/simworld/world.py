"""Write a synthetic world as monthly RC_/RS_ dumps in the real format, with cached images and the
planted truth. What is planted, and which real statistic each choice follows, is in the package
docstring (`zipp_assets.simworld`); who the users are is planted by `population`.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import pyarrow.parquet as pq
import zstandard

from zipp_assets.reddit.image_urls import image_cache_path
from zipp_assets.simworld.civitai import HISTORY_FILE, write_generation_histories
from zipp_assets.simworld.config import WorldConfig, month_bounds, parse_month, parse_month_range
from zipp_assets.simworld.content import NEWS_DOMAINS, NON_ASCII_SNIPPETS
from zipp_assets.simworld.phrasebook import ASPECTS, template_slots
from zipp_assets.simworld.population import User, World, base36, build_world
from zipp_assets.simworld.render import Style, render_png
from zipp_assets.simworld.taste_words import aesthetic_remark
from zipp_assets.simworld.traits import FACT_KINDS, fact_sentence
from zipp_assets.simworld.injection import INJECTION_STREAM, injected_users
from zipp_assets.simworld.truth import truth_tables

__all__ = [
    "ARCTIC_SHIFT_FROM", "EARLY_SCHEMA_BEFORE", "FIELDS_WITH_AUTHOR_FULLNAME_FROM", "WORLD_VERSION",
    "DumpWriter", "MonthGenerator", "World", "WorldConfig", "build_world", "generate_month", "generate_world",
    "month_bounds", "parse_month", "parse_month_range", "truth_tables",
]

log = logging.getLogger(__name__)

# Bumped whenever the same config and seed would generate a different world.
WORLD_VERSION = 4  # 4: words from a phrasebook, comments as sentences (3: Civitai-style prompt histories)
FIELDS_WITH_AUTHOR_FULLNAME_FROM = "2018-01"
ARCTIC_SHIFT_FROM = "2023-04"
EARLY_SCHEMA_BEFORE = "2011-01"
ZSTD_WINDOW_LOG = 31  # like the real dumps: decoding needs a 2 GiB window
GENERIC_SHARE = 0.12  # of a user's activity in the big generic subreddits
SUBREDDIT_RANK_EXPONENT = 1.1  # within a community (and among generic ones), rank r has weight r ** -1.1
# Words per comment: log-normal with this median and spread, cut to 1..400. An assumption (see the
# package docstring): Reddit comment lengths are right-skewed with a median of some tens of words.
COMMENT_WORDS_MEDIAN = 15.0
COMMENT_WORDS_SIGMA = 0.9
SELFTEXT_WORDS_MEDIAN = 40.0
NON_ASCII_SHARE = 0.08  # of texts that carry a non-ASCII snippet (dirt for the parsers)
_ARTICLE = re.compile(r"\b([Aa]) ([aeiouAEIOU]\w)")  # "a eyepiece" -> "an eyepiece" (English books)
TEXT_STREAM = 6  # the world's other streams: 0 people, 1 months, 2 traits, 3 taste, 4-5 prompt histories


def _zipf_cumulative(n: int) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=float) ** -SUBREDDIT_RANK_EXPONENT
    return np.cumsum(weights / weights.sum())


class DumpWriter:
    """NDJSON compressed with zstd and a 2 GiB window (like `zstd --long=31`), written atomically."""

    def __init__(self, path: Path, level: int = 3):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=ZSTD_WINDOW_LOG, enable_ldm=True
        )
        self._file = open(self.tmp, "wb")
        self._writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(self._file, closefd=False)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.lines = 0

    def write_line(self, line: bytes) -> None:
        self._buffer.append(line)
        self._buffered += len(line) + 1
        self.lines += 1
        if self._buffered > 1 << 20:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write(b"\n".join(self._buffer) + b"\n")
            self._buffer, self._buffered = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> DumpWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class MonthGenerator:
    """Generates one month's submissions and comments for a world."""

    def __init__(self, world: World, month: str, image_dir: Path | None):
        self.world = world
        self.config = world.config
        self.month = month
        self.rng = np.random.default_rng([self.config.seed, 1, int(month[:4]), int(month[5:])])
        # Every choice of words draws from a stream of its own, so a phrasebook changes the words and
        # nothing else: ids, times, authors, subreddits, images and planted statements stay put.
        self.text_rng = np.random.default_rng([self.config.seed, TEXT_STREAM, int(month[:4]), int(month[5:])])
        self.book = world.phrasebook
        self.generic_subreddits = self.book.generic["subreddits"]
        self.start, self.end = month_bounds(month)
        self.image_dir = image_dir
        self.era_early = month < EARLY_SCHEMA_BEFORE
        self.with_fullname = month >= FIELDS_WITH_AUTHOR_FULLNAME_FROM
        style = self.config.dump_style
        self.arctic = style == "arctic_shift" or (style == "auto" and month >= ARCTIC_SHIFT_FROM)
        self.encoder = msgspec.json.Encoder(order="sorted" if self.arctic else None)
        self.submissions_by_subreddit: dict[str, list[str]] = defaultdict(list)
        self.recent_comments: dict[str, deque] = defaultdict(lambda: deque(maxlen=8))
        self.images_written = 0
        self.generic_ranks = _zipf_cumulative(len(self.generic_subreddits))
        self.community_ranks = _zipf_cumulative(self.config.subreddits_per_community)

    # --- choices ---------------------------------------------------------------------------
    def _draw(self, cumulative: np.ndarray) -> int:
        """An index drawn with the weights whose running sum is `cumulative` (ending at 1)."""
        return min(int(np.searchsorted(cumulative, self.rng.random(), side="right")), len(cumulative) - 1)

    def _pick_subreddit(self, user: User) -> str:
        if user.trait_subreddits and self.rng.random() < self.config.trait_post_share:
            return user.trait_subreddits[int(self.rng.integers(len(user.trait_subreddits)))]
        if not user.communities or self.rng.random() < GENERIC_SHARE:
            return self.generic_subreddits[self._draw(self.generic_ranks)]
        share = self.config.taste_aligned_share
        if share > 0 and self.rng.random() < share:  # no draw at 0, so the default world is unchanged
            community = self.world.communities[user.taste_community]
        else:
            community = self.world.communities[user.communities[self._draw(np.cumsum(user.weights))]]
        return community.subreddits[self._draw(self.community_ranks)]

    def _user_style(self, user: User) -> Style:
        """An image follows the poster's own taste, with per-image variation."""
        return user.taste.jittered(self.rng)

    def _pick(self, options: list[str]) -> str:
        return options[int(self.text_rng.integers(len(options)))]

    def _fill(self, template: str, subreddit: str) -> str:
        """A phrasebook template with its slots filled: {thing} and {other_thing} from the subreddit's
        topics, every other slot from the phrasebook's list of that name."""
        topics = self.world.subreddit_topics[subreddit]
        values: dict[str, str] = {}
        for slot in template_slots(template):
            if slot == "thing":
                values[slot] = self._pick(topics)
            elif slot == "other_thing":
                others = [t for t in topics if t != values.get("thing")] or topics
                values[slot] = self._pick(others)
            else:
                values[slot] = self._pick(self.book.comments["slots"][slot])
        text = _ARTICLE.sub(lambda m: m.group(1) + "n " + m.group(2), template.format(**values))
        return text[:1].upper() + text[1:]

    def _words(self, median: float) -> int:
        return int(np.clip(round(self.text_rng.lognormal(np.log(median), COMMENT_WORDS_SIGMA)), 1, 400))

    def _text(self, subreddit: str, median_words: float, evidence: str = "") -> str:
        """Sentences from the phrasebook, on the subreddit's topics, until a length drawn like a real
        comment's is reached; a planted statement goes in at a random place among them."""
        target = self._words(median_words)
        sentences: list[str] = []
        words = 0
        while words < target:
            sentence = self._fill(self._pick(self.book.comments["sentences"]), subreddit)
            if sentence in sentences and self.text_rng.random() < 0.9:  # people rarely repeat themselves
                continue
            sentences.append(sentence)
            words += len(sentence.split())
        if evidence:
            sentences.insert(int(self.text_rng.integers(len(sentences) + 1)), evidence)
        text = " ".join(sentences)
        if self.text_rng.random() < NON_ASCII_SHARE:
            text += " " + NON_ASCII_SNIPPETS[int(self.text_rng.integers(len(NON_ASCII_SNIPPETS)))]
        return text

    def _title(self, subreddit: str) -> str:
        return self._fill(self._pick(self.book.comments["titles"]), subreddit)

    def _evidence(self, user: User) -> str:
        """Now and then a sentence a persona can use: an aesthetic preference, or a fact about the user,
        in the phrasebook's words; most comments carry neither. Whether a comment carries one, and
        which aspect or fact, is drawn from the month's stream; only the wording from the text stream."""
        draw = self.rng.random()
        if draw < self.config.aesthetic_comment_rate:
            aspect = ASPECTS[int(self.rng.integers(len(ASPECTS)))]
            return aesthetic_remark(user.taste, self.text_rng, self.book, aspect)
        if draw < self.config.aesthetic_comment_rate + self.config.fact_comment_rate:
            kind = FACT_KINDS[int(self.rng.integers(len(FACT_KINDS)))]
            return fact_sentence(self.book, kind, user.fact(kind), self.text_rng)
        return ""

    def _timestamp(self) -> int | str:
        ts = int(self.rng.integers(self.start, self.end))
        if self.era_early or self.rng.random() < self.config.string_timestamp_fraction:
            return str(ts)  # some eras and files carry created_utc as a string
        return ts

    def _edited(self, created: int | str) -> bool | float:
        if self.rng.random() < 0.05:
            return float(int(created) + int(self.rng.integers(60, 86400))) + 0.5
        return False

    def _new_comment_id(self) -> str:
        self.world.next_comment_id += int(self.rng.integers(1, 50))
        return base36(self.world.next_comment_id)

    def _new_submission_id(self) -> str:
        self.world.next_submission_id += int(self.rng.integers(1, 50))
        return base36(self.world.next_submission_id)

    def _author_fields(self, user: User | None, record: dict) -> None:
        if user is None:
            record["author"] = "[deleted]"
            return
        record["author"] = user.name
        if self.with_fullname:
            record["author_fullname"] = user.fullname
        if not self.era_early:
            record["author_created_utc"] = user.created_utc
            record["author_flair_css_class"] = None
            record["author_flair_richtext"] = []
            record["author_flair_text"] = None
            record["author_flair_type"] = "text"
            record["author_patreon_flair"] = False

    def _finish(self, record: dict) -> bytes:
        if self.arctic:
            record["_meta"] = {"retrieved_2nd_on": self.end + 86400 * 30}
        return self.encoder.encode(record)

    # --- images ----------------------------------------------------------------------------
    def _image(self, url: str, user: User) -> None:
        if self.image_dir is None:
            return
        path = image_cache_path(self.image_dir, url)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render_png(self._user_style(user), self.rng, self.config.image_size))
        self.images_written += 1

    # --- records ---------------------------------------------------------------------------
    def submission(self, user: User | None, owner: User) -> tuple[bytes, dict]:
        subreddit = self._pick_subreddit(owner)
        post_id = self._new_submission_id()
        created = self._timestamp()
        title = self._title(subreddit)
        record: dict = {"id": post_id, "created_utc": created, "subreddit": subreddit}
        record["subreddit_id"] = self.world.subreddit_ids[subreddit]
        self._author_fields(user, record)
        record.update(
            title=title,
            num_comments=int(self.rng.integers(0, 40)),
            score=int(self.rng.zipf(1.8)) if self.rng.random() < 0.97 else -int(self.rng.integers(1, 20)),
            over_18=bool(self.rng.random() < self.config.nsfw_fraction),
            permalink=f"/r/{subreddit}/comments/{post_id}/{title[:20].lower().replace(' ', '_')}/",
            retrieved_on=self.end + 86400 * 3,
        )
        if not self.era_early:
            record.update(
                all_awardings=[], allow_live_comments=False, can_gild=True, contest_mode=False,
                gildings={}, is_crosspostable=True, is_meta=False, is_original_content=False,
                is_robot_indexable=True, is_video=False, link_flair_richtext=[], link_flair_text=None,
                locked=False, media_only=False, no_follow=True, num_crossposts=0, pinned=False,
                send_replies=True, spoiler=False, stickied=False, subreddit_subscribers=int(self.rng.integers(1000, 10**6)),
                subreddit_type="public", total_awards_received=0, whitelist_status="all_ads", wls=6,
                edited=self._edited(created),
            )
        image_community = self.world.subreddit_community.get(subreddit, -1)
        wants_image = user is not None and owner.communities and (
            self.rng.random() < self.config.image_post_fraction * (1.0 if image_community >= 0 else 0.6)
        )
        if wants_image:
            self._image_post(record, owner, subreddit)
        elif self.rng.random() < 0.5:
            record.update(is_self=True, selftext=self._text(subreddit, SELFTEXT_WORDS_MEDIAN),
                          url=f"https://www.reddit.com{record['permalink']}", domain=f"self.{subreddit}")
            if user is None or self.rng.random() < 0.05:
                record["selftext"] = "[removed]" if user is not None else "[deleted]"
        else:
            domain = NEWS_DOMAINS[int(self.rng.integers(len(NEWS_DOMAINS)))]
            thumb = f"https://external-preview.redd.it/{post_id}thumb.jpg?width=640&amp;s=abc"
            record.update(is_self=False, selftext="", url=f"https://{domain}/story/{post_id}", domain=domain,
                          post_hint="link", preview={"images": [{"source": {"url": thumb, "width": 640, "height": 360}}], "enabled": False})
        self.submissions_by_subreddit[subreddit].append(post_id)
        return self._finish(record), record

    def _image_post(self, record: dict, owner: User, subreddit: str) -> None:
        post_id = record["id"]
        kind = self.rng.choice(["direct", "gallery", "imgur", "crosspost"], p=[0.6, 0.2, 0.1, 0.1])
        previous = self.world.image_posts.get(subreddit) or []
        if kind == "crosspost" and previous:
            parent_record = previous[int(self.rng.integers(len(previous)))][1]
            record.update(is_self=False, selftext="", crosspost_parent="t3_" + parent_record["id"],
                          crosspost_parent_list=[parent_record], url=f"/r/{subreddit}/comments/{parent_record['id']}/",
                          domain=f"self.{subreddit}")
            return
        record.update(is_self=False, selftext="")
        self.world.image_posters.add(owner.index)
        if kind == "gallery":
            media_ids = [f"{post_id}g{i}x" for i in range(int(self.rng.integers(2, 5)))]
            metadata = {}
            for media_id in media_ids:
                url = f"https://preview.redd.it/{media_id}.png?width=32&format=png&auto=webp&s=f00{media_id}"
                metadata[media_id] = {"status": "valid", "e": "Image", "m": "image/png", "id": media_id,
                                      "s": {"y": 32, "x": 32, "u": url.replace("&", "&amp;")}, "p": []}
                self._image(url, owner)
            record.update(is_gallery=True, media_metadata=metadata, url=f"https://www.reddit.com/gallery/{post_id}",
                          domain="reddit.com", gallery_data={"items": [{"media_id": m, "id": i} for i, m in enumerate(media_ids)]})
        elif kind == "imgur":
            source = f"https://preview.redd.it/{post_id}src.png?auto=webp&s=ab{post_id}"
            record.update(url=f"https://imgur.com/{post_id}Q", domain="imgur.com", post_hint="image",
                          preview={"images": [{"source": {"url": source.replace("&", "&amp;"), "width": 32, "height": 32},
                                               "resolutions": [], "id": post_id}], "enabled": True})
            self._image(source, owner)
        else:
            ext = "png" if self.rng.random() < 0.5 else "jpg"
            url = f"https://i.redd.it/{post_id}{ext[0]}img.{ext}"
            record.update(url=url, domain="i.redd.it", post_hint="image", is_reddit_media_domain=True,
                          preview={"images": [{"source": {"url": f"https://preview.redd.it/{post_id}.{ext}?auto=webp&amp;s=1", "width": 32, "height": 32}}], "enabled": True})
            self._image(url, owner)
        self.world.image_posts[subreddit].append((post_id, dict(record)))
        if len(self.world.image_posts[subreddit]) > 50:
            self.world.image_posts[subreddit].pop(0)

    def comment(self, user: User | None, owner: User, subreddit: str | None = None, link: str | None = None,
                body: str | None = None) -> bytes:
        subreddit = subreddit or self._pick_subreddit(owner)
        links = self.submissions_by_subreddit.get(subreddit)
        if link is None:
            link = links[int(self.rng.integers(len(links)))] if links else self._new_submission_id()
        comment_id = self._new_comment_id()
        parents = self.recent_comments[link]
        parent = f"t1_{parents[int(self.rng.integers(len(parents)))]}" if parents and self.rng.random() < 0.4 else f"t3_{link}"
        parents.append(comment_id)
        created = self._timestamp()
        record: dict = {"id": comment_id, "created_utc": created, "subreddit": subreddit,
                        "subreddit_id": self.world.subreddit_ids[subreddit], "link_id": f"t3_{link}", "parent_id": parent}
        self._author_fields(user, record)
        if body is not None:  # a planted text (injection.py), written as it is
            pass
        elif user is None:
            body = "[deleted]" if self.rng.random() < 0.5 else "[removed]"
        elif owner.is_bot:
            body = self.book.comments["bot"]
        else:
            body = self._text(subreddit, COMMENT_WORDS_MEDIAN, self._evidence(owner))
        record.update(body=body, score=int(self.rng.zipf(1.9)) if self.rng.random() < 0.95 else -int(self.rng.integers(1, 9)),
                      controversiality=int(self.rng.random() < 0.03), gilded=0, retrieved_on=self.end + 86400 * 3,
                      edited=self._edited(created), distinguished="moderator" if owner.name == "AutoModerator" else None)
        if self.era_early:
            record.update(ups=record["score"], downs=0, name=f"t1_{comment_id}", archived=True, score_hidden=False)
        else:
            record.update(all_awardings=[], associated_award=None, author_flair_background_color=None,
                          author_flair_template_id=None, author_flair_text_color=None, awarders=[],
                          can_gild=True, collapsed=False, collapsed_because_crowd_control=None, gildings={},
                          is_submitter=False, locked=False, no_follow=True, send_replies=True, stickied=False,
                          subreddit_name_prefixed=f"r/{subreddit}", subreddit_type="public", top_awarded_type=None,
                          total_awards_received=0, treatment_tags=[],
                          permalink=f"/r/{subreddit}/comments/{link}/_/{comment_id}/")
        return self._finish(record)

    def malformed(self, line: bytes) -> bytes:
        """A broken variant of a good line, as real dumps occasionally carry."""
        kind = int(self.rng.integers(5))
        if kind == 0:
            return line[: max(1, len(line) // 2)]  # truncated JSON
        if kind == 1:
            return line.replace(b'"id":', b'"id_":', 1)  # required field missing
        if kind == 2:
            return line.replace(b'"subreddit":"', b'"subreddit":17,"_was":"', 1)  # wrong type
        if kind == 3:
            return b"\xff\xfe" + line[2:]  # not UTF-8
        return b"not json at all"


def _maybe_deleted(gen: MonthGenerator, user: User) -> User | None:
    return None if not user.is_bot and gen.rng.random() < gen.config.deleted_fraction else user


def generate_month(world: World, month: str, reddit_dir: Path, image_dir: Path | None) -> dict:
    """Write RS_<month>.zst and RC_<month>.zst; return counts."""
    gen = MonthGenerator(world, month, image_dir)
    config = world.config
    humans = [u for u in world.users if not u.is_bot]
    bots = [u for u in world.users if u.is_bot]
    counts = {"month": month, "submissions": 0, "comments": 0, "malformed": 0}

    def emit(writer: DumpWriter, line: bytes, kind: str) -> None:
        if gen.rng.random() < config.malformed_rate:
            line = gen.malformed(line)
            counts["malformed"] += 1
        writer.write_line(line)
        counts[kind] += 1

    with DumpWriter(reddit_dir / f"RS_{month}.zst", config.compression_level) as writer:
        n_posts = gen.rng.poisson(np.array([u.activity for u in humans]) * config.submissions_per_user_month)
        for user, n in zip(humans, n_posts):
            for _ in range(int(n)):
                line, _record = gen.submission(_maybe_deleted(gen, user), user)
                emit(writer, line, "submissions")
    with DumpWriter(reddit_dir / f"RC_{month}.zst", config.compression_level) as writer:
        n_comments = gen.rng.poisson(np.array([u.activity for u in humans]) * config.comments_per_user_month)
        for user, n in zip(humans, n_comments):
            for _ in range(int(n)):
                emit(writer, gen.comment(_maybe_deleted(gen, user), user), "comments")
        if config.injection_share and month == config.months[-1]:
            planted = injected_users([u.index for u in humans], config.injection_share, config.seed)
            # Their own stream: where and when they are posted moves no other draw of the world.
            kept_rng, gen.rng = gen.rng, np.random.default_rng([config.seed, INJECTION_STREAM, 1])
            try:
                for user in humans:
                    for text in planted.get(user.index, []):
                        emit(writer, gen.comment(user, user, body=text), "comments")
                        counts["injected"] = counts.get("injected", 0) + 1
            finally:
                gen.rng = kept_rng
        # AutoModerator on a tenth of the posts, other bots answering at random.
        for subreddit, posts in list(gen.submissions_by_subreddit.items()):
            for post in posts[:: 10]:
                emit(writer, gen.comment(bots[0], bots[0], subreddit, post), "comments")
        for bot in bots[1:]:
            for _ in range(int(gen.rng.poisson(bot.activity))):
                emit(writer, gen.comment(bot, bot, gen.generic_subreddits[int(gen.rng.integers(len(gen.generic_subreddits)))]),
                     "comments")
    counts["images"] = gen.images_written
    return counts


def generate_world(
    config: WorldConfig,
    raw_dir: Path,
    truth_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Generate every month of `config` under `raw_dir/reddit` (+ `raw_dir/images`), the prompt
    histories under `raw_dir/zipbench` and the truth."""
    raw_dir = Path(raw_dir)
    reddit_dir = raw_dir / "reddit"
    reddit_dir.mkdir(parents=True, exist_ok=True)
    image_dir = raw_dir / "images" if config.write_images else None
    world = build_world(config)
    report = []
    for month in config.months:
        t0 = time.perf_counter()
        counts = generate_month(world, month, reddit_dir, image_dir)
        counts["seconds"] = round(time.perf_counter() - t0, 2)
        report.append(counts)
        (progress or log.info)(
            f"{month}: {counts['submissions']} submissions, {counts['comments']} comments, "
            f"{counts['images']} images, {counts['malformed']} malformed lines in {counts['seconds']}s"
        )
    users, rows = write_generation_histories(world, raw_dir / HISTORY_FILE)
    (progress or log.info)(f"prompt histories: {users} users, {rows} prompts in {raw_dir / HISTORY_FILE}")
    if truth_dir is not None:
        Path(truth_dir).mkdir(parents=True, exist_ok=True)
        for name, table in truth_tables(world).items():
            pq.write_table(table, Path(truth_dir) / f"{name}.parquet")
    return report

