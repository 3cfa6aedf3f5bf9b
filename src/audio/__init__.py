"""Speech front ends that need no downloaded weights: phone recognition with pocketsphinx's CMU en-US models
(``phones``, shipped in its wheel) and voice activity with silero-vad (``vad``, shipped in its wheel)."""
