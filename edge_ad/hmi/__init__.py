"""The station's operator web HMI: live view, counters and charts, NG gallery, part lookup, engineer actions behind
a login, and Prometheus `/metrics`. Torch-free (Starlette + uvicorn, a static front end without a build step)."""
