"""Named rooms: their names, messages kept in the store, presence and typing."""
