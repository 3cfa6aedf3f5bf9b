"""Synthetic talking-head corpus: phonemes, speech audio, mouth motion."""
