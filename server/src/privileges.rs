//! Started as root without systemd's `User=` (an init script, a shell):
//! bind the privileged ports as root, then become `[server] user`.
//!
//! The order matters. Files the server makes before it drops privileges
//! (the store's database and directories on a first start, its WAL files,
//! the self-signed certificate, the admin token) must belong to the user it
//! becomes, or that user cannot use them afterwards. So those steps run
//! with the target user's filesystem identity ([`as_owner`]: `setfsuid`,
//! `setfsgid` on the calling thread, put back after), the listeners bind as
//! root, and then [`drop_to`] changes every thread's identity for good
//! (glibc applies `setuid` to all threads of the process).
//!
//! Refused at start, one line each: a `user` that does not exist; a data
//! directory owned by someone else than that user; and running as root
//! without `user` on a data directory owned by another user (root would
//! leave files there the owner cannot read).

use anyhow::{Context, bail};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

use crate::config::Config;

/// The user to become.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Decide at start whether privileges are dropped, and check the data
/// directory's owner. `None`: nothing to drop.
pub fn plan(config: &Config) -> anyhow::Result<Option<Target>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let owner = std::fs::metadata(&config.data_dir).ok().map(|m| m.uid());
    let Some(name) = &config.server.user else {
        if euid == 0
            && let Some(owner) = owner
            && owner != 0
        {
            bail!(
                "refusing to run as root on data_dir {} owned by uid {owner}: set [server] user to its owner, or start cove as that user",
                config.data_dir.display()
            );
        }
        return Ok(None);
    };
    let target = lookup(name)?;
    if euid != 0 {
        if euid == target.uid {
            return Ok(None);
        }
        bail!(
            "[server] user = {name:?}: cove runs as uid {euid}; only root can become another user"
        );
    }
    match owner {
        Some(owner) if owner != target.uid => bail!(
            "data_dir {} is owned by uid {owner}, not by [server] user {name:?} (uid {}): chown -R {name}: {}",
            config.data_dir.display(),
            target.uid,
            config.data_dir.display()
        ),
        Some(_) => {}
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("create data_dir {}", config.data_dir.display()))?;
            std::os::unix::fs::chown(&config.data_dir, Some(target.uid), Some(target.gid))
                .with_context(|| format!("chown data_dir {}", config.data_dir.display()))?;
            std::fs::set_permissions(
                &config.data_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )?;
        }
    }
    Ok(Some(target))
}

/// An admin command (`cove user add`...) run as root on a data directory
/// that belongs to another user (the package's `cove`) runs as that user,
/// so that what it makes there (a new user's Maildir, the database's WAL
/// files) stays usable by the server.
pub fn become_data_owner(config: &Config) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(&config.data_dir) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    set_ids(meta.uid(), meta.gid()).with_context(|| {
        format!(
            "become uid {}, the owner of {}",
            meta.uid(),
            config.data_dir.display()
        )
    })
}

/// For the imports: as root on a data directory that belongs to another
/// user, refuse with the way to run them as that user.
pub fn refuse_root_on_others_data(config: &Config) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    match std::fs::metadata(&config.data_dir) {
        Ok(meta) if meta.uid() != 0 => bail!(
            "{} belongs to uid {}: run the import as that user (runuser -u cove -- cove import ...), after giving it read access to what is imported",
            config.data_dir.display(),
            meta.uid()
        ),
        _ => Ok(()),
    }
}

fn lookup(name: &str) -> anyhow::Result<Target> {
    let c_name = CString::new(name).map_err(|_| anyhow::anyhow!("[server] user {name:?}"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is a
    // NUL-terminated string, pwd and result are locals, buf is a live
    // buffer of the length given. getpwnam_r writes only within them.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        bail!("[server] user {name:?}: no such user on this system");
    }
    Ok(Target {
        name: name.to_string(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Run `f` with the target's filesystem identity on this thread (files it
/// makes belong to the target; access is checked as the target).
pub fn as_owner<T>(target: Option<&Target>, f: impl FnOnce() -> T) -> T {
    let Some(t) = target else {
        return f();
    };
    // SAFETY: setfsuid/setfsgid change only this thread's filesystem ids
    // and return the previous ones; they cannot fail in a way that matters
    // here (a refused change leaves root's ids, and drop_to checks later).
    let (old_gid, old_uid) = unsafe { (libc::setfsgid(t.gid), libc::setfsuid(t.uid)) };
    let out = f();
    // SAFETY: as above; puts back the ids returned before.
    unsafe {
        libc::setfsuid(old_uid as libc::uid_t);
        libc::setfsgid(old_gid as libc::gid_t);
    }
    out
}

/// Become the target user for good: supplementary groups, group, user;
/// then check that root cannot be had back.
pub fn drop_to(target: &Target) -> anyhow::Result<()> {
    set_ids(target.uid, target.gid)?;
    tracing::info!(user = %target.name, uid = target.uid, gid = target.gid, "listeners bound; running as {}", target.name);
    Ok(())
}

fn set_ids(uid: u32, gid: u32) -> anyhow::Result<()> {
    // SAFETY: plain system calls on integers and a one-element array that
    // outlives the call; glibc applies each to every thread.
    unsafe {
        if libc::setgroups(1, &gid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setgroups");
        }
        if libc::setgid(gid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setgid");
        }
        if libc::setuid(uid) != 0 {
            return Err(std::io::Error::last_os_error()).context("setuid");
        }
        if libc::setuid(0) == 0 {
            bail!("still able to become root after dropping privileges");
        }
    }
    Ok(())
}
