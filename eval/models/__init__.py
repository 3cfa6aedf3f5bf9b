"""Evaluator networks of our own (one per file): ``syncnet`` (SyncNet, the reference layout and our small
variant) and ``style_encoder`` (the speaking-style encoder of StyleSim). Each file has its loader with a
clear error for a missing weights file."""
