"""Commands beside tailoring: ``check`` (will this network tailor?), ``inspect`` (its blocks) and
``pretrain`` (how the built-in weights are made)."""
