//! Root-aware file access: optional reads, parsed reads and symlinks that may not leave
//! the root.

use crate::error::{HcaError, Result};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Read a whole file, trimmed. `Ok(None)` when it does not exist.
///
/// Some sysfs attributes fail to read by design (`phys_port_name` answers EOPNOTSUPP on
/// drivers without switchdev, `carrier` EINVAL while down): those also count as absent.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match read_small(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if absent(&e) => Ok(None),
        Err(source) => Err(HcaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

std::thread_local! {
    /// One read buffer per thread: discovery of a 1024-VF host reads some 5k attributes,
    /// and a fresh zeroed page for each was a sixth of its instructions.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 4096]);
}

/// open + read + close, trimmed: sysfs attributes are at most a page and come back in
/// one read, so the size probe and the extra EOF read of `read_to_string` are skipped.
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    READ_BUF.with_borrow_mut(|buf| {
        let mut len = 0;
        loop {
            let n = f.read(&mut buf[len..])?;
            len += n;
            if n == 0 || len < buf.len() {
                break;
            }
            buf.resize(buf.len() * 2, 0);
        }
        std::str::from_utf8(&buf[..len])
            .map(|s| s.trim().to_string())
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
    })
}

/// Whether an error means "this attribute is not there" rather than a real failure.
fn absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::Unsupported
    ) || matches!(e.raw_os_error(), Some(95) | Some(22) | Some(61)) // EOPNOTSUPP, EINVAL, ENODATA
}

/// Read an optional file and parse it with `parse`; a parse failure is `Malformed`.
pub(crate) fn read_parsed<T>(
    path: &Path,
    reason: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>> {
    match read_opt(path)? {
        None => Ok(None),
        Some(s) => match parse(&s) {
            Some(v) => Ok(Some(v)),
            None => Err(HcaError::Malformed {
                path: path.to_path_buf(),
                content: s,
                reason,
            }),
        },
    }
}

/// List a directory's entry names, sorted. `Ok(vec![])` when it does not exist.
pub(crate) fn list_dir(path: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HcaError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| HcaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort_unstable();
    Ok(names)
}

/// Lexically resolve `target` relative to `base` (no filesystem access): `..` pops.
/// Byte-wise: discovery resolves some 9k links, and component iterators were a tenth of
/// its instructions.
pub(crate) fn normalize(base: &Path, target: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let t = target.as_os_str().as_bytes();
    let mut out: Vec<u8> = Vec::new();
    if !target.is_absolute() {
        for seg in base.as_os_str().as_bytes().split(|&c| c == b'/') {
            push_segment(&mut out, seg);
        }
    }
    for seg in t.split(|&c| c == b'/') {
        push_segment(&mut out, seg);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Append one path segment to an absolute, normalized byte path (`""` stands for `/`).
fn push_segment(out: &mut Vec<u8>, seg: &[u8]) {
    match seg {
        b"" | b"." => {}
        b".." => {
            let cut = out.iter().rposition(|&c| c == b'/').unwrap_or(0);
            out.truncate(cut);
        }
        s => {
            out.push(b'/');
            out.extend_from_slice(s);
        }
    }
}

/// Whether `p` (normalized) lies under `root`: a byte prefix ending at a separator, with
/// the component-wise check as the fallback for roots that are not normalized.
fn within(root: &Path, p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let r = root.as_os_str().as_bytes();
    let r = r.strip_suffix(b"/").unwrap_or(r);
    let b = p.as_os_str().as_bytes();
    (b.starts_with(r) && (b.len() == r.len() || b[r.len()] == b'/')) || p.starts_with(root)
}

/// Resolve the symlink at `link` (one level) to a path that must lie under `root`.
///
/// Relative targets resolve against the link's directory, as the kernel's do. Absolute
/// targets are taken as host-absolute and so re-rooted only if already under `root`.
/// `Ok(None)` when `link` does not exist; a link whose target is missing is
/// `DanglingLink` unless `allow_dangling`.
pub(crate) fn read_link_in_root(
    root: &Path,
    link: &Path,
    allow_dangling: bool,
) -> Result<Option<PathBuf>> {
    let target = match std::fs::read_link(link) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HcaError::Io {
                path: link.to_path_buf(),
                source,
            });
        }
    };
    let resolved = contain(root, link, target.clone())?;
    if !allow_dangling && std::fs::symlink_metadata(&resolved).is_err() {
        return Err(HcaError::DanglingLink {
            path: link.to_path_buf(),
            target,
        });
    }
    Ok(Some(resolved))
}

