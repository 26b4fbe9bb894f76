"""The chat application: conversations, their store, and the models that write the replies."""
