"""The WSGI application (for `serve` and for any WSGI server a team prefers)."""

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
