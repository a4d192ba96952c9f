"""The linkage attack of docs/privacy.md, as an attacker holding the tiny world's public dumps runs it."""

import pyarrow as pa
import pytest

from zipp_assets.privacy.exact_reference import EXACT_COLUMNS, exact_graph_edges
from zipp_assets.privacy.kanonymity import (
    QUASI_IDENTIFIERS,
    group_sizes,
    k_anonymize,
    quasi_identifiers_from_dumps,
    quasi_identifiers_from_lake,
    release_candidates,
    uniqueness,
)
from zipp_assets.privacy.linkage import measure_linkage
from zipp_assets_tests.privacy.conftest import KEY


def test_exact_edge_columns_name_every_user_from_the_public_dumps(graph_lake, graph, knowledge):
    exact = exact_graph_edges(graph_lake, KEY, graph["users"], graph["subreddits"])
    assert exact.num_rows == graph["graph_edges"].num_rows  # the same pairs, published exactly
    result = measure_linkage(exact, graph["subreddits"], graph["users"], knowledge, KEY, published=EXACT_COLUMNS)
    assert result.users == graph["users"].num_rows > 100
    assert result.linked_share >= 0.95 and result.correct == result.linked  # every name found is right
    # The attack: one row's subreddit and times single out one author's pair, almost always.
    assert result.rows == exact.num_rows and result.rows_matching_one_author >= 0.95 * result.rows


def test_the_graph_publishes_activity_only_in_months_and_power_of_two_bins(graph):
    edges, users = graph["graph_edges"], graph["users"]
    assert set(edges.column_names) == {"user_index", "subreddit_index", "comments_bin", "submissions_bin", "score_bin",
                                       "active_months", "recency_months", "span_months", "split"}
    assert not {"comment_count", "submission_count", "score_sum"} & set(users.column_names)
    for table in (edges, users):  # whole numbers only: no float time a dump's second can be matched to
        assert not [f.name for f in table.schema if pa.types.is_floating(f.type)]
    # Two months of dumps: a pair's recency and span are 0 or 1 month; bins are small integers.
    for column in ("recency_months", "span_months"):
        assert set(edges[column].to_pylist()) <= {0, 1}
    assert max(edges["comments_bin"].to_pylist()) <= 8 and max(abs(b) for b in edges["score_bin"].to_pylist()) <= 20


def test_the_attack_on_the_coarse_graph_finds_only_right_names_and_its_columns_match_the_pipeline(graph_lake, graph, knowledge):
    """The lake stays re-identifiable (docs/privacy.md: it is internal data for that reason): the
    subreddit set alone names most users. What the attack finds is right, which shows the attacker
    computes the published columns exactly as the pipeline does: the measurement is not an
    underestimate from a mismatch."""
    coarse = measure_linkage(graph["graph_edges"], graph["subreddits"], graph["users"], knowledge, KEY)
    by_set = measure_linkage(graph["graph_edges"], graph["subreddits"], graph["users"], knowledge, KEY, published={})
    assert coarse.correct == coarse.linked and by_set.correct == by_set.linked
    assert by_set.linked_share > 0.8 and coarse.linked >= by_set.linked
    # One coarse row alone singles out an author far less often than one exact row did.
    exact = measure_linkage(exact_graph_edges(graph_lake, KEY, graph["users"], graph["subreddits"]), graph["subreddits"],
                            graph["users"], knowledge, KEY, published=EXACT_COLUMNS)
    assert coarse.rows == exact.rows
    assert coarse.rows_matching_one_author < 0.75 * exact.rows_matching_one_author  # 58% of rows here, exact: all


def test_quasi_identifiers_single_out_most_users_of_the_lake(graph, knowledge):
    quasi = quasi_identifiers_from_lake(graph["users"], graph["subreddits"], graph["graph_edges"])
    rows = quasi.to_pylist()
    figures = {u.quasi_identifier: u for u in uniqueness(quasi, k=5)}
    # The same counts as grouping the rows by hand.
    for name, columns in QUASI_IDENTIFIERS.items():
        sizes = group_sizes(rows, columns)
        assert (figures[name].unique, figures[name].below_k) == (sum(n == 1 for n in sizes), sum(n < 5 for n in sizes))
    assert figures["subreddit set"].unique / len(rows) > 0.8
    assert figures["subreddit set and activity"].unique >= figures["subreddit set"].unique
    assert all(u.below_k >= u.unique for u in figures.values())
    # The attacker computes the same quasi-identifiers from the dumps, for the same people.
    authors = quasi_identifiers_from_dumps(knowledge, graph["subreddits"]["subreddit"].to_pylist()).to_pylist()
    from_dumps = {tuple(a["subreddits"]) + (a["comments_bin"], a["active_months"], a["last_month"]) for a in authors}
    matched = sum(tuple(r["subreddits"]) + (r["comments_bin"], r["active_months"], r["last_month"]) in from_dumps for r in rows)
    assert matched / len(rows) > 0.95


@pytest.mark.parametrize("k", [2, 5, 10])
def test_a_k_anonymous_release_of_the_graphs_users_names_no_one(graph, knowledge, k):
    rows = quasi_identifiers_from_lake(graph["users"], graph["subreddits"], graph["graph_edges"]).to_pylist()
    release = k_anonymize(rows, k)
    # Only what the coarsest level cannot hide is left out: fewer than k rows.
    assert len(release.rows) + release.suppressed == len(rows) and release.suppressed < k
    assert release.smallest_group >= k
    authors = quasi_identifiers_from_dumps(knowledge, graph["subreddits"]["subreddit"].to_pylist()).to_pylist()
    candidates = release_candidates(release.rows, release.generaliser, authors)
    assert min(candidates) >= k  # no released row matches fewer than k authors of the dumps
    # Released exactly as the lake holds them, the same rows would be named: most are unique.
    exact = [{**r, "generalisation": "exact", "quasi_identifier": "|".join(r["subreddits"])} for r in rows]
    by_set = {}
    for a in authors:
        by_set["|".join(a["subreddits"])] = by_set.get("|".join(a["subreddits"]), 0) + 1
    assert sum(by_set.get(r["quasi_identifier"]) == 1 for r in exact) / len(rows) > 0.8


def test_k_anonymize_refuses_k_below_two_and_suppresses_what_it_cannot_hide():
    row = {"subreddits": ["a"], "comments_bin": 1, "submissions_bin": 0, "active_months": 1,
           "first_month": "2019-01", "last_month": "2019-01"}
    with pytest.raises(ValueError, match="k must be at least 2"):
        k_anonymize([row], 1)
    assert k_anonymize([], 5).rows == []
    few = k_anonymize([row] * 4, 5)  # fewer rows than k: no level hides them
    assert few.rows == [] and few.suppressed == 4
    # One rare subreddit: generalised away, never named.
    rows = [row] * 5 + [{**row, "subreddits": ["a", "rare"]}]
    release = k_anonymize(rows, 5)
    assert release.smallest_group >= 5 and not any("rare" in r["quasi_identifier"] for r in release.rows)
    assert {r["generalisation"] for r in release.rows} == {"common subreddits, activity, years"}
