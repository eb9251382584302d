"""Unpacking downloaded dataset archives (`harness data prepare NAME --archive PATH`), safely.

An archive is untrusted input: a member named `/etc/x` or `../../x`, a symlink or hard link that points
out of the target, or a device file would write (or later let a reader reach) outside the dataset folder.
So every member is checked *before anything is written*, and the whole archive is refused — a HarnessError
naming the archive and the member — if any one is bad:

- absolute names and names whose `..` components climb out of the target;
- members placed beneath a symlink of the archive (writing through a link);
- symlinks whose target, followed through the archive's own links as the filesystem would, leaves the
  target (absolute link targets included); hard links to anything but a regular file of the archive;
- anything but regular files, folders and those links (devices, FIFOs); in a zip, any symlink.

Tar archives are then extracted with Python's `data` filter as a second line of defence. Extraction goes
into a hidden temp folder beside the destination, which is moved into place only once complete (one rename
per top-level entry that is new there), so a failed or killed unpack leaves nothing half-written under a
real name — only a hidden `.<name>.unpack-*` folder beside it that nothing reads.

Where an archive goes: if it holds a single top-level folder named like a component of the dataset's
folder path, it brings that folder itself and is unpacked where that folder belongs (`food-101.tar.gz` →
`$HARNESS_DATA/food-101/`; `VOCtrainval_11-May-2012.tar` → `$HARNESS_DATA/VOCdevkit/VOC2012/`); otherwise it
holds part of the dataset folder's contents and is unpacked into the dataset folder
(`101_ObjectCategories.tar.gz` → `caltech-101/101_ObjectCategories/`). `into` names a subfolder of the
dataset folder to unpack into instead (COCO's `train2017.zip` → `into="images"`).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from harness.errors import HarnessError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_MAX_LINK_DEPTH = 40  # as the kernel's ELOOP limit: deeper is a loop


class UnsafeArchiveError(HarnessError):
    """An archive member would land, or let a reader reach, outside the folder it is unpacked into."""


@dataclass(frozen=True)
class Member:
    """What the safety checks need to know of one archive member, whatever the archive format."""

    name: str
    kind: str  # "file" | "dir" | "symlink" | "hardlink" | "zip-symlink" | "other"
    link: str = ""  # a symlink's target (relative to its folder) or a hard link's (relative to the root)


def _parts(name: str) -> list[str]:
    """A member name's components; both separators count (a `..\\` must not slip through)."""
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _is_absolute(name: str) -> bool:
    return (PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute()
            or bool(PureWindowsPath(name).drive) or name.startswith("\\"))


def _resolve(parts: list[str], links: dict[tuple[str, ...], str], depth: int = 0) -> list[str] | None:
    """Where a relative path lands once extracted into an empty folder, following the archive's own
    symlinks as the filesystem would; None when it climbs out (or loops)."""
    out: list[str] = []
    for part in parts:
        if part == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(part)
        target = links.get(tuple(out))
        if target is not None:
            if depth >= _MAX_LINK_DEPTH or _is_absolute(target):
                return None
            resolved = _resolve(out[:-1] + _parts(target), links, depth + 1)
            if resolved is None:
                return None
            out = resolved
    return out


def check_members(archive: Path, members: list[Member]) -> None:
    """Refuse the archive (UnsafeArchiveError naming it and the member) unless every member stays inside."""

    def refuse(member: Member, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"archive {archive}: refused member '{member.name}': {why}; nothing was unpacked")

    links = {tuple(_parts(m.name)): m.link for m in members if m.kind == "symlink"}
    files = {tuple(_parts(m.name)) for m in members if m.kind == "file"}
    for m in members:
        if m.kind == "other":
            raise refuse(m, "not a regular file, folder or link (device, FIFO or socket)")
        if m.kind == "zip-symlink":
            raise refuse(m, "a symlink in a zip archive")
        if _is_absolute(m.name):
            raise refuse(m, "absolute path")
        parts = _parts(m.name)
        if _resolve(parts, {}) is None:
            raise refuse(m, "'..' climbs out of the target folder")
        if any(tuple(parts[:i]) in links for i in range(1, len(parts))):
            raise refuse(m, "placed beneath a symlink of the archive")
        if m.kind == "symlink":
            if _is_absolute(m.link):
                raise refuse(m, f"symlink to an absolute path ({m.link})")
            if _resolve(parts[:-1] + _parts(m.link), links) is None:
                raise refuse(m, f"symlink pointing out of the target folder ({m.link})")
        elif m.kind == "hardlink":
            if _is_absolute(m.link) or _resolve(_parts(m.link), {}) is None:
                raise refuse(m, f"hard link to a file out of the target folder ({m.link})")
            if tuple(_parts(m.link)) not in files:
                raise refuse(m, f"hard link to something that is not a regular file of the archive ({m.link})")


# -- formats ---------------------------------------------------------------------------------------

