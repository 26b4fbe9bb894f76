"""ssechat: a Server-Sent Events chat server on asyncio and h11."""
