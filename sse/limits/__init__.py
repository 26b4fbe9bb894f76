"""Per-client limits: rates (GCRA), caps on what is open at once, daily model budgets.

Counted in this process, or shared by every node through Redis. Above the
identity layer (limits are counted per identity and per IP), below the routes.
"""
