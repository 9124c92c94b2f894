"""The Hugging Face hub: can it be reached, are a model's weights cached, and errors a user can act on.

Without a network, huggingface_hub retries for minutes before it gives up. tlearn asks once, with
one TCP connection and a short timeout (`hub_reachable`), and when the answer is no it puts the hub
in offline mode, so that cached weights load at once and missing ones fail at once with a one-line
`OfflineError` that says what to do instead.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import timm

from tlearn.core.errors import BackboneError, OfflineError
from tlearn.models.builtin import BUILTIN_NAME

# Long enough for a slow but working connection to answer a TCP handshake, short enough that an
# offline laptop learns it at once instead of after minutes of retries.
HUB_TIMEOUT_S = 2.0
# The files timm downloads for a hub model: the safetensors alternative first, then the torch file.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@functools.cache
def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Can the hub be reached? One TCP connection with a short timeout instead of minutes of retries."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_weights_cached(name: str) -> bool:
    """Are the pretrained weights of timm model `name` in the local Hugging Face cache? No network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except (RuntimeError, ValueError, TypeError):
        return False
    if cfg is None or not cfg.hf_hub_id:
        return False
    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = (cfg.hf_hub_filename, *_HUB_FILES) if cfg.hf_hub_filename else _HUB_FILES
    for filename in files:
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return True
    return False


@contextmanager
def hub_download(name: str) -> Iterator[None]:
    """Run a block that loads `name`'s pretrained weights; a failure becomes one line with a hint.

    Offline (as `hub_reachable` finds it), huggingface_hub answers from the cache at once.
    """
    reachable = hub_reachable()
    try:
        with hub_offline(not reachable):
            yield
    except BackboneError:
        raise
    except Exception as err:
        if reachable and not _is_missing_file(err):
            raise BackboneError(
                f"Downloading the pretrained weights of {name} failed: {err}.",
                hint="Try again, or pass a local weights file with --weights PATH.",
            ) from None
        raise OfflineError(
            f"The pretrained weights of {name} are not in the local cache, and the Hugging Face hub "
            f"cannot be reached{'' if reachable else ' (offline)'}.",
            hint="Pass a local weights file with --weights PATH (.safetensors or .pth; a sidecar PATH.json "
            "can give the architecture and preprocessing), pick a cached model (tlearn backbones --cached), "
            f"or use the built-in backbone, which needs no download: --backbone {BUILTIN_NAME}.",
        ) from None


@contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """Put huggingface_hub in offline mode for a block: it then answers from the cache at once."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _is_missing_file(err: Exception) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError

    return isinstance(err, LocalEntryNotFoundError | FileNotFoundError)
