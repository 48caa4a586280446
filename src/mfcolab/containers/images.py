"""Where an image comes from: `owner/name:tag` and `--registry` resolved to the repository, tag and
registry URL udocker pulls from (Docker Hub when none is named)."""

from __future__ import annotations

import dataclasses
import re

from ..errors import ContainerError

DOCKER_HUB = "https://registry-1.docker.io"
REPO_NAME = re.compile(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*")
TAG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """An image as udocker pulls it: `repo:tag` from `registry_url` (None: udocker's default, Docker Hub)."""

    repo: str
    tag: str
    registry_url: str | None = None

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def registry(self) -> str:
        return self.registry_url or DOCKER_HUB

    @property
    def remote_repo(self) -> str:
        """The repository path the registry knows (Docker Hub puts single names under library/)."""
        if self.registry_url is None and "/" not in self.repo:
            return f"library/{self.repo}"
        return self.repo

    def __str__(self) -> str:
        return self.name if self.registry_url is None else f"{self.name} from {self.registry_url}"


def resolve_image(image: str, registry: str = "") -> ImageRef:
    """Where to pull `image` ("owner/name:tag", or "host/owner/name:tag") from, given `--registry`.

    `registry` is a host, a URL, or either with a namespace path: "public.ecr.aws/outerbounds"
    pulls netflixoss/metaflow_metadata_service as outerbounds/metaflow_metadata_service from
    https://public.ecr.aws. A scheme-less host means https; "http://..." is kept (a plain-HTTP
    registry, which udocker reaches only through an explicit scheme).
    """
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        name, tag = image, "latest"
    parts = name.split("/")
    host = parts[0] if len(parts) > 1 and ("." in parts[0] or ":" in parts[0]) else ""
    repo = "/".join(parts[1:] if host else parts)
    if not REPO_NAME.fullmatch(repo) or not TAG_NAME.fullmatch(tag):
        raise ContainerError(f"{image!r} is not an image name", "write it as owner/name:tag")
    if registry:
        url, namespace = _split_registry(registry)
        if namespace:
            repo = f"{namespace}/{repo.rsplit('/', 1)[-1]}"
        return ImageRef(repo, tag, url)
    if host:
        return ImageRef(repo, tag, f"https://{host}")
    return ImageRef(repo, tag, None)


def _split_registry(registry: str) -> tuple[str, str]:
    scheme, sep, rest = registry.partition("://")
    if not sep:
        scheme, rest = "https", registry
    if scheme not in ("http", "https"):
        raise ContainerError(f"registry {registry!r} has an unknown scheme", "use https://HOST or http://HOST:PORT")
    host, _, namespace = rest.rstrip("/").partition("/")
    if not host:
        raise ContainerError(f"registry {registry!r} names no host", "for example --registry public.ecr.aws/outerbounds")
    return f"{scheme}://{host}", namespace
