"""Key-value cache for the route (OpenSIPS cachedb): ``cache_store``,
``cache_fetch``, ``cache_remove``, ``cache_add``/``cache_sub`` counters and
``cache_counter_fetch`` against engines named by OpenSIPS' cachedb URLs:
``local://`` in memory (local.py, sans-IO) and ``redis://`` through
txredisapi (redis.py). cache.py is the module the route calls, url.py the
URL syntax, service.py the Twisted assembly and the ``cache.*`` commands.
"""
