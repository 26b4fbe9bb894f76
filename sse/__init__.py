"""ssechat: a Server-Sent Events chat server on asyncio and h11.

The folder tree is the architecture. From the top down:

    main.py     the `ssechat` command: parse, then serve or supervise --workers
    main.py     the `ssechat` command (and a checkout's server.py): serve or supervise
    cli.py      the configuration from flags, SSECHAT_ variables and a TOML file, built
                from the `Option` on each `Config` field
    io/         the only code holding a transport: HTTP/1.1 connections (h11), open
                streams, WebSockets (wsproto), their one slow-client queue, the
                server (composition root), the --workers supervisor, JSON logs
    app/        what requests mean: values in, values out; the router, the room,
                the conversation routes, WebSocket commands, CORS, the page
    chat/       the chat application: conversations (service), their store
                (SQLite, PostgreSQL) and the models that write replies
    pubsub/     fan-out: the hub, the broker (memory or Redis Streams)
    protocol/   pure bytes <-> values: the event-stream format, HTTP/1.1 chunks,
                frames, WebSocket frames
    config.py   every setting, with its flag and help
    errors.py   every exception, one base class

Imports run one way, from a folder to its own or to one below it, never in a
circle (tests/test_layers.py walks them all, `TYPE_CHECKING` ones included).
"""
