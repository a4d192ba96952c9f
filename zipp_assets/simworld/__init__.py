"""A synthetic Reddit in the exact format of the real dumps, with planted truth.

It lets every stage be tested and demonstrated offline. The world follows ZIPP's premise: people
have personal, pluralistic visual taste that shows in what they post and say, and only partly in
where they post.

What is planted
- Taste communities (12 themes, 6 subreddits each) with a visual style, demographic skews and a
  visual-interest category; eight big generic subreddits; and small locale, profession and hobby
  subreddits (r/london, r/nursing, r/running), outside every community.
- Users in one to three communities, with heavy-tailed activity.
- Each user's visual taste (hue, saturation, brightness, contrast, pattern, frequency): the mixture
  of their communities' styles (hue as a circular mean) blended with a personal component drawn
  independently of their communities; `personal_share` (default 0.5) says how far. Their images
  follow that taste with per-image variation. The community part is predictable from their
  subreddits; the personal part is not.
- Persona attributes from small fixed lists (`traits`): age band (and an age), gender, locale,
  profession, hobby, one of the paper's ten visual-interest categories. They are only weakly
  visible: a minority of users join their locale/profession/hobby subreddit, communities skew
  demographics a little, and a few percent of comments state a fact ("I work as a nurse", "Same
  thing here in London", or indirectly: "Just got home after my night shift on the ward") or an
  aesthetic preference in the user's taste ("Everything I shoot ends up faded teal"). Most comments
  stay generic. Nothing in the pipeline imports the modules that hold these words.
- Words: every word the world writes comes from a phrasebook (`phrasebook`, YAML under
  `phrasebooks/`, chosen by `WorldConfig.phrasebook`; docs/phrasebooks.md): subreddit names,
  comments and titles as sentences from templates with slots on the subreddit's topics, statements
  of facts and tastes. A phrasebook changes the words only; word choices draw from a stream of their
  own, so the same seed gives the same users, memberships, ids, times and images in any phrasebook.
- Taste-aligned membership: `taste_aligned_share` (default 0, drawing nothing) of a user's community
  activity goes to the community whose style is nearest their personal taste.
- The dirt of real dumps: deleted authors, bots, AutoModerator, NSFW posts, string timestamps,
  eras (early schema before 2011, author_fullname from 2018-01, Arctic Shift from 2023-04),
  galleries, crossposts, imgur links, malformed lines, non-ASCII text.
- Civitai-like prompt histories (`civitai`) for a share of the users who post images, in the row
  format of ZIPBench's released data, in `<raw>/zipbench/civitai_generations.jsonl`: a subject from
  eight categories the user leans towards, then style phrases from the user's own taste (through
  `taste_words`, with their images' per-image variation) and quality tags ("masterpiece", "8k"),
  some prompts with neither. Drawn from streams of their own, so the dumps, images and truth are
  byte-identical with or without them. Who has a history is the file's reddit_username column.
- Truth tables (`truth`): users (communities, demographics, traits, taste and its parts, taste
  words), communities, subreddits (with kind and trait), bots. Evaluation reads them; the pipeline
  never does.

Which real statistic each choice follows (sources named where the shape comes from; where only the
shape is known the figures are round choices, said so, never fitted to any downstream result)
- Per-user activity: log-normal, sigma 1, times the configured monthly means, then Poisson counts,
  so a tenth of users write a large share of the comments. Shape only: participation inequality
  in online communities (J. Nielsen 2006, "Participation Inequality", Nielsen Norman Group) and the
  heavy-tailed per-user activity on Reddit surveyed by Medvedev, Lambiotte and Delvenne 2019 ("The
  anatomy of Reddit: an overview of academic research"), measured on the Pushshift dumps
  (Baumgartner et al. 2020, "The Pushshift Reddit Dataset", ICWSM).
- Subreddit popularity: Zipf-like. Communities weigh (rank)^-0.6, subreddits within a community and
  the generic ones (rank)^-1.1, so counts against rank fall with a log-log slope near -1. Shape
  only: Reddit activity is concentrated in few subreddits (Waller and Anderson 2019, "Generalists
  and specialists", WWW: the top 10,000 of 232K subreddits held 96.8% of 2017's comments); the
  exponents are choices.
- Communities per user: 1, 2 or 3 with shares 0.5 / 0.35 / 0.15. Shape only: most users' activity
  sits in few communities and generalists are a minority (Waller and Anderson 2019); the shares are
  choices.
- Demographics: population shares skewed young and male with North America largest (shape only:
  Pew Research Center 2016, "Seven-in-Ten Reddit Users Get News on the Site": Reddit's users are
  more likely young and male than the public); figures are round choices. Each community's mix is
  a Dirichlet draw of concentration 8 around them (a choice: mild skews). Locale is uniform within
  the region, profession and hobby uniform and independent of communities (choices).
- Comment lengths: log-normal words per comment, median 15, sigma 0.9 (self-posts median 40). An
  assumption, not a fitted figure: Reddit comment lengths are right-skewed, but no published median
  for Reddit as a whole was at hand (one analysis of two crypto subreddits reports a mean of 11.9
  words per comment). Of stated facts, half are said outright and half indirectly (a choice).
- Facts and aesthetic remarks: 3% of comments each (choices). Qualitative fact: users disclose such
  attributes rarely and in explicit first-person statements, which is how Reddit attribute data
  sets are labelled (Tigunova et al. 2020, "RedDust", LREC; Gjurkovic et al. 2021, "PANDORA Talks").
- Locale/profession/hobby subreddits: 20% of users with the attribute join each, and send 10% of
  their activity there (choices; qualitative: such subreddits exist and only some people post in
  them). Visual interest is the primary community's with chance 0.3, else uniform (a choice).
- Personal share 0.5: the default the issue sets, not a measurement.
- Prompt histories: `prompt_history_share` 0.1 of image-posting users, 5 to 40 prompts each
  (uniform). Choices, not measurements: ZIPBench links 1,500 Reddit users of ZIPP's 22M to a Civitai
  account (under 0.01%), which in a world of 2,000 users would be none, so the world oversamples
  linked users as a benchmark subset does; no statistic of prompts per user was at hand. How many
  style phrases and tags a prompt carries, and how often settings change, are round choices
  (`civitai`), never fitted to any result.
"""

from zipp_assets.simworld.world import WorldConfig, generate_world

__all__ = ["WorldConfig", "generate_world"]
