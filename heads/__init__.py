"""Classification heads trained on stored embeddings (feature-space augmentation, Arrow batch training).

Heads arrive with a later issue; this package is reserved so that `heads` depends on `embedstore`,
never the other way round.
"""
