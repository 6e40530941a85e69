"""Webhooks: job events POSTed to HTTP endpoints, signed as the Standard Webhooks
specification says, at least once, in order per job and endpoint.

- :mod:`.policy`: which events, to which endpoints; a job's own URL and its host list.
- :mod:`.queue`: the events waiting for delivery. On the memory backend an
  in-process queue (lost with the process); on Redis a stream written in the
  same script as the change itself, read by one process at a time.
- :mod:`.sender`: one signed attempt over HTTP, pinned to checked addresses.
- :mod:`.deliverer`: retries, backoff and ordering, and the metrics.
"""
