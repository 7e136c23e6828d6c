"""Presets and checkpoints by URI: `hf://owner/repo` or `hf://owner/repo/subfolder`, downloaded
with `huggingface_hub` (its cache, `HF_HUB_OFFLINE`, `HF_ENDPOINT` and token handling)."""

import os

from keras_bat.errors import UsageError

HF_SCHEME = "hf://"


def is_hub_uri(source):
    """Whether `source` names a Hugging Face Hub repository (`hf://...`)."""
    return isinstance(source, str) and source.startswith(HF_SCHEME)


def parse_hub_uri(uri):
    """`(repo_id, subfolder or None)` of `hf://owner/repo[/subfolder]`."""
    parts = uri[len(HF_SCHEME):].strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise UsageError(f"{uri!r} is not a Hub URI: expected hf://owner/repo or hf://owner/repo/subfolder.")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def _huggingface_hub(uri):
    try:
        import huggingface_hub
    except ImportError as error:
        raise ImportError(f"{uri} needs huggingface_hub: pip install 'keras-bat[hub]'.") from error
    return huggingface_hub


def upload_preset(uri, preset, commit_message=None):
    """Pushes the preset folder `preset` (written by `save_to_preset`) to `uri`
    (`hf://owner/repo[/subfolder]`) with `huggingface_hub`, creating the repository when it does
    not exist; the token is huggingface_hub's (`hf auth login` or `HF_TOKEN`).

    Returns:
        The URL of the commit.
    """
    from keras_bat.convert.checkpoints import CONFIG_FILE

    huggingface_hub = _huggingface_hub(uri)
    repo_id, subfolder = parse_hub_uri(uri)
    preset = os.fspath(preset)
    if not os.path.isfile(os.path.join(preset, CONFIG_FILE)):
        raise UsageError(f"{preset!r} is not a preset folder (no {CONFIG_FILE}): write one with save_to_preset.")
    api = huggingface_hub.HfApi()
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=preset, path_in_repo=subfolder,
                             commit_message=commit_message or f"Upload keras-bat preset {os.path.basename(preset)}")
    for key in [key for key in _RESOLVED if parse_hub_uri(key[0])[0] == repo_id]:  # the repository changed
        del _RESOLVED[key]
    return info.commit_url


def download_preset(uri):
    """The local folder of `uri` (`hf://owner/repo[/subfolder]`), downloaded into the Hugging
    Face cache unless it is there already; offline (`HF_HUB_OFFLINE=1`) it is read from the cache.
    The Hub is asked once per process (and endpoint and cache): later calls get the same folder."""
    huggingface_hub = _huggingface_hub(uri)
    from huggingface_hub import constants

    key = (uri, constants.ENDPOINT, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)
    if key not in _RESOLVED or not os.path.isdir(_RESOLVED[key]):
        _RESOLVED[key] = _download(huggingface_hub, uri)
    return _RESOLVED[key]


_RESOLVED = {}  # (uri, endpoint, cache, offline) -> local folder


def _download(huggingface_hub, uri):
    from huggingface_hub import constants, errors

    repo_id, subfolder = parse_hub_uri(uri)
    try:
        folder = huggingface_hub.snapshot_download(repo_id, allow_patterns=[f"{subfolder}/*"] if subfolder else None)
    except errors.RepositoryNotFoundError as error:
        raise UsageError(f"{uri}: the Hub at {constants.ENDPOINT} has no repository {repo_id!r} (or it is "
                         "private: log in with `hf auth login` or set HF_TOKEN).") from error
    except errors.LocalEntryNotFoundError as error:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"no connection to {constants.ENDPOINT}"
        raise UsageError(f"{uri} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}), and the Hub cannot be "
                         f"reached ({why}). Download it once online, or copy the folder and pass its path.") from error
    path = os.path.join(folder, subfolder) if subfolder else folder
    if not os.path.isdir(path) or not any(name != ".gitattributes" for name in os.listdir(path)):
        where = f"no folder {subfolder!r}" if subfolder else "no files"
        raise UsageError(f"{uri}: the repository {repo_id!r} holds {where}.")
    return path
