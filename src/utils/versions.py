"""The installed versions of packages, recorded in manifests and checkpoints and compared when they are continued."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_versions(*names: str) -> dict[str, str]:
    """{name: version} of the named packages that are installed."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
