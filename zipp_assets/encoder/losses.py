"""The two contrastive objectives: link prediction (InfoNCE) and ImageAlign (symmetric InfoNCE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def is_member(sorted_keys: torch.Tensor, users: torch.Tensor, subreddits: torch.Tensor, num_subreddits: int) -> torch.Tensor:
    """Whether each (user, subreddit) is a link, by binary search in sorted keys user * S + subreddit."""
    keys = users * num_subreddits + subreddits
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    position = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    return sorted_keys[position] == keys


def link_infonce(user: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, positive_ids: torch.Tensor,
                 negative_ids: torch.Tensor, temperature: float, user_ids: torch.Tensor | None = None,
                 memberships: torch.Tensor | None = None, num_subreddits: int = 0) -> torch.Tensor:
    """InfoNCE over (user, subreddit) edges with sampled and in-batch negatives.

    user, positive: [B, D] normalised; negatives: [B, K, D]; ids are global ([B], [B, K]).
    A candidate is not a negative when it is the row's positive subreddit, another positive of the
    same user in the batch, or (given `memberships`, the sorted training-link keys of
    `GraphData.training_memberships`) any subreddit the user is already in: contrasting a user
    against its own communities would teach the model to push them away.
    """
    positive_logit = (user * positive).sum(-1, keepdim=True)
    sampled = torch.einsum("bd,bkd->bk", user, negatives)
    sampled_false = negative_ids == positive_ids[:, None]
    in_batch = user @ positive.T
    in_batch_false = positive_ids[None, :] == positive_ids[:, None]  # includes the diagonal (the positive itself)
    if user_ids is not None:
        in_batch_false |= user_ids[None, :] == user_ids[:, None]
        if memberships is not None:
            rows = user_ids[:, None]
            sampled_false |= is_member(memberships, rows.expand_as(negative_ids), negative_ids, num_subreddits)
            in_batch_false |= is_member(memberships, rows.expand(-1, len(positive_ids)),
                                        positive_ids[None, :].expand(len(user_ids), -1), num_subreddits)
    sampled = sampled.masked_fill(sampled_false, float("-inf"))
    in_batch = in_batch.masked_fill(in_batch_false, float("-inf"))
    logits = torch.cat([positive_logit, sampled, in_batch], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(user), dtype=torch.long, device=user.device))


def image_align(projected_user: torch.Tensor, profile: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between projected user embeddings and their visual profiles (in-batch negatives)."""
    if len(projected_user) < 2:
        return projected_user.sum() * 0.0
    scale = logit_scale.clamp(max=4.6052).exp()  # temperature never below 0.01, as in CLIP
    logits = scale * projected_user @ F.normalize(profile, dim=-1).T
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
