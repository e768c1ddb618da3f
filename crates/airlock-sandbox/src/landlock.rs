//! Landlock: the second, independent layer over the same grants as the
//! mount namespace.
//!
//! The ruleset is created in the parent with the `landlock` crate (all
//! filesystem rights of the kernel's ABI handled; TCP connect/bind handled
//! when network is granted, ABI ≥ 4; abstract Unix socket and signal scoping
//! on ABI ≥ 6). Rules are added in the child after `pivot_root`, because
//! most objects (the overlay, `/proc`, `/tmp`) only exist there; they are
//! raw `landlock_add_rule` calls on the prepared table.

use std::os::fd::OwnedFd;

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, Scope, ABI,
};

/// `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON`: keep audit logging of denials
/// after `execve` (ABI ≥ 7; off by default in the kernel).
const LOG_NEW_EXEC_ON: u32 = 2;

/// The crate's ABI enum for a kernel ABI number.
pub fn abi_enum(n: i32) -> ABI {
    match n {
        i32::MIN..=0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        7 => ABI::V7,
        8 => ABI::V8,
        9 => ABI::V9,
        _ => ABI::V10,
    }
}

/// The running kernel's Landlock ABI (`None`: not enabled).
pub fn kernel_abi() -> Option<i32> {
    crate::syscall::landlock_abi()
}

/// Rights for read-only grants (read files, list dirs, execute).
pub fn read_rights(abi: i32) -> u64 {
    AccessFs::from_read(abi_enum(abi)).bits()
}

/// Every filesystem right of the ABI (read-write grants).
pub fn all_rights(abi: i32) -> u64 {
    AccessFs::from_all(abi_enum(abi)).bits()
}

/// Rights valid on a non-directory.
pub fn file_rights(abi: i32) -> u64 {
    AccessFs::from_file(abi_enum(abi)).bits()
}

/// Rights for `/dev`: read, write and ioctl on the few device nodes there.
pub fn dev_rights(abi: i32) -> u64 {
    let a = abi_enum(abi);
    let mut r = AccessFs::from_read(a) | AccessFs::WriteFile;
    if AccessFs::from_all(a).contains(AccessFs::IoctlDev) {
        r |= AccessFs::IoctlDev;
    }
    if AccessFs::from_all(a).contains(AccessFs::Truncate) {
        r |= AccessFs::Truncate;
    }
    r.bits()
}

/// Rights for `/proc`: read, plus writing files (DAC still applies).
pub fn proc_rights(abi: i32) -> u64 {
    (AccessFs::from_read(abi_enum(abi)) | AccessFs::WriteFile).bits()
}

/// A created ruleset and what it handles.
pub struct Setup {
    /// Kernel ABI.
    pub abi: i32,
    /// Scopes applied.
    pub scopes: Vec<String>,
    /// Whether TCP rights are handled.
    pub net: bool,
    /// What was not enforced (older ABI).
    pub missing: Vec<String>,
    pub(crate) ruleset: OwnedFd,
    pub(crate) restrict_flags: u32,
}

/// `LANDLOCK_ACCESS_NET_CONNECT_TCP`.
pub const NET_CONNECT_TCP: u64 = 2;

/// Create the ruleset for `abi`; `net` handles TCP connect/bind (ports
/// granted by rules added later).
pub fn create(abi: i32, net: bool) -> Result<Setup, String> {
    let a = abi_enum(abi);
    if a == ABI::Unsupported {
        return Err("Landlock is not enabled in this kernel".into());
    }
    let mut missing = Vec::new();
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(a))
        .map_err(|e| e.to_string())?;
    let mut net_handled = false;
    if net {
        if abi >= 4 {
            rs = rs
                .handle_access(AccessNet::from_all(ABI::V4))
                .map_err(|e| e.to_string())?;
            net_handled = true;
        } else {
            missing.push(format!(
                "TCP port rules need Landlock ABI 4 (kernel has {abi})"
            ));
        }
    }
    let mut scopes = Vec::new();
    if abi >= 6 {
        rs = rs
            .scope(Scope::from_all(ABI::V6))
            .map_err(|e| e.to_string())?;
        scopes = vec!["abstract-unix-socket".to_string(), "signal".to_string()];
    } else {
        missing.push(format!(
            "abstract Unix socket and signal scoping need Landlock ABI 6 (kernel has {abi})"
        ));
    }
    let created = rs.create().map_err(|e| e.to_string())?;
    let fd: Option<OwnedFd> = created.into();
    let ruleset = fd.ok_or_else(|| "Landlock ruleset was not created".to_string())?;
    let restrict_flags = if abi >= 7 { LOG_NEW_EXEC_ON } else { 0 };
    Ok(Setup {
        abi,
        scopes,
        net: net_handled,
        missing,
        ruleset,
        restrict_flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_consistent() {
        for abi in 1..=8 {
            let all = all_rights(abi);
            assert_eq!(read_rights(abi) & !all, 0);
            assert_eq!(file_rights(abi) & !all, 0);
            assert_eq!(dev_rights(abi) & !all, 0);
            assert_eq!(proc_rights(abi) & !all, 0);
        }
        // ABI 1 has no REFER/TRUNCATE; ABI 5 adds IOCTL_DEV.
        assert_eq!(all_rights(1) & (1 << 13), 0);
        assert_ne!(all_rights(5) & (1 << 15), 0);
    }

    #[test]
    fn ruleset_is_created_on_this_kernel() {
        let Some(abi) = kernel_abi() else {
            eprintln!("SKIPPED: Landlock not enabled in this kernel");
            return;
        };
        let s = create(abi, true).expect("create ruleset");
        assert_eq!(s.abi, abi);
        if abi >= 6 {
            assert_eq!(s.scopes.len(), 2);
        }
    }
}
