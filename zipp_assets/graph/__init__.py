"""User/subreddit tables, edge features, images -> embeddings, and the DGL graph."""
