"""Tortoise models: fields and indexes only; rules live in app/services.

Each domain has its own module; MODEL_MODULES lists them for Tortoise.
"""

MODEL_MODULES = [
    "app.models.accounts",
    "app.models.messaging",
    "app.models.contacts",
    "app.models.groups",
    "app.models.media",
    "app.models.push",
    "app.models.message_extras",
    "app.models.privacy",
    "app.models.server",
]
