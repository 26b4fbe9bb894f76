"""Pure protocol code, bytes <-> values: event-stream format, HTTP/1.1 framing, WebSocket frames.

No sockets, no `await`, no clock. Imports nothing of ours but `sse.errors`.
"""
