"""The HTTP side: static serving of the built bundle and, optionally, the sync API."""
