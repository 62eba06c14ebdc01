"""The engine's HTTP face: the REST API (:func:`stoker.engine.api.app.create_app`)."""
