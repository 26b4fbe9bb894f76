"""Language models behind one small interface: an async iterator of text pieces."""

from sse.chat.models.base import ChatTurn, Finish, Model, Piece, Usage
from sse.errors import ModelError

__all__ = ["ChatTurn", "Finish", "Model", "ModelError", "Piece", "Usage"]
