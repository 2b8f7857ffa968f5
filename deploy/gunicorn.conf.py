"""gunicorn configuration for a soapreceptor deployment.

    gunicorn -c deploy/gunicorn.conf.py soapreceptor.wsgi:application

The settings live in the package (soapreceptor.gunicorn_config) so that
``soapreceptor serve`` and this file can never drift apart; override any of
them below or on gunicorn's command line.
"""

from soapreceptor.gunicorn_config import *  # noqa: F403
