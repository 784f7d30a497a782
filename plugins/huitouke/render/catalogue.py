"""The message catalogue: which files make a message, and which messages there are.

**Names.** A message is named after its file without the channel folder and the extension:

========================  ==========================================================================
``sms`` NAME              ``sms/NAME.txt.j2``
``email`` NAME            ``email/NAME.html.j2`` (HTML part, with a ``{% block subject %}``) and
                          ``email/NAME.txt.j2`` (text part)
``call`` NAME             ``call/NAME.txt.j2``: a phone script for the agent, never sent
========================  ==========================================================================

A folder holding a ``default`` template, e.g. ``sms/care_tips/default.txt.j2``, is a message with
**variants by category group**: ``sms/care_tips/food.txt.j2`` for customers whose
``category.group`` is ``food``, ``default`` for every other group (also the playbook's own groups).
Other folders are just folders (``sms/en/thank_you_returning`` is the English example). Files and
folders whose name starts with ``_`` are partials (layouts, included pieces), not messages.

Only names and files here: the lint (:mod:`huitouke.render.lint`) and the compiler
(:mod:`huitouke.render.messages`) both start from this catalogue, so neither imports the other's
way of finding a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huitouke.render.environment import TemplateError, display_path, template_environment

__all__ = [
    "CHANNELS",
    "DEFAULT_MAX_SMS_SEGMENTS",
    "DEFAULT_VARIANT",
    "PARTS",
    "Channel",
    "MessageFiles",
    "find_message",
    "list_messages",
    "list_partials",
    "messages_named",
]

Channel = Literal["sms", "email", "call"]
CHANNELS: tuple[str, ...] = ("sms", "email", "call")
# The parts of a message in each channel, and their file extension.
PARTS: dict[str, dict[str, str]] = {
    "sms": {"body": ".txt.j2"},
    "email": {"html": ".html.j2", "text": ".txt.j2"},
    "call": {"body": ".txt.j2"},
}
DEFAULT_VARIANT = "default"
# The budget when the campaign sets none: two UCS-2 segments are 134 characters, enough for a
# signature, two sentences and the opt-out footer.
DEFAULT_MAX_SMS_SEGMENTS = 2


@dataclass(frozen=True)
class MessageFiles:
    """The template files of one message: ``variants[group][part]`` is a name under the root."""

    name: str
    channel: str
    variants: dict[str, dict[str, str]]
    by_category_group: bool = False  # a folder of variants (see the module's documentation)

    def files(self) -> list[str]:
        return [name for parts in self.variants.values() for name in parts.values()]


def _check_name(name: str, channel: str, root: Path) -> None:
    """A message name is a relative path inside its channel's folder, nothing else."""
    if channel not in PARTS:
        raise TemplateError(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})", file=name)
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in name.split("/")):
        raise TemplateError(
            "a message name is a path inside the channel's folder, e.g. care_tips or en/thank_you_returning",
            file=display_path(root / channel),
            variable=name,
        )


def _variants_of(folder: Path, name: str, channel: str) -> dict[str, dict[str, str]]:
    """The category-group variants in a message's folder (its partials ``_*`` left out)."""
    parts = PARTS[channel]
    first_ext = next(iter(parts.values()))
    variants: dict[str, dict[str, str]] = {}
    for path in sorted(folder.glob(f"*{first_ext}")):
        group = path.name[: -len(first_ext)]
        if group.startswith("_"):  # a partial of the variants
            continue
        variants[group] = {part: f"{channel}/{name}/{group}{ext}" for part, ext in parts.items()}
    return variants


def find_message(name: str, channel: str, root: Path | None = None) -> MessageFiles:
    """The files of message ``name`` in ``channel``; :class:`TemplateError` when there are none."""
    env = template_environment(root)
    _check_name(name, channel, env.root)
    parts = PARTS[channel]
    single = {part: f"{channel}/{name}{ext}" for part, ext in parts.items()}
    if all((env.root / rel).is_file() for rel in single.values()):
        return MessageFiles(name, channel, {DEFAULT_VARIANT: single})
    folder = env.root / channel / name
    default = {part: f"{channel}/{name}/{DEFAULT_VARIANT}{ext}" for part, ext in parts.items()}
    if folder.is_dir() and all((env.root / rel).is_file() for rel in default.values()):
        return MessageFiles(name, channel, _variants_of(folder, name, channel), by_category_group=True)
    missing = [rel for rel in single.values() if not (env.root / rel).is_file()]
    hint = ""
    if folder.is_dir():
        hint = f" (the folder {channel}/{name}/ needs a {DEFAULT_VARIANT} template to be a message with variants)"
    raise TemplateError(
        f"no {channel} template {name!r}: missing {', '.join(missing)}{hint}",
        file=display_path(env.root / channel),
        variable=name,
    )


def _names_in(base: Path, parts: dict[str, str]) -> set[str]:
    """The message names of one channel's folder: files, and folders with a default variant."""
    first_ext = next(iter(parts.values()))
    names: set[str] = set()
    for ext in dict.fromkeys(parts.values()):
        for path in base.rglob(f"*{ext}"):
            rel = path.relative_to(base)
            if any(p.startswith("_") for p in rel.parts):
                continue
            if path.parent != base and (path.parent / f"{DEFAULT_VARIANT}{first_ext}").is_file():
                names.add(path.parent.relative_to(base).as_posix())
            else:
                names.add(rel.as_posix()[: -len(ext)])
    return names


def list_messages(root: Path | None = None) -> list[MessageFiles]:
    """Every message under the root, by channel then name (partials ``_*`` are not messages)."""
    env = template_environment(root)
    found: list[MessageFiles] = []
    for channel, parts in PARTS.items():
        base = env.root / channel
        if not base.is_dir():
            continue
        for name in sorted(_names_in(base, parts)):
            try:
                found.append(find_message(name, channel, root))
            except TemplateError:
                # e.g. an e-mail with only one of its parts: reported by the lint.
                parts_of = {part: f"{channel}/{name}{ext}" for part, ext in parts.items()}
                found.append(MessageFiles(name, channel, {DEFAULT_VARIANT: parts_of}))
    return found


def list_partials(root: Path | None = None) -> list[str]:
    """The partials (``_*``) of the message folders: layouts and included pieces."""
    env = template_environment(root)
    found = []
    for channel in PARTS:
        for path in (env.root / channel).rglob("*.j2"):
            rel = path.relative_to(env.root)
            if any(part.startswith("_") for part in rel.parts):
                found.append(rel.as_posix())
    return sorted(found)


def messages_named(name: str, root: Path | None = None) -> list[MessageFiles] | None:
    """The messages a name given on the command line means: ``thank_you_new`` (every channel),
    ``sms/coupon_wave`` (one), or a file ``sms/coupon_wave.txt.j2``; None when none matches."""
    env = template_environment(root)
    name = name.strip().removeprefix(display_path(env.root) + "/")
    if name.endswith(".j2"):
        for message in list_messages(root):
            if name in message.files():
                return [message]
        return None
    channel, _, rest = name.partition("/")
    if channel in PARTS and rest:
        try:
            return [find_message(rest, channel, root)]
        except TemplateError:
            return None
    found = []
    for channel in PARTS:
        try:
            found.append(find_message(name, channel, root))
        except TemplateError:
            continue
    return found or None
