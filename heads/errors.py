"""The one error heads raise for bad input: a subclass of embedstore's, so the CLI prints it on one line."""

from embedstore.core.errors import EmbedstoreError


class HeadsError(EmbedstoreError):
    """Bad input to a head: the message names the problem and the fix."""
