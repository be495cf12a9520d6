"""Config for Tortoise's own CLI: `tortoise -c app.tortoise_cli.TORTOISE_ORM makemigrations`."""

from app.config import load_settings
from app.db import tortoise_config

TORTOISE_ORM = tortoise_config(load_settings().database_url)
