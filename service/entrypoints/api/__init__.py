"""The HTTP API (FastAPI). Thin: requests are validated here, the work happens in the use cases.

``app`` builds the app; ``routes`` holds one router per resource; ``schemas`` the request and
response models; ``errors`` maps every error to a response. Every error has the shape of
``ErrorResponse``, and every operation declares the errors it can answer with.
"""

from service.entrypoints.api.app import create_app

__all__ = ["create_app"]
