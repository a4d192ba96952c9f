"""The two contrastive objectives: link prediction (InfoNCE) and ImageAlign (symmetric InfoNCE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def link_infonce(user: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, positive_ids: torch.Tensor,
                 negative_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over (user, subreddit) edges with sampled and in-batch negatives.

    user, positive: [B, D] normalised; negatives: [B, K, D]; ids are global subreddit ids ([B], [B, K]).
    In-batch negatives are the other edges' subreddits; a candidate equal to the row's positive
    subreddit is masked out (it is not a negative).
    """
    positive_logit = (user * positive).sum(-1, keepdim=True)
    sampled = torch.einsum("bd,bkd->bk", user, negatives)
    sampled = sampled.masked_fill(negative_ids == positive_ids[:, None], float("-inf"))
    in_batch = user @ positive.T
    same = positive_ids[None, :] == positive_ids[:, None]  # includes the diagonal (the positive itself)
    in_batch = in_batch.masked_fill(same, float("-inf"))
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
