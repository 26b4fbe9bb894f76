"""Who a request is: guest sessions, accounts, and host applications' JWTs.

Above the chat application (accounts and sessions live in its store), below
the routes (`sse.app`), which ask the `Gate` for each request's `Identity`.
"""
