"""Unpacking downloaded dataset archives (`harness data prepare NAME --archive PATH`), safely.

An archive is untrusted input: a member named `/etc/x` or `../../x`, a symlink or hard link that points
out of the target, or a device file would write (or later let a reader reach) outside the dataset folder;
a few MB can also declare, or hide, hundreds of GB. So every member is checked *before anything is
written*, and the whole archive is refused — a one-line HarnessError naming the archive and the member —
if any one is bad:

- absolute names and names with a `..` component anywhere (`caltech-101/../food-101/x` stays inside
  `$HARNESS_DATA` yet writes another dataset; no real archive needs `..` in a name);
- for a dataset, anything that lands outside *that dataset's folder* (a sibling dataset, `$HARNESS_DATA`
  itself, or `VOCdevkit/VOC2010` for VOC2012), except the folders on the way to it;
- members placed beneath a symlink of the archive (writing through a link);
- symlinks whose target, followed through the archive's own links as the filesystem would, leaves the
  target or the dataset folder (absolute link targets included); hard links to anything but a regular
  file of the archive;
- anything but regular files, folders and those links (devices, FIFOs); in a zip, any symlink.

Size: the members' declared sizes must add up to at most `max_unpacked_gb` (default 200 GB, above the
largest real download, ImageNet's ~140 GB train tar; `--max-unpacked-gb` raises it) and fit the free disk
with a margin. Headers can lie: a tar member's data *is* its declared size (tarfile reads exactly that
many bytes), but a zip member's header size is only a claim, so zip members are copied through a byte
counter and refused the moment they exceed it.

Tar archives are then extracted with Python's `data` filter as a second line of defence. Extraction goes
into a hidden temp folder beside the folder that receives the files, which is moved into place only once
complete (one rename per top-level entry that is new there), so a failed or killed unpack leaves nothing
half-written under a real name — only a hidden `.<name>.unpack-*` folder beside it that nothing reads.

Where an archive goes: if it holds a single top-level folder named like a component of the dataset's
folder path, it brings that folder itself and is unpacked where that folder belongs (`food-101.tar.gz` →
`$HARNESS_DATA/food-101/`; `VOCtrainval_11-May-2012.tar` → `$HARNESS_DATA/VOCdevkit/VOC2012/`); otherwise it
holds part of the dataset folder's contents and is unpacked into the dataset folder
(`101_ObjectCategories.tar.gz` → `caltech-101/101_ObjectCategories/`). `into` names a subfolder of the
dataset folder to unpack into instead (COCO's `train2017.zip` → `into="images"`). Either way only what lies
inside the dataset folder is moved into place.
"""

from __future__ import annotations

import copy
import errno
import lzma
import math
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from harness.errors import HarnessError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
DEFAULT_MAX_UNPACKED_GB = 200.0  # GB = 10**9 bytes; see the module doc
_MAX_LINK_DEPTH = 40  # as the kernel's ELOOP limit: deeper is a loop
_BLOCK = 4096  # what a file or folder takes on disk at least: the free-disk check rounds up to it
_DISK_SPARE = 64 * 2**20  # left free after unpacking, so a full disk does not take the store down with it
_CHUNK = 2**20
_READ_ERRORS = (OSError, EOFError, RuntimeError, NotImplementedError, tarfile.TarError, zipfile.BadZipFile,
                zlib.error, lzma.LZMAError)  # RuntimeError/NotImplementedError: an encrypted or exotic zip


class UnsafeArchiveError(HarnessError):
    """An archive member would land, or let a reader reach, outside the folder it is unpacked into."""


class ArchiveTooLargeError(HarnessError):
    """An archive declares more unpacked bytes than the limit allows or than the disk has free."""


@dataclass(frozen=True)
class Member:
    """What the safety checks need to know of one archive member, whatever the archive format."""

    name: str
    kind: str  # "file" | "dir" | "symlink" | "hardlink" | "zip-symlink" | "other"
    link: str = ""  # a symlink's target (relative to its folder) or a hard link's (relative to the root)
    size: int = 0  # a file's declared size in bytes


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


def _inside(path: list[str] | tuple[str, ...], within: tuple[str, ...]) -> bool:
    return tuple(path[:len(within)]) == within


