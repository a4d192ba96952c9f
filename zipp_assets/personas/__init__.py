"""Personas: attention-ranked evidence per user, verbalized by an LLM into editable personas."""
