"""The app's routing: parsed requests in, replies (or streams and sockets to open) out. No I/O."""
