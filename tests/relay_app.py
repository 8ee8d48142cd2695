"""The app the relay process tests run in other processes: one relay, ``out``, to a real broker.

``flask --app tests.relay_app:create_app shimmie subscriptions run``, configured by ``FLASK_*``
variables (``FLASK_SHIMMIE_EVENT_STORE``, ``FLASK_SHIMMIE_SUBSCRIPTION_TAKEOVER``) and these:

- ``RELAY_BROKER``: ``nats`` or ``rabbitmq``;
- ``RELAY_BROKER_URL``: the broker (or a proxy in front of it);
- ``RELAY_DESTINATION``: the JetStream stream, or the RabbitMQ exchange (which must exist);
- ``RELAY_SUBJECT``: the subject or routing key template.
"""

from __future__ import annotations

import os

from flask import Flask

from flask_shimmie import ShimmieStack
from flask_shimmie.sinks import NatsJetStreamSink, RabbitMqSink, Sink

#: The relay's name.
RELAY = "out"


def sink_from_environment() -> Sink:
    """The sink the ``RELAY_*`` variables describe."""
    broker, url = os.environ["RELAY_BROKER"], os.environ["RELAY_BROKER_URL"]
    destination, subject = os.environ["RELAY_DESTINATION"], os.environ["RELAY_SUBJECT"]
    if broker == "nats":
        return NatsJetStreamSink(url, subject, stream=destination, timeout=2.0)
    return RabbitMqSink(url, destination, subject, timeout=2.0)


def create_app() -> Flask:
    """The app, configured from the environment."""
    stack = ShimmieStack()
    stack.relay(RELAY, sink_from_environment())
    app = Flask(__name__)
    app.config.from_prefixed_env()
    stack.init_app(app)
    return app
