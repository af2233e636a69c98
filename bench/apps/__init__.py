"""The ASGI applications of the HTTP scenario: same endpoint, one per framework.

Each serves ``POST /`` with a small JSON body, enqueues one no-op background task (except
the raw ceiling) and answers a small JSON dict.
"""