/// The real directory behind `path`: a class or bus entry (`sys/class/net/eth0`,
/// `sys/bus/pci/devices/<addr>`) is a link into `sys/devices`, and links inside the device
/// directory are relative to the real directory, so it must be resolved first.
/// `Ok(None)` when `path` does not exist.
pub(crate) fn resolve_dir(root: &Path, path: &Path) -> Result<Option<PathBuf>> {
    match std::fs::read_link(path) {
        Ok(target) => contain(root, path, target).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        // EINVAL: not a link, a real directory (fixtures may use those)
        Err(e) if e.kind() == ErrorKind::InvalidInput => Ok(Some(path.to_path_buf())),
        Err(source) => Err(HcaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Fail with `DanglingLink` when `link`'s resolved `target` does not exist.
pub(crate) fn check_exists(link: &Path, target: &Path) -> Result<()> {
    if std::fs::symlink_metadata(target).is_err() {
        return Err(HcaError::DanglingLink {
            path: link.to_path_buf(),
            target: std::fs::read_link(link).unwrap_or_else(|_| target.to_path_buf()),
        });
    }
    Ok(())
}

/// Resolve a link's `target` against the link's directory and check it stays in `root`.
fn contain(root: &Path, link: &Path, target: PathBuf) -> Result<PathBuf> {
    let resolved = normalize(link.parent().unwrap_or(root), &target);
    if !within(root, &resolved) {
        return Err(HcaError::LinkEscapesRoot {
            path: link.to_path_buf(),
            target,
            root: root.to_path_buf(),
        });
    }
    Ok(resolved)
}

/// The PCI address owning a class device directory resolved from a class link:
/// `.../<pci addr>/<class>/<name>` gives `<pci addr>`. The kernel places class devices of a
/// PCI function exactly there, so this saves reading the `device` link.
pub(crate) fn owning_pci(dir: &Path, class: &str) -> Option<crate::pci::PciAddress> {
    let parent = dir.parent()?;
    if parent.file_name()? != class {
        return None;
    }
    parent.parent()?.file_name()?.to_str()?.parse().ok()
}

/// The last path component as a string.
pub(crate) fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_pops_parents() {
        let p = normalize(
            Path::new("/r/sys/devices/pci0000:3a/0000:3b:00.2"),
            Path::new("../0000:3b:00.0"),
        );
        assert_eq!(p, Path::new("/r/sys/devices/pci0000:3a/0000:3b:00.0"));
        let p = normalize(Path::new("/r/a"), Path::new("../../../x"));
        assert_eq!(p, Path::new("/x"));
        let p = normalize(Path::new("/r/a/"), Path::new("./b//c/../d"));
        assert_eq!(p, Path::new("/r/a/b/d"));
        let p = normalize(Path::new("/r/a"), Path::new("/abs/../x"));
        assert_eq!(p, Path::new("/x"));
        assert_eq!(normalize(Path::new("/"), Path::new("..")), Path::new("/"));
    }

    #[test]
    fn within_checks_whole_components() {
        let root = Path::new("/tmp/root");
        assert!(within(root, Path::new("/tmp/root")));
        assert!(within(root, Path::new("/tmp/root/sys/x")));
        assert!(!within(root, Path::new("/tmp/rootx/sys")));
        assert!(!within(root, Path::new("/tmp")));
        assert!(within(Path::new("/tmp/root/"), Path::new("/tmp/root/a")));
        assert!(within(Path::new("/"), Path::new("/a")));
        // a root with `.` in it still works through the component check
        assert!(within(Path::new("/tmp/./root"), Path::new("/tmp/root/a")));
    }
}