def check_members(archive: Path, members: list[Member], within: tuple[str, ...] = ()) -> None:
    """Refuse the archive (UnsafeArchiveError naming it and the member) unless every member stays inside
    the folder it is unpacked into and, below it, inside `within` (the dataset folder, relative to it):
    only the folders on the way to `within` may lie outside it."""

    def refuse(member: Member, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"archive {archive}: refused member '{member.name}': {why}; nothing was unpacked")

    where = f"the dataset folder '{'/'.join(within)}'" if within else "the target folder"
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
        if ".." in parts:
            raise refuse(m, "'..' in a member name (it could climb out of the target folder)")
        if len(parts) <= len(within) and tuple(parts) == within[:len(parts)]:
            if m.kind != "dir":  # the dataset folder itself, or a folder on the way to it
                raise refuse(m, f"would replace {where} (or a folder above it) by a {m.kind}")
        elif not _inside(parts, within):
            raise refuse(m, f"lands outside {where}")
        if any(tuple(parts[:i]) in links for i in range(1, len(parts))):
            raise refuse(m, "placed beneath a symlink of the archive")
        if m.kind == "symlink":
            if _is_absolute(m.link):
                raise refuse(m, f"symlink to an absolute path ({m.link})")
            resolved = _resolve(parts[:-1] + _parts(m.link), links)
            if resolved is None or not _inside(resolved, within):
                raise refuse(m, f"symlink pointing out of {where} ({m.link})")
        elif m.kind == "hardlink":
            if _is_absolute(m.link) or _resolve(_parts(m.link), {}) is None:
                raise refuse(m, f"hard link to a file out of the target folder ({m.link})")
            if tuple(_parts(m.link)) not in files:
                raise refuse(m, f"hard link to something that is not a regular file of the archive ({m.link})")


# -- size ------------------------------------------------------------------------------------------

