"""The I/O edge, the only code holding a transport: HTTP/1.1 connections, WebSockets, the server."""
