"""A model's life after training: the champion, history, git and DVC versions, restore."""