def _human(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def _first_missing(path: Path) -> Path | None:
    """The outermost folder that `path.mkdir(parents=True)` would create; None when `path` exists."""
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def check_size(archive: Path, members: list[Member], dest: Path, max_unpacked_gb: float | None = None) -> None:
    """Refuse (ArchiveTooLargeError, before anything is written) an archive whose declared sizes add up to
    more than `max_unpacked_gb` GB, or need more than the free disk at `dest` less a small spare."""
    limit_gb = DEFAULT_MAX_UNPACKED_GB if max_unpacked_gb is None else max_unpacked_gb
    if not (isinstance(limit_gb, int | float) and math.isfinite(limit_gb) and limit_gb > 0):
        raise HarnessError(f"--max-unpacked-gb must be a positive number of GB, got {max_unpacked_gb}")
    declared = sum(m.size for m in members if m.kind == "file")
    if declared > limit_gb * 1e9:
        raise ArchiveTooLargeError(
            f"archive {archive}: its members declare {_human(declared)} unpacked, over the {_human(limit_gb * 1e9)} "
            f"limit; if you trust it, raise the limit with --max-unpacked-gb {math.ceil(declared / 1e9)}; "
            "nothing was unpacked")
    on_disk = sum(-(-m.size // _BLOCK) * _BLOCK if m.kind == "file" else _BLOCK for m in members)
    missing = _first_missing(dest)
    probe = dest if missing is None else missing.parent  # the disk `dest` will be on
    free = shutil.disk_usage(probe).free
    if on_disk + _DISK_SPARE > free:
        raise ArchiveTooLargeError(
            f"archive {archive}: needs about {_human(on_disk)} on disk ({_human(declared)} declared, plus "
            f"{_human(_DISK_SPARE)} kept spare) but only {_human(free)} is free at {probe}; free some space or "
            "set HARNESS_DATA to a larger disk; nothing was unpacked")


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
        return Member(info.name, "file", size=info.size)
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
    if info.is_dir():
        return Member(info.filename, "dir")
    return Member(info.filename, "file", size=info.file_size)


def _read_members(path: Path, fmt: str) -> list[Member]:
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                return [_zip_member(i) for i in zf.infolist()]
        with tarfile.open(path) as tf:
            return [_tar_member(i) for i in tf.getmembers()]
    except _READ_ERRORS as exc:
        raise HarnessError(f"archive {path}: unreadable ({type(exc).__name__}: {exc})") from None


def _extract_zip(path: Path, zf: zipfile.ZipFile, dest: Path) -> None:
    """Write each (already checked) member under `dest` at the path the checks saw, counting its bytes.

    zipfile itself stops a member at its header's size (then fails its CRC), so the header is lifted on a
    copy of the entry: the counter, not zipfile, bounds the member, and names it when it holds more."""
    for info in zf.infolist():
        target = dest.joinpath(*_parts(info.filename))
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        unbounded = copy.copy(info)
        unbounded.file_size = 2**63
        written = 0
        with zf.open(unbounded) as src, open(target, "wb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise UnsafeArchiveError(
                        f"archive {path}: refused member '{info.filename}': holds more than the {info.file_size} "
                        "bytes its header declares (a zip bomb?); nothing was unpacked")
                out.write(chunk)
        if written != info.file_size:
            raise HarnessError(f"archive {path}: member '{info.filename}' holds {written} bytes but its header "
                               f"declares {info.file_size}: the archive is damaged; download it again")


def _extract(path: Path, fmt: str, dest: Path) -> None:
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                _extract_zip(path, zf, dest)
        else:
            with tarfile.open(path) as tf:
                tf.extractall(dest, filter="data")
    except tarfile.FilterError as exc:  # the checks above let nothing through that the filter refuses
        raise UnsafeArchiveError(f"archive {path}: refused by tarfile's data filter: {exc}") from None
    except _READ_ERRORS as exc:
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


def _remove_empty(folder: Path, up_to: Path | None) -> None:
    """Remove `folder` and its parents up to `up_to` (included) while they are empty: the folders made for
    an unpack that then failed."""
    if up_to is None:
        return
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == up_to:
            return
        folder = folder.parent


def unpack(archive: Path, dest: Path, members: list[Member] | None = None, fmt: str | None = None, *,
           within: tuple[str, ...] = (), max_unpacked_gb: float | None = None) -> int:
    """Check every member and the declared size, extract into a temp folder, then move what lies in
    `dest/within` there (`within`: the dataset folder below `dest`, when the archive brings it); returns the
    number of members. Raises (writing nothing) on an unsafe member, a size over the cap or the free disk,
    a type clash with what is at `dest`, or an unreadable archive."""
    archive, dest = Path(archive), Path(dest)
    final = dest.joinpath(*within)
    if not archive.is_file():
        raise HarnessError(f"archive {archive}: no such file")
    if final.exists() and not final.is_dir():
        raise HarnessError(f"archive {archive}: cannot unpack into {final}: it is a file")
    fmt = fmt or archive_format(archive)
    members = members if members is not None else _read_members(archive, fmt)
    check_members(archive, members, within)
    check_size(archive, members, final, max_unpacked_gb)
    made = _first_missing(final.parent)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.unpack-"))
    done = False
    try:
        tree = tmp / "tree"  # made with the umask's permissions (mkdtemp's own folder is private)
        tree.mkdir()
        _extract(archive, fmt, tree)
        payload = tree.joinpath(*within)  # the rest is only the folders on the way to it (or nothing)
        if payload.exists() and not final.exists():
            os.replace(payload, final)  # the whole tree appears at once
        elif payload.exists():
            clashes = _conflicts(payload, final)
            if clashes:
                raise HarnessError(f"archive {archive}: would replace a file by a folder or the other way round "
                                   f"at {clashes[0]}" + (f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""))
            _merge(payload, final)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_empty(final.parent, made)
    return len(members)


def unpack_for_dataset(folder: str, root: Path, archive: Path, into: str | None = None,
                       max_unpacked_gb: float | None = None) -> tuple[Path, int]:
    """Unpack one archive where the dataset rooted at `root` expects it (module doc), refusing anything
    that lands outside `root`; (the folder inside `root` it went to, members)."""
    archive, root = Path(archive), Path(root)
    if not archive.is_file():
        raise HarnessError(f"archive {archive}: no such file")
    fmt = archive_format(archive)
    members = _read_members(archive, fmt)
    check_members(archive, members)  # before `destination` reads the names
    dest = destination(folder, root, members, into)
    within = root.relative_to(dest).parts if root.is_relative_to(dest) else ()
    n = unpack(archive, dest, members, fmt, within=within, max_unpacked_gb=max_unpacked_gb)
    return dest.joinpath(*within), n
