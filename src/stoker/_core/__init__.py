"""The kernel shared by the SDK and the engine.

Nothing here imports the SDK, the engine or a database driver: these are the contracts both
sides speak — task options and wire limits (:mod:`~stoker._core.wire`), the workflow spec and
the pure step decisions (:mod:`~stoker._core.dag`), CEL expressions (:mod:`~stoker._core.cel`),
the step-input envelope (:mod:`~stoker._core.envelope`), and run statuses with the stored
error document (:mod:`~stoker._core.status`).
"""
