"""Quantization recipes (PT2E PTQ/QAT per mobile backend). Backends are imported lazily."""
