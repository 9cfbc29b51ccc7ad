"""Sub-commands of this area are registered here (filled in by the area's issue)."""


def register(sub) -> None:
    pass
