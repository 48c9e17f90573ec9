"""Local HTTP servers that speak real provider wire formats, for testing the embedders.

Each runs on 127.0.0.1 on a free port in a background thread, so the real SDKs (``openai``,
``litellm``, httpx) make real HTTP requests; faults (429 with Retry-After, 5xx, slow responses,
wrong dimensions, 400s) are injected per request to exercise retries and error mapping.
"""
