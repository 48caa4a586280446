"""Why a pull failed: the registry asked directly (Registry v2 over HTTP), since udocker reports every
failure as one "Error: pulling manifest" line. Rate limits, missing images and refused logins are
final; an unreachable registry or a 5xx is transient (ContainerError.recoverable), worth a retry."""

from __future__ import annotations

from collections.abc import Mapping

import requests

from ..errors import ContainerError
from .images import ImageRef

USER_ENV = "MFCOLAB_REGISTRY_USER"
PASSWORD_ENV = "MFCOLAB_REGISTRY_PASSWORD"
MIRROR_HINT = "--registry public.ecr.aws/outerbounds"
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)


def diagnose_pull(image: ImageRef, user: str = "", password: str = "", timeout: float = 15.0) -> ContainerError | None:
    """Ask the registry directly what udocker's one-line "pulling manifest" error meant.

    Uses HEAD on the manifest, which Docker Hub does not count as a pull. Returns None when the
    registry looks fine (the failure was something else).
    """
    registry = image.registry
    try:
        status, headers = _request("GET", f"{registry}/v2/", {}, timeout)
        auth: dict[str, str] = {}
        if status == 401:
            token_status, token = _bearer_token(headers.get("WWW-Authenticate", ""), image, user, password, timeout)
            if token_status == 401 and user:
                return ContainerError(f"the registry {registry} refused the login of {user!r} for {image.name}",
                                      f"check {USER_ENV} and {PASSWORD_ENV}")
            if token_status == 401:
                return ContainerError(f"the registry {registry} requires a login to pull {image.name}",
                                      f"set {USER_ENV} and {PASSWORD_ENV}")
            if token:
                auth = {"Authorization": f"Bearer {token}"}
        elif status >= 500:
            return _transient(f"the registry {registry} answered {status}")
        accept = {"Accept": ", ".join(MANIFEST_TYPES)}
        status, _ = _request("HEAD", f"{registry}/v2/{image.remote_repo}/manifests/{image.tag}", {**auth, **accept}, timeout)
    except OSError as exc:
        return _transient(f"cannot reach the registry {registry}: {_reason(exc)}",
                          "check the network, or pass --registry with a reachable registry "
                          "(a plain-HTTP one needs http:// in front)")
    if status == 429:
        return ContainerError(
            f"the registry {registry} refused to pull {image.name}: rate limit reached "
            "(anonymous Docker Hub pulls are limited to 10 per hour per IP address, and notebook machines share addresses)",
            f"wait and retry, pull from the mirror with {MIRROR_HINT}, "
            f"or log in by setting {USER_ENV} and {PASSWORD_ENV} (a Docker Hub access token)",
        )
    if status in (401, 403, 404):
        return ContainerError(
            f"the image {image.name} does not exist in {registry} (or needs a login)",
            f"check the image name and tag, pass --registry, or set {USER_ENV} and {PASSWORD_ENV}",
        )
    if status >= 500:
        return _transient(f"the registry {registry} answered {status} for {image.name}")
    return None


def _transient(message: str, hint: str = "retry in a minute") -> ContainerError:
    error = ContainerError(message, hint)
    error.recoverable = True
    return error


def _bearer_token(challenge: str, image: ImageRef, user: str, password: str, timeout: float) -> tuple[int, str]:
    if not challenge.lower().startswith("bearer "):
        return 0, ""
    fields = dict(_challenge_fields(challenge[7:]))
    realm = fields.pop("realm", "")
    if not realm:
        return 0, ""
    fields.setdefault("scope", f"repository:{image.remote_repo}:pull")
    login = (user, password) if user and password else None
    answer = requests.get(realm, params=fields, auth=login, timeout=timeout)
    if answer.status_code >= 400:
        return answer.status_code, ""
    try:
        body = answer.json() if answer.content else {}
    except ValueError:
        return 200, ""
    if not isinstance(body, dict):
        return 200, ""
    return 200, str(body.get("token") or body.get("access_token") or "")


def _challenge_fields(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            pairs.append((key.strip(), value.strip().strip('"')))
    return pairs


def _request(method: str, url: str, headers: Mapping[str, str], timeout: float) -> tuple[int, Mapping[str, str]]:
    answer = requests.request(method, url, headers=dict(headers), timeout=timeout, allow_redirects=True)
    return answer.status_code, answer.headers


def _reason(exc: BaseException) -> str:
    """The innermost cause in words ("Connection refused"), not the wrappers' text around it."""
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc.__cause__
        if inner is None:
            break
        exc = inner
    return str(getattr(exc, "strerror", None) or exc)
