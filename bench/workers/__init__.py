"""Worker-side modules of the Redis scenarios, one per contender family.

Each is what a user would write for that library: the job function and the library's own
worker configuration, read from the environment (``BENCH_REDIS_URL``) so that the stock
command (``arq``, ``celery -A``, ``rq worker``, ``dramatiq``) starts it unchanged.
"""
