"""Fan-out: topics of events, their bounded history, and the broker that orders them.

The broker is this process (`MemoryBroker`) or Redis Streams (`sse.pubsub.redis`).
"""
