"""One router per resource; each route parses, authorizes, calls one use case and maps its
errors (``service.entrypoints.api.errors.unavailable``)."""
