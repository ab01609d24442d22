//! Which files a process opens under some directories, seen by the kernel (inotify): the cold-start check
//! uses it to prove a function reads no certificate directory and no AWS profile file at init. inotify
//! does not say who opened a file, so the check points the function's `HOME`, `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` at directories only it uses.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct OpenWatch {
    fd: i32,
    dirs: Vec<(i32, PathBuf)>,
}

impl OpenWatch {
    pub fn new(dirs: &[&Path]) -> std::io::Result<OpenWatch> {
        // SAFETY: plain syscalls on a descriptor this struct owns; every result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut watch = OpenWatch {
            fd,
            dirs: Vec::new(),
        };
        for dir in dirs {
            let path = CString::new(dir.as_os_str().as_bytes())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            // SAFETY: `path` is a valid C string for the duration of the call.
            let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_OPEN) };
            if wd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            watch.dirs.push((wd, dir.to_path_buf()));
        }
        Ok(watch)
    }

    /// The files (or the directories themselves) opened since the last call.
    pub fn opened(&self) -> Vec<PathBuf> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reads into a buffer of the length given.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return seen;
            }
            let mut at = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n as usize {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with the byte buffer.
                let event: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name_bytes = &buf[at + header..at + header + event.len as usize];
                let name = name_bytes.split(|b| *b == 0).next().unwrap_or_default();
                if let Some((_, dir)) = self.dirs.iter().find(|(wd, _)| *wd == event.wd) {
                    seen.push(if name.is_empty() {
                        dir.clone()
                    } else {
                        dir.join(std::ffi::OsStr::from_bytes(name))
                    });
                }
                at += header + event.len as usize;
            }
        }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this struct owns, once.
        unsafe { libc::close(self.fd) };
    }
}
