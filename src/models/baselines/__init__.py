"""Baseline renderers trained on the same data and budget as PersonaTalk's, for comparisons that mean
something (docs/design.md, "Stage 2"). Each has the renderer's call signature, so RenderSystem trains it and
dubbing and ``eval.reconstruct`` run it unchanged."""
