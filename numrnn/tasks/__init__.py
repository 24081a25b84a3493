"""One module per topology: ``lm`` (many-to-many, a character language model)."""
