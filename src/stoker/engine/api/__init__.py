"""The engine's HTTP face: the REST API (:func:`stoker.engine.api.app.create_app`).

``app.py`` builds the app; ``routes/`` holds one router per resource; ``deps.py`` what the
routes depend on (the caller's tenant, the database); ``rows.py`` and ``pages.py`` turn
statement rows into response models and pages; ``errors.py`` and ``middleware.py`` say how
failures and refused requests are answered; ``service.py`` serves the app as a Service.
"""
