//! The built-in pause's root: an empty directory with hull-shim
//! bind-mounted read-only at `/pause` (it pauses when called by that name)
//! and, when the binary is dynamically linked, its loader and libraries at
//! their own paths, so that no pause image is pulled, pinned or kept from
//! garbage collection.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the pause binary is inside the sandbox.
pub const PAUSE_PATH: &str = "/pause";

/// `PT_INTERP`: the program header naming the dynamic loader.
const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The dynamic loader a 64-bit little-endian ELF names; None for a static
/// binary (or anything else).
pub fn interpreter(elf: &[u8]) -> Option<PathBuf> {
    // ELF magic, 64-bit class, little-endian.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(elf, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(elf, 0x36)?);
    let phnum = usize::from(u16_at(elf, 0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(elf, ph)? != PT_INTERP {
            continue;
        }
        let off = usize::try_from(u64_at(elf, ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(elf, ph + 32)?).ok()?;
        let raw = elf.get(off..off.checked_add(size)?)?;
        let path = raw.split(|b| *b == 0).next()?;
        return Some(PathBuf::from(String::from_utf8_lossy(path).into_owned()));
    }
    None
}

/// The libraries in a dynamic loader's `--list` output.
pub fn listed_libraries(text: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            out.push(PathBuf::from(path));
        }
    }
    out
}

/// The host files the pause needs besides itself: its loader and the
/// libraries the loader resolves for it.
///
/// # Errors
/// When the binary cannot be read or its loader cannot list it.
pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let elf = std::fs::read(binary).map_err(|e| format!("read {}: {e}", binary.display()))?;
    let Some(loader) = interpreter(&elf) else {
        return Ok(Vec::new());
    };
    let out = Command::new(&loader)
        .arg("--list")
        .arg(binary)
        .output()
        .map_err(|e| format!("run {} --list: {e}", loader.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --list {}: {}",
            loader.display(),
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut libs = listed_libraries(&String::from_utf8_lossy(&out.stdout));
    if !libs.contains(&loader) {
        libs.push(loader);
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_lists_what_the_running_binary_needs() {
        let me = std::env::current_exe().unwrap();
        let elf = std::fs::read(&me).unwrap();
        let loader = interpreter(&elf).expect("tests are dynamically linked here");
        assert!(loader.is_absolute(), "{loader:?}");
        let libs = libraries(&me).unwrap();
        assert!(libs.contains(&loader));
        assert!(
            libs.iter().any(|l| l
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))),
            "{libs:?}"
        );
        assert!(libs.iter().all(|l| l.exists()), "{libs:?}");
        assert_eq!(interpreter(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn parses_the_loaders_list() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f51)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f51)\n";
        assert_eq!(
            listed_libraries(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }
}
