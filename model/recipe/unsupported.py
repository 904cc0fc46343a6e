"""What the recipe refuses to build."""


class UnsupportedRecipe(ValueError):
    """The recipe cannot build this spec; the message is one line."""
