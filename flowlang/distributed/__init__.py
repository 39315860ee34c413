"""Automations on many processes and machines: shared Redis connections and key names, the
messages workers exchange, the shared delivery store, and (with ``flowlang[celery]``) Celery
workers. Nothing here is imported by ``import flowlang``."""
