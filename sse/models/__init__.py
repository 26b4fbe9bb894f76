"""Language models behind one small interface: an async iterator of text pieces."""

from sse.models.base import ChatTurn, Finish, Model, ModelError, Piece

__all__ = ["ChatTurn", "Finish", "Model", "ModelError", "Piece"]
