"""Built-in backbones. Each module imports torch; the variant cards in `backbones.cards` do not."""