def archive_format(path: Path) -> str:
    """"zip" or "tar", by the file name, else by the content; anything else is an error."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise HarnessError(f"archive {path}: not a zip or tar archive (.zip, {', '.join(TAR_SUFFIXES)})")


def _tar_member(info: tarfile.TarInfo) -> Member:
    if info.isfile():
        return Member(info.name, "file")
    if info.isdir():
        return Member(info.name, "dir")
    if info.issym():
        return Member(info.name, "symlink", info.linkname)
    if info.islnk():
        return Member(info.name, "hardlink", info.linkname)
    return Member(info.name, "other")


def _zip_member(info: zipfile.ZipInfo) -> Member:
    kind = stat.S_IFMT(info.external_attr >> 16)  # the Unix file type, when the archiver stored one (else 0)
    if kind == stat.S_IFLNK:
        return Member(info.filename, "zip-symlink")  # zipfile would write it as a file; no dataset needs one
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return Member(info.filename, "other")
    return Member(info.filename, "dir" if info.is_dir() else "file")


def _read_members(path: Path, fmt: str) -> list[Member]:
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                return [_zip_member(i) for i in zf.infolist()]
        with tarfile.open(path) as tf:
            return [_tar_member(i) for i in tf.getmembers()]
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise HarnessError(f"archive {path}: unreadable ({type(exc).__name__}: {exc})") from None


def _extract(path: Path, fmt: str, dest: Path) -> None:
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                zf.extractall(dest)
        else:
            with tarfile.open(path) as tf:
                tf.extractall(dest, filter="data")
    except tarfile.FilterError as exc:  # the checks above let nothing through that the filter refuses
        raise UnsafeArchiveError(f"archive {path}: refused by tarfile's data filter: {exc}") from None
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise HarnessError(f"archive {path}: unpacking failed ({type(exc).__name__}: {exc})") from None


# -- placing it ------------------------------------------------------------------------------------

def destination(folder: str, root: Path, members: list[Member], into: str | None = None) -> Path:
    """Where an archive for the dataset rooted at `root` (`$HARNESS_DATA/<folder>`) is unpacked (module doc)."""
    if into is not None:
        if _is_absolute(into) or _resolve(_parts(into), {}) is None:
            raise HarnessError(f"--into must be a subfolder of the dataset folder, got '{into}'")
        return root.joinpath(*_parts(into))
    folder_parts = _parts(folder)
    base = root
    for _ in folder_parts:
        base = base.parent
    tops = {tuple(_parts(m.name))[:1] for m in members if _parts(m.name)}
    nested = any(len(_parts(m.name)) > 1 or m.kind == "dir" for m in members)
    if len(tops) == 1 and nested:
        (top,) = next(iter(tops))
        for i in range(len(folder_parts) - 1, -1, -1):
            if folder_parts[i] == top:
                return base.joinpath(*folder_parts[:i])
    return root


def _conflicts(src: Path, dest: Path) -> list[str]:
    """Entries of `src` that would replace an entry of another type at `dest` (a file over a folder...)."""
    found = []
    for entry in src.iterdir():
        target = dest / entry.name
        if not os.path.lexists(target):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if not target.is_dir():
                found.append(str(target))
            else:
                found.extend(_conflicts(entry, target))
        elif target.is_dir() and not target.is_symlink():
            found.append(str(target))
    return found


def _merge(src: Path, dest: Path) -> None:
    """Move `src`'s entries into the existing folder `dest`: a new entry in one rename (whole), an existing
    folder entry by entry, an existing file replaced (unpacking the same archive again is harmless)."""
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            _merge(entry, target)
        else:
            try:
                os.replace(entry, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.move(entry, target)  # `dest` links to another filesystem: a copy, not a rename


def unpack(archive: Path, dest: Path, members: list[Member] | None = None, fmt: str | None = None) -> int:
    """Check every member, extract into a temp folder beside `dest`, then move it into place; returns the
    number of members. Raises (writing nothing) on an unsafe member, a type clash with what is at `dest`,
    or an unreadable archive."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise HarnessError(f"archive {archive}: no such file")
    if dest.exists() and not dest.is_dir():
        raise HarnessError(f"archive {archive}: cannot unpack into {dest}: it is a file")
    fmt = fmt or archive_format(archive)
    members = members if members is not None else _read_members(archive, fmt)
    check_members(archive, members)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.unpack-"))
    try:
        tree = tmp / "tree"  # made with the umask's permissions (mkdtemp's own folder is private)
        tree.mkdir()
        _extract(archive, fmt, tree)
        if not dest.exists():
            os.replace(tree, dest)  # the whole tree appears at once
            return len(members)
        clashes = _conflicts(tree, dest)
        if clashes:
            raise HarnessError(f"archive {archive}: would replace a file by a folder or the other way round at "
                               f"{clashes[0]}" + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""))
        _merge(tree, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(members)


def unpack_for_dataset(folder: str, root: Path, archive: Path, into: str | None = None) -> tuple[Path, int]:
    """Unpack one archive where the dataset rooted at `root` expects it (module doc); (where, members)."""
    archive = Path(archive)
    if not archive.is_file():
        raise HarnessError(f"archive {archive}: no such file")
    fmt = archive_format(archive)
    members = _read_members(archive, fmt)
    check_members(archive, members)  # before `destination` reads the names
    dest = destination(folder, root, members, into)
    return dest, unpack(archive, dest, members, fmt)
