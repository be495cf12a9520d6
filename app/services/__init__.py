"""Business rules as plain async functions. No aiohttp or socketio here: every
function takes the Deps it needs and raises app.errors on failure."""
