"""The pages beside the API: templates/, static/ and their handlers; pages.register(app) is the entry point."""
